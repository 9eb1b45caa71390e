"""Progress lines for long loops: count, rate and ETA, at most about once a second."""

from __future__ import annotations

import sys
import time


def duration(seconds: float) -> str:
    """h:mm:ss, or m:ss under an hour."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Reports ``desc: n/total (pct) rate unit/s ETA`` to stderr.

    On a terminal the line is redrawn in place every ``interval`` seconds; in logs
    (CI, Cloud TPU) a full line is written every ``log_interval`` seconds, so long
    runs stay readable. The rate (and so the ETA) is measured from the first item on, so
    a first step that compiles does not stand for the rest. Without a total (``None`` or 0,
    or once the count passes it: a stream whose length was not known) the line shows the
    count, rate and elapsed time only.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "frames", interval: float = 1.0,
                 log_interval: float = 10.0, stream=None):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.count = 0
        self.start = self._last = time.monotonic()
        self._first: tuple[float, int] | None = None  # (time, count) after the first update
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval if self._tty else log_interval

    @property
    def rate(self) -> float:
        """Items per second since the first one (since the start while there is one or none)."""
        return self._rate(time.monotonic())

    def _rate(self, now: float) -> float:
        if self._first is not None and self.count > self._first[1] and now > self._first[0]:
            return (self.count - self._first[1]) / (now - self._first[0])
        return self.count / max(now - self.start, 1e-9)

    def line(self) -> str:
        now = time.monotonic()
        elapsed = max(now - self.start, 1e-9)
        rate = self._rate(now)
        total = self.total if self.total and self.count <= self.total else None
        text = f"{self.desc}: {self.count}"
        if total:
            text += f"/{total} ({100.0 * self.count / total:.0f}%)"
        text += f" {rate:.1f} {self.unit}/s"
        if total and rate > 0 and self.count < total and self._first is not None and self.count > self._first[1]:
            text += f" ETA {duration((self.total - self.count) / rate)}"
        else:
            text += f" elapsed {duration(elapsed)}"
        return text

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if self._first is None:
            self._first = (now, self.count)
        if now - self._last >= self.interval:
            self._last = now
            self._emit(final=False)

    def _emit(self, final: bool) -> None:
        if self._tty:
            self.stream.write("\r" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._emit(final=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
