"""Python functions behind the foundation CLI commands (train, index, merge-index, show-unit)."""

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.activations import stream_activations
from harness.corpus import load_chunks
from harness.dictionaries import STATS_FILE, resolve_dictionary, save_saelens_directory
from harness.errors import MonoscopeError
from harness.index import IndexConfig, merge_indexes
from harness.index_store import load_index, save_index, unit_samples, unit_stats
from harness.model import load_subject_model, model_shape
from harness.pipeline import (
    FoundationConfig,
    IndexBuilder,
    Progress,
    collect_foundation_activations,
    fingerprint,
    prepare_corpus,
    split_chunks,
)
from harness.runs import prepare_run_directory, update_manifest
from harness.storage import atomic_write_json
from harness.training import TrainingConfig, dictionary_stats, train_dictionary


def check_corpus_spec(corpus: str) -> None:
    """Fail early (before any model is loaded) on a corpus path that cannot yield text."""
    if corpus == "python-stdlib" or corpus.startswith("hf:"):
        return
    path = Path(corpus)
    if not path.exists():
        raise MonoscopeError(f"corpus {corpus!r} not found", "give an existing file or directory, hf:NAME, or python-stdlib")
    if path.is_file():
        try:
            with path.open("rb") as handle:
                if not handle.read(1 << 16).strip():
                    raise MonoscopeError(f"corpus file {corpus!r} is empty", "give a corpus with text in it")
        except OSError as exc:
            raise MonoscopeError(f"corpus file {corpus!r} cannot be read ({exc.strerror})", "check its permissions") from exc


def foundation_config(options: dict[str, Any]) -> FoundationConfig:
    """Return the FoundationConfig of CLI options; options a command lacks keep their defaults."""
    defaults = FoundationConfig()
    fields = ("model", "layer", "corpus", "tokens", "context_length", "batch_size", "device", "dtype", "seed", "checkpoint_seconds")
    chosen = {name: options[name] for name in fields if options.get(name) is not None}
    index = options.get("index_config") or IndexConfig(seed=options.get("seed", defaults.seed))
    return FoundationConfig(**chosen, index=index)


def train_command(run_dir: Path, out: Path, log: Progress, **options: Any) -> None:
    """Train one dictionary on the residual stream of the run's corpus and save it to ``out``."""
    if options["d_sae"] < 1 or options["sparsity_coefficient"] < 0:
        raise MonoscopeError("--d-sae must be positive and --sparsity non-negative", "fix the values")
    check_corpus_spec(options["corpus"])
    prepare_run_directory(run_dir)
    n_layers, _d_model, _d_mlp = model_shape(options["model"])
    config = foundation_config(options)
    layer = config.layer if config.layer is not None else n_layers // 2
    if not 0 <= layer < n_layers:
        raise MonoscopeError(f"layer {layer} is out of range", f"the model has blocks 0..{n_layers - 1}")
    subject = load_subject_model(config.model, config.device, config.dtype)
    chunks = prepare_corpus(run_dir, subject, config, log)
    residuals = collect_foundation_activations(run_dir, subject, chunks, config, log)
    train_ids, held_ids = split_chunks(chunks.shape[0], config.held_out_fraction)
    width = residuals.shape[2]
    recipe = TrainingConfig(
        d_sae=options["d_sae"],
        sparsity_coefficient=options["sparsity_coefficient"],
        epochs=options["epochs"],
        seed=config.seed,
        batch_size=config.training_batch_size,
    )
    name = out.name
    dictionary = train_dictionary(
        torch.from_numpy(np.asarray(residuals[train_ids]).reshape(-1, width)), recipe, name, f"blocks.{layer}.hook_resid_post"
    )
    stats = dictionary_stats(dictionary, torch.from_numpy(np.asarray(residuals[held_ids]).reshape(-1, width)))
    save_saelens_directory(dictionary, out, {"monoscope_training": asdict(recipe)})
    atomic_write_json(out / STATS_FILE, asdict(stats) | {"d_sae": recipe.d_sae, "evaluated_on": "held-out chunks"})
    log(f"{name}: L0 {stats.l0:.1f}, variance explained {stats.variance_explained:.3f}, dead fraction {stats.dead_fraction:.3f}")


def shard_chunks(n_chunks: int, shard: tuple[int, int] | None) -> list[int]:
    """Return the chunk ids of shard (i, n): a contiguous i-th share of the chunks."""
    if shard is None:
        return list(range(n_chunks))
    index, count = shard
    return list(range(index * n_chunks // count, (index + 1) * n_chunks // count))


def index_command(run_dir: Path, specs: list[str], shard: tuple[int, int] | None, log: Progress, **options: Any) -> list[Path]:
    """Build (or resume) the indexes of ``specs`` over the run's corpus; return the index paths."""
    check_corpus_spec(options["corpus"])
    prepare_run_directory(run_dir)
    n_layers, d_model, d_mlp = model_shape(options["model"])
    dictionaries = [resolve_dictionary(spec, n_layers, d_model, d_mlp, options.get("hook")) for spec in specs]
    names = [dictionary.name for dictionary in dictionaries]
    if len(set(names)) != len(names):
        raise MonoscopeError(f"two dictionaries share a name: {names}", "give each dictionary a distinct directory name")
    config = foundation_config(options)
    subject = load_subject_model(config.model, config.device, config.dtype)
    chunks = prepare_corpus(run_dir, subject, config, log)
    suffix = "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"
    about = {"corpus_fingerprint": fingerprint(chunks), "model": subject.name}
    builders = [
        IndexBuilder(run_dir / "index" / f"{d.name}{suffix}.safetensors", d, config.index, chunks.shape[1], about) for d in dictionaries
    ]
    wanted = shard_chunks(chunks.shape[0], shard)
    done_sets = [builder.done_chunks() for builder in builders]
    todo = [chunk for chunk in wanted if any(chunk not in done for done in done_sets)]
    hooks = sorted({d.hook_name for d in dictionaries})
    log(f"index: {len(todo)} of {len(wanted)} chunks to process for {', '.join(names)}")
    update_manifest(run_dir, index={"dictionaries": specs, "shard": list(shard) if shard else None, "config": asdict(config.index)})
    last_save = time.perf_counter()
    for batch in stream_activations(subject, chunks, hooks, todo, config.batch_size):
        for builder, done in zip(builders, done_sets, strict=True):
            fresh = [row for row, chunk in enumerate(batch.chunk_ids.tolist()) if chunk not in done]
            if fresh:
                rows = torch.tensor(fresh)
                builder.add(batch.activations[builder.dictionary.hook_name][rows], batch.chunk_ids[rows])
        if time.perf_counter() - last_save > config.checkpoint_seconds:
            for builder in builders:
                builder.save()
            last_save = time.perf_counter()
    for builder in builders:
        builder.save()
    return [builder.path for builder in builders]


def merge_command(out: Path, shards: list[Path], log: Progress) -> None:
    """Merge shard indexes into ``out``."""
    states = [load_index(path) for path in shards]
    fingerprints = {about.get("corpus_fingerprint") for _state, about in states}
    if len(fingerprints) > 1:
        raise MonoscopeError("the shards come from different corpora", "merge shards of one run only")
    merged, about = states[0]
    for state, _about in states[1:]:
        merged = merge_indexes(merged, state)
    save_index(merged, out, about)
    log(f"merged {len(shards)} shards: {merged.n_tokens} tokens, chunk ranges {merged.chunk_ranges}")


def show_unit_command(index_path: Path, unit: int, corpus_file: Path | None, model: str, limit: int) -> str:
    """Return a text view of one unit: statistics and top contexts with the target token in [[ ]]."""
    state, about = load_index(index_path)
    if not 0 <= unit < state.n_units:
        raise MonoscopeError(f"unit {unit} is out of range", f"the index has units 0..{state.n_units - 1}")
    chunks = load_chunks((corpus_file or index_path.parent.parent / "corpus.npy").with_suffix(""))
    from transformers import AutoTokenizer

    from harness.embedded import EMBEDDED_NAME, embedded_checkpoint_dir

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_checkpoint_dir()) if model == EMBEDDED_NAME else model)
    name = f"{about.get('dictionary', 'unit')}/{unit}"
    stats = unit_stats(state, unit, name)
    lines = [
        f"{name}: fires on {stats.fire_count} of {stats.n_tokens} tokens (density {stats.density:.2e}), max {stats.max_activation:.3f}"
    ]
    for sample in [s for s in unit_samples(state, unit, name) if s.kind == "top"][:limit]:
        tokens = chunks[sample.chunk, sample.window_start : sample.window_start + len(sample.activations)].tolist()
        pieces = [tokenizer.decode([token]) for token in tokens]
        target = sample.position - sample.window_start
        pieces[target] = f"[[{pieces[target]}]]"
        lines.append(f"  {sample.value:7.3f}  " + "".join(pieces).replace("\n", "⏎"))
    return "\n".join(lines)
