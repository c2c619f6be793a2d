"""Python functions behind ``monoscope explain`` and ``monoscope score`` (also used by the demo)."""

from pathlib import Path
from typing import Any

from harness.budget import Budget
from harness.config import Role
from harness.errors import MonoscopeError
from harness.evaluate import EXPLANATIONS, JUDGMENTS, SIMULATIONS, EvaluationConfig, explain_stage, load_unit_contexts, score_stage
from harness.llm import LLMClient, make_backend
from harness.pipeline import Progress
from harness.records import Judgment, Simulation
from harness.runs import read_manifest, update_manifest
from results.store import read_records
from results.summary import control_summary, unit_scores


def make_client(
    role: Role,
    run_dir: Path,
    shared_subject: Any = None,
    max_concurrency: int = 4,
    prices: dict[str, tuple[float, float]] | None = None,
    budget: Budget | None = None,
) -> LLMClient:
    """Return a cached, retrying client for ``role``; a local embedded role reuses ``shared_subject``."""
    options: dict[str, Any] = {}
    if role.backend == "local" and shared_subject is not None and role.model == shared_subject.name:
        options["subject"] = shared_subject
    if role.base_url is not None:
        options["base_url"] = role.base_url
    backend = make_backend(role.backend, role.model, **options)
    # A local backend batches the greedy requests asked together (harness/batching.py), so it gets the same concurrency.
    return LLMClient(backend, cache_dir=run_dir / "llm-cache", max_concurrency=max_concurrency, prices=prices, budget=budget)


def run_tokenizer(run_dir: Path, shared_subject: Any = None) -> Any:
    """Return the tokenizer of the run's subject model (to decode context tokens)."""
    if shared_subject is not None:
        return shared_subject.tokenizer
    from transformers import AutoTokenizer

    from harness.embedded import EMBEDDED_NAME, embedded_checkpoint_dir

    name = read_manifest(run_dir).get("model", {}).get("name", EMBEDDED_NAME)
    return AutoTokenizer.from_pretrained(str(embedded_checkpoint_dir()) if name == EMBEDDED_NAME else name)


def check_run(run_dir: Path) -> None:
    """Fail early when ``run_dir`` holds no corpus or index."""
    if not (run_dir / "corpus.npy").exists() or not list((run_dir / "index").glob("*.safetensors")):
        raise MonoscopeError(f"{str(run_dir)!r} has no corpus and index", "run 'monoscope demo' or 'monoscope index' first")


def explain_command(run_dir: Path, config: EvaluationConfig, explainer: Role, log: Progress, shared_subject: Any = None) -> dict:
    """Explain the selected units of a run; return usage by stage."""
    check_run(run_dir)
    client = make_client(explainer, run_dir, shared_subject)
    units = load_unit_contexts(run_dir, config, run_tokenizer(run_dir, shared_subject))
    explanations = explain_stage(run_dir, units, client, config)
    failed = [unit for unit, record in explanations.items() if record.text is None]
    explained = len(explanations) - len(failed)
    log(f"explain: {explained} of {len(explanations)} units explained ({client.backend_calls} backend calls) → {run_dir / EXPLANATIONS}")
    update_manifest(run_dir, roles={"explainer": explainer.__dict__}, usage={"explain": client.usage_by_stage()})
    return {"backend_calls": client.backend_calls, "failed": failed}


def score_command(run_dir: Path, config: EvaluationConfig, judge: Role, simulator: Role, log: Progress, shared_subject: Any = None) -> dict:
    """Score the explained units of a run with the rubric and the simulator; return the control summary."""
    check_run(run_dir)
    judge_client = make_client(judge, run_dir, shared_subject)
    simulator_client = judge_client if simulator == judge else make_client(simulator, run_dir, shared_subject)
    units = load_unit_contexts(run_dir, config, run_tokenizer(run_dir, shared_subject))
    score_stage(run_dir, units, judge_client, simulator_client, config)
    scores = unit_scores(read_records(run_dir / JUDGMENTS, Judgment), read_records(run_dir / SIMULATIONS, Simulation))
    summary = {
        "rubric": {control: control_summary(scores, "rubric", control) for control in ("shuffled", "token_stats")},
        "simulation_pearson": {control: control_summary(scores, "pearson", control) for control in ("shuffled", "token_stats")},
        "backend_calls": judge_client.backend_calls + (0 if simulator_client is judge_client else simulator_client.backend_calls),
    }
    update_manifest(
        run_dir,
        roles={
            "judge": judge.__dict__,
            "simulator": simulator.__dict__,
            "judge_format": config.judge_format,
            "simulator_format": config.simulator_format,
        },
        score_summary=summary,
    )
    for metric in ("rubric", "simulation_pearson"):
        for control in ("shuffled", "token_stats"):
            row = summary[metric][control]
            if row["n_units"] == 0:
                log(f"score: {metric}: no unit has both a real and a {control} score")
                continue
            interval = f"[{row['ci95'][0]:+.3f}, {row['ci95'][1]:+.3f}]" if row["ci95"] else "(one unit: no interval)"
            log(
                f"score: {metric}: real {row['real']:.3f}, {control} {row['control_mean']:.3f}, "
                f"difference {row['difference']:+.3f} 95% CI {interval} over {row['n_units']} units"
            )
    return summary
