"""Several judges (``evaluation.judges``): where each judge's records live and what it scores.

The primary judge (the first) writes the run's record files as a run with one judge does. Every
other judge writes its own judgments, detection, fuzzing and intervention records, with the same
file names, to ``RUN/judges/<label>/`` (``judge_directory``), scoring the same units, contexts and
explanations (the run's, never its own); steerings and the LLM response cache stay the run's.
Simulation belongs to the simulator role and is not repeated per judge. Tables and agreement
figures read these directories (``results.agreement``).
"""

import re
from dataclasses import replace
from pathlib import Path

from harness.config import EvaluationConfig, Role, RunConfig, judge_label, judge_roles

JUDGES_DIR = "judges"
JUDGE_SCORERS = ("rubric", "detection", "fuzzing", "intervention")  # the scorers a judge answers (simulation: the simulator's)


def judge_directory(run_dir: Path, label: str) -> Path:
    """Return the records directory of a judge other than the primary: ``RUN/judges/<label, file-safe>``."""
    return run_dir / JUDGES_DIR / re.sub(r"[^A-Za-z0-9._-]+", "_", label)


def other_judges(config: RunConfig) -> list[tuple[str, Role]]:
    """Return (label, role) of every judge after the primary, in config order."""
    return [(judge_label(role), role) for role in judge_roles(config)[1:]]


def judge_evaluation(evaluation: EvaluationConfig) -> EvaluationConfig:
    """Return ``evaluation`` as another judge runs it: its judge scorers only, without simulation and intervention
    (the intervention stage runs on its own, ``harness.run.intervene``)."""
    return replace(evaluation, scorers=tuple(s for s in evaluation.scorers if s in JUDGE_SCORERS and s != "intervention"))


def judges_manifest(config: RunConfig) -> list[dict[str, str]]:
    """Return the manifest's ``judges`` entry: every judge's label and records directory (relative to the run), primary first."""
    labels = [judge_label(role) for role in judge_roles(config)]
    return [{"label": labels[0], "dir": "."}] + [{"label": label, "dir": str(judge_directory(Path("."), label))} for label in labels[1:]]
