"""A spending limit shared by the LLM clients of one run (``monoscope run --max-cost``)."""

import threading

from harness.errors import MonoscopeError

CHARS_PER_TOKEN = 4  # a rough, model-independent estimate, used only to refuse a call before it is made


class BudgetExhausted(MonoscopeError):  # noqa: N818 (reads as a state, like StopIteration)
    """The next call would take spending past the limit; everything so far is saved and a rerun resumes."""


class Budget:
    """Tracks money spent by backend calls against a limit, and refuses calls that could pass it."""

    def __init__(self, limit_usd: float) -> None:
        if limit_usd < 0:
            raise MonoscopeError(f"--max-cost {limit_usd} is negative", "give a limit in USD >= 0")
        self.limit_usd = limit_usd
        self._spent = 0.0
        self._lock = threading.Lock()

    def reserve(self, estimate_usd: float, stage: str) -> None:
        """Return None if a call estimated at ``estimate_usd`` fits; raise BudgetExhausted otherwise."""
        with self._lock:
            if self._spent + estimate_usd > self.limit_usd:
                raise BudgetExhausted(
                    f"stopped before the {stage} stage's next call: ${self._spent:.4f} spent, the next call could cost "
                    f"~${estimate_usd:.4f} and the limit is ${self.limit_usd:.4f}",
                    "everything so far is saved: rerun with a higher --max-cost to resume",
                )

    def charge(self, cost_usd: float) -> None:
        """Add the cost of a finished call."""
        with self._lock:
            self._spent += cost_usd


def estimated_tokens(text: str) -> int:
    """Return a rough token count of ``text`` (characters / 4, rounded up)."""
    return -(-len(text) // CHARS_PER_TOKEN)
