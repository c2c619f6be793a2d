"""Turn unit names of a run directory into clamps: the unit's dictionary, index and maximum activation.

A unit is named as everywhere in monoscope: ``DICTIONARY/INDEX`` for a feature of a dictionary
the run trained (``RUN/dictionaries/DICTIONARY``) or loaded (the config's ``dictionaries.load``),
``mlp.L/I`` for neuron I of block L's MLP. The strength of a clamp is a multiple of the unit's
maximum activation over the run's corpus, read from its index (``RUN/index/SET.safetensors``):
Scaling Monosemanticity clamped features to multiples such as 5× and 10× of their maximum,
and to negative values.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from harness.dictionaries.dictionary import Dictionary, identity_dictionary
from harness.dictionaries.formats import load_dictionary, load_saelens_directory
from harness.dictionaries.neurons import POOL_NAME
from harness.errors import MonoscopeError
from harness.index.store import unit_maxima
from harness.steering.clamp import Clamp
from harness.subject.model import SubjectModel

_NEURON = re.compile(r"^mlp\.(\d+)/(\d+)$")
_FEATURE = re.compile(r"^(.+)/(\d+)$")


@dataclass(frozen=True, eq=False)
class SteeredUnit:
    """One unit of a run, ready to clamp: its dictionary (identity for a neuron), index and maximum activation."""

    name: str
    dictionary: Dictionary
    index: int
    max_activation: float


def run_dictionary(run_dir: Path, name: str, loaded: tuple[str, ...] = ()) -> Dictionary:
    """Return the dictionary ``name`` of a run: trained there, or one of ``loaded`` (the config's ``dictionaries.load``)."""
    trained = run_dir / "dictionaries" / name
    if (trained / "cfg.json").exists():
        return load_saelens_directory(trained, name)
    for spec in loaded:
        dictionary = load_dictionary(spec)
        if dictionary.name == name:
            return dictionary
    indexed = sorted(path.stem for path in (run_dir / "index").glob("*.safetensors"))
    raise MonoscopeError(f"run {str(run_dir)!r} has no dictionary {name!r}", f"name a unit of one of: {', '.join(indexed) or 'none'}")


def check_unit_name(name: str) -> None:
    """Raise MonoscopeError for a unit name that is neither ``DICTIONARY/INDEX`` nor ``mlp.L/I`` (no model or file needed)."""
    feature = _FEATURE.match(name)
    if not _NEURON.match(name) and not feature:
        raise MonoscopeError(f"bad unit name {name!r}", "write DICTIONARY/INDEX (e.g. sae-2k/790) or mlp.L/I (e.g. mlp.7/1513)")
    if feature and feature.group(1) == POOL_NAME:
        raise MonoscopeError(f"{name}: the neuron pool's units are named by block and neuron", "write mlp.L/I (e.g. mlp.7/1513)")


def resolve_unit(run_dir: Path, subject: SubjectModel, name: str, loaded: tuple[str, ...] = ()) -> SteeredUnit:
    """Return the unit ``name`` (``DICTIONARY/INDEX`` or ``mlp.L/I``) of a run with its maximum activation.

    ``loaded``: the run's loaded dictionary specs (``harness.run.steering.loaded_dictionaries``).
    Raises MonoscopeError for a malformed name, an unknown dictionary, an index out of range, a
    neuron outside the run's indexed pool, or a unit that never fired (no maximum to scale).
    """
    check_unit_name(name)
    neuron = _NEURON.match(name)
    if neuron:
        layer, index = int(neuron.group(1)), int(neuron.group(2))
        if layer >= subject.n_layers or index >= subject.d_mlp:
            raise MonoscopeError(
                f"neuron {name} is outside the model ({subject.n_layers} blocks of {subject.d_mlp} neurons)", "check the name"
            )
        maxima, about = unit_maxima(run_dir / "index" / f"{POOL_NAME}.safetensors")
        names = about.get("unit_names") or []
        if name not in names:
            raise MonoscopeError(
                f"neuron {name} is not in the run's indexed pool: its maximum activation is unknown", "steer a pool neuron"
            )
        dictionary = identity_dictionary("neurons", layer, subject.d_mlp)
        return _checked(SteeredUnit(name, dictionary, index, float(maxima[names.index(name)])))
    feature = _FEATURE.match(name)
    if not feature:
        raise MonoscopeError(f"bad unit name {name!r}", "write DICTIONARY/INDEX (e.g. sae-2k/790) or mlp.L/I (e.g. mlp.7/1513)")
    dictionary = run_dictionary(run_dir, feature.group(1), loaded)
    index = int(feature.group(2))
    if index >= dictionary.d_sae:
        raise MonoscopeError(f"{name}: dictionary {dictionary.name!r} has {dictionary.d_sae} features", f"use 0..{dictionary.d_sae - 1}")
    maxima, _ = unit_maxima(run_dir / "index" / f"{dictionary.name}.safetensors")
    return _checked(SteeredUnit(name, dictionary, index, float(maxima[index])))


def _checked(unit: SteeredUnit) -> SteeredUnit:
    if not unit.max_activation > 0:
        raise MonoscopeError(
            f"{unit.name} never fired on the run's corpus (maximum {unit.max_activation:g})",
            "a multiple of its maximum is 0: steer another unit",
        )
    return unit


def unit_clamps(units: list[SteeredUnit], multiples: list[float]) -> list[Clamp]:
    """Return one clamp per dictionary holding each unit at its multiple of its maximum activation."""
    if len(multiples) == 1:
        multiples = multiples * len(units)
    if len(multiples) != len(units):
        raise MonoscopeError(f"{len(multiples)} values for {len(units)} units", "give one value, or one per unit")
    groups: dict[tuple[str, str], list[tuple[SteeredUnit, float]]] = {}
    for unit, multiple in zip(units, multiples, strict=True):
        groups.setdefault((unit.dictionary.name, unit.dictionary.hook_name), []).append((unit, multiple))
    return [
        Clamp(members[0][0].dictionary, tuple(u.index for u, _ in members), tuple(m * u.max_activation for u, m in members))
        for members in groups.values()
    ]
