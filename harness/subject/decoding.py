"""Token ids → the text each token contributes, decoded from the whole window so that characters stay whole.

A tokenizer with byte fallback (Gemma, Llama) spells a character it has no piece for as
byte tokens (``<0xF0>`` ``<0x9D>`` ``<0x94>`` ``<0x98>`` = "𝔘"); decoding those tokens one
at a time gives U+FFFD for each. ``token_pieces`` instead returns one string per token
whose concatenation is the text of the window: the token that completes a character
carries it, the tokens before it in the same character carry "" (the renderer groups
them, ``harness.llm.render.display_units``).
"""

from collections.abc import Sequence
from typing import Any

REPLACEMENT = "\ufffd"  # what a decoder writes for bytes that are not a whole UTF-8 character
MAX_CHARACTER_TOKENS = 8  # tokens searched for the end of one character (a UTF-8 character has at most 4 bytes)


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> tuple[str, ...]:
    """Return one string per token id: the text it contributes to the decoded window.

    In: a tokenizer with ``decode(list[int]) -> str``, and the token ids of one window.
    Out: ``len(ids)`` strings; their concatenation is ``tokenizer.decode(ids)`` (special
    tokens written as the tokenizer writes them, e.g. ``<eos>``), except where the window's
    edge cuts a character (below).

    Rules:
    - a token that decodes on its own to text without U+FFFD is its own piece;
    - consecutive tokens whose own decodings hold U+FFFD (byte tokens, or byte-level BPE
      tokens ending inside a character) are merged with their successors, up to
      ``MAX_CHARACTER_TOKENS``, into the shortest run that decodes without U+FFFD; the last
      token of the run carries the run's text and the others carry "";
    - a token that no such run starts from stays undecodable and keeps its own decoding:
      a character cut by the window's start or end (its bytes outside the window) shows
      as U+FFFD, one per such token with a byte-fallback tokenizer, and so does a literal
      U+FFFD of the corpus text. (With a byte-level BPE tokenizer, a token holding both
      the last bytes of a cut character and the first of the next shows both as U+FFFD.)

    The text of a run of decodable tokens is that of the tokens decoded together (so a
    tokenizer's in-context behaviour, e.g. spaces, is kept); a piece boundary falls only
    where the decoded prefix is a prefix of that text, else the tokens before it carry ""
    and join the next piece's display unit.
    """
    if not ids:
        return ()
    ids = [int(token) for token in ids]
    singles = [tokenizer.decode([token]) for token in ids]
    if not any(REPLACEMENT in piece for piece in singles) and "".join(singles) == tokenizer.decode(ids):
        return tuple(singles)  # every token is whole text on its own: nothing to merge
    groups = _character_groups(tokenizer, ids, singles)
    pieces = [""] * len(ids)
    segment: list[tuple[int, int]] = []  # consecutive decodable groups, decoded together
    for start, end, decodable in groups:
        if decodable:
            segment.append((start, end))
            continue
        _decode_segment(tokenizer, ids, segment, pieces)
        segment = []
        pieces[start] = singles[start]
    _decode_segment(tokenizer, ids, segment, pieces)
    return tuple(pieces)


def _character_groups(tokenizer: Any, ids: list[int], singles: list[str]) -> list[tuple[int, int, bool]]:
    """Return (start, end, decodable) token spans covering ``ids`` in order: whole tokens alone, split characters merged."""
    groups = []
    start = 0
    while start < len(ids):
        if REPLACEMENT not in singles[start]:
            groups.append((start, start + 1, True))
            start += 1
            continue
        limit = min(len(ids), start + MAX_CHARACTER_TOKENS)
        end = next(
            (e for e in range(start + 1, limit + 1) if REPLACEMENT not in tokenizer.decode(ids[start:e])),
            None,
        )
        if end is None:
            groups.append((start, start + 1, False))
            start += 1
        else:
            groups.append((start, end, True))
            start = end
    return groups


def _decode_segment(tokenizer: Any, ids: list[int], groups: list[tuple[int, int]], pieces: list[str]) -> None:
    """Write into ``pieces`` the text of consecutive decodable ``groups``, decoded together, split at group ends."""
    if not groups:
        return
    first, last = groups[0][0], groups[-1][1]
    text = tokenizer.decode(ids[first:last])
    offset = 0
    for _start, end in groups[:-1]:  # the tokens of a group but its last, and of a group not cut off, keep ""
        prefix = tokenizer.decode(ids[first:end])
        if text.startswith(prefix) and len(prefix) >= offset:  # a clean cut: the prefix reads as the start of the text
            pieces[end - 1] = text[offset : len(prefix)]
            offset = len(prefix)
    pieces[last - 1] = text[offset:]


def single_token_strings(tokenizer: Any, ids: Sequence[int]) -> tuple[str, ...]:
    """Return each token decoded on its own, as TransformerLens' ``to_str_tokens`` (and so SAEBench) shows tokens.

    In: a tokenizer with ``decode(list[int], clean_up_tokenization_spaces=...)``; out: ``len(ids)`` strings. A byte token
    of a character split over several tokens decodes to U+FFFD here (SAEBench then drops it), unlike ``token_pieces``.
    """
    return tuple(tokenizer.decode([int(token)], clean_up_tokenization_spaces=False) for token in ids)
