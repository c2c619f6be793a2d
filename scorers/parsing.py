"""Parsers of judge and simulator replies. Each returns a value or raises ValueError; never guesses."""

import json
import re


def parse_rating(reply: str, low: int = 0, high: int = 3) -> int:
    """Return the single rating digit that opens the reply; raise ValueError otherwise."""
    match = re.match(r"\s*(?:rating\s*[:=]?\s*)?(\d+)\b", reply, flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"no rating at the start of {reply[:60]!r}")
    value = int(match.group(1))
    if not low <= value <= high:
        raise ValueError(f"rating {value} outside {low}..{high}")
    return value


def parse_numbered_ratings(reply: str, count: int, low: int = 0, high: int = 3) -> list[int]:
    """Return ratings 1..count from lines "N: R"; raise ValueError unless each number appears once, in range."""
    found: dict[int, int] = {}
    for line in reply.strip().splitlines():
        match = re.fullmatch(r"\s*(\d+)\s*[:.)-]\s*(\d+)\s*", line)
        if not match:
            continue
        number, value = int(match.group(1)), int(match.group(2))
        if number in found:
            raise ValueError(f"excerpt {number} rated twice")
        if not low <= value <= high:
            raise ValueError(f"rating {value} outside {low}..{high}")
        found[number] = value
    if sorted(found) != list(range(1, count + 1)):
        raise ValueError(f"expected ratings for excerpts 1..{count}, got {sorted(found)}")
    return [found[number] for number in range(1, count + 1)]


def parse_activation_list(reply: str, count: int, low: float = 0, high: float = 10) -> list[float]:
    """Return ``count`` numbers in [low, high] from a JSON list in the reply; raise ValueError otherwise."""
    match = re.search(r"\[[^\[\]]*\]", reply)
    if not match:
        raise ValueError("no JSON list in the reply")
    try:
        values = json.loads(match.group(0))
    except json.JSONDecodeError as exc:
        raise ValueError(f"bad JSON list: {exc.msg}") from exc
    if not isinstance(values, list) or len(values) != count:
        raise ValueError(f"expected {count} values")
    numbers = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise ValueError(f"not a number: {value!r}")
        if not low <= value <= high:
            raise ValueError(f"value {value} outside {low}..{high}")
        numbers.append(float(value))
    return numbers
