"""How contexts are written into prompts, the report and ``show-unit``: text as decoded, marks that cannot collide.

A context's tokens (``TokenContext.tokens``, from ``harness.subject.decoding.token_pieces``)
join to the decoded text of its window; a token that is part of a character completed by a
later token has the piece "". ``display_units`` groups such tokens with the token that
completes the character: a display unit is the smallest span of tokens shown as one piece
of text, and marks and activation levels apply to whole units.

Marks: a marked unit is written ``⟦text⟧`` (U+27E6, U+27E7), and in the explainer's listing
``⟦text⟧{n}`` with the activation level n = 0..10. ``shown`` makes the text unambiguous:
a line break is written ⏎, and the characters the marks use are replaced in the corpus
text (⟦ → [, ⟧ → ], a literal ⏎ → ↵), so in rendered text ⟦ ⟧ are only ever marks and ⏎
only ever a line break.
"""

from collections.abc import Iterable, Sequence

from harness.records import TokenContext

# The version of what an LLM is shown of a context (decoding of the tokens, grouping, marks, escapes): it is part of the
# digest of the contexts an explanation was made from and of the settings of a judgment or simulation, so records made
# with another rendering are redone rather than mixed. "1": tokens decoded one by one, [[token]] marks.
RENDERING = "3"  # "2": whole-window decoding, ⟦ ⟧ marks; "3": \r shown as ␍, every line break as ⏎

NEWLINE = "⏎"
OPEN, CLOSE = "⟦", "⟧"
CARRIAGE_RETURN = "␍"  # a \r is shown, so a token that is only \r is never an empty mark
LINE_BREAKS = ("\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")  # str.splitlines' breaks, less \r
ESCAPES = {OPEN: "[", CLOSE: "]", NEWLINE: "↵", CARRIAGE_RETURN: "↵", "\r": CARRIAGE_RETURN}


def shown(text: str) -> str:
    """Return corpus text as it is shown, on one line: line breaks as ⏎, a carriage return as ␍, and ⟦ ⟧ ⏎ ␍ of the text as [ ] ↵ ↵.

    Every break ``str.splitlines`` knows (\\n, \\x0b, \\x0c, \\x1c–\\x1e, \\x85, U+2028, U+2029) shows as ⏎, so
    marks cannot collide with the text and a context never spans two lines of a prompt.
    """
    for character, replacement in ESCAPES.items():
        text = text.replace(character, replacement)
    for character in LINE_BREAKS:
        text = text.replace(character, NEWLINE)
    return text


def display_units(tokens: Sequence[str]) -> list[range]:
    """Return the display units of a context's tokens: consecutive token index ranges covering all tokens in order.

    A token whose piece is "" belongs to the unit of the next token with a non-empty piece (the
    one that completes its character); "" tokens at the end belong to the last unit. Every other
    token is a unit of its own. In: one string per token; out: ranges of token indices.
    """
    units: list[range] = []
    start = 0
    for index, token in enumerate(tokens):
        if token:
            units.append(range(start, index + 1))
            start = index + 1
    if start < len(tokens):
        if units:
            units[-1] = range(units[-1].start, len(tokens))
        else:
            units.append(range(0, len(tokens)))
    return units


def unit_of(units: Iterable[range], position: int) -> range:
    """Return the display unit holding token ``position``; ValueError when none does."""
    for unit in units:
        if position in unit:
            return unit
    raise ValueError(f"token {position} is in no display unit")


def unit_text(tokens: Sequence[str], unit: range) -> str:
    """Return the decoded text of a display unit (not yet ``shown``)."""
    return "".join(tokens[index] for index in unit)


def display_words(context: TokenContext) -> list[tuple[str, range]]:
    """Return (word, unit) per display unit of a context: word is its shown text stripped of surrounding spaces.

    " pos" and "pos" give one word; a unit that is all whitespace keeps its shown text.
    Callers take the unit's activation as the largest over its tokens (``unit`` indexes them).
    """
    words = []
    for unit in display_units(context.tokens):
        text = shown(unit_text(context.tokens, unit))
        words.append((text.strip() or text, unit))
    return words


def normalised(activations: tuple[float, ...], max_activation: float) -> list[int]:
    """Return activations scaled to integers 0..10 by the unit's maximum (negative values count as 0)."""
    if max_activation <= 0:
        return [0 for _ in activations]
    return [max(0, min(10, round(10 * value / max_activation))) for value in activations]


def with_activations(context: TokenContext, max_activation: float) -> str:
    """Return the context as one line, every display unit where the unit fires written ⟦text⟧{n}.

    n = 0..10 is the largest activation over the display unit's tokens, scaled by ``max_activation``.
    """
    levels = normalised(context.activations, max_activation)
    pieces = []
    for unit in display_units(context.tokens):
        text, level = shown(unit_text(context.tokens, unit)), max(levels[index] for index in unit)
        pieces.append(f"{OPEN}{text}{CLOSE}{{{level}}}" if level > 0 else text)
    return "".join(pieces)


def marked_text(context: TokenContext, position: int | None = None) -> str:
    """Return the shown text of the display unit ``with_marked_target`` marks (the text between ⟦ and ⟧).

    Prompts that name the marked token (``rubric_yes_no``) quote it, so a small judge need not find
    the mark in the excerpt.
    """
    units = display_units(context.tokens)
    return shown(unit_text(context.tokens, unit_of(units, context.target if position is None else position)))


def with_marked_target(context: TokenContext, position: int | None = None) -> str:
    """Return the context as one line with one display unit written ⟦text⟧: the one holding token ``position``.

    ``position`` defaults to the context's target token; the mark covers the whole character (or
    characters) the token is part of.
    """
    units = display_units(context.tokens)
    marked = unit_of(units, context.target if position is None else position)
    texts = [shown(unit_text(context.tokens, unit)) for unit in units]
    return "".join(f"{OPEN}{text}{CLOSE}" if unit == marked else text for unit, text in zip(units, texts, strict=True))


def with_marks(context: TokenContext, positions: Iterable[int]) -> str:
    """Return the context as one line with every display unit that holds one of token ``positions`` written ⟦text⟧.

    Adjacent marked units are marked one by one (⟦a⟧⟦b⟧), as ``with_marked_target`` marks one.
    With no positions the text is unmarked (``plain_text``).
    """
    wanted = set(positions)
    units = display_units(context.tokens)
    pieces = []
    for unit in units:
        text = shown(unit_text(context.tokens, unit))
        pieces.append(f"{OPEN}{text}{CLOSE}" if wanted.intersection(unit) else text)
    return "".join(pieces)


def plain_text(context: TokenContext) -> str:
    """Return the context's shown text on one line with no marks (the detection scorer's view of a window)."""
    return with_marks(context, ())
