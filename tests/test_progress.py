"""Progress lines: count, rate, ETA; redrawn on terminals, sparse in logs."""

import io

from edn_jax.runtime import progress


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
    assert lines[0] == "detecting: 4/10 (40%) 0.3 frames/s ETA 0:21"  # 2 frames in the 7 s after the first update
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


def test_the_eta_starts_after_the_first_step_and_an_unknown_total_shows_none(monkeypatch):
    """A first training step that compiles for 60 s is not the rate of the rest; a stream whose
    frame count was unknown (or wrong: 10 frames of a stated 1) shows count and rate, no total."""
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])

    def run(total, updates, unit="frames"):
        now[0] = 0.0
        out = io.StringIO()
        bar = progress.Progress(total, "job", unit=unit, stream=out, log_interval=0.5)
        for t, n in updates:
            now[0] = t
            bar.update(n)
        return out.getvalue().splitlines()[-1]

    # step 1 ends at 60 s (compiled), steps 2 and 3 take a second each: 97 steps left at 1 step/s (from the start: 33:24)
    assert run(100, [(60.0, 1), (61.0, 1), (62.0, 1)], "steps") == "job: 3/100 (3%) 1.0 steps/s ETA 1:37"
    assert run(1, [(1.0, 5), (2.0, 5)]) == "job: 10 5.0 frames/s elapsed 0:02"
    for total in (None, 0):
        assert run(total, [(1.0, 3)]) == "job: 3 3.0 frames/s elapsed 0:01"
