"""The small interface every LLM backend implements, and its records.

A backend answers ``generate``; where it can, it also answers
``choice_logprobs`` (log-probabilities of each answer option as the next
tokens after the prompt: scoring by expected value, one forward pass, no
sampling) and ``continuation_logprob`` (the log-probability of a given
continuation after a prompt: what a likelihood judge needs) and ``slot_logprobs``
(a reply of many lines forced in one pass, with the answer options'
log-probabilities read after each line: one pass per context for a simulator). A backend lists
what it supports in ``capabilities``; a scoring format declares what it needs
and asking a backend for something it lacks is a clear error
(``harness.errors.MonoscopeError``), never a silent fallback.
"""

from dataclasses import dataclass, field
from typing import Protocol

GENERATE = "generate"
CHOICE_LOGPROBS = "choice_logprobs"
CONTINUATION_LOGPROB = "continuation_logprob"
SLOT_LOGPROBS = "slot_logprobs"  # the answer options' log-probabilities at many slots of one teacher-forced reply


@dataclass(frozen=True)
class Message:
    """One chat message; ``role`` is "system", "user" or "assistant"."""

    role: str
    content: str


@dataclass(frozen=True)
class Usage:
    """Tokens a call consumed (prompt = tokens read, completion = tokens written)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Completion:
    """A backend's reply: its text, its usage, and whether it came from the cache."""

    text: str
    usage: Usage = field(default_factory=Usage)
    cached: bool = False


class Backend(Protocol):
    """What a backend provides. ``name`` is the registry name, ``model`` the model it calls."""

    name: str
    model: str
    capabilities: frozenset[str]

    def generate(self, messages: list[Message], **params: object) -> Completion:
        """Return the model's reply to ``messages`` (temperature 0 unless ``params`` say otherwise)."""
        ...

    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        """Return {choice: log-probability of the choice as the reply's first token(s)}."""
        ...

    def continuation_logprob(self, prompt: str, continuation: str) -> float:
        """Return log P(continuation | prompt) summed over the continuation's tokens."""
        ...

    def slot_logprobs(self, messages: list[Message], lines: list[str], filler: str, choices: list[str]) -> list[dict[str, float]]:
        """Return, per line of the reply forced as ``line + filler + "\\n"`` for each line, {choice: log P(choice next)}."""
        ...
