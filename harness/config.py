"""One file describes a whole evaluation: ``monoscope run CONFIG`` (YAML or TOML).

Sections and their keys (every key is optional; see ``harness/configs/default.yaml``)::

    name: my-run                 # run directory name under runs/ (default: the file's stem)
    seed: 0                      # seeds corpus split, training, index sampling, unit choice, shuffling
    model:       {name, layer, device, dtype, batch_size, store_residuals,
                  shape: {n_layers, d_model, d_mlp, n_heads, n_kv_heads, head_dim, vocab_size}}
    corpus:      {source, text_field, tokens, context_length, held_out_fraction}
    dictionaries: {train: [sizes], sparsity_coefficient, learning_rate, training_batch_size, training_buffer_tokens, epochs,
                  load: [specs]}
    index:       {batch_tokens, top_k, interval_samples, bins_per_octave, min_exponent, max_exponent, random_nonzero, random_zero,
                  window_before, window_after}
    neurons:     {enabled, pool_size, match_density}   (pool_size: neurons of blocks 0..L indexed; see harness.dictionaries.neurons)
    evaluation:  {units_per_dictionary, simulation_contexts, min_explain_contexts, explain_contexts, judge_format, simulator_format,
                  explainer_chat, scorers, intervention_multiples, intervention_prompts,
                  fuzzing_variant, output_explanations, detection_setting,
                  judges: [{backend, model, base_url, device, dtype, chat}, ...]   (several judges: the first is the primary),
                  sampling: {score_fraction, explain_top, explain_per_level, explain_random, score_top,
                             score_per_level, score_random, score_zero, levels}}
    correlation: {enabled, features, tokens}
    steering:    {enabled, prompts, multiples, tokens, positions, kl_threshold}
    explainer / judge / simulator: {backend, model, base_url, device, dtype, chat}   (device/dtype/chat: local backend only)
    llm:         {max_concurrency, prices: {MODEL: [USD per 1M input tokens, USD per 1M output tokens]}}

Unknown keys, wrong types and impossible values are reported with the section
and key before any work starts.
"""

import difflib
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from harness.errors import MonoscopeError
from harness.index.sampling import SamplingConfig
from harness.index.state import POSITION_BITS, IndexConfig
from harness.llm.client import backend_names
from harness.subject.activations import DEVICE_BATCH_TOKENS, default_forward_chunks
from harness.subject.embedded import EMBEDDED_JUDGE_NAME
from harness.subject.shape import ModelShape
from scorers.fuzzing import VARIANTS as FUZZING_VARIANTS
from scorers.rubric import RUBRIC_FORMATS
from scorers.simulation import SIMULATION_FORMATS

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"


@dataclass(frozen=True)
class FoundationConfig:
    """Settings of the foundation stages (corpus, activations, dictionaries, index)."""

    model: str = "embedded"
    layer: int | None = None  # None: the middle block
    corpus: str = "python-stdlib"
    text_field: str = "text"
    tokens: int = 262_144
    context_length: int = 64
    batch_size: int | None = None  # chunks per forward pass; None = the device's default (DEVICE_BATCH_TOKENS)
    device: str = "cpu"
    dtype: str = "float32"
    store_residuals: bool = True  # keep the residual stream on disk; False: training and indexing run the model again
    model_shape: ModelShape | None = None  # the model's widths, stated so a dry run can estimate without its config
    dictionary_sizes: tuple[int, ...] = (512, 2048, 8192)
    sparsity_coefficient: float = 2.0
    learning_rate: float = 1e-3
    training_batch_size: int = 256
    training_buffer_tokens: int = 262_144  # rows of the shuffling buffer training reads through (memory: rows × d_model × 4 bytes)
    epochs: int = 1
    held_out_fraction: float = 0.1
    seed: int = 0
    index: IndexConfig = field(default_factory=IndexConfig)
    neuron_pool_size: int = 512  # MLP neurons of blocks 0..L indexed as the neuron baseline (harness.dictionaries.neurons)
    index_batch_tokens: int | None = None  # tokens per index update and statistics batch; None = the device's default
    checkpoint_seconds: float = 60.0


def forward_batch_chunks(config: FoundationConfig) -> int:
    """Return the chunks per forward pass: ``model.batch_size``, or the device's default tokens ÷ context length."""
    if config.batch_size is not None:
        return config.batch_size
    return default_forward_chunks(config.device, config.context_length)


def index_batch_tokens(config: FoundationConfig) -> int:
    """Return the tokens per index update (and per dictionary-statistics batch): ``index.batch_tokens`` or the device's default."""
    if config.index_batch_tokens is not None:
        return config.index_batch_tokens
    return DEVICE_BATCH_TOKENS.get(config.device.split(":")[0], DEVICE_BATCH_TOKENS["cpu"])[1]


# by name: scorers.rubric, scorers.simulation, scorers.intervention, scorers.detection, scorers.fuzzing
SCORERS = ("rubric", "simulation", "intervention", "detection", "fuzzing")


@dataclass(frozen=True)
class EvaluationConfig:
    """Which units to evaluate and how contexts are sampled and scored."""

    dictionaries: tuple[str, ...] = ()  # index names in <run>/index; empty = all
    units_per_dictionary: int = 4
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    explainer_chat: bool = True  # the chat prompt, for the default instruction-tuned explainer
    judge_format: str = "yes_no"  # read from log-probabilities: the small default judge ranks, its greedy digit does not
    simulator_format: str = "yes_no_all"
    simulation_contexts: int = 6  # per unit: the simulator predicts every token of this many scoring contexts
    min_explain_contexts: int = 3  # firing explanation contexts a unit needs for an LLM explanation; fewer: failed, no call
    explain_contexts: int | None = None  # firing contexts shown to the explainer (most active first); None = 24 chat, 10 base
    scorers: tuple[str, ...] = ("rubric", "simulation")  # of SCORERS; "intervention" steers each unit (scorers.intervention)
    intervention_multiples: tuple[float, ...] = (5.0, 10.0)  # the intervention scorer's strengths, × each unit's maximum
    intervention_prompts: int | None = None  # the first N neutral prompts it steers on; None = all 20
    fuzzing_variant: str = "default"  # delphi's fuzz_type: "default" (non-firing contexts marked at random) or "active"
    detection_setting: str = "monoscope"  # or "saebench": SAEBench's autointerp procedure (scorers.saebench)
    output_explanations: bool = False  # also explain units from their outputs (harness.steering.outputs)
    seed: int = 0


@dataclass(frozen=True)
class Role:
    """Backend and model of one LLM role (explainer, judge or simulator)."""

    backend: str = "local"
    model: str = EMBEDDED_JUDGE_NAME  # the embedded Qwen2.5-Coder-1.5B-Instruct (harness.subject.embedded)
    base_url: str | None = None  # an OpenAI-compatible server (vLLM, Ollama, llama.cpp) or an API proxy
    device: str | None = None  # local backend: None = the subject model's device
    dtype: str | None = None  # local backend: None = float32 on a CPU (bf16 measured 2-4x slower there), else the subject's dtype
    chat: bool | None = None  # local backend: render messages with the model's chat template; None = when it has one


@dataclass(frozen=True)
class NeuronConfig:
    """The neuron baseline: a pool of MLP neurons of blocks 0..L indexed beside the dictionaries."""

    enabled: bool = True
    match_density: str | None = None  # a dictionary name: choose neurons whose firing density is nearest its evaluated features'


@dataclass(frozen=True)
class CorrelationConfig:
    """Feature–neuron correlation: which features and over how many tokens."""

    enabled: bool = True
    features: int | None = 300  # random alive features per dictionary; None = every feature
    tokens: int | None = None  # tokens streamed (whole chunks from the start of the corpus); None = all


@dataclass(frozen=True)
class SteeringConfig:
    """Steering examples of the evaluated units (``harness.steering``): each clamped on a few neutral prompts.

    The report's unit cards show, per unit, the smallest multiple whose mean KL(steered ‖ plain)
    reaches ``kl_threshold`` nats per token (the largest tried when none does, said so).
    """

    enabled: bool = True
    prompts: int = 2  # the first N of prompts/neutral_prompts.txt
    multiples: tuple[float, ...] = (5.0, 10.0)  # of each unit's maximum activation over the index
    tokens: int = 12  # tokens generated per continuation
    positions: str = "all"  # "all" (every position after BOS) or "new" (generated tokens only)
    kl_threshold: float = 0.5


@dataclass(frozen=True)
class ClusterConfig:
    """Where the run's passes execute: in this process, or on Ray (``harness.run.cluster``).

    With ``ray`` the index pass (the neuron pool and every dictionary) splits the corpus into
    tasks of ``chunks_per_task`` chunks run by ``workers`` actors, each holding the subject model
    and the dictionaries once; training stays in the driver on ``model.device``.
    """

    ray: bool = False
    address: str | None = None  # an existing cluster ("auto", "ray://host:10001"); None = start a local one
    workers: int | None = None  # actors; None = one per GPU on a GPU device, else CPUs ÷ threads_per_worker
    threads_per_worker: int = 1  # torch threads (and Ray CPUs) per actor on a CPU device
    chunks_per_task: int = 256  # corpus chunks per task (rounded up to whole forward batches)


@dataclass(frozen=True)
class RunConfig:
    """A whole evaluation: foundation, unit sets, scoring roles, comparisons."""

    name: str = "run"
    foundation: FoundationConfig = field(default_factory=FoundationConfig)
    load_dictionaries: tuple[str, ...] = ()  # SAELens dirs or .safetensors reading the configured layer's residual stream
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    neurons: NeuronConfig = field(default_factory=NeuronConfig)
    correlation: CorrelationConfig = field(default_factory=CorrelationConfig)
    steering: SteeringConfig = field(default_factory=SteeringConfig)
    explainer: Role = field(default_factory=Role)
    judge: Role = field(default_factory=Role)
    simulator: Role = field(default_factory=Role)
    max_concurrency: int = 4
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    judges: tuple[Role, ...] = ()  # evaluation.judges: every judge, the first being ``judge``; () = ``judge`` alone


def judge_roles(config: RunConfig) -> tuple[Role, ...]:
    """Return the run's judges, the primary (``config.judge``) first: ``evaluation.judges``, else the ``judge`` section alone."""
    return config.judges or (config.judge,)


def judge_label(role: Role) -> str:
    """Return how tables, records directories and usage name a judge: "backend/model" (with the server for a base_url)."""
    label = f"{role.backend}/{role.model}"
    return f"{label}@{role.base_url}" if role.base_url else label


_SECTIONS = (
    "name", "seed", "model", "corpus", "dictionaries", "index", "neurons", "evaluation", "correlation", "steering",
    "explainer", "judge", "simulator", "llm", "cluster",
)  # fmt: skip
_MODEL_KEYS = {
    "name": "model",
    "layer": "layer",
    "device": "device",
    "dtype": "dtype",
    "batch_size": "batch_size",
    "store_residuals": "store_residuals",
    "shape": "model_shape",
}
_CORPUS_KEYS = {
    "source": "corpus",
    "text_field": "text_field",
    "tokens": "tokens",
    "context_length": "context_length",
    "held_out_fraction": "held_out_fraction",
}
_DICTIONARY_KEYS = {
    "train": "dictionary_sizes",
    "sparsity_coefficient": "sparsity_coefficient",
    "learning_rate": "learning_rate",
    "training_batch_size": "training_batch_size",
    "training_buffer_tokens": "training_buffer_tokens",
    "epochs": "epochs",
}


_FOUNDATION_SECTIONS = (("model", _MODEL_KEYS), ("corpus", _CORPUS_KEYS), ("dictionaries", _DICTIONARY_KEYS))


def read_config_file(path: Path) -> dict[str, Any]:
    """Return the mapping in a YAML (.yaml/.yml) or TOML (.toml) file; MonoscopeError if unreadable."""
    if not path.is_file():
        raise MonoscopeError(f"config {str(path)!r} not found", "give the path of a .yaml or .toml file")
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise MonoscopeError(f"config {str(path)!r} cannot be parsed ({str(exc).splitlines()[0]})", "fix the file's syntax") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MonoscopeError(f"config {str(path)!r} is not a mapping of sections", "see harness/configs/default.yaml")
    return data


def load_config(path: Path) -> RunConfig:
    """Return the validated RunConfig of a YAML or TOML file (its name defaults to the file's stem)."""
    data = read_config_file(path)
    return config_from_mapping(data, default_name=path.stem)


def config_from_mapping(data: dict[str, Any], default_name: str = "run") -> RunConfig:
    """Return the validated RunConfig of a parsed config mapping."""
    _check_keys(data, _SECTIONS, "the config")
    seed = _typed(data.get("seed", 0), int, "seed")
    foundation: dict[str, Any] = {"seed": seed}
    for section, mapping in _FOUNDATION_SECTIONS:
        values = _section(data, section)
        _check_keys(values, tuple(mapping) + (("load",) if section == "dictionaries" else ()), f"section {section!r}")
        foundation |= {mapping[key]: value for key, value in values.items() if key in mapping}
    if foundation.get("model_shape") is not None:
        shape = foundation["model_shape"]
        if not isinstance(shape, dict):
            raise MonoscopeError("model.shape is not a mapping", f"give {', '.join(f.name for f in fields(ModelShape))}")
        missing = [f.name for f in fields(ModelShape) if f.name not in shape]
        if missing:
            raise MonoscopeError(f"model.shape lacks {', '.join(missing)}", "state every width of the model (see its config.json)")
        foundation["model_shape"] = _build(ModelShape, shape, "model.shape")
        bad = {name: value for name, value in asdict(foundation["model_shape"]).items() if value < 1}
        if bad:
            raise MonoscopeError(f"model.shape has non-positive widths: {bad}", "every width must be at least 1")
    index_section = dict(_section(data, "index"))
    if "batch_tokens" in index_section:
        foundation["index_batch_tokens"] = index_section.pop("batch_tokens")
    index = _build(IndexConfig, index_section | {"seed": seed}, "index")
    neurons = dict(_section(data, "neurons"))
    if "pool_size" in neurons:
        foundation["neuron_pool_size"] = neurons.pop("pool_size")
    labels = {field: f"{section}.{key}" for section, mapping in _FOUNDATION_SECTIONS for key, field in mapping.items()}
    labels |= {"neuron_pool_size": "neurons.pool_size", "index_batch_tokens": "index.batch_tokens"}
    foundation_config = _build(FoundationConfig, foundation | {"index": index}, "model/corpus/dictionaries", labels)
    evaluation_data = dict(_section(data, "evaluation"))
    judges = _judges(evaluation_data.pop("judges", None), "judge" in data)
    sampling = _build(SamplingConfig, dict(evaluation_data.pop("sampling", None) or {}) | {"seed": seed}, "evaluation.sampling")
    evaluation = _build(EvaluationConfig, evaluation_data | {"sampling": sampling, "seed": seed}, "evaluation")
    llm = _section(data, "llm")
    _check_keys(llm, ("max_concurrency", "prices"), "section 'llm'")
    config = RunConfig(
        name=_typed(data.get("name", default_name), str, "name"),
        foundation=foundation_config,
        load_dictionaries=tuple(_typed(spec, str, "dictionaries.load[]") for spec in _section(data, "dictionaries").get("load") or ()),
        evaluation=evaluation,
        neurons=_build(NeuronConfig, neurons, "neurons"),
        correlation=_build(CorrelationConfig, _section(data, "correlation"), "correlation"),
        steering=_build(SteeringConfig, _section(data, "steering"), "steering"),
        explainer=_build(Role, _section(data, "explainer"), "explainer"),
        judge=judges[0] if judges else _build(Role, _section(data, "judge"), "judge"),
        simulator=_build(Role, _section(data, "simulator"), "simulator"),
        max_concurrency=_typed(llm.get("max_concurrency", 4), int, "llm.max_concurrency"),
        prices=_prices(llm.get("prices") or {}),
        cluster=_build(ClusterConfig, _section(data, "cluster"), "cluster"),
        judges=judges,
    )
    check_config(config)
    return config


def check_saebench_setting(config: RunConfig) -> None:
    """Raise MonoscopeError unless the index and corpus hold what SAEBench's autointerp procedure reads (``scorers.saebench``):
    128-token chunks, 21-token windows centred on their token, 12 spaced top samples and enough weighted ones."""
    index, needs = config.foundation.index, []
    if config.foundation.context_length != 128:
        needs.append("corpus.context_length: 128")
    if (index.window_before, index.window_after) != (10, 10):
        needs.append("index.window_before: 10 and window_after: 10")
    if index.spaced_top < 12:
        needs.append("index.spaced_top: 12 or more")
    if index.weighted < 19:
        needs.append("index.weighted: 19 or more (7 draws below the top, which can hold 12)")
    if "detection" not in config.evaluation.scorers:
        needs.append("detection in evaluation.scorers")
    if needs:
        raise MonoscopeError(
            "evaluation.detection_setting saebench needs " + "; ".join(needs), "set them (harness/configs/saebench.yaml does)"
        )


def on_ray(config: RunConfig, address: str | None = None) -> RunConfig:
    """Return ``config`` run on Ray (``monoscope run --ray [ADDRESS]``): at ``address``, else the config's own or a new local cluster."""
    return replace(config, cluster=replace(config.cluster, ray=True, address=address or config.cluster.address))


def check_config(config: RunConfig) -> None:
    """Raise MonoscopeError for values no run can use (checked before any work starts)."""
    foundation, evaluation = config.foundation, config.evaluation
    positive = {
        "corpus.tokens": foundation.tokens,
        "corpus.context_length": foundation.context_length,
        "model.batch_size": forward_batch_chunks(foundation),
        "index.batch_tokens": index_batch_tokens(foundation),
        "dictionaries.training_batch_size": foundation.training_batch_size,
        "dictionaries.training_buffer_tokens": foundation.training_buffer_tokens,
        "dictionaries.epochs": foundation.epochs,
        "evaluation.units_per_dictionary": evaluation.units_per_dictionary,
        "evaluation.simulation_contexts": evaluation.simulation_contexts,
        "evaluation.min_explain_contexts": evaluation.min_explain_contexts,
        "evaluation.intervention_prompts": evaluation.intervention_prompts if evaluation.intervention_prompts is not None else 1,
        "neurons.pool_size": foundation.neuron_pool_size,
        "llm.max_concurrency": config.max_concurrency,
        "cluster.threads_per_worker": config.cluster.threads_per_worker,
        "cluster.chunks_per_task": config.cluster.chunks_per_task,
        "cluster.workers": config.cluster.workers if config.cluster.workers is not None else 1,
    }
    for key, value in positive.items():
        if value < 1:
            raise MonoscopeError(f"{key} is {value}", "it must be at least 1")
    if evaluation.explain_contexts is not None and evaluation.explain_contexts < evaluation.min_explain_contexts:
        raise MonoscopeError(
            f"evaluation.explain_contexts {evaluation.explain_contexts} is below evaluation.min_explain_contexts "
            f"{evaluation.min_explain_contexts}: no unit could be explained",
            "raise explain_contexts (or null for the explainer's default) or lower min_explain_contexts",
        )
    if foundation.context_length < foundation.index.window:
        raise MonoscopeError(
            f"corpus.context_length {foundation.context_length} is shorter than the index window ({foundation.index.window} tokens)",
            "raise context_length or shrink index.window_before / window_after",
        )
    if foundation.context_length > 2**POSITION_BITS:
        raise MonoscopeError(
            f"corpus.context_length {foundation.context_length} exceeds the index's limit of {2**POSITION_BITS} tokens per chunk",
            f"use chunks of at most {2**POSITION_BITS} tokens",
        )
    if any(size < 1 for size in foundation.dictionary_sizes):
        raise MonoscopeError(f"dictionaries.train has a size below 1: {list(foundation.dictionary_sizes)}", "sizes must be positive")
    if not 0 < foundation.held_out_fraction < 1:
        raise MonoscopeError(f"corpus.held_out_fraction is {foundation.held_out_fraction}", "it must be between 0 and 1")
    if foundation.sparsity_coefficient < 0:
        raise MonoscopeError("dictionaries.sparsity_coefficient is negative", "use a value >= 0")
    if not foundation.dictionary_sizes and not config.load_dictionaries:
        raise MonoscopeError("the config names no dictionary", "list sizes under dictionaries.train or paths under dictionaries.load")
    if evaluation.judge_format not in RUBRIC_FORMATS:
        raise MonoscopeError(f"unknown evaluation.judge_format {evaluation.judge_format!r}", f"choose one of {', '.join(RUBRIC_FORMATS)}")
    if evaluation.simulator_format not in SIMULATION_FORMATS:
        raise MonoscopeError(
            f"unknown evaluation.simulator_format {evaluation.simulator_format!r}", f"choose one of {', '.join(SIMULATION_FORMATS)}"
        )
    for name in ("features", "tokens"):
        value = getattr(config.correlation, name)
        if value is not None and value < 1:
            raise MonoscopeError(f"correlation.{name} is {value}", "give a positive number, or null for all")
    unknown = [name for name in evaluation.scorers if name not in SCORERS]
    if unknown or not evaluation.scorers or len(set(evaluation.scorers)) != len(evaluation.scorers):
        guesses = [f"{name!r} → {close[0]!r}" for name in unknown if (close := difflib.get_close_matches(str(name), SCORERS, n=1))]
        hint = f" (did you mean {', '.join(guesses)}?)" if guesses else ""
        choices = f"list one or more of {', '.join(SCORERS)}, each once{hint}"
        raise MonoscopeError(f"evaluation.scorers is {list(evaluation.scorers)}", choices)
    if evaluation.fuzzing_variant not in FUZZING_VARIANTS:
        raise MonoscopeError(
            f"unknown evaluation.fuzzing_variant {evaluation.fuzzing_variant!r}",
            f"choose one of {', '.join(FUZZING_VARIANTS)} (delphi's fuzz_type)",
        )
    if evaluation.fuzzing_variant != "default" and "fuzzing" not in evaluation.scorers:
        raise MonoscopeError(
            f"evaluation.fuzzing_variant is {evaluation.fuzzing_variant!r} but fuzzing is not in evaluation.scorers",
            "add fuzzing to evaluation.scorers, or drop fuzzing_variant",
        )
    if evaluation.detection_setting not in ("monoscope", "saebench"):
        raise MonoscopeError(f"unknown evaluation.detection_setting {evaluation.detection_setting!r}", "choose monoscope or saebench")
    if evaluation.detection_setting == "saebench":
        check_saebench_setting(config)
    if evaluation.output_explanations and not {"detection", "intervention"} & set(evaluation.scorers):
        raise MonoscopeError(
            "evaluation.output_explanations is on but nothing would score them", "add detection or intervention to evaluation.scorers"
        )
    if "intervention" in evaluation.scorers and not evaluation.intervention_multiples:
        raise MonoscopeError("evaluation.intervention_multiples is empty", "give at least one strength, e.g. [5, 10]")
    steering = config.steering
    if steering.enabled:
        from harness.steering.clamp import POSITIONS

        if not 1 <= steering.prompts <= 20 or steering.tokens < 1 or not steering.multiples:
            raise MonoscopeError(
                f"steering: prompts {steering.prompts}, tokens {steering.tokens}, multiples {list(steering.multiples)}",
                "use 1..20 prompts (the bundled neutral prompts), at least 1 token and at least one multiple",
            )
        if steering.positions not in POSITIONS:
            raise MonoscopeError(f"steering.positions is {steering.positions!r}", f"choose one of {', '.join(POSITIONS)}")
    roles = [(name, getattr(config, name)) for name in ("explainer", "judge", "simulator")]
    roles += [(f"evaluation.judges[{i}]", role) for i, role in enumerate(config.judges)]
    for role_name, role in roles:
        if role.backend not in backend_names():
            raise MonoscopeError(f"{role_name}.backend {role.backend!r} is not known", f"choose one of {', '.join(backend_names())}")


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise MonoscopeError(f"section {name!r} of the config is not a mapping", f"write {name}: followed by indented keys")
    return value


def _check_keys(values: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in values:
        if key not in known:
            raise MonoscopeError(f"unknown key {key!r} in {where}", f"known keys: {', '.join(known)}")


def _typed(value: Any, kind: Any, key: str) -> Any:
    """Return ``value`` converted to ``kind`` (an annotation), or raise naming the key."""
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _typed(value, option, key)
            except MonoscopeError:
                continue
        raise MonoscopeError(f"{key} has the wrong type ({value!r})", f"expected {kind}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise MonoscopeError(f"{key} should be a list, not {value!r}", "write it as [a, b, ...]")
        item = typing.get_args(kind)[0]
        return tuple(_typed(element, item, f"{key}[]") for element in value)
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind in (int, str, bool) and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is Any:
        return value
    raise MonoscopeError(f"{key} has the wrong type ({value!r})", f"expected {getattr(kind, '__name__', kind)}")


def _build(cls: type, values: dict[str, Any], where: str, labels: dict[str, str] | None = None) -> Any:
    """Return ``cls(**values)`` with every value checked against the field's annotation (errors name ``labels[field]``)."""
    hints = typing.get_type_hints(cls)
    names = tuple(f.name for f in fields(cls))
    _check_keys(values, names, f"section {where!r}")
    checked = {}
    for key, value in values.items():
        kind = hints[key]
        label = (labels or {}).get(key, f"{where}.{key}")
        checked[key] = value if isinstance(value, IndexConfig | SamplingConfig | ModelShape) else _typed(value, kind, label)
    return cls(**checked)


def _judges(values: Any, judge_section: bool) -> tuple[Role, ...]:
    """Return the roles of ``evaluation.judges`` (() when absent); MonoscopeError for a malformed or ambiguous list."""
    if values is None:
        return ()
    if values == []:
        raise MonoscopeError("evaluation.judges is an empty list", "list at least one judge, the primary first, or drop evaluation.judges")
    if not isinstance(values, list) or not all(isinstance(item, dict) for item in values):
        raise MonoscopeError(
            "evaluation.judges is not a list of judges", "give a list of {backend, model, ...} mappings, the primary first"
        )
    if judge_section:
        raise MonoscopeError("the config has both a judge section and evaluation.judges", "list every judge in evaluation.judges only")
    roles = tuple(_build(Role, item, f"evaluation.judges[{i}]") for i, item in enumerate(values))
    for i, item in enumerate(values):
        missing = [key for key in ("backend", "model") if not item.get(key)]
        if missing:
            raise MonoscopeError(
                f"evaluation.judges[{i}] has no {' or '.join(missing)}",
                "give every judge its backend and model, e.g. {backend: openai, model: gpt-4o-mini}",
            )
    labels = [judge_label(role) for role in roles]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise MonoscopeError(f"evaluation.judges lists {', '.join(repeated)} more than once", "list each judge once")
    return roles


def _prices(values: Any) -> dict[str, tuple[float, float]]:
    if not isinstance(values, dict):
        raise MonoscopeError("llm.prices is not a mapping", "write llm.prices as {model: [input USD/1M, output USD/1M]}")
    prices = {}
    for model, pair in values.items():
        pair = _typed(pair, tuple[float, ...], f"llm.prices.{model}")
        if len(pair) != 2 or min(pair) < 0:
            raise MonoscopeError(f"llm.prices.{model} is {list(pair)}", "give two non-negative numbers: input and output USD per 1M tokens")
        prices[str(model)] = (pair[0], pair[1])
    return prices
