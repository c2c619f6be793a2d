"""The comparison stages of a run: feature–neuron correlation (``correlations.jsonl``) and each
evaluated feature's nearest features in the larger dictionaries (``neighbors.jsonl``)."""

from dataclasses import asdict
from pathlib import Path

import numpy as np

from harness.config import RunConfig, forward_batch_chunks
from harness.dictionaries.dictionary import Dictionary
from harness.index.store import load_index
from harness.progress import Progress, progress_bar
from harness.records import EvaluatedUnit, NearestFeatures
from harness.run.directory import read_manifest, timed_stage, update_manifest
from harness.run.reporting import CORRELATIONS
from harness.run.units import sample_features
from harness.storage import atomic_write_bytes
from harness.subject.model import SubjectModel
from results.store import records_text

NEIGHBORS = "neighbors.jsonl"


def correlation_stage(
    run_dir: Path,
    config: RunConfig,
    subject: SubjectModel,
    chunks: np.ndarray,
    dictionaries: list[Dictionary],
    units: list[EvaluatedUnit],
    log: Progress,
) -> None:
    """Write correlations.jsonl: sampled features (the evaluated ones included) against every neuron of blocks 0..L."""
    from harness.compare.correlation import check_correlation_inputs, correlate_features, correlation_records

    settings = {**asdict(config.correlation), "dictionaries": [d.name for d in dictionaries], "units": [u.unit for u in units]}
    path = run_dir / CORRELATIONS
    if not config.correlation.enabled or not dictionaries:
        return
    if path.exists() and read_manifest(run_dir).get("correlation") == settings:
        log("correlate: reusing correlations.jsonl")
        return
    features = []
    for dictionary in dictionaries:
        state, _about = load_index(run_dir / "index" / f"{dictionary.name}.safetensors")
        required = [u.index for u in units if u.unit_set == dictionary.name]
        features.append(
            (dictionary, sample_features(state.fire_count.numpy(), config.correlation.features, config.foundation.seed, required))
        )
    n_chunks = chunks.shape[0]
    if config.correlation.tokens is None:
        chunk_ids = list(range(n_chunks))
    else:
        wanted = min(n_chunks, -(-config.correlation.tokens // chunks.shape[1]))
        chunk_ids = sorted(np.random.default_rng(config.foundation.seed).choice(n_chunks, size=wanted, replace=False).tolist())
    n_features = sum(len(indices) for _d, indices in features)
    log(f"correlate: {n_features} features × every neuron of blocks 0..L over {len(chunk_ids) * chunks.shape[1]} tokens")
    batch = forward_batch_chunks(config.foundation)
    with timed_stage(run_dir, "correlate"), progress_bar(len(chunk_ids), "correlate", "chunk") as bar:
        if config.cluster.ray:  # the chunks split over Ray actors; their sums merge exactly (float order aside)
            from harness.run.cluster import model_loader, ray_correlation_pass

            layer = check_correlation_inputs(subject, chunks, chunk_ids, features, batch)
            loader = model_loader(config.foundation)
            sums = ray_correlation_pass(features, chunks, chunk_ids, config.foundation, config.cluster, loader, log, bar.update)
            records = correlation_records(sums, features, layer, subject.d_mlp, subject.d_model)
        else:
            records = correlate_features(subject, chunks, chunk_ids, features, batch, bar.update)
    atomic_write_bytes(path, records_text(records).encode("utf-8"))
    update_manifest(run_dir, correlation=settings)


def neighbors_stage(run_dir: Path, dictionaries: list[Dictionary], units: list[EvaluatedUnit], device: str = "cpu") -> None:
    """Write neighbors.jsonl: for each evaluated feature, its nearest features in every larger dictionary (cosines on ``device``)."""
    from harness.compare.splitting import nearest_features

    records: list[NearestFeatures] = []
    for small in dictionaries:
        indices = [u.index for u in units if u.unit_set == small.name]
        for large in dictionaries:
            if large.d_sae > small.d_sae and indices and small.W_dec is not None and large.W_dec is not None:
                records += nearest_features(small, indices, large, device=device)
    atomic_write_bytes(run_dir / NEIGHBORS, records_text(records).encode("utf-8"))
