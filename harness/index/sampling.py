"""Draw each unit's explanation set and held-out scoring set from the activation index.

The two sets are disjoint by construction: every chunk of a unit is assigned to
exactly one set by a hash of (seed, unit, chunk), and a context is a window
inside one chunk, so no two windows across the sets share a token. Within a set
a chunk appears at most once.

Activation levels for stratification are equal-width intervals of (0, max]
of the unit's maximum over the indexed tokens; a sample's level comes from its
target activation.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.records import ContextSample, TokenContext, UnitContexts
from harness.subject.decoding import token_pieces


@dataclass(frozen=True)
class SamplingConfig:
    """How many contexts of each kind go to the explanation and scoring sets."""

    score_fraction: float = 0.35  # share of a unit's chunks held out for scoring
    explain_top: int = 20
    explain_per_level: int = 2
    explain_random: int = 4
    score_top: int = 4
    score_per_level: int = 2
    score_random: int = 4
    score_zero: int = 6
    levels: int = 10
    seed: int = 0


def held_out(seed: int, unit: str, chunk: int, fraction: float) -> bool:
    """Return True when ``chunk`` of ``unit`` belongs to the scoring set."""
    digest = hashlib.sha256(f"{seed}|{unit}|{chunk}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def activation_level(value: float, max_activation: float, levels: int) -> int:
    """Return the equal-width level (0..levels-1) of ``value`` in (0, max]; -1 for values <= 0."""
    if value <= 0 or max_activation <= 0:
        return -1
    return min(levels - 1, int(np.ceil(value / max_activation * levels)) - 1)


def _take(samples: list[ContextSample], count: int, used: set[int]) -> list[ContextSample]:
    chosen = []
    for sample in samples:
        if len(chosen) == count:
            break
        if sample.chunk not in used:
            chosen.append(sample)
            used.add(sample.chunk)
    return chosen


def _draw(
    samples: list[ContextSample], max_activation: float, top: int, per_level: int, random: int, zero: int, levels: int
) -> list[ContextSample]:
    used: set[int] = set()
    by_kind: dict[str, list[ContextSample]] = {}
    for sample in samples:
        by_kind.setdefault(sample.kind, []).append(sample)
    chosen = _take(by_kind.get("top", []), top, used)
    firing = by_kind.get("interval", []) + by_kind.get("nonzero", [])
    for level in range(levels):
        at_level = [s for s in firing if activation_level(s.value, max_activation, levels) == level]
        chosen += _take(at_level, per_level, used)
    chosen += _take(by_kind.get("nonzero", []), random, used)
    chosen += _take(by_kind.get("zero", []), zero, used)
    return chosen


def split_samples(
    unit: str,
    samples: list[ContextSample],
    max_activation: float,
    config: SamplingConfig,
    same_text: Callable[[ContextSample, ContextSample], bool] | None = None,
) -> tuple[list[ContextSample], list[ContextSample], int]:
    """Return (explanation samples, scoring samples, held-out samples dropped) of one unit, disjoint by chunk.

    With ``same_text``, a held-out sample whose window reads the same as a drawn explanation window
    (repeated text such as licence headers, in another chunk) is dropped from the scoring pool before the
    scoring set is drawn, so the scoring set never repeats what the explainer saw.
    """
    explain_pool = [s for s in samples if not held_out(config.seed, unit, s.chunk, config.score_fraction)]
    score_pool = [s for s in samples if held_out(config.seed, unit, s.chunk, config.score_fraction)]
    explain = _draw(explain_pool, max_activation, config.explain_top, config.explain_per_level, config.explain_random, 0, config.levels)
    dropped = 0
    if same_text is not None:
        kept = [s for s in score_pool if not any(same_text(s, e) for e in explain)]
        dropped, score_pool = len(score_pool) - len(kept), kept
    score = _draw(
        score_pool, max_activation, config.score_top, config.score_per_level, config.score_random, config.score_zero, config.levels
    )
    return explain, score, dropped


def render(sample: ContextSample, chunks: np.ndarray, tokenizer: Any, split: str = "score") -> TokenContext:
    """Return the TokenContext of a sample: one piece of text per window token, decoded from the whole window.

    The pieces join to the window's decoded text (``harness.subject.decoding.token_pieces``: a
    character split into byte tokens is carried whole by the token completing it, "" by the others).
    """
    ids = chunks[sample.chunk, sample.window_start : sample.window_start + len(sample.activations)].tolist()
    tokens = token_pieces(tokenizer, ids)
    return TokenContext(
        unit=sample.unit,
        context_id=f"{sample.unit}@{sample.chunk}:{sample.position}",
        kind=sample.kind,
        chunk=sample.chunk,
        tokens=tokens,
        activations=sample.activations,
        target=sample.position - sample.window_start,
        interval=sample.interval,
        split=split,
    )


def unit_contexts(
    unit: str, samples: list[ContextSample], max_activation: float, chunks: np.ndarray, tokenizer: Any, config: SamplingConfig
) -> UnitContexts:
    """Return the rendered explanation and scoring sets of one unit; held-out windows whose tokens equal an explanation
    window's are dropped (``UnitContexts.duplicates_dropped`` counts them)."""

    def window(sample: ContextSample) -> np.ndarray:
        return chunks[sample.chunk, sample.window_start : sample.window_start + len(sample.activations)]

    def same_text(first: ContextSample, second: ContextSample) -> bool:
        return np.array_equal(window(first), window(second))

    explain, score, dropped = split_samples(unit, samples, max_activation, config, same_text)
    return UnitContexts(
        unit=unit,
        max_activation=max_activation,
        explain=tuple(render(s, chunks, tokenizer, "explain") for s in explain),
        score=tuple(render(s, chunks, tokenizer, "score") for s in score),
        duplicates_dropped=dropped,
    )
