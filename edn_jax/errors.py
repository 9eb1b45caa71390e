"""User-facing errors.

Anything a user can cause (a bad path, a bad config value, a video with nobody in
it) raises ``EdnError`` with one line that names the problem and the fix.
``edn_jax.main`` prints it as ``error: ...`` and exits with status 2; tracebacks are
kept for bugs.
"""


class EdnError(Exception):
    """A problem with the user's input, reported as one line: problem, then fix."""

    def __init__(self, problem: str, fix: str | None = None):
        message = problem if fix is None else f"{problem}; {fix}"
        super().__init__(" ".join(message.split()))  # guarantee a single line
