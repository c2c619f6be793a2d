"""Small records passed between stages (corpus → activations → index → samples → …)."""

from collections.abc import Iterable
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

    ``tokens`` holds one string per window token, joining to the window's decoded text: a
    token inside a character that a later token completes holds "" (see
    ``harness.subject.decoding.token_pieces`` and ``harness.llm.render.display_units``).
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
    split: str = "score"  # "explain" or "score": which set of its unit the context was drawn into

    @property
    def target_activation(self) -> float:
        """Return the unit's activation on the target token."""
        return self.activations[self.target]

    @property
    def key(self) -> tuple[str, str]:
        """Return what identifies the record in its file: a later record with the same key replaces it."""
        return (self.unit, self.context_id)


@dataclass(frozen=True)
class UnitContexts:
    """The explanation set and the held-out scoring set of one unit (disjoint by chunk)."""

    unit: str
    max_activation: float
    explain: tuple[TokenContext, ...]
    score: tuple[TokenContext, ...]
    duplicates_dropped: int = 0  # held-out windows dropped because their tokens equal an explanation window's


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
    contexts_sha256: str | None = None  # of the contexts the explainer saw, see contexts_digest (None: recorded before this field)

    @property
    def key(self) -> tuple[str, str]:
        """Return what identifies the record in its file: a later record with the same key replaces it."""
        return (self.unit, self.explainer)


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
    rendering: str | None = None  # version of the context rendering the judge saw (harness.llm.render.RENDERING)

    @property
    def key(self) -> tuple[str, str, str]:
        """Return what identifies the record in its file: a later record with the same key replaces it."""
        return (self.unit, self.source, self.context_id)


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
    rendering: str | None = None  # version of the context rendering the simulator saw (harness.llm.render.RENDERING)

    @property
    def key(self) -> tuple[str, str, str]:
        """Return what identifies the record in its file: a later record with the same key replaces it."""
        return (self.unit, self.source, self.context_id)


@dataclass(frozen=True)
class EvaluatedUnit:
    """A unit chosen for evaluation and what the tables need to know about it.

    ``unit_set`` is the set it was drawn from: a dictionary (``sae-2k``) or the
    neuron pool (``neurons``); ``index`` is its index in its own dictionary
    (for a neuron, within its MLP layer).
    """

    unit: str  # "sae-2k/17" or "mlp.3/917"
    unit_set: str
    kind: str  # "feature" or "neuron"
    layer: int
    index: int
    set_size: int  # features of its dictionary; for neurons, the MLP width of one layer
    density: float  # firing tokens / indexed tokens
    max_activation: float

    @property
    def key(self) -> str:
        """Return what identifies the record in its file: a later record with the same key replaces it."""
        return self.unit


@dataclass(frozen=True)
class FeatureCorrelation:
    """A feature's strongest Pearson correlation with any MLP neuron of blocks 0..L and any residual direction."""

    unit: str
    dictionary: str
    n_tokens: int
    fire_count: int  # tokens on which the feature was > 0 among those n_tokens
    max_neuron_correlation: float | None  # None when the feature is constant over the tokens
    neuron: str | None  # "mlp.L/i" attaining it
    max_residual_correlation: float | None
    residual_direction: str | None  # "resid.L/i" attaining it

    @property
    def key(self) -> str:
        """Return what identifies the record in its file: a later record with the same key replaces it."""
        return self.unit


@dataclass(frozen=True)
class NearestFeatures:
    """The features of another (larger) dictionary nearest to one feature by decoder cosine similarity."""

    unit: str
    dictionary: str
    other_dictionary: str
    nearest: tuple[str, ...]  # unit names, most similar first
    cosine: tuple[float, ...]

    @property
    def key(self) -> tuple[str, str]:
        """Return what identifies the record in its file: a later record with the same key replaces it."""
        return (self.unit, self.other_dictionary)


def contexts_digest(contexts: "Iterable[TokenContext]", rendering: str) -> str:
    """Return a sha256 of what an explanation was made from: the rendering version, then each context's id and tokens.

    ``rendering`` is the version of how contexts are shown (``harness.llm.render.RENDERING``): a
    change of it, or of the decoded token text, changes the digest, so the explanation is redone.
    """
    import hashlib
    import json

    lines = [f"rendering {rendering}"] + [json.dumps([c.context_id, list(c.tokens)], ensure_ascii=False) for c in contexts]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
