"""The foundation stages of a run: corpus → activations → dictionaries → index.

Each stage reads what the stage before it wrote into the run directory and
writes its own output; each skips work that is already on disk, so an
interrupted run resumes where it stopped.
"""

import random
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.config import FoundationConfig, RunConfig, forward_batch_chunks, index_batch_tokens
from harness.dictionaries.activation_buffer import ActivationSource
from harness.dictionaries.dictionary import Dictionary, dictionary_to
from harness.dictionaries.formats import STATS_FILE, load_dictionary, load_saelens_directory, save_saelens_directory
from harness.dictionaries.neurons import POOL_NAME, pool_activations, pool_dictionary, pool_hooks, pool_unit_names, sample_neuron_pool
from harness.dictionaries.training import TrainingConfig, dictionary_stats, train_dictionary
from harness.index.builder import IndexBuilder
from harness.index.store import firing_summary
from harness.progress import Progress, progress_bar
from harness.run.directory import cpu_threads, read_manifest, timed_stage, update_manifest
from harness.storage import atomic_write_json, read_json
from harness.subject.activations import ForwardSource, stream_activations
from harness.subject.corpus import check_corpus_reuse, chunk_documents, corpus_documents, fingerprint, load_chunks, save_chunks
from harness.subject.model import SubjectModel, load_subject_model, parse_hook
from harness.subject.residual_store import ResidualStore, StoreSource, open_residual_store

DICTIONARIES = "dictionaries.json"  # one row per dictionary: size, L0, variance explained, dead fractions


def dictionary_label(size: int) -> str:
    """Return the short name of a trained dictionary of ``size`` features, e.g. ``sae-4k``."""
    return f"sae-{size // 1024}k" if size % 1024 == 0 else f"sae-{size}"


def corpus_settings(config: FoundationConfig) -> dict[str, Any]:
    """Return the settings a run's corpus depends on, as its description records them."""
    return {
        "corpus": config.corpus,
        "text_field": config.text_field,
        "model": config.model,
        "context_length": config.context_length,
        "requested_tokens": config.tokens,
    }


def prepare_corpus(run_dir: Path, subject: SubjectModel, config: FoundationConfig, log: Progress) -> np.ndarray:
    """Return the run's token chunks, tokenizing the corpus on first use.

    A stored corpus is reused only when it was made with the same settings (``corpus_settings``); else MonoscopeError.
    """
    path = run_dir / "corpus"
    check_corpus_reuse(path, corpus_settings(config))
    if path.with_suffix(".npy").exists():
        chunks = load_chunks(path)
        log(f"corpus: reusing {chunks.shape[0]} chunks × {chunks.shape[1]} tokens")
        return chunks
    with timed_stage(run_dir, "corpus"):
        chunks = chunk_documents(
            corpus_documents(config.corpus, config.text_field), subject.tokenizer, config.context_length, config.tokens
        )
        description = corpus_settings(config) | {
            "n_chunks": int(chunks.shape[0]),
            "n_tokens": int(chunks.size),
            "tokenizer": subject.name,
            "fingerprint": fingerprint(chunks),
        }
        save_chunks(path, chunks, description)
    log(f"corpus: {chunks.shape[0]} chunks × {chunks.shape[1]} tokens from {config.corpus}")
    return chunks


def split_chunks(n_chunks: int, held_out_fraction: float) -> tuple[list[int], list[int]]:
    """Return (training chunk ids, held-out chunk ids): the last fraction is held out for stats."""
    held = max(1, int(round(n_chunks * held_out_fraction)))
    return list(range(n_chunks - held)), list(range(n_chunks - held, n_chunks))


def residual_hook(subject: SubjectModel, config: FoundationConfig) -> str:
    """Return the hook the dictionaries read: ``blocks.L.hook_resid_post`` of the configured layer."""
    layer = config.layer if config.layer is not None else subject.default_layer
    return f"blocks.{layer}.hook_resid_post"


def collect_foundation_activations(
    run_dir: Path, subject: SubjectModel, chunks: np.ndarray, config: FoundationConfig, log: Progress
) -> ResidualStore | None:
    """Run the forward pass once over all chunks: fold a seeded pool of MLP neurons of blocks 0..L into the
    ``neurons`` index (the neuron baseline, harness.dictionaries.neurons) and, with ``store_residuals``,
    write the residual stream the dictionaries read to the residual store (in the model's dtype).

    Returns the store, or None without one (later stages then run the model again).
    Resumable: the neuron index's chunk ranges and the store's say which chunks are done.
    """
    layer = config.layer if config.layer is not None else subject.default_layer
    resid_hook = residual_hook(subject, config)
    store = None
    if config.store_residuals:
        shape = (chunks.shape[0], chunks.shape[1], subject.d_model)
        store = open_residual_store(run_dir / "activations", resid_hook, *shape, subject.model.dtype)
    builder, pool = pool_builder(run_dir, subject, chunks, config)
    indexed = builder.done_chunks()
    stored = store.written() if store is not None else set(range(chunks.shape[0]))
    todo = [chunk for chunk in range(chunks.shape[0]) if chunk not in indexed or chunk not in stored]
    if not todo:
        log(f"activations: reusing {chunks.shape[0]} chunks")
        return store
    kept = "" if store is None else f"; residuals kept in {store.path.name}"
    log(f"activations: {len(todo)} chunks through blocks 0..{layer} ({len(pool)} pool neurons indexed{kept})")
    last_save = time.perf_counter()
    hooks = ([resid_hook] if store is not None else []) + pool_hooks(pool)
    with timed_stage(run_dir, "activations"), progress_bar(len(todo), "activations", "chunk") as bar:
        for batch in stream_activations(subject, chunks, hooks, todo, forward_batch_chunks(config)):
            ids = batch.chunk_ids.tolist()
            if store is not None:
                rows = [row for row, chunk in enumerate(ids) if chunk not in stored]
                store.write([ids[row] for row in rows], batch.activations[resid_hook][rows])
                stored.update(ids[row] for row in rows)
            rows = [row for row, chunk in enumerate(ids) if chunk not in indexed]
            if rows:
                builder.add_units(pool_activations(batch.activations, pool)[rows], batch.chunk_ids[rows])
            if time.perf_counter() - last_save > config.checkpoint_seconds:
                _checkpoint_activations(builder, store, stored)
                last_save = time.perf_counter()
            bar.update(len(ids))
        _checkpoint_activations(builder, store, stored)
    return store


def pool_builder(
    run_dir: Path, subject: SubjectModel, chunks: np.ndarray, config: FoundationConfig
) -> tuple[IndexBuilder, list[tuple[int, int]]]:
    """Return the builder of the neuron pool's index (resumed from disk when it exists) and the pool's (layer, neuron) pairs."""
    layer = config.layer if config.layer is not None else subject.default_layer
    pool = sample_neuron_pool(layer + 1, subject.d_mlp, config.neuron_pool_size, config.seed)
    about = {"corpus_fingerprint": fingerprint(chunks), "model": subject.name, "unit_names": pool_unit_names(pool)}
    index_path = run_dir / "index" / f"{POOL_NAME}.safetensors"
    return IndexBuilder(index_path, pool_dictionary(pool, layer), config.index, chunks.shape[1], about, config.device), pool


def _checkpoint_activations(builder: IndexBuilder, store: ResidualStore | None, stored: set[int]) -> None:
    builder.save()
    if store is not None:
        store.mark_written(stored)


def training_order(train_ids: list[int], buffer_tokens: int, context_length: int, seed: int) -> list[int]:
    """Return the order in which training reads its chunks.

    As stored when the shuffling buffer holds the whole training set (the buffer then permutes every
    row at once); otherwise a seeded shuffle of the chunks, so that each buffer fill samples the whole
    training set: a corpus read in order drifts from document to document, and a buffer of a quarter
    of it measurably moved the trained dictionaries' L0 (benchmarks/RESULTS.md, training_buffer_quality).
    """
    if buffer_tokens >= len(train_ids) * context_length:
        return list(train_ids)
    return random.Random(f"training-order|{seed}").sample(list(train_ids), len(train_ids))


def residual_source(
    subject: SubjectModel, chunks: np.ndarray, chunk_ids: list[int], store: ResidualStore | None, config: FoundationConfig
) -> ActivationSource:
    """Return the residuals of ``chunk_ids`` as an activation source: read from the store, or computed by the model without one."""
    if store is not None:
        return StoreSource(store, tuple(chunk_ids))
    hook = residual_hook(subject, config)
    return ForwardSource(subject, chunks, tuple(chunk_ids), hook, subject.d_model, forward_batch_chunks(config))


def train_default_dictionaries(
    run_dir: Path, subject: SubjectModel, chunks: np.ndarray, store: ResidualStore | None, config: FoundationConfig, log: Progress
) -> list[Dictionary]:
    """Train (or reuse) one dictionary per configured size; return them, smallest first.

    Training reads the residual store, or runs the model once per epoch without one.
    """
    hook_name = residual_hook(subject, config)
    train_ids, held_ids = split_chunks(chunks.shape[0], config.held_out_fraction)
    order = training_order(train_ids, config.training_buffer_tokens, config.context_length, config.seed)
    training = residual_source(subject, chunks, order, store, config)
    held_out = residual_source(subject, chunks, held_ids, store, config)
    dictionaries = []
    for size in sorted(config.dictionary_sizes):
        name = dictionary_label(size)
        directory = run_dir / "dictionaries" / name
        if (directory / STATS_FILE).exists():
            dictionaries.append(load_saelens_directory(directory, name))
            log(f"train: reusing {name}")
            continue
        recipe = TrainingConfig(
            d_sae=size,
            sparsity_coefficient=config.sparsity_coefficient,
            learning_rate=config.learning_rate,
            batch_size=config.training_batch_size,
            epochs=config.epochs,
            seed=config.seed,
            buffer_tokens=config.training_buffer_tokens,
        )
        log(f"train: {name} ({size} features, λ={recipe.sparsity_coefficient}) on {training.n_rows} tokens")
        checkpoint = run_dir / "dictionaries" / f"{name}.training.pt"  # resumes an interrupted training
        with timed_stage(run_dir, f"train.{name}"):
            dictionary = train_dictionary(
                training, recipe, name, hook_name, device=config.device, checkpoint=checkpoint, checkpoint_seconds=config.checkpoint_seconds
            )
        stats = dictionary_stats(dictionary, held_out, index_batch_tokens(config), config.device)
        save_saelens_directory(dictionary, directory, {"monoscope_training": asdict(recipe)})
        atomic_write_json(directory / STATS_FILE, asdict(stats) | {"d_sae": size, "evaluated_on": "held-out chunks"})
        log(f"  {name}: L0 {stats.l0:.1f}, variance explained {stats.variance_explained:.3f}, dead {stats.dead_fraction:.3f}")
        dictionaries.append(load_saelens_directory(directory, name))
    return dictionaries


def index_dictionaries(
    run_dir: Path,
    subject: SubjectModel,
    chunks: np.ndarray,
    store: ResidualStore | None,
    dictionaries: list[Dictionary],
    config: FoundationConfig,
    log: Progress,
) -> None:
    """Build (or resume) the index of every dictionary in one pass over the residuals (the store, or the model without one).

    Each batch of ``index.batch_tokens`` tokens is read once and folded into every index that lacks its chunks.
    """
    builders = dictionary_builders(run_dir, chunks, dictionaries, config, log)
    if not builders:
        return
    todo = [chunk for chunk in range(chunks.shape[0]) if any(chunk not in done for _builder, done in builders)]
    names = ", ".join(builder.dictionary.name for builder, _done in builders)
    log(f"index: {names} over {len(todo)} chunks" + ("" if store is not None else " (forward pass: no residual store)"))
    per_read = max(1, index_batch_tokens(config) // chunks.shape[1])
    source = residual_source(subject, chunks, todo, store, config)
    if isinstance(source, StoreSource):
        source = replace(source, chunks_per_read=per_read)
    reads_per_batch = per_read if isinstance(source, StoreSource) else source.batch_size
    last_save = time.perf_counter()
    with timed_stage(run_dir, "index"), progress_bar(len(todo), "index", "chunk") as bar:
        for read, rows in enumerate(source.rows_from(0)):
            ids = todo[read * reads_per_batch : (read + 1) * reads_per_batch]
            residuals = rows.reshape(len(ids), chunks.shape[1], -1)
            for builder, done in builders:
                keep = [row for row, chunk in enumerate(ids) if chunk not in done]
                if keep:
                    kept = residuals if len(keep) == len(ids) else residuals[keep]
                    builder.add(kept, torch.tensor([ids[row] for row in keep], device="cpu"))
            if time.perf_counter() - last_save > config.checkpoint_seconds:
                for builder, _done in builders:
                    builder.save()
                last_save = time.perf_counter()
            bar.update(len(ids))
        for builder, _done in builders:
            builder.save()


def dictionary_builders(
    run_dir: Path, chunks: np.ndarray, dictionaries: list[Dictionary], config: FoundationConfig, log: Progress
) -> list[tuple[IndexBuilder, set[int]]]:
    """Return (builder, chunk ids it holds) of every dictionary whose index lacks chunks (the others are logged as reused)."""
    about = {"corpus_fingerprint": fingerprint(chunks)}
    builders = []
    for dictionary in dictionaries:
        path = run_dir / "index" / f"{dictionary.name}.safetensors"
        builder = IndexBuilder(path, dictionary, config.index, chunks.shape[1], about, config.device)
        done = builder.done_chunks()
        if all(chunk in done for chunk in range(chunks.shape[0])):
            log(f"index: reusing {dictionary.name}")
            continue
        builders.append((builder, done))
    return builders


def index_on_ray(
    run_dir: Path, subject: SubjectModel, chunks: np.ndarray, dictionaries: list[Dictionary], config: RunConfig, log: Progress
) -> None:
    """Build (or resume) the neuron pool's and every dictionary's index in one pass split over Ray actors (``harness.run.cluster``)."""
    from harness.run.cluster import IndexTarget, model_loader, ray_index_pass  # imports Ray only when a run asks for it

    foundation = config.foundation
    pool_index, pool = pool_builder(run_dir, subject, chunks, foundation)
    builders = [(pool_index, pool_index.done_chunks())] + dictionary_builders(run_dir, chunks, dictionaries, foundation, log)
    targets = [IndexTarget(POOL_NAME, len(pool), pool=tuple(pool))]
    targets += [IndexTarget(b.dictionary.name, b.dictionary.d_sae, dictionary=dictionary_to(b.dictionary, "cpu")) for b, _ in builders[1:]]
    hook = residual_hook(subject, foundation)
    with timed_stage(run_dir, "index"):
        ray_index_pass(builders, targets, chunks, hook, foundation, config.cluster, model_loader(foundation), log)


def dictionary_table(run_dir: Path) -> list[dict[str, Any]]:
    """Return one row per trained dictionary in the run: size, L0, variance explained, dead fraction."""
    rows = []
    for stats_path in sorted((run_dir / "dictionaries").glob(f"*/{STATS_FILE}")):
        stats = read_json(stats_path)
        rows.append({"dictionary": stats_path.parent.name, **stats})
    return sorted(rows, key=lambda row: row["d_sae"])


def check_layer(subject: SubjectModel, config: FoundationConfig) -> str:
    """Return the residual hook name of the configured layer, failing early if it is out of range."""
    layer = config.layer if config.layer is not None else subject.default_layer
    return parse_hook(f"blocks.{layer}.hook_resid_post", subject.n_layers).name


def foundation_done(run_dir: Path, config: RunConfig) -> bool:
    """Return True when the run directory already holds every index the config needs."""
    names = [dictionary_label(size) for size in config.foundation.dictionary_sizes] + [POOL_NAME]
    return (run_dir / DICTIONARIES).exists() and all((run_dir / "index" / f"{name}.safetensors").exists() for name in names)


def build_foundation(run_dir: Path, config: RunConfig, log: Progress) -> tuple[SubjectModel, np.ndarray, list[Dictionary]]:
    """Return (subject model, corpus chunks, dictionaries smallest first) after building or reusing every foundation stage."""
    foundation = config.foundation
    torch.set_num_threads(cpu_threads())
    if "load_model" in read_manifest(run_dir).get("timings", {}):  # timings are the run's first build (a rerun or dry run keeps them)
        subject = load_subject_model(foundation.model, foundation.device, foundation.dtype)
    else:
        with timed_stage(run_dir, "load_model"):
            subject = load_subject_model(foundation.model, foundation.device, foundation.dtype)
    hook_name = check_layer(subject, foundation)
    update_manifest(run_dir, model={"name": subject.name, "n_layers": subject.n_layers, "d_model": subject.d_model, "hook": hook_name})
    log(f"model: {subject.name} ({subject.n_layers} blocks, d_model {subject.d_model}); dictionaries read {hook_name}")
    chunks = prepare_corpus(run_dir, subject, foundation, log)
    on_ray = config.cluster.ray
    if on_ray:  # workers may sit on other machines: no residual store, training runs its own pass here
        log("ray: the residual stream is not stored; training runs the model over its chunks in this process")
    store = None if on_ray else collect_foundation_activations(run_dir, subject, chunks, foundation, log)
    dictionaries = train_default_dictionaries(run_dir, subject, chunks, store, foundation, log) if foundation.dictionary_sizes else []
    _train_ids, held_ids = split_chunks(chunks.shape[0], foundation.held_out_fraction)
    held_out = residual_source(subject, chunks, held_ids, store, foundation)
    for spec in config.load_dictionaries:
        dictionaries.append(_loaded_dictionary(run_dir, spec, held_out, foundation))
    dictionaries.sort(key=lambda d: (d.d_sae, d.name))
    if on_ray:
        index_on_ray(run_dir, subject, chunks, dictionaries, config, log)
    else:
        index_dictionaries(run_dir, subject, chunks, store, dictionaries, foundation, log)
    rows = [row for row in dictionary_table(run_dir) if row["dictionary"] in {d.name for d in dictionaries}]
    for row in rows:
        row["dead_fraction_all_tokens"] = firing_summary(run_dir / "index" / f"{row['dictionary']}.safetensors")["dead_fraction_all_tokens"]
    atomic_write_json(run_dir / DICTIONARIES, rows)
    return subject, chunks, dictionaries


def _loaded_dictionary(run_dir: Path, spec: str, held_out: ActivationSource, config: FoundationConfig) -> Dictionary:
    """Return a user's dictionary, recording its held-out statistics in the run directory once."""
    dictionary = load_dictionary(spec)
    stats_path = run_dir / "dictionaries" / dictionary.name / STATS_FILE
    if not stats_path.exists():
        stats = asdict(dictionary_stats(dictionary, held_out, index_batch_tokens(config), config.device))
        read = {"saelens_config": dictionary.metadata.get("saelens_config")}  # the SAELens version followed and every cfg field read
        atomic_write_json(stats_path, stats | {"d_sae": dictionary.d_sae, "evaluated_on": "held-out chunks", "source": spec} | read)
    return dictionary
