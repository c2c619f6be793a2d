"""Resource estimates for ``monoscope run --dry-run``: time, memory and disk of the foundation stages.

Times scale a measured throughput by arithmetic per token: tokens/s here = measured tokens/s ×
(FLOPs per token measured ÷ FLOPs per token here), taken from a measurement on the same kind of
device (``REFERENCES``; each names its source, a section of ``benchmarks/RESULTS.md``). A stage with
no measurement on the configured kind of device says so rather than guess. Memory and disk are
counted from shapes: the index state exactly (allocated on the meta device), dictionaries, optimiser
state, buffers and the residual store from their element counts; the forward pass's working memory
scales the one measured GPU peak by tokens × d_model × blocks. These are estimates for planning, not
quotes: a machine that differs from the measured one moves the times.
"""

from dataclasses import asdict, dataclass
from typing import Any

import torch

from harness.config import RunConfig, forward_batch_chunks, index_batch_tokens
from harness.dictionaries.formats import load_dictionary
from harness.index.state import IndexState, new_index
from harness.progress import Progress
from harness.run.foundation import dictionary_label, split_chunks
from harness.subject.model import resolve_dtype
from harness.subject.shape import ModelShape

# The embedded model (Gemma 3 270M) on which every reference below was measured.
EMBEDDED_SHAPE = ModelShape(n_layers=18, d_model=640, d_mlp=2048, n_heads=4, n_kv_heads=1, head_dim=256, vocab_size=262144)
RESULTS = "benchmarks/RESULTS.md"


@dataclass(frozen=True)
class Reference:
    """One measured throughput: ``tokens_per_s`` of ``stage`` on a ``device`` kind at ``flops_per_token``."""

    stage: str  # "forward", "training" or "index"
    device: str  # "cpu" or "cuda"
    tokens_per_s: float
    flops_per_token: float
    setting: str  # what was measured
    source: str  # where the figure is kept


def _training_flops(d_in: int, d_sae: int) -> float:
    """Return training FLOPs per token: encoder and decoder (2 × 2·d_in·d_sae) forward, twice that backward."""
    return 12.0 * d_in * d_sae


def _encode_flops(d_in: int, d_sae: int) -> float:
    """Return encoding FLOPs per token (the index update's other costs also grow with d_sae: measured exponent ≈ 1)."""
    return 2.0 * d_in * d_sae


_DEMO_TRAIN_TOKENS = 235_904  # the demo's training chunks (3,686 of 4,096 × 64 tokens)
REFERENCES = (
    Reference(
        "forward", "cpu", 262_144 / 120.01, EMBEDDED_SHAPE.forward_flops(10, 64),
        "the demo's activation pass, blocks 0..9 of Gemma 3 270M in float32, 2 CPU cores",
        f"{RESULTS}, demo_wall_time (activations 120.01 s on 262,144 tokens), 2026-11-21",
    ),
    Reference(
        "training", "cpu", _DEMO_TRAIN_TOKENS / 80.93, _training_flops(640, 8192),
        "the demo's sae-8k (8,192 features, d_in 640, batch 256), 2 CPU cores",
        f"{RESULTS}, demo_wall_time (train.sae-8k 80.93 s on 235,904 tokens), 2026-11-21",
    ),
    Reference(
        "index", "cpu", 262_144 / 45.41, _encode_flops(640, 8192),
        "the demo's sae-8k index (8,192 units, d_in 640), 2 CPU cores",
        f"{RESULTS}, demo_wall_time (index.sae-8k 45.41 s on 262,144 tokens), 2026-11-21",
    ),
    Reference(
        "forward", "cuda", 886_004.0, EMBEDDED_SHAPE.forward_flops(10, 128),
        "blocks 0..9 of a Gemma-3-270M-shaped model in bfloat16, batch 256 × 128 tokens, one H200",
        f"{RESULTS}, GPU reference figures, 2026-11-30",
    ),
    Reference(
        "training", "cuda", 380_968.0, _training_flops(640, 16384),
        "the training recipe's arithmetic on CUDA tensors, 16,384 features, batch 4,096, one H200",
        f"{RESULTS}, GPU reference figures, 2026-11-30",
    ),
)  # fmt: skip
# Peak GPU memory of the measured forward pass (17.8 GiB at 32,768 tokens, blocks 0..9, bfloat16) less its
# weights, per token × d_model × block: the working memory of a forward batch scales with those three.
FORWARD_BYTES_PER_TOKEN_WIDTH_BLOCK = (17.8 * 2**30 - EMBEDDED_SHAPE.parameters() * 2) / (32_768 * 640 * 10)
GIB = 2**30


def reference(stage: str, device: str) -> Reference | None:
    """Return the measurement of ``stage`` on the kind of ``device`` ("cuda:1" → "cuda"), or None."""
    kind = device.split(":")[0]
    return next((r for r in REFERENCES if r.stage == stage and r.device == kind), None)


def stage_rate(stage: str, device: str, flops_per_token: float) -> tuple[float | None, Reference | None]:
    """Return (estimated tokens/s, the measurement it scales) of ``stage`` at ``flops_per_token``; (None, None) unmeasured."""
    measured = reference(stage, device)
    if measured is None:
        return None, None
    return measured.tokens_per_s * measured.flops_per_token / flops_per_token, measured


def index_state_bytes(n_units: int, config: RunConfig) -> int:
    """Return the bytes of an index state of ``n_units`` units (allocated on the meta device: exact, free)."""
    state = new_index(n_units, config.foundation.index, config.foundation.context_length, device="meta")
    return _tensor_bytes(state)


def _tensor_bytes(state: IndexState) -> int:
    tensors = [value for value in vars(state).values() if isinstance(value, torch.Tensor)]
    for slots in state.slots.values():
        tensors += [value for value in vars(slots).values() if isinstance(value, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def estimate_resources(config: RunConfig, shape: ModelShape) -> dict[str, Any]:
    """Return time per foundation stage, peak device memory, host RAM and disk of ``config`` on a model of ``shape``.

    Counts the whole foundation from an empty run directory (an upper bound for one half built).
    Returns {"stages": [{stage, kind, device, tokens, flops_per_token, tokens_per_s, seconds, reference}], "total_seconds",
    "memory", "disk", "disk_total"}; seconds and tokens_per_s are None where nothing was measured on the device's kind.
    """
    f = config.foundation
    device = f.device
    layer = f.layer if f.layer is not None else shape.n_layers // 2
    T = f.context_length
    n_chunks = f.tokens // T
    train_ids, held_ids = split_chunks(n_chunks, f.held_out_fraction)
    tokens, train_tokens, held_tokens = n_chunks * T, len(train_ids) * T, len(held_ids) * T
    forward_flops = shape.forward_flops(layer + 1, T)
    d = shape.d_model
    sizes = {dictionary_label(size): size for size in f.dictionary_sizes}
    sizes |= {dictionary.name: dictionary.d_sae for dictionary in map(load_dictionary, config.load_dictionaries)}
    stages: list[dict[str, Any]] = []

    def add(stage: str, kind: str, count: float, flops: float) -> None:
        rate, measured = stage_rate(kind, device, flops)
        stages.append(
            {
                "stage": stage,
                "kind": kind,
                "device": device,
                "tokens": int(count),
                "flops_per_token": flops,
                "tokens_per_s": rate,
                "seconds": None if rate is None else count / rate,
                "reference": None if measured is None else asdict(measured),
            }
        )

    add("activations", "forward", tokens, forward_flops)
    for size in sorted(f.dictionary_sizes):
        name = dictionary_label(size)
        add(f"train.{name}", "training", train_tokens * f.epochs, _training_flops(d, size))
        if not f.store_residuals:  # each epoch, the first fill and the held-out statistics (read twice) rerun the model
            reads = train_tokens * f.epochs + min(f.training_buffer_tokens, train_tokens) + 2 * held_tokens
            add(f"train.{name} (forward passes: no store)", "forward", reads, forward_flops)
    add("index", "index", tokens, sum(_encode_flops(d, size) for size in sizes.values()))
    if not f.store_residuals:
        add("index (forward pass: no store)", "forward", tokens, forward_flops)
    if config.correlation.enabled:
        add("correlate (forward pass)", "forward", min(config.correlation.tokens or tokens, tokens), forward_flops)
    known = [s["seconds"] for s in stages]
    buffer_rows = min(f.training_buffer_tokens, train_tokens)
    memory = _memory(config, shape, layer, train_tokens, sizes)
    weight_bytes = resolve_dtype(f.dtype).itemsize
    disk = {
        "corpus": tokens * 4,
        "residual_store": tokens * d * weight_bytes if f.store_residuals else 0,
        "indexes": sum(index_state_bytes(n, config) for n in sizes.values()) + index_state_bytes(f.neuron_pool_size, config),
        "dictionaries": sum((2 * d * n + n + d) * 4 for n in sizes.values()),
        "training_checkpoint": max((_training_state_bytes(d, n, buffer_rows) for n in f.dictionary_sizes), default=0),
    }
    return {
        "stages": stages,
        "total_seconds": None if any(s is None for s in known) else sum(known),
        "memory": memory,
        "disk": disk,
        "disk_total": sum(disk.values()),
    }


def _training_state_bytes(d: int, n: int, buffer_rows: int) -> int:
    """Return bytes of a training state: weights, their gradients and Adam's two moments (float32), and the buffer's rows."""
    return 4 * (2 * d * n + n + d) * 4 + buffer_rows * d * 4


def _memory(config: RunConfig, shape: ModelShape, layer: int, train_tokens: int, sizes: dict[str, int]) -> dict[str, Any]:
    f = config.foundation
    d = shape.d_model
    weights = shape.parameters() * resolve_dtype(f.dtype).itemsize
    forward_tokens = forward_batch_chunks(f) * f.context_length
    forward = FORWARD_BYTES_PER_TOKEN_WIDTH_BLOCK * forward_tokens * d * (layer + 1) * resolve_dtype(f.dtype).itemsize / 2
    buffer_rows = min(f.training_buffer_tokens, train_tokens)
    training = max((_training_state_bytes(d, n, buffer_rows) + 4 * f.training_batch_size * n * 4 for n in f.dictionary_sizes), default=0)
    batch = index_batch_tokens(f)
    index_states = sum(index_state_bytes(n, config) for n in sizes.values())
    index = index_states + batch * max(sizes.values(), default=0) * 4 + 3 * batch * min(4096, max(sizes.values(), default=0)) * 4
    stage_peaks = {"forward pass": forward, "training": training, "index": index}
    peak_stage = max(stage_peaks, key=lambda k: stage_peaks[k])
    device_peak = weights + stage_peaks[peak_stage]
    on_gpu = not f.device.startswith("cpu")
    host = (
        max(weights, index_states, _training_state_bytes(d, max(f.dictionary_sizes, default=0), buffer_rows)) + batch * d * 4
        if on_gpu
        else device_peak
    )
    return {
        "device": f.device,
        "model_weights": weights,
        "stage_working": stage_peaks,
        "peak_stage": peak_stage,
        "device_peak": device_peak,
        "host_ram_peak": host,
        "note": "host RAM on a GPU: the weights on their way to the device, checkpoint copies and one batch read",
    }


def log_estimates(estimate: dict[str, Any], log: Progress) -> None:
    """Print the estimate: one line per stage, the measurements it scales, then memory and disk."""
    log(
        "dry run: foundation estimates (tokens/s scales a measured figure by FLOPs per token; the figures follow). "
        "They hold for a machine like the measured one: a slower or busier one takes longer"
    )
    log(f"{'stage':<40} {'device':<7} {'tokens':>13} {'MFLOP/tok':>10} {'tokens/s':>11} {'est. time':>10}  measured")
    references: list[dict[str, Any]] = []
    for row in estimate["stages"]:
        if row["reference"] is not None and row["reference"] not in references:
            references.append(row["reference"])
        label = f"[{references.index(row['reference']) + 1}]" if row["reference"] is not None else "none: benchmarks/gpu_check.py"
        rate = "?" if row["tokens_per_s"] is None else f"{row['tokens_per_s']:,.0f}"
        log(
            f"{row['stage']:<40} {row['device']:<7} {row['tokens']:>13,} {row['flops_per_token'] / 1e6:>10,.1f} {rate:>11}"
            f" {_duration(row['seconds']):>10}  {label}"
        )
    total = estimate["total_seconds"]
    log(f"{'foundation total':<40} {'':<7} {'':>13} {'':>10} {'':>11} {_duration(total) if total is not None else 'unknown':>10}")
    for number, measured in enumerate(references, 1):
        log(
            f"  [{number}] {measured['stage']} on {measured['device']}: {measured['tokens_per_s']:,.0f} tokens/s at "
            f"{measured['flops_per_token'] / 1e6:,.1f} MFLOP/token: {measured['setting']} ({measured['source']})"
        )
    memory, disk = estimate["memory"], estimate["disk"]
    where = "RAM" if memory["device"].startswith("cpu") else f"{memory['device']} memory"
    log(
        f"memory: {where} peak ≈ {memory['device_peak'] / GIB:,.1f} GiB (model weights {memory['model_weights'] / GIB:,.1f} GiB"
        f" + {memory['peak_stage']} {memory['stage_working'][memory['peak_stage']] / GIB:,.1f} GiB); "
        f"host RAM ≈ {memory['host_ram_peak'] / GIB:,.1f} GiB"
    )
    parts = ", ".join(f"{name.replace('_', ' ')} {value / GIB:,.1f}" for name, value in disk.items() if value)
    log(f"disk: ≈ {estimate['disk_total'] / GIB:,.1f} GiB ({parts} GiB)")
    log("LLM stages: time not estimated (set by the provider's latency and rate limits, or the local model's speed)")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unmeasured"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
