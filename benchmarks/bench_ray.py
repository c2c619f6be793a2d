"""ray_scaling: one index job on Ray with 1 worker using every core against one worker per core (1 thread each).

The job: the embedded Gemma 3 270M (blocks 0..9) over the first ``--ray-chunks`` corpus chunks of
64 tokens, folded into the neuron pool's index (512 neurons) and a random 2,048-feature ReLU
dictionary's, in tasks of 32 chunks, on a local Ray cluster of this machine's cores. Each wall time
includes starting the actors (each loads the model) and merging; the cluster's own start-up is
outside it. Ratio = wall(1 worker × all cores) ÷ wall(one worker per core): above 1, the workers
gain over one process's threads. On the same cores that ratio is the Ray efficiency the scale-out
estimate uses: the share of one process's throughput kept when its work is split over workers
(actor start-up with a model load each, moving partial indexes, merging).
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import benchmark, random_dictionary


def _index_once(chunks, subject, dictionary, workers: int, threads: int) -> float:
    from harness.config import ClusterConfig, FoundationConfig
    from harness.dictionaries.neurons import POOL_NAME, pool_dictionary, sample_neuron_pool
    from harness.index.builder import IndexBuilder
    from harness.index.state import IndexConfig
    from harness.run.cluster import IndexTarget, model_loader, ray_index_pass

    foundation = FoundationConfig(checkpoint_seconds=1e9)
    cluster = ClusterConfig(ray=True, workers=workers, threads_per_worker=threads, chunks_per_task=32)
    pool = sample_neuron_pool(10, subject.d_mlp, 512, 0)
    with tempfile.TemporaryDirectory() as scratch:
        about = {"corpus_fingerprint": "benchmark"}
        builders = [
            (IndexBuilder(Path(scratch) / f"{POOL_NAME}.safetensors", pool_dictionary(pool, 9), IndexConfig(), 64, about), set()),
            (IndexBuilder(Path(scratch) / "sae.safetensors", dictionary, IndexConfig(), 64, about), set()),
        ]
        targets = [IndexTarget(POOL_NAME, len(pool), pool=tuple(pool)), IndexTarget("sae", dictionary.d_sae, dictionary=dictionary)]
        started = time.perf_counter()
        ray_index_pass(builders, targets, chunks, "blocks.9.hook_resid_post", foundation, cluster, model_loader(foundation), print)
        return time.perf_counter() - started


@benchmark
def ray_scaling(args: argparse.Namespace) -> dict:
    """Wall time of a fixed Ray index job: 1 worker × every core against one single-threaded worker per core."""
    import ray

    from harness.subject.corpus import chunk_documents, corpus_documents
    from harness.subject.model import load_subject_model

    cores = len(os.sched_getaffinity(0))
    subject = load_subject_model("embedded")
    chunks = chunk_documents(corpus_documents("python-stdlib"), subject.tokenizer, 64, args.ray_chunks * 64)
    dictionary = random_dictionary(subject.d_model, 2048, "blocks.9.hook_resid_post")
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    try:
        one = _index_once(chunks, subject, dictionary, workers=1, threads=cores)
        many = _index_once(chunks, subject, dictionary, workers=cores, threads=1)
    finally:
        ray.shutdown()
    tokens = chunks.shape[0] * chunks.shape[1]
    return {
        "tokens": tokens,
        "cores": cores,
        "one_worker_all_cores_s": round(one, 1),
        "one_worker_per_core_s": round(many, 1),
        "tokens_per_s": {"one_worker": round(tokens / one), "per_core_workers": round(tokens / many)},
        "ratio": round(one / many, 3),
        "efficiency": round(one / many, 3),
        "target": "> 1 (workers gain over one process's threads)",
    }
