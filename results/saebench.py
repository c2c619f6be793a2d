"""The run's evaluation summary in SAEBench's eval-output JSON envelope, one envelope per unit set.

The envelope follows SAEBench's ``BaseEvalOutput`` (sae_bench/evals/base_eval_output.py,
github.com/adamkarvonen/SAEBench; read in the fork zachmccrth/SAEBench):
``eval_type_id``, ``eval_config``, ``eval_id``, ``datetime_epoch_millis``,
``eval_result_metrics`` (categories, each a flat dict of numbers),
``eval_result_details`` (a list of flat objects), ``eval_result_unstructured``,
``sae_bench_commit_hash``, ``sae_lens_id``, ``sae_lens_release_id``,
``sae_lens_version`` and ``sae_cfg_dict``.

With the SAEBench setting of the detection scorer (``scorers.saebench``) each dictionary also gets SAEBench's
own autointerp results file, written only from that setting's records (``results.saebench_autointerp``).

SAEBench's own autointerp eval (sae_bench/evals/autointerp/eval_output.py and
main.py) has ``eval_type_id`` "autointerp" and one category ``autointerp``
with ``autointerp_score`` (mean detection accuracy over latents) and
``autointerp_std_dev`` (``torch.std``, i.e. with Bessel's correction); it puts
per-latent results in ``eval_result_unstructured`` and leaves
``eval_result_details`` empty. monoscope scores a different quantity (the
0–3 specificity rubric and simulation correlation), so it uses its own
``eval_type_id`` and metric names rather than pass a rubric mean off as a
detection accuracy; it keeps SAEBench's ``<metric>`` / ``<metric>_std_dev``
pattern and its standard deviation over units (ddof=1).

Output: a JSON object {unit set: envelope} (``neurons`` included as the
baseline, with ``sae_cfg_dict`` None). It is deterministic for a given run
directory: ``eval_id`` is a UUID derived from the records and manifest, and
``datetime_epoch_millis`` is the latest modification time of the record files.
"""

import hashlib
import json
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.records import Judgment
from harness.storage import atomic_write_json
from results.run_records import CONTEXTS, EXPLANATIONS, JUDGMENTS, SIMULATIONS, UNITS, RunRecords, load_run, read_manifest_file
from results.summary import unit_scores

EVAL_TYPE_ID = "monoscope_autointerp"
NOT_SAEBENCH = "monoscope's own evaluation (not run by SAEBench)"
SUMMARY = Path("results") / "saebench.json"
RECORD_FILES = (UNITS, CONTEXTS, EXPLANATIONS, JUDGMENTS, SIMULATIONS)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def mean_and_std(values: list[float]) -> tuple[float | None, float | None]:
    """Return (mean, standard deviation with ddof=1 as in SAEBench) of ``values``; None where undefined."""
    if not values:
        return None, None
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if array.size > 1 else None
    return _finite(float(array.mean())), _finite(std)


def _record_time_millis(run_dir: Path) -> int:
    """Return the latest modification time of the run's record files (or manifest) in epoch milliseconds; 0 if none exist."""
    paths = [run_dir / name for name in (*RECORD_FILES, "manifest.json")]
    times = [path.stat().st_mtime_ns // 1_000_000 for path in paths if path.exists()]
    return int(max(times, default=0))


@dataclass(frozen=True)
class RunIdentity:
    """What names a run's export: its name, a digest of its records and manifest, their latest time, software versions."""

    run_name: str
    digest: str
    created_millis: int
    versions: dict[str, Any]


def run_identity(run_dir: Path) -> RunIdentity:
    """Return the run's RunIdentity (deterministic for a given run directory)."""
    manifest = read_manifest_file(run_dir)
    versions = manifest.get("versions") if isinstance(manifest.get("versions"), dict) else {}
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    name = manifest.get("name") or config.get("name") or run_dir.resolve().name
    return RunIdentity(str(name), _run_digest(run_dir), _record_time_millis(run_dir), versions)


def _run_digest(run_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in (*RECORD_FILES, "manifest.json"):
        path = run_dir / name
        digest.update(name.encode() + b"\0")
        if path.exists():
            digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def sae_config(run_dir: Path, unit_set: str) -> dict[str, Any] | None:
    path = run_dir / "dictionaries" / unit_set / "cfg.json"
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _clean(value: Any) -> Any:
    """Return ``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def _unit_details(
    unit: str, records: RunRecords, judged: list[Judgment], scores: dict[tuple[str, str], dict[str, float | None]]
) -> dict[str, Any]:
    evaluated = records.units[unit]
    llm = records.explanations.get((unit, "llm"))
    stats = records.explanations.get((unit, "token_stats"))

    def score(source: str, metric: str) -> float | None:
        return scores.get((unit, source), {}).get(metric)

    return {
        "unit": unit,
        "index": evaluated.index,
        "kind": evaluated.kind,
        "layer": evaluated.layer,
        "density": evaluated.density,
        "max_activation": evaluated.max_activation,
        "explanation": llm.text if llm is not None else None,
        "explanation_failure": llm.failure if llm is not None else None,
        "token_stats_explanation": stats.text if stats is not None else None,
        "rubric_score": score("real", "rubric"),
        "rubric_n_judged": sum(1 for j in judged if j.score is not None),
        "rubric_n_failed": sum(1 for j in judged if j.score is None),
        "rubric_shuffled_score": score("shuffled", "rubric"),
        "rubric_token_stats_score": score("token_stats", "rubric"),
        "simulation_pearson": score("real", "pearson"),
        "simulation_spearman": score("real", "spearman"),
        "simulation_shuffled_pearson": score("shuffled", "pearson"),
        "simulation_token_stats_pearson": score("token_stats", "pearson"),
    }


def _metrics(details: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    def present(key: str) -> list[float]:
        return [row[key] for row in details if row[key] is not None]

    rubric, rubric_std = mean_and_std(present("rubric_score"))
    pearson, pearson_std = mean_and_std(present("simulation_pearson"))
    return {
        "autointerp": {
            "rubric_score": rubric,
            "rubric_std_dev": rubric_std,
            "rubric_n_units": len(present("rubric_score")),
            "simulation_pearson": pearson,
            "simulation_pearson_std_dev": pearson_std,
            "simulation_n_units": len(present("simulation_pearson")),
            "n_units": len(details),
        },
        "controls": {
            "rubric_shuffled_score": mean_and_std(present("rubric_shuffled_score"))[0],
            "rubric_token_stats_score": mean_and_std(present("rubric_token_stats_score"))[0],
            "simulation_shuffled_pearson": mean_and_std(present("simulation_shuffled_pearson"))[0],
            "simulation_token_stats_pearson": mean_and_std(present("simulation_token_stats_pearson"))[0],
        },
    }


def saebench_envelopes(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Return {unit set: SAEBench eval-output envelope} for every unit set of the run's units.jsonl."""
    run_dir = Path(run_dir)
    manifest = read_manifest_file(run_dir)
    records = load_run(run_dir)
    scores = unit_scores(list(records.judgments.values()), list(records.simulations.values()))
    identity = run_identity(run_dir)
    versions, run_name, digest, created = identity.versions, identity.run_name, identity.digest, identity.created_millis
    evaluation = manifest.get("evaluation") if isinstance(manifest.get("evaluation"), dict) else {}
    real_judgments: dict[str, list[Judgment]] = {}
    for (unit, source, _context), judgment in records.judgments.items():
        if source == "real":
            real_judgments.setdefault(unit, []).append(judgment)
    sets: dict[str, list[str]] = {}
    for unit, evaluated in records.units.items():
        sets.setdefault(evaluated.unit_set, []).append(unit)

    envelopes = {}
    for unit_set, units in sets.items():
        details = [_unit_details(unit, records, real_judgments.get(unit, []), scores) for unit in units]
        envelope = {
            "eval_type_id": EVAL_TYPE_ID,
            "eval_config": {
                "method": "Scaling Monosemanticity (2024) specificity rubric (0-3) and held-out activation simulation (Pearson r)",
                "run": run_name,
                "model": manifest.get("model"),
                "seed": manifest.get("seed"),
                "roles": manifest.get("roles"),
                "evaluation": evaluation.get("config"),
                "config": manifest.get("config"),
                "unit_set": unit_set,
            },
            "eval_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"monoscope:{digest}:{unit_set}")),
            "datetime_epoch_millis": created,
            "eval_result_metrics": _metrics(details),
            "eval_result_details": details,
            "eval_result_unstructured": {"monoscope_versions": versions, "score_summary": manifest.get("score_summary")},
            "sae_bench_commit_hash": NOT_SAEBENCH,  # SAEBench requires a string: this names what ran instead of a hash
            "sae_lens_id": unit_set,
            "sae_lens_release_id": f"monoscope/{run_name}",
            "sae_lens_version": versions.get("sae_lens"),
            "sae_cfg_dict": sae_config(run_dir, unit_set),
        }
        envelopes[unit_set] = _clean(envelope)
    return envelopes


def write_saebench_summary(run_dir: Path, out: Path | None = None) -> Path:
    """Write {unit set: SAEBench envelope} as JSON (default <run>/results/saebench.json) and return its path."""
    run_dir = Path(run_dir)
    out = run_dir / SUMMARY if out is None else Path(out)
    atomic_write_json(out, saebench_envelopes(run_dir))
    return out
