"""Choose the units a run evaluates and draw their contexts: index → ``units.jsonl`` and ``contexts.jsonl``.

Every unit set gets the same budget: ``units_per_dictionary`` random alive units
of each dictionary, and as many neurons from the neuron pool (random, or matched
on firing density to one dictionary's chosen features).
"""

import math
import random
from pathlib import Path
from typing import Any

import numpy as np

from harness.dictionaries.neurons import POOL_NAME
from harness.index.sampling import SamplingConfig, unit_contexts
from harness.index.store import load_index, unit_samples
from harness.records import EvaluatedUnit, UnitContexts
from harness.run.directory import update_manifest
from harness.run.evaluate import select_units
from harness.storage import atomic_write_bytes
from results.store import records_text

UNITS, CONTEXTS = "units.jsonl", "contexts.jsonl"


def choose_units(
    run_dir: Path,
    dictionary_sets: list[str],
    count: int,
    seed: int,
    include_neurons: bool,
    match_density: str | None,
    d_mlp: int,
) -> list[EvaluatedUnit]:
    """Return the evaluated units of every set (dictionaries in the given order, then neurons); writes units.jsonl."""
    units: list[EvaluatedUnit] = []
    for name in dictionary_sets:
        state, about = load_index(run_dir / "index" / f"{name}.safetensors")
        fire_count = state.fire_count.numpy()
        layer = int(about.get("hook_name", "blocks.0.").split(".")[1])
        for index in select_units(fire_count, count, seed):
            units.append(_unit(f"{name}/{index}", name, "feature", layer, index, state.n_units, index, state))
    if include_neurons:
        state, about = load_index(run_dir / "index" / f"{POOL_NAME}.safetensors")
        fire_count = state.fire_count.numpy()
        names: list[str] = about["unit_names"]
        if match_density is not None:
            targets = [unit.density for unit in units if unit.unit_set == match_density]
            chosen = density_matched(fire_count / max(state.n_tokens, 1), targets)
        else:
            chosen = select_units(fire_count, count, seed)
        for position in chosen:
            layer_text, neuron = names[position].split("/")
            layer = int(layer_text.removeprefix("mlp."))
            units.append(_unit(names[position], POOL_NAME, "neuron", layer, int(neuron), d_mlp, position, state))
    _write_if_changed(run_dir / UNITS, records_text(units))
    return units


def density_matched(densities: np.ndarray, targets: list[float]) -> list[int]:
    """Return, for each target density in turn, the alive pool unit nearest on a log scale not yet taken."""
    available = {int(i) for i in np.flatnonzero(densities > 0)}
    chosen = []
    for target in targets:
        if not available:
            break
        best = min(sorted(available), key=lambda i: abs(math.log(densities[i]) - math.log(max(target, 1e-12))))
        chosen.append(best)
        available.remove(best)
    return chosen


def sample_contexts(
    run_dir: Path, units: list[EvaluatedUnit], chunks: np.ndarray, tokenizer: Any, sampling: SamplingConfig
) -> list[UnitContexts]:
    """Return the explanation and held-out scoring contexts of every unit; writes contexts.jsonl."""
    by_set: dict[str, list[EvaluatedUnit]] = {}
    for unit in units:
        by_set.setdefault(unit.unit_set, []).append(unit)
    drawn: dict[str, UnitContexts] = {}
    for unit_set, members in by_set.items():
        state, about = load_index(run_dir / "index" / f"{unit_set}.safetensors")
        names = about.get("unit_names")
        for unit in members:
            position = names.index(unit.unit) if names else unit.index
            samples = unit_samples(state, position, unit.unit)
            drawn[unit.unit] = unit_contexts(unit.unit, samples, float(state.maximum[position]), chunks, tokenizer, sampling)
    result = [drawn[unit.unit] for unit in units]
    _write_if_changed(run_dir / CONTEXTS, records_text([c for unit in result for c in (*unit.explain, *unit.score)]))
    duplicates = {c.unit: c.duplicates_dropped for c in result if c.duplicates_dropped}
    update_manifest(run_dir, contexts={"held_out_duplicates_dropped": sum(duplicates.values()), "by_unit": duplicates})
    return result


def sample_features(fire_count: np.ndarray, count: int | None, seed: int, required: list[int]) -> list[int]:
    """Return ``required`` plus up to ``count`` random alive features (all features when count is None), sorted."""
    if count is None:
        return list(range(fire_count.size))
    taken = set(required)
    alive = [int(i) for i in np.flatnonzero(fire_count > 0) if int(i) not in taken]
    extra = random.Random(f"correlation|{seed}").sample(alive, max(0, min(count - len(required), len(alive))))
    return sorted(set(required) | set(extra))


def _unit(name: str, unit_set: str, kind: str, layer: int, index: int, set_size: int, position: int, state: Any) -> EvaluatedUnit:
    """Return the record of the unit at ``position`` of an index state."""
    return EvaluatedUnit(
        unit=name,
        unit_set=unit_set,
        kind=kind,
        layer=layer,
        index=index,
        set_size=set_size,
        density=float(state.fire_count[position]) / max(state.n_tokens, 1),
        max_activation=float(state.maximum[position]),
    )


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_bytes(path, text.encode("utf-8"))
