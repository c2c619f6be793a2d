"""Parsers of judge and simulator replies. Each returns a value or raises ValueError; never guesses, never rounds.

Every parser first removes what a chat model is known to wrap an answer in
(``harness.llm.replies.unwrap_reply``: closed reasoning blocks, quotes, bold,
a code fence, one label) and then checks that the WHOLE remaining text is the
answer in the format asked for. The ``*_FORMAT`` functions name each format
for the client's one re-ask of a rejected reply (``LLMClient.generate``'s ``format_hint``).
"""

import json
import re

from harness.llm.replies import unwrap_reply

RATING_LABELS = ("rating", "answer", "score")
NUMBERED_LABELS = ("ratings", "rating", "answer", "scores")
LIST_LABELS = ("answer", "activations", "predictions")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def rating_format(low: int = 0, high: int = 3) -> str:
    """Return the words naming a rating reply, for a re-ask ("Reply with only ...")."""
    return f"one integer from {low} to {high}"


def numbered_ratings_format(count: int, low: int = 0, high: int = 3) -> str:
    """Return the words naming a reply of numbered ratings, for a re-ask."""
    return f'{count} lines "N: R", one for each excerpt N from 1 to {count}, where R is an integer from {low} to {high}'


def activation_list_format(count: int, low: float = 0, high: float = 10) -> str:
    """Return the words naming a reply that is a JSON list of activations, for a re-ask."""
    return f"a JSON list of {count} numbers from {low:g} to {high:g}"


def _integer(text: str, low: int, high: int) -> int:
    """Return ``text`` as an integer in [low, high] when it is exactly one (ASCII digits); raise ValueError otherwise."""
    if not re.fullmatch(r"[0-9]+", text):
        shown = text if len(text) <= 40 else text[:40] + "…"
        if not text:
            raise ValueError("empty rating")
        if _NUMBER.fullmatch(text):
            raise ValueError(f"rating {shown!r} is not an integer from {low} to {high}")
        raise ValueError(f"{shown!r} is not a rating")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"rating {value} outside {low}..{high}")
    return value


def parse_rating(reply: str, low: int = 0, high: int = 3) -> int:
    """Return the rating that is the whole reply (after unwrapping), an integer in [low, high].

    "2", " 2 ", "**2**", "Rating: 2", "2." and "<think>…</think>\\n2" are 2; "2.5", "3/3",
    "-1", "4", "two", "" and "1 — The explanation" raise ValueError (never rounded, never cut).
    """
    return _integer(unwrap_reply(reply, RATING_LABELS, trailing_period=True), low, high)


def parse_numbered_ratings(reply: str, count: int, low: int = 0, high: int = 3) -> list[int]:
    """Return ratings 1..count from a reply whose every non-empty line (after unwrapping) is "N: R".

    The separator may be ":", ".", ")" or "-". Raises ValueError on any other line (stray
    prose included), a number rated twice or missing, or a rating that is not an integer in range.
    """
    found: dict[int, int] = {}
    for line in unwrap_reply(reply, NUMBERED_LABELS).splitlines():
        if not line.strip():
            continue
        match = re.fullmatch(r"\s*([0-9]+)\s*[:.)-]\s*(\S+?)\s*", line)
        if not match:
            raise ValueError(f'line {line.strip()[:40]!r} is not of the form "N: R"')
        number, value = int(match.group(1)), _integer(match.group(2), low, high)
        if number in found:
            raise ValueError(f"excerpt {number} rated twice")
        found[number] = value
    if sorted(found) != list(range(1, count + 1)):
        raise ValueError(f"expected ratings for excerpts 1..{count}, got {sorted(found)}")
    return [found[number] for number in range(1, count + 1)]


def _reject_constant(name: str) -> float:
    raise ValueError(f"not a number: {name}")


def parse_activation_list(reply: str, count: int, low: float = 0, high: float = 10) -> list[float]:
    """Return ``count`` numbers in [low, high] from a reply that is (after unwrapping) exactly one JSON list.

    Raises ValueError on text around the list, a wrong length, NaN or infinities, or a value
    that is not a number in range.
    """
    text = unwrap_reply(reply, LIST_LABELS)
    try:
        values = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a JSON list: {exc.msg}") from exc
    if not isinstance(values, list):
        raise ValueError("not a JSON list")
    if len(values) != count:
        raise ValueError(f"expected {count} values, got {len(values)}")
    numbers = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise ValueError(f"not a number: {value!r}")
        if not low <= value <= high:
            raise ValueError(f"value {value} outside {low:g}..{high:g}")
        numbers.append(float(value))
    return numbers


YES_NO_LABELS = ("answer",)


def yes_no_format() -> str:
    """Return the words naming a yes/no reply, for a re-ask."""
    return "one word, Yes or No"


def parse_yes_no(reply: str) -> bool:
    """Return True for a reply that is (after unwrapping) the word Yes, False for No, any case; else ValueError.

    "Yes", " no ", "**Yes**", "Answer: No." are answers; "Yes, because …", "Y", "maybe" and "" raise.
    """
    answer = unwrap_reply(reply, YES_NO_LABELS, trailing_period=True).strip().lower()
    if answer not in ("yes", "no"):
        shown = answer if len(answer) <= 40 else answer[:40] + "…"
        raise ValueError(f"expected Yes or No, got {shown!r}")
    return answer == "yes"
