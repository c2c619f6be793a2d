"""The documented Python function behind every ``monoscope`` verb; ``harness.cli`` is a thin click layer over them.

Use them from a notebook as the CLI does (``log`` receives the progress lines)::

    monoscope run CONFIG        run_evaluation(load_config(path), run_dir, dry_run=, max_cost=)
    monoscope run --ray [ADDR]  run_evaluation(on_ray(load_config(path), address), ...)
    monoscope demo              run_demo(run_dir, tokens=)
    monoscope compare CONFIG    compare_features_and_neurons(config, run_dir, dictionary, units, match_density)
    monoscope correlate CONFIG  correlate(config, run_dir, features, tokens)
    monoscope report RUN        report(run_dir)
    monoscope explain RUN       explain_command(run_dir, EvaluationConfig, Role)
    monoscope score RUN         score_command(run_dir, EvaluationConfig, judge Role, simulator Role)
    monoscope train             train_command(run_dir, out, **options)
    monoscope index             index_command(run_dir, specs, chunk_range, **options)
    monoscope merge-index       merge_command(out, shards)
    monoscope show-unit         show_unit_command(index_path, unit, corpus_file, model, limit)

Every function raises ``MonoscopeError`` (one line: the problem and the fix) on bad input, before
any model is loaded. ``run_evaluation`` itself lives with the stages it sequences
(``harness.run.runner``).
"""

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.config import (
    DEFAULT_CONFIG,
    EvaluationConfig,
    FoundationConfig,
    Role,
    RunConfig,
    forward_batch_chunks,
    index_batch_tokens,
    load_config,
    on_ray,
)
from harness.dictionaries.formats import STATS_FILE, resolve_dictionary, save_saelens_directory
from harness.dictionaries.training import TrainingConfig, dictionary_stats, train_dictionary
from harness.errors import MonoscopeError
from harness.index.builder import IndexBuilder
from harness.index.sampling import SamplingConfig
from harness.index.sampling import render as render_context
from harness.index.state import IndexConfig, check_context_length, merge_indexes
from harness.index.store import is_partial_index, load_index, save_index, unit_samples, unit_stats
from harness.llm.render import with_marked_target
from harness.progress import Progress
from harness.records import ContextSample, EvaluatedUnit, FeatureCorrelation, Judgment, Simulation, UnitStats
from harness.run.comparisons import correlation_stage
from harness.run.directory import prepare_run_directory, record_usage, update_manifest
from harness.run.evaluate import (
    EXPLANATIONS,
    JUDGMENTS,
    SIMULATIONS,
    explain_stage,
    load_unit_contexts,
    make_client,
    run_tokenizer,
    score_stage,
)
from harness.run.foundation import (
    build_foundation,
    collect_foundation_activations,
    corpus_settings,
    prepare_corpus,
    residual_source,
    split_chunks,
    training_order,
)
from harness.run.reporting import results_stage
from harness.run.runner import check_same_foundation, preflight, run_evaluation
from harness.storage import atomic_write_json
from harness.subject.activations import stream_activations
from harness.subject.corpus import check_corpus_reuse, check_corpus_spec, fingerprint, load_chunks
from harness.subject.embedded import check_embedded_installed
from harness.subject.model import check_context_fits, check_device, load_subject_model, model_shape
from results.store import read_records
from results.summary import control_summary, unit_scores
from scorers.rubric import RUBRIC_FORMATS
from scorers.simulation import SIMULATION_FORMATS

__all__ = [
    "EvaluationConfig",
    "Role",
    "SamplingConfig",
    "load_config",
    "on_ray",
    "run_evaluation",
    "run_demo",
    "compare_features_and_neurons",
    "correlate",
    "report",
    "explain_command",
    "score_command",
    "train_command",
    "index_command",
    "merge_command",
    "show_unit_command",
]


def run_demo(run_dir: Path = Path("runs/demo"), tokens: int | None = None, log: Progress = print) -> dict[str, Any]:
    """Run the bundled default config (embedded model, corpus, three dictionaries, neurons) and return its summary."""
    config = load_config(DEFAULT_CONFIG)
    if tokens is not None:
        config = replace(config, foundation=replace(config.foundation, tokens=tokens))
    return run_evaluation(config, run_dir, log=log)


def compare_features_and_neurons(
    config: RunConfig,
    run_dir: Path | None = None,
    dictionary: str | None = None,
    units: int | None = None,
    match_density: bool = False,
    log: Progress = print,
) -> list[dict[str, Any]]:
    """Evaluate ``units`` random alive features of ``dictionary`` (default: every dictionary) and as many neurons;
    return the features-vs-neurons rows (means, Mann–Whitney U, bootstrap 95% interval of the difference) per scorer."""
    evaluation = config.evaluation
    if dictionary is not None:
        evaluation = replace(evaluation, dictionaries=(dictionary,))
    if units is not None:
        evaluation = replace(evaluation, units_per_dictionary=units)
    neurons = replace(config.neurons, enabled=True, match_density=dictionary if match_density else None)
    if match_density and dictionary is None:
        raise MonoscopeError("--match-density needs --dictionary", "name the dictionary whose features the neurons should match")
    summary = run_evaluation(replace(config, evaluation=evaluation, neurons=neurons), run_dir, log=log)
    rows = summary.get("compare", [])
    for row in rows:
        log(_compare_line(row))
    return rows


def _compare_line(row: dict[str, Any]) -> str:
    def number(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    interval = "n/a" if row.get("ci_low") is None else f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
    return (
        f"compare: {row.get('feature_set')} vs neurons, {row.get('metric')}: features {number(row.get('feature_mean'))} "
        f"(n={row.get('n_features')}), neurons {number(row.get('neuron_mean'))} (n={row.get('n_neurons')}), "
        f"difference {number(row.get('difference'))} 95% CI {interval}, Mann–Whitney p {number(row.get('p_value'))}"
    )


def correlate(
    config: RunConfig, run_dir: Path | None = None, features: int | None = -1, tokens: int | None = -1, log: Progress = print
) -> Path:
    """Compute the feature–neuron correlations of the config's dictionaries; return the path of correlations.jsonl.

    ``features``/``tokens`` override the config (None = all); -1 keeps the config's value.
    """
    settings = config.correlation
    settings = replace(
        settings,
        enabled=True,
        features=settings.features if features == -1 else features,
        tokens=settings.tokens if tokens == -1 else tokens,
    )
    config = replace(config, correlation=settings)
    run_dir = run_dir or Path("runs") / config.name
    preflight(config, None)
    prepare_run_directory(run_dir)
    check_same_foundation(run_dir, config)
    subject, chunks, dictionaries = build_foundation(run_dir, config, log)
    evaluated = read_records(run_dir / "units.jsonl", EvaluatedUnit)
    correlation_stage(run_dir, config, subject, chunks, dictionaries, evaluated, log)
    from results.tables import correlation_summary

    table = correlation_summary(read_records(run_dir / "correlations.jsonl", FeatureCorrelation))
    for row in table.to_dict("records"):
        log(
            f"correlate: {row['dictionary']}: {row['n_defined']} features; max correlation with a neuron ≤ 0.3 for "
            f"{row['fraction_at_most_threshold']:.1%}; median {row['median_max_correlation']:.3f}"
        )
    return run_dir / "correlations.jsonl"


def report(run_dir: Path, log: Progress = print) -> dict[str, Any]:
    """Rewrite the tables, plots, HTML report and SAEBench summary of a run from its records; return the summary."""
    if not (run_dir / "units.jsonl").exists():
        raise MonoscopeError(f"{str(run_dir)!r} has no evaluated units", "run 'monoscope run CONFIG' (or 'monoscope demo') first")
    return results_stage(run_dir, log)


def explain_command(run_dir: Path, config: EvaluationConfig, explainer: Role, log: Progress = print, shared_subject: Any = None) -> dict:
    """Explain the selected units of a run; return usage by stage."""
    check_run(run_dir, config, [explainer])
    client = make_client(explainer, run_dir, shared_subject)
    units = load_unit_contexts(run_dir, config, run_tokenizer(run_dir, shared_subject))
    explanations = explain_stage(run_dir, units, client, config)
    failed = [unit for unit, record in explanations.items() if record.text is None]
    explained = len(explanations) - len(failed)
    log(f"explain: {explained} of {len(explanations)} units explained ({client.backend_calls} backend calls) → {run_dir / EXPLANATIONS}")
    update_manifest(run_dir, roles={"explainer": explainer.__dict__})
    record_usage(run_dir, {"explain": client.usage_by_stage()})
    return {"backend_calls": client.backend_calls, "failed": failed}


def score_command(
    run_dir: Path, config: EvaluationConfig, judge: Role, simulator: Role, log: Progress = print, shared_subject: Any = None
) -> dict:
    """Score the explained units of a run with the rubric and the simulator; return the control summary."""
    check_run(run_dir, config, [judge, simulator])
    judge_client = make_client(judge, run_dir, shared_subject)
    simulator_client = judge_client if simulator == judge else make_client(simulator, run_dir, shared_subject)
    units = load_unit_contexts(run_dir, config, run_tokenizer(run_dir, shared_subject))
    spellings = score_stage(run_dir, units, judge_client, simulator_client, config)
    if spellings:
        update_manifest(run_dir, answer_spelling={role: spelling.record() for role, spelling in spellings.items()})
    scores = unit_scores(read_records(run_dir / JUDGMENTS, Judgment), read_records(run_dir / SIMULATIONS, Simulation))
    summary = {
        "rubric": {control: control_summary(scores, "rubric", control) for control in ("shuffled", "token_stats")},
        "simulation_pearson": {control: control_summary(scores, "pearson", control) for control in ("shuffled", "token_stats")},
        "backend_calls": judge_client.backend_calls + (0 if simulator_client is judge_client else simulator_client.backend_calls),
    }
    update_manifest(
        run_dir,
        roles={
            "judge": judge.__dict__,
            "simulator": simulator.__dict__,
            "judge_format": config.judge_format,
            "simulator_format": config.simulator_format,
        },
        score_summary=summary,
    )
    for metric in ("rubric", "simulation_pearson"):
        for control in ("shuffled", "token_stats"):
            row = summary[metric][control]
            if row["n_units"] == 0:
                log(f"score: {metric}: no unit has both a real and a {control} score")
                continue
            interval = f"[{row['ci95'][0]:+.3f}, {row['ci95'][1]:+.3f}]" if row["ci95"] else "(one unit: no interval)"
            log(
                f"score: {metric}: real {row['real']:.3f}, {control} {row['control_mean']:.3f}, "
                f"difference {row['difference']:+.3f} 95% CI {interval} over {row['n_units']} units"
            )
    return summary


def check_run(run_dir: Path, config: EvaluationConfig | None = None, roles: list[Role] | None = None) -> None:
    """Fail early (before any model is loaded) when ``run_dir`` holds no corpus or index, ``config`` asks for
    an index the run lacks, an unknown judge or simulator format, or no units, or a local role's embedded
    model lacks a weights part."""
    if not (run_dir / "corpus.npy").exists() or not list((run_dir / "index").glob("*.safetensors")):
        raise MonoscopeError(f"{str(run_dir)!r} has no corpus and index", "run 'monoscope demo' or 'monoscope index' first")
    if config is None:
        return
    if config.units_per_dictionary < 1:
        raise MonoscopeError(f"--units is {config.units_per_dictionary}", "evaluate at least one unit per dictionary")
    missing = [name for name in config.dictionaries if not (run_dir / "index" / f"{name}.safetensors").exists()]
    if missing:
        present = sorted(p.stem for p in (run_dir / "index").glob("*.safetensors") if not is_partial_index(p))
        raise MonoscopeError(f"{str(run_dir)!r} has no index named {', '.join(missing)}", f"choose among {', '.join(present)}")
    if config.judge_format not in RUBRIC_FORMATS:
        raise MonoscopeError(f"unknown judge format {config.judge_format!r}", f"choose one of {', '.join(RUBRIC_FORMATS)}")
    if config.simulator_format not in SIMULATION_FORMATS:
        raise MonoscopeError(f"unknown simulator format {config.simulator_format!r}", f"choose one of {', '.join(SIMULATION_FORMATS)}")
    for role in roles or []:
        if role.backend == "local":
            check_embedded_installed(role.model)


def train_command(run_dir: Path, out: Path, log: Progress = print, **options: Any) -> None:
    """Train one dictionary on the residual stream of the run's corpus and save it to ``out``."""
    if options["d_sae"] < 1 or options["sparsity_coefficient"] < 0:
        raise MonoscopeError("--d-sae must be positive and --sparsity non-negative", "fix the values")
    check_corpus_spec(options["corpus"])
    n_layers, _d_model, _d_mlp = model_shape(options["model"])
    config = foundation_config(options)
    layer = config.layer if config.layer is not None else n_layers // 2
    if not 0 <= layer < n_layers:
        raise MonoscopeError(f"layer {layer} is out of range", f"the model has blocks 0..{n_layers - 1}")
    check_foundation_inputs(run_dir, config)
    prepare_run_directory(run_dir)
    subject = load_subject_model(config.model, config.device, config.dtype)
    chunks = prepare_corpus(run_dir, subject, config, log)
    store = collect_foundation_activations(run_dir, subject, chunks, config, log)
    train_ids, held_ids = split_chunks(chunks.shape[0], config.held_out_fraction)
    T = chunks.shape[1]
    recipe = TrainingConfig(
        d_sae=options["d_sae"],
        sparsity_coefficient=options["sparsity_coefficient"],
        epochs=options["epochs"],
        seed=config.seed,
        batch_size=config.training_batch_size,
        buffer_tokens=config.training_buffer_tokens,
    )
    name = out.name
    dictionary = train_dictionary(
        residual_source(subject, chunks, training_order(train_ids, config.training_buffer_tokens, T, config.seed), store, config),
        recipe,
        name,
        f"blocks.{layer}.hook_resid_post",
        device=config.device,
        checkpoint=out.parent / f"{name}.training.pt",
        checkpoint_seconds=config.checkpoint_seconds,
    )
    held_out = residual_source(subject, chunks, held_ids, store, config)
    stats = dictionary_stats(dictionary, held_out, index_batch_tokens(config), config.device)
    save_saelens_directory(dictionary, out, {"monoscope_training": asdict(recipe)})
    atomic_write_json(out / STATS_FILE, asdict(stats) | {"d_sae": recipe.d_sae, "evaluated_on": "held-out chunks"})
    log(f"{name}: L0 {stats.l0:.1f}, variance explained {stats.variance_explained:.3f}, dead fraction {stats.dead_fraction:.3f}")


def index_command(
    run_dir: Path, specs: list[str], chunk_range: tuple[int, int] | None = None, log: Progress = print, **options: Any
) -> list[Path]:
    """Build (or resume) the indexes of ``specs`` over the run's corpus; return the index paths.

    ``chunk_range`` (start, end) indexes only chunks start..end-1 into ``index/<name>.chunks-<start>-<end>.safetensors``,
    a partial index that ``merge_command`` combines with the others (processes or machines need no lock or wait).
    """
    check_corpus_spec(options["corpus"])
    n_layers, d_model, d_mlp = model_shape(options["model"])
    dictionaries = [resolve_dictionary(spec, n_layers, d_model, d_mlp, options.get("hook")) for spec in specs]
    names = [dictionary.name for dictionary in dictionaries]
    if len(set(names)) != len(names):
        raise MonoscopeError(f"two dictionaries share a name: {names}", "give each dictionary a distinct directory name")
    config = foundation_config(options)
    check_foundation_inputs(run_dir, config)
    prepare_run_directory(run_dir)
    subject = load_subject_model(config.model, config.device, config.dtype)
    chunks = prepare_corpus(run_dir, subject, config, log)
    if chunk_range is not None and chunk_range[1] > chunks.shape[0]:
        raise MonoscopeError(f"chunk range {chunk_range[0]}:{chunk_range[1]} is out of range", f"the corpus has {chunks.shape[0]} chunks")
    suffix = "" if chunk_range is None else f".chunks-{chunk_range[0]}-{chunk_range[1]}"
    about = {"corpus_fingerprint": fingerprint(chunks), "model": subject.name}
    builders = [
        IndexBuilder(run_dir / "index" / f"{d.name}{suffix}.safetensors", d, config.index, chunks.shape[1], about, config.device)
        for d in dictionaries
    ]
    wanted = list(range(*chunk_range)) if chunk_range is not None else list(range(chunks.shape[0]))
    done_sets = [builder.done_chunks() for builder in builders]
    todo = [chunk for chunk in wanted if any(chunk not in done for done in done_sets)]
    hooks = sorted({d.hook_name for d in dictionaries})
    log(f"index: {len(todo)} of {len(wanted)} chunks to process for {', '.join(names)}")
    chunks_run = list(chunk_range) if chunk_range else None
    update_manifest(run_dir, index={"dictionaries": specs, "chunks": chunks_run, "config": asdict(config.index)})
    last_save = time.perf_counter()
    for batch in stream_activations(subject, chunks, hooks, todo, forward_batch_chunks(config)):
        for builder, done in zip(builders, done_sets, strict=True):
            fresh = [row for row, chunk in enumerate(batch.chunk_ids.tolist()) if chunk not in done]
            if fresh:
                rows = torch.tensor(fresh, device=batch.chunk_ids.device)
                builder.add(batch.activations[builder.dictionary.hook_name][rows], batch.chunk_ids[rows])
        if time.perf_counter() - last_save > config.checkpoint_seconds:
            for builder in builders:
                builder.save()
            last_save = time.perf_counter()
    for builder in builders:
        builder.save()
    return [builder.path for builder in builders]


def check_foundation_inputs(run_dir: Path, config: FoundationConfig) -> None:
    """Refuse, before any model loads or file is written: chunks the index or model cannot take, a stored corpus of other settings."""
    check_context_length(config.context_length, config.index)
    check_context_fits(config.model, config.context_length)
    check_device(config.device)
    check_corpus_reuse(run_dir / "corpus", corpus_settings(config))


def foundation_config(options: dict[str, Any]) -> FoundationConfig:
    """Return the FoundationConfig of CLI options; options a command lacks keep their defaults."""
    defaults = FoundationConfig()
    fields = ("model", "layer", "corpus", "tokens", "context_length", "batch_size", "device", "dtype", "seed", "checkpoint_seconds")
    chosen = {name: options[name] for name in fields if options.get(name) is not None}
    index = options.get("index_config") or IndexConfig(seed=options.get("seed", defaults.seed))
    return FoundationConfig(**chosen, index=index)


def merge_command(out: Path, shards: list[Path], log: Progress = print) -> None:
    """Merge shard indexes into ``out``."""
    states = [load_index(path) for path in shards]
    fingerprints = {about.get("corpus_fingerprint") for _state, about in states}
    if len(fingerprints) > 1:
        raise MonoscopeError("the shards come from different corpora", "merge shards of one run only")
    merged, about = states[0]
    for state, _about in states[1:]:
        merged = merge_indexes(merged, state)
    save_index(merged, out, about)
    noun = "partial index" if len(shards) == 1 else "partial indexes"
    log(f"merged {len(shards)} {noun}: {merged.n_tokens} tokens, chunk ranges {merged.chunk_ranges}")
    gaps = [(end, begin) for (_, end), (begin, _) in zip(merged.chunk_ranges, merged.chunk_ranges[1:], strict=False)]
    if gaps or (merged.chunk_ranges and merged.chunk_ranges[0][0] > 0):
        missing = ([(0, merged.chunk_ranges[0][0])] if merged.chunk_ranges[0][0] > 0 else []) + gaps
        listing = ", ".join(f"{begin}..{end - 1}" for begin, end in missing)
        log(f"note: chunks {listing} are in none of them; merge their partial index later (merging is exact in any order)")


def show_unit_command(index_path: Path, unit: int, corpus_file: Path | None, model: str, limit: int) -> str:
    """Return a text view of one unit: statistics and top contexts with the target marked ⟦ ⟧.

    Each context is rendered as the judge's prompts render it (``harness.llm.render.with_marked_target``).
    """
    state, about = load_index(index_path)
    if not 0 <= unit < state.n_units:
        raise MonoscopeError(f"unit {unit} is out of range", f"the index has units 0..{state.n_units - 1}")
    chunks = load_chunks((corpus_file or index_path.parent.parent / "corpus.npy").with_suffix(""))
    from transformers import AutoTokenizer

    from harness.subject.embedded import EMBEDDED_NAME, embedded_tokenizer

    tokenizer = embedded_tokenizer() if model == EMBEDDED_NAME else AutoTokenizer.from_pretrained(model)
    name = f"{about.get('dictionary', 'unit')}/{unit}"
    stats = unit_stats(state, unit, name)
    return show_unit_text(stats, [s for s in unit_samples(state, unit, name) if s.kind == "top"][:limit], chunks, tokenizer)


def show_unit_text(stats: UnitStats, samples: list[ContextSample], chunks: np.ndarray, tokenizer: Any) -> str:
    """Return show-unit's text: a line of ``stats``, then per sample its activation and its context with the target marked."""
    lines = [
        f"{stats.unit}: fires on {stats.fire_count} of {stats.n_tokens} tokens (density {stats.density:.2e}),"
        f" max {stats.max_activation:.3f}"
    ]
    for sample in samples:
        lines.append(f"  {sample.value:7.3f}  " + with_marked_target(render_context(sample, chunks, tokenizer)))
    return "\n".join(lines)
