"""demo_wall_time: the per-stage wall times a finished ``monoscope demo`` run recorded in its manifest (the demo is not rerun)."""

import argparse
import json
from pathlib import Path
from typing import Any

from common import ROOT, benchmark

TARGET_SECONDS = 1200.0
TARGET = "<= 1 (total / 1200 s: the demo should take under 20 minutes on the 2-core machine)"
DEFAULT_RUN_DIR = Path("runs/demo")


def demo_run_dir(args: argparse.Namespace) -> Path:
    """Return the demo run directory: --demo-run-dir (default runs/demo); a relative path missing here is looked up under the repository."""
    chosen = Path(getattr(args, "demo_run_dir", None) or DEFAULT_RUN_DIR)
    if not chosen.is_absolute() and not chosen.exists() and (ROOT / chosen).exists():
        return ROOT / chosen
    return chosen


def _not_measured(reason: str, run_dir: Path) -> dict[str, Any]:
    """Return the result of a benchmark that found nothing to read, saying how to produce it."""
    how = f"produce it with `monoscope demo --run-dir {run_dir}`, or pass --demo-run-dir DIR of a finished demo run"
    return {"measured": False, "run_dir": str(run_dir), "reason": f"{reason}; {how}", "target": TARGET}


@benchmark
def demo_wall_time(args: argparse.Namespace) -> dict:
    """Wall time of a finished demo run, per stage and in total, from <run dir>/manifest.json against the 20-minute target.

    Returns {"measured": False, "reason": ...} when there is no finished run; otherwise the per-stage seconds ("timings"),
    their sum, the recorded total ("wall_seconds"), the token budget, the git commit, and "ratio" = total / 1200 s.
    """
    run_dir = demo_run_dir(args)
    path = run_dir / "manifest.json"
    if not path.is_file():
        return _not_measured(f"no manifest at {path}", run_dir)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return _not_measured(f"unreadable manifest {path} ({error})", run_dir)
    timings = manifest.get("timings")
    total = manifest.get("wall_seconds")
    if not isinstance(timings, dict) or not timings or not isinstance(total, int | float):
        return _not_measured(f"the run in {run_dir} has not finished (its manifest has no timings or wall_seconds)", run_dir)
    stages = {stage: round(float(seconds), 2) for stage, seconds in sorted(timings.items(), key=lambda item: -float(item[1]))}
    stage_sum = sum(stages.values())
    config = manifest.get("config", {})
    return {
        "measured": True,
        "run_dir": str(run_dir),
        "tokens": config.get("foundation", {}).get("tokens"),
        "git_commit": manifest.get("versions", {}).get("git_commit"),
        "stages_s": stages,
        "stage_sum_s": round(stage_sum, 1),
        "untimed_s": round(float(total) - stage_sum, 1),
        "wall_seconds": float(total),
        "ratio": round(float(total) / TARGET_SECONDS, 3),
        "target": TARGET,
    }
