"""Progress lines: count, rate, ETA; redrawn on terminals, sparse in logs."""

import io

from edn_jax import progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_log_lines_show_count_rate_and_eta(monkeypatch):
    clock = iter([0.0, 5.0, 12.0, 12.0, 13.0])  # start, update, update, its line, the closing line
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    bar = progress.Progress(10, "detecting", stream=out)  # not a terminal: at most one line per 10 s
    bar.update(2)   # t=5: too soon, nothing written
    bar.update(2)   # t=12: a line
    bar.close()     # t=13
    lines = out.getvalue().splitlines()
    assert lines[0] == "detecting: 4/10 (40%) 0.3 frames/s ETA 0:18"
    assert lines[1].startswith("detecting: 4/10 (40%)") and len(lines) == 2


def test_terminal_redraws_in_place(monkeypatch):
    clock = iter([0.0, 2.0, 2.0, 3.0, 3.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = _Tty()
    with progress.Progress(4, "rendering", unit="steps", stream=out) as bar:
        bar.update(4)
    text = out.getvalue()
    assert text.startswith("\rrendering: 4/4 (100%) 2.0 steps/s elapsed 0:02") and text.endswith("\n")
    assert text.count("\r") == 2
