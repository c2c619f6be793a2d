"""User-facing errors: one line naming the problem and the fix."""


class MonoscopeError(Exception):
    """A problem with the user's input or environment, reported as one line (exit code 2)."""

    def __init__(self, problem: str, fix: str = "") -> None:
        message = problem if not fix else f"{problem} — {fix}"
        super().__init__(message.replace("\n", " "))
