"""Scale out on Ray (config ``cluster.ray``, ``monoscope run --ray [ADDRESS]``): the index pass split over actors.

The chunks still to index go out as tasks of whole forward batches (``cluster.chunks_per_task``
rounded up). Each task runs on an ``IndexWorker`` actor that built the subject model and received
the neuron pool and every dictionary once; it runs blocks 0..L over its chunks and returns one
partial index per target, over the chunks that target still lacks. The driver merges each partial
into its index in task order (``harness.index.state.merge_indexes``: exact, float sums aside) and
checkpoints every ``checkpoint_seconds``, so a killed driver resumes with the chunks not yet
merged, and Ray restarts a worker that died and runs its task again (``max_restarts``,
``max_task_retries``). Task batches start where the single-process pass's batches start, so each
forward pass sees the same chunks.

Training stays in the driver on ``model.device`` and runs its own streaming pass over the
training chunks: under Ray the residual stream is not stored (workers may sit on other machines).

Ray is imported here only, and only when a run asks for it (``ray_module``).
"""

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np
import torch

from harness.compare.correlation import CorrelationSums, accumulate_correlations
from harness.config import ClusterConfig, FoundationConfig, forward_batch_chunks
from harness.dictionaries.dictionary import Dictionary, dictionary_to, encode
from harness.dictionaries.neurons import pool_activations, pool_hooks
from harness.errors import MonoscopeError
from harness.index.builder import IndexBuilder
from harness.index.state import IndexState, index_to, merge_indexes, new_index, update_index
from harness.progress import Progress, progress_bar
from harness.subject.activations import stream_activations
from harness.subject.model import SubjectModel, load_subject_model

RAY_INSTALL = "pip install 'monoscope[ray]'"
RETRIES = 3  # times Ray restarts a dead worker and runs its task again


def ray_module() -> ModuleType:
    """Return the ``ray`` module; a one-line MonoscopeError saying how to install it when it is missing."""
    try:
        import ray
    except ImportError as exc:
        raise MonoscopeError("Ray is not installed, so the run cannot use it", f"{RAY_INSTALL}, or run without --ray") from exc
    return ray


def start_ray(cluster: ClusterConfig) -> ModuleType:
    """Return ``ray`` connected: to ``cluster.address``, to the cluster this process already joined, or to a new local one.

    Raises MonoscopeError (one line) when the address is malformed, nothing answers there, or a ``ray://``
    address lacks Ray's client package; the run's preflight calls this before any work.
    """
    ray = ray_module()
    if not ray.is_initialized():
        options: dict[str, Any] = {"address": cluster.address} if cluster.address else {}
        try:
            ray.init(**options, include_dashboard=False, log_to_driver=False)
        except (ValueError, ConnectionError, RuntimeError, TimeoutError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            where = f"the Ray cluster at {cluster.address!r}" if cluster.address else "a new local Ray cluster"
            fix = (
                "pip install 'ray[client]' for a ray:// address"
                if "ray[client]" in str(error)
                else "check the address (auto, HOST:6379 or ray://HOST:10001) and that the cluster runs (ray start --head), "
                "or give --ray without an address for a local cluster"
            )
            raise MonoscopeError(f"cannot connect to {where}: {first}", fix) from None
    return ray


def check_placement(ray: ModuleType, workers: int, cpus_per_worker: float, gpus_per_worker: float) -> None:
    """Raise MonoscopeError when ``workers`` actors of that size can never all be placed on the cluster (Ray would wait forever)."""
    resources = ray.cluster_resources()
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    for name, per_worker in (("CPU", cpus_per_worker), ("GPU", gpus_per_worker)):
        if per_worker <= 0:
            continue
        total, largest = resources.get(name, 0), max((node.get(name, 0) for node in nodes), default=0)
        if per_worker > largest or workers * per_worker > total:
            setting = "cluster.threads_per_worker" if name == "CPU" else "one GPU per worker"
            raise MonoscopeError(
                f"{workers} Ray workers of {per_worker:g} {name}s each ({setting}) do not fit the cluster's {total:g} {name}s "
                f"(at most {largest:g} on one node): the run would wait for them forever",
                "lower cluster.workers or cluster.threads_per_worker, or add nodes",
            )


def model_loader(config: FoundationConfig) -> Callable[[], SubjectModel]:
    """Return a picklable function that builds the subject model where it is called (each worker loads its own copy).

    A worker on a GPU sees only its own device (Ray sets ``CUDA_VISIBLE_DEVICES``), so a
    ``cuda:N`` device becomes ``cuda`` there.
    """
    device = "cuda" if config.device.startswith("cuda") else config.device
    return partial(load_subject_model, config.model, device=device, dtype=config.dtype)


def task_chunks(todo: list[int], batch_chunks: int, chunks_per_task: int) -> list[list[int]]:
    """Split the chunk ids ``todo`` into tasks of ``chunks_per_task`` chunks rounded up to whole forward batches."""
    size = max(1, math.ceil(chunks_per_task / batch_chunks)) * batch_chunks
    return [todo[start : start + size] for start in range(0, len(todo), size)]


@dataclass(frozen=True)
class IndexTarget:
    """One index the pass builds: its name, and the dictionary that encodes the residuals or the neuron pool it gathers."""

    name: str
    n_units: int
    dictionary: Dictionary | None = None  # encodes the residual stream at ``hook``
    pool: tuple[tuple[int, int], ...] = ()  # (layer, neuron) pairs read from the MLP hooks instead


class PassWorker:
    """A Ray actor for the passes over the corpus: the subject model, the chunks and what a pass folds in, loaded once.

    The index pass gives it ``targets`` (and the ``hook`` the dictionaries read) and calls ``index``;
    the correlation pass gives it ``features`` and calls ``correlate``.
    """

    def __init__(
        self,
        loader: Callable[[], SubjectModel],
        threads: int,
        chunks: np.ndarray,
        batch_chunks: int,
        targets: list[IndexTarget] | None = None,
        hook: str | None = None,
        index_config: Any = None,
        features: list[tuple[Dictionary, list[int]]] | None = None,
    ):
        self.error: Exception | None = None  # raised by the first task: Ray reports a failed constructor only as text
        try:
            torch.set_num_threads(threads)
            self.subject = loader()
        except Exception as error:  # noqa: BLE001 (kept and raised where the driver sees it as itself)
            self.error = error
            return
        self.chunks = chunks
        self.batch_chunks = batch_chunks
        self.device = self.subject.device
        self.targets = [
            IndexTarget(t.name, t.n_units, dictionary_to(t.dictionary, self.device) if t.dictionary else None, t.pool)
            for t in targets or []
        ]
        self.hook = hook
        self.index_config = index_config
        self.features = features or []
        pools = [list(t.pool) for t in self.targets if t.pool]
        encoded = [hook] if hook is not None and any(t.dictionary is not None for t in self.targets) else []
        self.hooks = encoded + (pool_hooks(pools[0]) if pools else [])

    def _ready(self) -> None:
        if self.error is not None:
            raise self.error

    def index(self, wanted: dict[str, list[int]]) -> dict[str, IndexState]:
        """Return {target: partial index over the chunks ``wanted[target]``} (on the CPU), one forward pass per batch."""
        self._ready()
        ids = sorted({chunk for chunks in wanted.values() for chunk in chunks})
        lacking = {name: set(chunks) for name, chunks in wanted.items()}
        length = self.chunks.shape[1]
        partials = {t.name: new_index(t.n_units, self.index_config, length, self.device) for t in self.targets if t.name in wanted}
        for batch in stream_activations(self.subject, self.chunks, self.hooks, ids, self.batch_chunks):
            batch_ids = batch.chunk_ids.tolist()
            for target in self.targets:
                if target.name not in wanted:
                    continue
                rows = [row for row, chunk in enumerate(batch_ids) if chunk in lacking[target.name]]
                if not rows:
                    continue
                if target.dictionary is not None:
                    acts = encode(target.dictionary, batch.activations[self.hook][rows].to(self.device))
                else:
                    acts = pool_activations(batch.activations, list(target.pool))[rows]
                update_index(partials[target.name], acts, batch.chunk_ids[rows])
        return {name: index_to(state, "cpu") for name, state in partials.items()}

    def correlate(self, chunk_ids: list[int]) -> CorrelationSums:
        """Return the correlation sums of the features over ``chunk_ids`` (on the CPU)."""
        self._ready()
        return accumulate_correlations(self.subject, self.chunks, chunk_ids, self.features, self.batch_chunks).to("cpu")


def task_results(ray: ModuleType, workers: list[Any], tasks: list[Any], call: Callable[[Any, Any], Any]) -> Iterator[Any]:
    """Yield each task's result in task order, the tasks spread over ``workers``; a task's error is raised as itself
    (a MonoscopeError, BudgetExhausted), not wrapped in Ray's."""
    try:
        yield from ray.util.ActorPool(workers).map(call, tasks)
    except ray.exceptions.RayTaskError as error:
        cause = getattr(error, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise


def worker_count(ray: ModuleType, cluster: ClusterConfig, gpu: bool) -> int:
    """Return the number of actors: ``cluster.workers``, else one per GPU (on a GPU device) or per ``threads_per_worker`` CPUs."""
    if cluster.workers is not None:
        return cluster.workers
    resources = ray.cluster_resources()
    if gpu:
        gpus = int(resources.get("GPU", 0))
        if gpus < 1:
            raise MonoscopeError("the device is a GPU but the Ray cluster has none", "add GPU nodes, or set model.device: cpu")
        return gpus
    return max(1, int(resources.get("CPU", 1)) // cluster.threads_per_worker)


def start_workers(
    ray: ModuleType,
    cluster: ClusterConfig,
    foundation: FoundationConfig,
    n_tasks: int,
    loader: Callable[[], SubjectModel],
    **pass_args: Any,
) -> list[Any]:
    """Return up to ``n_tasks`` PassWorker actors (``worker_count``), each asking for one GPU on a GPU device, restarted when they die."""
    gpu = foundation.device.startswith("cuda")
    count = min(worker_count(ray, cluster, gpu), n_tasks)
    check_placement(ray, count, 0 if gpu else cluster.threads_per_worker, 1 if gpu else 0)
    actor = ray.remote(PassWorker).options(
        num_cpus=0 if gpu else cluster.threads_per_worker,
        num_gpus=1 if gpu else 0,
        max_restarts=RETRIES,
        max_task_retries=RETRIES,
    )
    refs = {name: ray.put(value) for name, value in pass_args.items()}  # one copy in the object store, shared by the actors
    chunks = refs.pop("chunks")
    return [actor.remote(loader, cluster.threads_per_worker, chunks, forward_batch_chunks(foundation), **refs) for _ in range(count)]


def ray_index_pass(
    builders: list[tuple[IndexBuilder, set[int]]],
    targets: list[IndexTarget],
    chunks: np.ndarray,
    hook: str,
    foundation: FoundationConfig,
    cluster: ClusterConfig,
    loader: Callable[[], SubjectModel],
    log: Progress,
) -> None:
    """Fold every chunk each builder lacks into it, the work split over Ray actors; save each builder when done.

    ``builders`` pairs each target's IndexBuilder (same order as ``targets``) with the chunk ids it holds.
    """
    ray = start_ray(cluster)
    todo = [chunk for chunk in range(chunks.shape[0]) if any(chunk not in done for _builder, done in builders)]
    if not todo:
        return
    tasks = task_chunks(todo, forward_batch_chunks(foundation), cluster.chunks_per_task)
    index_config = builders[0][0].state.config
    pass_args = {"chunks": chunks, "targets": targets, "hook": hook, "index_config": index_config}
    workers = start_workers(ray, cluster, foundation, len(tasks), loader, **pass_args)
    log(f"ray: {len(todo)} chunks in {len(tasks)} tasks on {len(workers)} workers ({', '.join(t.name for t in targets)})")
    try:
        _merge_tasks(ray, workers, tasks, builders, targets, foundation, len(todo))
    finally:
        for worker in workers:
            ray.kill(worker)


def _merge_tasks(
    ray: ModuleType,
    workers: list[Any],
    tasks: list[list[int]],
    builders: list[tuple[IndexBuilder, set[int]]],
    targets: list[IndexTarget],
    foundation: FoundationConfig,
    n_chunks: int,
) -> None:
    """Run the index tasks on ``workers`` and merge their partial indexes into the builders in task order, checkpointing."""

    def wanted(task: list[int]) -> dict[str, list[int]]:
        lacking = {t.name: [c for c in task if c not in done] for t, (_b, done) in zip(targets, builders, strict=True)}
        return {name: ids for name, ids in lacking.items() if ids}

    last_save = time.perf_counter()
    with progress_bar(n_chunks, "index (ray)", "chunk") as bar:
        results = task_results(ray, workers, tasks, lambda worker, task: worker.index.remote(wanted(task)))
        for task, partials in zip(tasks, results, strict=True):
            for target, (builder, _done) in zip(targets, builders, strict=True):
                if target.name in partials:
                    builder.state = merge_indexes(builder.state, index_to(partials[target.name], builder.device))
            if time.perf_counter() - last_save > foundation.checkpoint_seconds:
                for builder, _done in builders:
                    builder.save()
                last_save = time.perf_counter()
            bar.update(len(task))
    for builder, _done in builders:
        builder.save()


def ray_correlation_pass(
    features: list[tuple[Dictionary, list[int]]],
    chunks: np.ndarray,
    chunk_ids: list[int],
    foundation: FoundationConfig,
    cluster: ClusterConfig,
    loader: Callable[[], SubjectModel],
    log: Progress,
    progress: Callable[[int], None] | None = None,
) -> CorrelationSums:
    """Return the correlation sums over ``chunk_ids``, the chunks split over Ray actors and the sums merged in task order."""
    ray = start_ray(cluster)
    tasks = task_chunks(chunk_ids, forward_batch_chunks(foundation), cluster.chunks_per_task)
    cpu_features = [(dictionary_to(dictionary, "cpu"), indices) for dictionary, indices in features]
    workers = start_workers(ray, cluster, foundation, len(tasks), loader, chunks=chunks, features=cpu_features)
    log(f"ray: correlation over {len(chunk_ids)} chunks in {len(tasks)} tasks on {len(workers)} workers")
    sums: CorrelationSums | None = None
    try:
        for task, partial_sums in zip(tasks, task_results(ray, workers, tasks, lambda w, task: w.correlate.remote(task)), strict=True):
            if sums is None:
                sums = partial_sums
            else:
                sums.merge(partial_sums)
            if progress is not None:
                progress(len(task))
    finally:
        for worker in workers:
            ray.kill(worker)
    if sums is None:
        raise MonoscopeError("no chunks to correlate over", "give at least one chunk id")
    return sums
