"""Small records passed between stages (corpus → activations → index → samples → …)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ContextSample:
    """One sampled context of a unit: a window of a corpus chunk with the unit's activations.

    ``position`` is the target token within the chunk; ``activations[i]`` belongs
    to token ``window_start + i`` of chunk ``chunk``.
    """

    unit: str
    kind: str  # "top", "interval", "nonzero" or "zero"
    chunk: int
    position: int
    window_start: int
    activations: tuple[float, ...]
    interval: int | None = None

    @property
    def value(self) -> float:
        """Return the unit's activation on the target token."""
        return self.activations[self.position - self.window_start]

    @property
    def max_activation(self) -> float:
        """Return the largest activation in the window."""
        return max(self.activations)


@dataclass(frozen=True)
class UnitStats:
    """Firing statistics of one unit over the indexed tokens."""

    unit: str
    n_tokens: int
    fire_count: int
    density: float
    negative_fraction: float
    max_activation: float
    min_activation: float
    mean_activation: float
    histogram: tuple[int, ...]


@dataclass(frozen=True)
class TokenContext:
    """A sampled context ready for prompts: decoded tokens with the unit's activation on each.

    ``target`` indexes the token the sample was drawn for (the one a rubric
    judge sees marked); ``context_id`` is stable across runs
    ("<unit>@<chunk>:<position>").
    """

    unit: str
    context_id: str
    kind: str  # "top", "interval", "nonzero" or "zero"
    chunk: int
    tokens: tuple[str, ...]
    activations: tuple[float, ...]
    target: int
    interval: int | None = None

    @property
    def target_activation(self) -> float:
        """Return the unit's activation on the target token."""
        return self.activations[self.target]


@dataclass(frozen=True)
class UnitContexts:
    """The explanation set and the held-out scoring set of one unit (disjoint by chunk)."""

    unit: str
    max_activation: float
    explain: tuple[TokenContext, ...]
    score: tuple[TokenContext, ...]


@dataclass(frozen=True)
class Explanation:
    """An explanation of one unit, or the record of why none could be had (``failure``)."""

    unit: str
    explainer: str  # "llm" or "token_stats"
    text: str | None
    backend: str
    model: str
    prompt_hash: str
    n_contexts: int
    failure: str | None = None
    raw: str | None = None


@dataclass(frozen=True)
class Judgment:
    """One rubric judgment: how well an explanation identifies the marked token of one context."""

    unit: str
    context_id: str
    context_kind: str
    activation: float
    level: int  # equal-width activation level of the target token (-1: does not fire)
    source: str  # "real", "shuffled" or "token_stats"
    explanation: str
    score: float | None  # 0..3, None when the judge's reply could not be parsed
    judge_format: str
    backend: str
    model: str
    prompt_hash: str
    rubric_hash: str
    failure: str | None = None
    raw: str | None = None


@dataclass(frozen=True)
class Simulation:
    """One simulated context: per-token predicted activations (0..10) beside the true ones."""

    unit: str
    context_id: str
    source: str  # "real", "shuffled" or "token_stats"
    explanation: str
    predicted: tuple[float, ...] | None  # None when the reply could not be parsed
    actual: tuple[float, ...]
    simulator_format: str
    backend: str
    model: str
    prompt_hash: str
    failure: str | None = None
    raw: str | None = None
