"""SAEBench's own autointerp results files, one per dictionary, from the SAEBench setting of detection only.

SAEBench (sae-bench 0.6.0, ``sae_bench/evals/autointerp/main.py``, ``run_eval``) writes one JSON file per SAE,
``<release>_<sae id>_eval_results.json`` with "/" replaced by "_" (``general_utils.get_results_filepath``),
holding an ``AutoInterpEvalOutput`` (``eval_output.py``): ``eval_type_id`` "autointerp", an
``AutoInterpEvalConfig`` (``eval_config.py``), ``eval_id``, ``datetime_epoch_millis``,
``eval_result_metrics.autointerp`` with ``autointerp_score`` (the mean per-latent accuracy) and
``autointerp_std_dev`` (``torch.std``, ddof=1), an empty ``eval_result_details``, the per-latent results in
``eval_result_unstructured``, ``sae_bench_commit_hash``, ``sae_lens_id``, ``sae_lens_release_id``,
``sae_lens_version`` and ``sae_cfg_dict``.

monoscope writes the same file for each dictionary whose units were scored in the SAEBench setting
(``scorers.saebench``, records ``saebench.jsonl``), into ``<run>/results/saebench/``. The fields are filled
truthfully: ``sae_bench_commit_hash`` names the protocol monoscope follows (``PROTOCOL``), never a hash;
the config states monoscope's own values where they differ from SAEBench's defaults (the latents are the
evaluated units, ``override_latents``; a latent counts as alive when it fired at all, threshold 0; the
explanation prompt has no demonstration conversation). A latent whose reply SAEBench's rule cannot parse is
left out of the mean and of the per-latent results, as SAEBench leaves it out (the run's tables count it).
Neurons are not a dictionary and get no file; their SAEBench-setting scores are in the run's tables.
Without SAEBench-setting records nothing is written.
"""

import math
import shutil
import uuid
from pathlib import Path
from typing import Any

from harness.storage import atomic_write_json
from results.saebench import mean_and_std, run_identity, sae_config
from results.store import latest_by_key, read_records
from scorers import saebench
from scorers.saebench import SaebenchJudgment

DIRECTORY = Path("results") / "saebench"
EVAL_TYPE_ID = "autointerp"
PROTOCOL = "monoscope SAEBench setting of detection, following sae-bench 0.6.0 autointerp (not run by SAEBench)"


def results_filename(release: str, sae_id: str) -> str:
    """Return SAEBench's results file name for an SAE: ``<release>_<sae id>_eval_results.json``, "/" → "_"."""
    return f"{release}_{sae_id}_eval_results.json".replace("/", "_")


def eval_config(manifest: dict[str, Any], latents: list[int]) -> dict[str, Any]:
    """Return the ``AutoInterpEvalConfig`` fields of a run, from its manifest's config and ``scorers.saebench``."""
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    foundation = config.get("foundation") if isinstance(config.get("foundation"), dict) else {}
    batch = foundation.get("batch_size")
    if batch is None:
        from harness.subject.activations import default_forward_chunks

        batch = default_forward_chunks(str(foundation.get("device", "cpu")), int(foundation.get("context_length", saebench.CONTEXT_LENGTH)))
    return {
        "model_name": str(foundation.get("model", "")),
        "n_latents": None,  # SAEBench takes exactly one of n_latents (drawn) and override_latents (chosen)
        "override_latents": sorted(latents),
        "dead_latent_threshold": 0.0,  # monoscope draws units among those that fired at least once
        "random_seed": int(manifest.get("seed", 0) or 0),
        "dataset_name": str(foundation.get("corpus", "")),
        "llm_context_size": int(foundation.get("context_length", saebench.CONTEXT_LENGTH)),
        "llm_batch_size": int(batch),
        "llm_dtype": str(foundation.get("dtype", "")),
        "buffer": saebench.BUFFER,
        "no_overlap": True,
        "act_threshold_frac": saebench.ACTIVE_FRACTION,
        "total_tokens": int(foundation.get("tokens", 0)),
        "scoring": True,
        "max_tokens_in_explanation": saebench.EXPLANATION_MAX_TOKENS,
        "use_demos_in_explanation": False,  # monoscope's explanation prompt has no demonstration conversation
        "n_top_ex_for_generation": saebench.N_TOP_EXPLAIN,
        "n_iw_sampled_ex_for_generation": saebench.N_WEIGHTED_EXPLAIN,
        "n_top_ex_for_scoring": saebench.N_TOP_SCORE,
        "n_random_ex_for_scoring": saebench.N_RANDOM,
        "n_iw_sampled_ex_for_scoring": saebench.N_WEIGHTED_SCORE,
    }


def autointerp_outputs(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Return {file name: SAEBench ``AutoInterpEvalOutput`` as JSON} for each dictionary scored in the SAEBench setting."""
    from results.run_records import load_run, read_manifest_file

    run_dir = Path(run_dir)
    records = [r for r in latest_by_key(read_records(run_dir / "saebench.jsonl", SaebenchJudgment)).values() if r.source == "real"]
    if not records:
        return {}
    manifest = read_manifest_file(run_dir)
    units = load_run(run_dir).units
    identity = run_identity(run_dir)
    by_set: dict[str, list[SaebenchJudgment]] = {}
    for record in records:
        unit = units.get(record.unit)
        if unit is not None and unit.kind != "neuron":
            by_set.setdefault(unit.unit_set, []).append(record)
    outputs = {}
    for unit_set, mine in sorted(by_set.items()):
        scored = [r for r in mine if r.score is not None]
        score, std = mean_and_std([r.score for r in scored])
        release = f"monoscope/{identity.run_name}"
        output = {
            "eval_type_id": EVAL_TYPE_ID,
            "eval_config": eval_config(manifest, [units[r.unit].index for r in mine]),
            "eval_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"monoscope:{identity.digest}:{unit_set}:autointerp")),
            "datetime_epoch_millis": identity.created_millis,
            "eval_result_metrics": {"autointerp": {"autointerp_score": _number(score), "autointerp_std_dev": _number(std)}},
            "eval_result_details": [],
            "eval_result_unstructured": {
                str(units[r.unit].index): {
                    "latent": units[r.unit].index,
                    "explanation": r.explanation,
                    "predictions": list(r.predictions or []),
                    "correct seqs": [i for i, label in enumerate(r.labels, 1) if label],
                    "score": r.score,
                }
                for r in scored
            },
            "sae_bench_commit_hash": PROTOCOL,
            "sae_lens_id": unit_set,
            "sae_lens_release_id": release,
            "sae_lens_version": identity.versions.get("sae_lens"),
            "sae_cfg_dict": sae_config(run_dir, unit_set),
        }
        outputs[results_filename(release, unit_set)] = output
    return outputs


def _number(value: float | None) -> float:
    """SAEBench's metrics are floats: an undefined mean or deviation (no or one scored latent) is NaN, as torch gives."""
    return math.nan if value is None else float(value)


def write_autointerp_outputs(run_dir: Path) -> list[Path]:
    """Write each dictionary's SAEBench autointerp file under ``<run>/results/saebench/`` (replacing earlier ones); return the paths."""
    run_dir = Path(run_dir)
    shutil.rmtree(run_dir / DIRECTORY, ignore_errors=True)  # files of dictionaries an earlier config scored
    paths = []
    for name, output in autointerp_outputs(run_dir).items():
        path = run_dir / DIRECTORY / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, output)
        paths.append(path)
    return paths
