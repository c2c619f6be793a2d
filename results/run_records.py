"""A run's record files as the report reads them: the last record per key of each, and the manifest."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.records import EvaluatedUnit, Explanation, Judgment, Simulation, TokenContext
from harness.steering.generate import STEERING, Steering
from results.store import latest_by_key, read_records
from scorers.binary import BinaryJudgment
from scorers.intervention import InterventionJudgment

UNITS, CONTEXTS = "units.jsonl", "contexts.jsonl"
EXPLANATIONS, JUDGMENTS, SIMULATIONS = "explanations.jsonl", "judgments.jsonl", "simulations.jsonl"
INTERVENTIONS = "interventions.jsonl"
BINARY_FILES = ("detection.jsonl", "fuzzing.jsonl")


@dataclass
class RunRecords:
    """The last record per key of every record file of a run (missing files read as empty)."""

    units: dict[str, EvaluatedUnit] = field(default_factory=dict)
    contexts: dict[tuple[str, str], TokenContext] = field(default_factory=dict)
    explanations: dict[tuple[str, str], Explanation] = field(default_factory=dict)
    judgments: dict[tuple[str, str, str], Judgment] = field(default_factory=dict)
    simulations: dict[tuple[str, str, str], Simulation] = field(default_factory=dict)
    steerings: list[Steering] = field(default_factory=list)
    interventions: dict[tuple[str, str, str, float], InterventionJudgment] = field(default_factory=dict)
    classifications: dict[tuple[str, str, str, str, str], BinaryJudgment] = field(default_factory=dict)  # detection, fuzzing
    steering_kl_threshold: float = 0.5  # the run's steering.kl_threshold (harness.config.SteeringConfig)


def load_run(run_dir: Path) -> RunRecords:
    """Return the run's records, the last one per key (reruns append)."""
    return RunRecords(
        units=latest_by_key(read_records(run_dir / UNITS, EvaluatedUnit)),
        contexts=latest_by_key(read_records(run_dir / CONTEXTS, TokenContext)),
        explanations=latest_by_key(read_records(run_dir / EXPLANATIONS, Explanation)),
        judgments=latest_by_key(read_records(run_dir / JUDGMENTS, Judgment)),
        simulations=latest_by_key(read_records(run_dir / SIMULATIONS, Simulation)),
        steerings=read_records(run_dir / STEERING, Steering),
        interventions=latest_by_key(read_records(run_dir / INTERVENTIONS, InterventionJudgment)),
        classifications=latest_by_key([r for name in BINARY_FILES for r in read_records(run_dir / name, BinaryJudgment)]),
        steering_kl_threshold=float(read_manifest_file(run_dir).get("config", {}).get("steering", {}).get("kl_threshold", 0.5)),
    )


def read_manifest_file(run_dir: Path) -> dict[str, Any]:
    """Return the run's manifest.json, or an empty dict when it is missing or not a JSON object."""
    path = run_dir / "manifest.json"
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
