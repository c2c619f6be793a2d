"""On-disk format of the activation index, and reading samples back out of it.

Format (version 2; version 1 had no ``weighted`` and ``spaced_top`` kinds): one safetensors file. Its metadata holds
``format = "monoscope-index"``, ``version = "2"`` and ``header``, a JSON object
with the index config, ``n_units``, ``context_length``, ``n_tokens``,
``chunk_ranges`` (the half-open chunk ranges folded in) and free-form
``about`` (dictionary name, hook, corpus fingerprint). Tensors:

- ``stats.fire_count``, ``stats.negative_count`` [units] int64; ``stats.activation_sum``
  [units] float64; ``stats.maximum``, ``stats.minimum`` [units] float32;
  ``stats.histogram`` [units, n_bins] int64 (firing tokens per interval);
- for each kind in top / interval / nonzero / zero / weighted / spaced_top: ``<kind>.key``,
  ``<kind>.chunk`` (int64, -1 = empty), ``<kind>.position`` (int32), ``<kind>.activations``
  (float32, last axis = window), and ``<kind>.tie`` for top, weighted and spaced_top (whose
  keys are float: the activation, or for weighted the float64 A-Res key).

The file is written to a temporary name and renamed, so a reader never sees
half an index, and an interrupted build resumes from the last checkpoint.
"""

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from harness.errors import MonoscopeError
from harness.index.state import SAMPLE_KINDS, IndexConfig, IndexState, SampleSlots, window_start
from harness.records import ContextSample, UnitStats
from harness.storage import atomic_write_bytes

FORMAT_NAME = "monoscope-index"
FORMAT_VERSION = 2


def is_partial_index(path: Path) -> bool:
    """Return True for a partial index file (``monoscope index --chunks``: ``<name>.chunks-<start>-<end>.safetensors``; older
    versions wrote ``<name>.shard-<i>-of-<n>.safetensors``), which a run never reads as a unit set."""
    return ".chunks-" in path.name or ".shard-" in path.name


def save_index(state: IndexState, path: Path, about: dict[str, Any] | None = None) -> None:
    """Write ``state`` (on any device) to ``path`` atomically in the documented, device-free format."""
    from safetensors.torch import save

    header = {
        "config": asdict(state.config),
        "n_units": state.n_units,
        "context_length": state.context_length,
        "n_tokens": state.n_tokens,
        "chunk_ranges": [list(item) for item in state.chunk_ranges],
        "about": about or {},
    }
    tensors = {
        "stats.fire_count": state.fire_count,
        "stats.negative_count": state.negative_count,
        "stats.activation_sum": state.activation_sum,
        "stats.maximum": state.maximum,
        "stats.minimum": state.minimum,
        "stats.histogram": state.histogram,
    }
    for kind, slots in state.slots.items():
        tensors[f"{kind}.key"] = slots.key
        tensors[f"{kind}.chunk"] = slots.chunk
        tensors[f"{kind}.position"] = slots.position
        tensors[f"{kind}.activations"] = slots.activations
        if slots.tie is not None:
            tensors[f"{kind}.tie"] = slots.tie
    metadata = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION), "header": json.dumps(header)}
    data = save({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data)


def read_header(path: Path) -> dict[str, Any]:
    """Return the JSON header of the index at ``path`` (checks format and version)."""
    from safetensors import safe_open

    if not path.exists():
        raise MonoscopeError(f"no index at {str(path)!r}", "run 'monoscope index' first")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise MonoscopeError(f"index {str(path)!r} is corrupt ({exc})", "delete it and rebuild with 'monoscope index'") from exc
    if metadata.get("format") != FORMAT_NAME:
        raise MonoscopeError(f"{str(path)!r} is not a monoscope index", "point at an index.safetensors written by monoscope")
    if metadata.get("version") != str(FORMAT_VERSION):
        raise MonoscopeError(
            f"index {str(path)!r} has format version {metadata.get('version')}, this monoscope reads {FORMAT_VERSION}",
            "rebuild the index with this version",
        )
    return json.loads(metadata["header"])


def unit_maxima(path: Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """Return every unit's maximum activation [n_units] over the indexed tokens, and the index's ``about``, reading nothing else."""
    from safetensors import safe_open

    header = read_header(path)
    with safe_open(str(path), framework="pt") as handle:
        return handle.get_tensor("stats.maximum"), header.get("about", {})


def load_index(path: Path) -> tuple[IndexState, dict[str, Any]]:
    """Return the index stored at ``path`` (tensors on the CPU; ``harness.index.state.index_to`` moves them) and its ``about``."""
    from safetensors.torch import load_file

    header = read_header(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise MonoscopeError(f"index {str(path)!r} is corrupt ({exc})", "delete it and rebuild with 'monoscope index'") from exc
    state = IndexState(
        config=IndexConfig(**header["config"]),
        n_units=int(header["n_units"]),
        context_length=int(header["context_length"]),
        n_tokens=int(header["n_tokens"]),
        chunk_ranges=[(int(a), int(b)) for a, b in header["chunk_ranges"]],
    )
    state.fire_count = tensors["stats.fire_count"]
    state.negative_count = tensors["stats.negative_count"]
    state.activation_sum = tensors["stats.activation_sum"]
    state.maximum = tensors["stats.maximum"]
    state.minimum = tensors["stats.minimum"]
    state.histogram = tensors["stats.histogram"]
    state.slots = {
        kind: SampleSlots(
            key=tensors[f"{kind}.key"],
            chunk=tensors[f"{kind}.chunk"],
            position=tensors[f"{kind}.position"],
            activations=tensors[f"{kind}.activations"],
            tie=tensors.get(f"{kind}.tie"),
        )
        for kind in SAMPLE_KINDS
    }
    return state, header.get("about", {})


def unit_stats(state: IndexState, unit: int, unit_name: str) -> UnitStats:
    """Return the firing statistics of one unit."""
    fires = int(state.fire_count[unit])
    n_tokens = max(state.n_tokens, 1)
    return UnitStats(
        unit=unit_name,
        n_tokens=state.n_tokens,
        fire_count=fires,
        density=fires / n_tokens,
        negative_fraction=int(state.negative_count[unit]) / n_tokens,
        max_activation=float(state.maximum[unit]) if state.n_tokens else 0.0,
        min_activation=float(state.minimum[unit]) if state.n_tokens else 0.0,
        mean_activation=float(state.activation_sum[unit]) / n_tokens,
        histogram=tuple(int(count) for count in state.histogram[unit].tolist()),
    )


def unit_samples(state: IndexState, unit: int, unit_name: str) -> list[ContextSample]:
    """Return every stored sample of one unit (top first, then intervals, random firing, zero)."""
    config = state.config
    samples: list[ContextSample] = []
    for kind in SAMPLE_KINDS:
        slots = state.slots[kind]
        chunks = slots.chunk[unit].reshape(-1)
        positions = slots.position[unit].reshape(-1)
        windows = slots.activations[unit].reshape(-1, config.window)
        per_interval = config.interval_samples if kind == "interval" else None
        for slot, chunk in enumerate(chunks.tolist()):
            if chunk < 0:
                continue
            position = int(positions[slot])
            start = int(window_start(torch.tensor(position, device="cpu"), state.context_length, config.window_before, config.window))
            samples.append(
                ContextSample(
                    unit=unit_name,
                    kind=kind,
                    chunk=chunk,
                    position=position,
                    window_start=start,
                    activations=tuple(float(value) for value in windows[slot].tolist()),
                    interval=slot // per_interval if per_interval else None,
                )
            )
    return samples


def firing_summary(path: Path) -> dict[str, float]:
    """Return an index's dead fraction (never fired on any indexed token) and mean density and negative share."""
    from safetensors import safe_open

    header = read_header(path)
    with safe_open(str(path), framework="pt") as handle:
        fire_count = handle.get_tensor("stats.fire_count")
        negative_count = handle.get_tensor("stats.negative_count")
    n_tokens = max(int(header["n_tokens"]), 1)
    return {
        "n_units": int(header["n_units"]),
        "n_tokens": int(header["n_tokens"]),
        "dead_fraction_all_tokens": float((fire_count == 0).float().mean()),
        "mean_density": float(fire_count.double().mean() / n_tokens),
        "mean_negative_share": float(negative_count.double().mean() / n_tokens),
    }
