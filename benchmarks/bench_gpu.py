"""gpu_pipeline: tokens/s of each foundation stage on an accelerator beside the CPU path in the same run, and beside the card's limit.

Stages, each through monoscope's own code on both devices:

- ``forward``: blocks 0..L of a Gemma-3-shaped model with random weights (the embedded model's
  config), the residual hook and every MLP hook 0..L, as the activation pass runs it; bfloat16 on
  the accelerator, float32 on the CPU.
- ``index``: IndexBuilder.add (encode plus update) of a 65,536-unit ReLU dictionary, d_in 640, whose
  bias makes 1.6% of units fire on Gaussian residuals (≈ 1,049 firing entries per token).
- ``training``: train_dictionary of 16,384 features at batch 4,096 through the streaming buffer.

The card's limit, measured on the spot rather than taken from a datasheet: the matmul rate of a
large bfloat16 (forward) or float32 (training) product, and for the index the copy bandwidth and the
rate of ``torch.sort`` on int64 keys. Fractions: FLOPs per token × tokens/s ÷ that rate; for the index,
tokens/s ÷ min(bandwidth ÷ bytes per token, sort rate ÷ firing entries per token), where the bytes per
token are the feature activations written by the encode and read back by the update (2 × units × 4).
"""

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import benchmark

INDEX_UNITS, INDEX_D_IN, INDEX_DENSITY = 65_536, 640, 0.016
TRAIN_FEATURES, TRAIN_BATCH = 16_384, 4_096


def accelerator() -> str | None:
    """Return the accelerator device string ("cuda"), or None on a machine without one."""
    return "cuda" if torch.cuda.is_available() else None


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, work: Callable[[], Any], repeats: int = 1) -> float:
    """Return the best wall seconds of ``repeats`` runs of ``work`` after one warm-up run."""
    work()
    synchronize(device)
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def random_gemma(source: Path, device: str, dtype: torch.dtype) -> Any:
    """Return a SubjectModel: a Gemma-3-shaped model with random weights from ``source``'s config and tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from harness.subject.model import wrap_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source), dtype=dtype).to(device)
    return wrap_model(model, AutoTokenizer.from_pretrained(source), name="random-gemma-3", device=device)


def forward_rate(subject: Any, device: str, chunks: int, length: int) -> dict[str, float]:
    """Return tokens/s and FLOPs/token of the activation pass over ``chunks`` × ``length`` random tokens."""
    from harness.run.estimates import EMBEDDED_SHAPE
    from harness.subject.model import collect_activations

    layer = subject.default_layer
    hooks = [f"blocks.{layer}.hook_resid_post"] + [f"blocks.{i}.mlp.hook_post" for i in range(layer + 1)]
    tokens = torch.randint(10, 10_000, (chunks, length), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        seconds = timed(device, lambda: collect_activations(subject, tokens, hooks), repeats=2)
    return {
        "tokens": chunks * length,
        "tokens_per_s": chunks * length / seconds,
        "flops_per_token": EMBEDDED_SHAPE.forward_flops(layer + 1, length),
    }


def index_rate(device: str, tokens: int, batch_tokens: int, units: int = INDEX_UNITS) -> dict[str, float]:
    """Return tokens/s of IndexBuilder.add of ``units`` units over ``tokens`` Gaussian residuals, and the firing density measured."""
    from harness.dictionaries.dictionary import Dictionary, encode
    from harness.index.builder import IndexBuilder
    from harness.index.state import IndexConfig

    generator = torch.Generator().manual_seed(0)
    decoder = torch.nn.functional.normalize(torch.randn(units, INDEX_D_IN, generator=generator), dim=-1)
    threshold = math.sqrt(2) * torch.special.erfinv(torch.tensor(1 - 2 * INDEX_DENSITY)).item()  # P(N(0,1) > t) = density
    dictionary = Dictionary(
        name="bench", hook_name="blocks.9.hook_resid_post", architecture="relu", d_in=INDEX_D_IN, d_sae=units,
        W_enc=decoder.t().contiguous(), b_enc=torch.full((units,), -threshold), W_dec=decoder, b_dec=torch.zeros(INDEX_D_IN),
    )  # fmt: skip
    length = 128
    per_batch = max(1, batch_tokens // length)
    n_chunks = max(2 * per_batch, tokens // length)
    residuals = torch.randn(n_chunks, length, INDEX_D_IN, generator=generator).to(device)
    density = (encode(dictionary_on(dictionary, device), residuals[:per_batch]) > 0).float().mean().item()
    with ScratchDirectory() as scratch:
        builder = IndexBuilder(scratch / "bench.safetensors", dictionary, IndexConfig(), length, {}, device)
        builder.add(residuals[:per_batch], torch.arange(per_batch))  # warm-up (kernels, allocator)
        synchronize(device)
        started = time.perf_counter()
        for start in range(per_batch, n_chunks, per_batch):
            stop = min(start + per_batch, n_chunks)
            builder.add(residuals[start:stop], torch.arange(start, stop))
        synchronize(device)
        seconds = time.perf_counter() - started
    measured_tokens = (n_chunks - per_batch) * length
    return {
        "tokens": measured_tokens,
        "tokens_per_s": measured_tokens / seconds,
        "firing_density": density,
        "units": units,
        "firing_entries_per_token": density * units,
        "flops_per_token": 2.0 * INDEX_D_IN * units,
    }


def training_rate(device: str, steps: int, features: int = TRAIN_FEATURES) -> dict[str, float]:
    """Return tokens/s of train_dictionary (16,384 features, batch 4,096, streaming buffer) over ``steps`` steps."""
    from harness.dictionaries.activation_buffer import TensorSource
    from harness.dictionaries.training import TrainingConfig, train_dictionary

    rows = (torch.randn(steps * TRAIN_BATCH, INDEX_D_IN, generator=torch.Generator().manual_seed(1)) + 3.0).to(device)
    config = TrainingConfig(d_sae=features, sparsity_coefficient=5.0, batch_size=TRAIN_BATCH, buffer_tokens=16 * TRAIN_BATCH)
    train_dictionary(TensorSource(rows[: 4 * TRAIN_BATCH], 4 * TRAIN_BATCH), config, "warm-up", "blocks.9.hook_resid_post", device=device)
    synchronize(device)
    started = time.perf_counter()
    train_dictionary(TensorSource(rows, 4 * TRAIN_BATCH), config, "bench", "blocks.9.hook_resid_post", device=device)
    synchronize(device)
    seconds = time.perf_counter() - started
    return {
        "tokens": rows.shape[0],
        "features": features,
        "tokens_per_s": rows.shape[0] / seconds,
        "flops_per_token": 12.0 * INDEX_D_IN * features,
    }


def card_limits(device: str, size: int = 8192, copy_elements: int = 2**28, sort_keys: int = 2**25) -> dict[str, float]:
    """Measure the card's matmul rates (bfloat16, float32), copy bandwidth and int64 sort rate."""
    limits = {}
    for name, dtype in (("bf16_flops", torch.bfloat16), ("fp32_flops", torch.float32)):
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        limits[name] = 2 * size**3 / timed(device, lambda a=a, b=b: a @ b, repeats=3)
    block = torch.empty(copy_elements, device=device, dtype=torch.float32)  # 1 GiB by default
    limits["copy_bytes_per_s"] = 2 * block.numel() * 4 / timed(device, lambda: block.clone(), repeats=3)  # read + write
    keys = torch.randint(0, 2**62, (sort_keys,), device=device)
    limits["sort_keys_per_s"] = keys.numel() / timed(device, lambda: torch.sort(keys), repeats=3)
    return limits


def dictionary_on(dictionary: Any, device: str) -> Any:
    from harness.dictionaries.dictionary import dictionary_to

    return dictionary_to(dictionary, device)


class ScratchDirectory:
    """A scratch directory as a Path (context manager)."""

    def __enter__(self) -> Path:
        import tempfile

        self._scratch = tempfile.TemporaryDirectory(prefix="monoscope-gpu-")
        return Path(self._scratch.name)

    def __exit__(self, *exc: object) -> None:
        self._scratch.cleanup()


def pipeline(model_source: Path, device: str, scale: float = 1.0) -> dict[str, Any]:
    """Measure every stage on ``device`` and on the CPU, and the card's limits; ``scale`` < 1 shrinks the work (smoke runs)."""
    results: dict[str, Any] = {"device": device, "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"}
    cpu_threads = torch.get_num_threads()
    subject = random_gemma(model_source, device, torch.bfloat16 if device != "cpu" else torch.float32)
    big = max(1, int(256 * scale))
    results["forward"] = {device: forward_rate(subject, device, big, 128)}
    del subject
    cpu_subject = random_gemma(model_source, "cpu", torch.float32)
    results["forward"]["cpu"] = forward_rate(cpu_subject, "cpu", 4, 128)
    del cpu_subject
    full = scale >= 1
    units, features = (INDEX_UNITS, TRAIN_FEATURES) if full else (4096, 1024)
    results["index"] = {
        device: index_rate(device, int(1_048_576 * scale), 16_384 if full else 1_024, units),
        "cpu": index_rate("cpu", 4_096 if full else 2_048, 1_024, units),
    }
    results["training"] = {device: training_rate(device, max(2, int(200 * scale)), features), "cpu": training_rate("cpu", 2, features)}
    limits = card_limits(device, 8192, 2**28, 2**25) if full else card_limits(device, 512, 2**20, 2**16)
    results["card"] = limits
    for stage in ("forward", "index", "training"):
        row = results[stage]
        row["speedup_over_cpu"] = row[device]["tokens_per_s"] / row["cpu"]["tokens_per_s"]
    forward = results["forward"][device]
    forward_peak = limits["bf16_flops"] if device != "cpu" else limits["fp32_flops"]  # bf16 on a GPU, fp32 on a CPU
    results["forward"]["fraction_of_card"] = forward["flops_per_token"] * forward["tokens_per_s"] / forward_peak
    train = results["training"][device]
    results["training"]["fraction_of_card"] = train["flops_per_token"] * train["tokens_per_s"] / limits["fp32_flops"]
    index = results["index"][device]
    bandwidth_limit = limits["copy_bytes_per_s"] / (2 * units * 4)
    sort_limit = limits["sort_keys_per_s"] / max(index["firing_entries_per_token"], 1.0)
    results["index"]["card_limit_tokens_per_s"] = min(bandwidth_limit, sort_limit)
    results["index"]["limit_terms"] = {"bandwidth": bandwidth_limit, "sort": sort_limit}
    results["index"]["fraction_of_card"] = index["tokens_per_s"] / results["index"]["card_limit_tokens_per_s"]
    results["cpu_threads"] = cpu_threads
    if not full:
        results["card_note"] = "smoke run: the limits come from tiny probes, so the fractions of the card mean nothing"
    results["targets"] = {
        "index_tokens_per_s": ">= 1,000,000 and >= 50x the CPU path",
        "training_tokens_per_s": ">= 300,000 and >= 50x the CPU path",
    }
    results["met"] = {
        "index": index["tokens_per_s"] >= 1e6 and results["index"]["speedup_over_cpu"] >= 50,
        "training": train["tokens_per_s"] >= 3e5 and results["training"]["speedup_over_cpu"] >= 50,
    }
    return results


@benchmark
def gpu_pipeline(args: argparse.Namespace) -> dict:
    """Per-stage tokens/s on the accelerator beside the CPU path and the card's measured limits (needs CUDA)."""
    device = accelerator()
    if device is None:
        return {"measured": False, "reason": "no CUDA device on this machine: run benchmarks/gpu_check.py where there is one"}
    from harness.subject.embedded import embedded_checkpoint_dir

    results = pipeline(args.gpu_model_source or embedded_checkpoint_dir(), device)
    return results | {"ratio": round(results["index"]["speedup_over_cpu"], 1), "target": ">= 50 (index, GPU over CPU); see targets"}
