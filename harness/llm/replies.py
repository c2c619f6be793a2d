"""What a chat model is known to wrap an answer in, and the one step that removes it (``unwrap_reply``).

Reply parsers (``scorers.parsing``, ``explainers.llm_explainer.parse_explanation``) call
``unwrap_reply`` and then check that the WHOLE remaining text is the answer they asked
for; anything else is a ValueError, never a guess. Removed, and nothing else:

- closed reasoning blocks at the start (``<think>…</think>``, ``<thinking>…</thinking>``,
  ``<reasoning>…</reasoning>``; several in a row), as reasoning models behind an
  OpenAI-compatible server send them; a reply that opens such a block and never closes it
  is a ValueError ("unclosed reasoning block");
- surrounding whitespace;
- one code fence around the whole reply (```` ```…``` ````, with an optional language tag);
- surrounding quotes ("…", '…', “…”, ‘…’, `…`) when the quoted text holds no quote of the same kind;
- surrounding bold or italic markdown (``**…**``, ``__…__``, ``*…*``); ``__init__`` and other
  dunder names are kept;
- one leading label of the caller's (e.g. "Rating:", "Answer:"; case-insensitive, optionally bold);
- with ``trailing_period``, one final ".".

The peeling repeats until nothing changes (so ``**"2"**`` and ``Rating: **2**`` are both "2"),
removing at most one label and one trailing period in all.
"""

import re

REASONING_TAGS = ("think", "thinking", "reasoning")
QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "`": "`"}
EMPHASIS = ("**", "__", "*")

_OPENING = re.compile(r"<(" + "|".join(REASONING_TAGS) + r")>", re.IGNORECASE)
_FENCE = re.compile(r"```(?:[\w+.-]*[ \t]*\n)?(?P<body>.*?)\n?[ \t]*```", re.DOTALL)


def strip_reasoning(reply: str) -> str:
    """Return ``reply`` without the closed reasoning blocks at its start (and the whitespace around them).

    Raises ValueError when the reply (after any closed blocks) opens a reasoning block
    that is never closed: such a reply was cut off before its answer.
    """
    text = reply.strip()
    while True:
        opening = _OPENING.match(text)
        if opening is None:
            return text
        closing = re.search(rf"</{opening.group(1)}>", text[opening.end() :], flags=re.IGNORECASE)
        if closing is None:
            raise ValueError(f"unclosed reasoning block <{opening.group(1)}>")
        text = text[opening.end() + closing.end() :].strip()


def unwrap_reply(reply: str, labels: tuple[str, ...] = (), trailing_period: bool = False) -> str:
    """Return the answer inside ``reply``: the reply without the known wrappers listed in the module docstring.

    ``labels`` are the leading labels the caller's format allows (without the colon, any
    case); ``trailing_period`` allows one final "." to be dropped. Raises ValueError on an
    unclosed reasoning block. What is returned is not checked: the caller checks it is the answer.
    """
    text = strip_reasoning(reply)
    fence = _FENCE.fullmatch(text)
    if fence is not None and "```" not in fence.group("body"):
        text = fence.group("body").strip()
    names = "(?:" + "|".join(re.escape(name) for name in labels) + ")"
    # "Rating:", "**Rating:**" or "**Rating**:" (a bold label is closed before the answer)
    label = re.compile(rf"(?:(?P<bold>\*\*|__){names}\s*(?::\s*(?P=bold)|(?P=bold)\s*:)|{names}\s*:)\s*", re.IGNORECASE)
    label_left, period_left = bool(labels), trailing_period
    while True:
        before = text
        text = text.strip()
        if period_left and text.endswith(".") and not text.endswith(".."):
            text, period_left = text[:-1].rstrip(), False
        text = _strip_quotes(text)
        text = _strip_emphasis(text)
        if label_left:
            match = label.match(text)
            if match is not None:
                text, label_left = text[match.end() :], False
        if text == before:
            return text


def _strip_quotes(text: str) -> str:
    """Return ``text`` without one pair of surrounding quotes when the inside holds no quote of that kind."""
    if len(text) >= 2 and text[0] in QUOTES and text[-1] == QUOTES[text[0]]:
        inner = text[1:-1]
        if text[0] not in inner and QUOTES[text[0]] not in inner:
            return inner
    return text


def _strip_emphasis(text: str) -> str:
    """Return ``text`` without one pair of surrounding markdown emphasis markers (bold first, then italic)."""
    for marker in EMPHASIS:
        if len(text) > 2 * len(marker) and text.startswith(marker) and text.endswith(marker):
            inner = text[len(marker) : -len(marker)]
            if marker == "__" and re.fullmatch(r"[A-Za-z_]\w*", inner):
                continue  # a dunder name (__init__) is not bold
            rest = inner.replace("**", "") if marker == "*" else inner  # bold inside italic is not a second italic span
            if marker not in rest and inner.strip() == inner:
                return inner
    return text
