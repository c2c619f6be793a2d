"""``monoscope run CONFIG``: a whole evaluation from one config, resumable, with a spending limit, in one process or on Ray.

Stages, each reading what the one before wrote into the run directory:
foundation (corpus → activations → dictionaries → indexes) → units and contexts
→ explanations → scores → feature–neuron correlation and feature splitting →
tables, plots, report. Every stage skips finished work, so a rerun of a finished
run makes no LLM call and an interrupted run resumes where it stopped.

More than one process means Ray (``config.cluster.ray``, ``monoscope run --ray``): the index and
correlation passes split the corpus over actors (``harness.run.cluster``), explaining and scoring
split the units (``harness.run.ray_stages``); the driver writes every record.
"""

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from harness.config import RunConfig, judge_roles
from harness.dictionaries.formats import load_dictionary
from harness.dictionaries.neurons import POOL_NAME
from harness.errors import MonoscopeError
from harness.llm.budget import Budget, BudgetExhausted
from harness.llm.client import make_backend
from harness.progress import Progress, progress_bar
from harness.records import Explanation
from harness.run.comparisons import correlation_stage, neighbors_stage
from harness.run.directory import prepare_run_directory, read_manifest, record_usage, software_versions, update_manifest
from harness.run.estimates import estimate_resources, log_estimates
from harness.run.evaluate import EXPLANATIONS, UnitsFailed, explain_stage, failed_units, make_client, score_stage, usage_by_client
from harness.run.foundation import build_foundation, corpus_settings, dictionary_label, foundation_done
from harness.run.intervene import intervention_stage
from harness.run.judges import judge_directory, judge_evaluation, judges_manifest, other_judges
from harness.run.output_stage import output_stage
from harness.run.planning import backend_capabilities, log_plan, placeholder_plan, plan_calls
from harness.run.reporting import results_stage
from harness.run.saebench_stage import saebench_stage
from harness.run.steering import steering_stage
from harness.run.units import choose_units, sample_contexts
from harness.subject.corpus import check_corpus_reuse, check_corpus_spec
from harness.subject.embedded import check_embedded_installed
from harness.subject.model import check_context_fits, check_device, model_shape, parse_device, resolve_dtype
from harness.subject.shape import read_model_shape
from results.store import read_records
from scorers.intervention import neutral_prompts
from scorers.rubric import RUBRIC_FORMATS
from scorers.simulation import SIMULATION_FORMATS


def run_evaluation(
    config: RunConfig,
    run_dir: Path | None = None,
    *,
    dry_run: bool = False,
    max_cost: float | None = None,
    log: Progress = print,
) -> dict[str, Any]:
    """Run (or resume) the evaluation ``config`` describes; return the results summary.

    With ``dry_run`` nothing is spent: the return value (also logged) is the plan of LLM
    calls, tokens and estimated cost per stage. ``max_cost`` (USD) stops the run with
    BudgetExhausted before a call that could pass it; a rerun resumes.

    Units whose backend calls failed (permanently, or after every retry) are recorded as
    failures and the run goes on; at its end, after the results are written (the summary and
    the manifest list the failures), UnitsFailed names them. A rerun redoes only those units.
    """
    run_dir = run_dir or Path("runs") / config.name
    started = time.perf_counter()
    notes = preflight(config, max_cost, dry_run)
    if dry_run and config.cluster.ray:  # a dry run spends nothing: the plan is the same on Ray, so Ray is not started
        notes.append("dry run: Ray was not started and its address not checked; the plan of LLM calls is the same on Ray")
        config = replace(config, cluster=replace(config.cluster, ray=False))
    check_corpus_reuse(run_dir / "corpus", corpus_settings(config.foundation))
    prepare_run_directory(run_dir)
    check_same_foundation(run_dir, config)
    if dry_run and not foundation_done(run_dir, config):
        resources = _dry_run_estimates(config, log)
        plan = log_plan(placeholder_plan(run_dir, config), log, upper_bound=True)
        for note in notes:
            log(f"note: {note}")
        return plan | {"resources": resources, "notes": notes}
    update_manifest(
        run_dir,
        config=_jsonable(config),
        seed=config.foundation.seed,
        versions=software_versions(),
        judges=judges_manifest(config),
    )
    subject, chunks, dictionaries = build_foundation(run_dir, config, log)
    chosen_sets = config.evaluation.dictionaries
    units = choose_units(
        run_dir,
        [d.name for d in dictionaries if not chosen_sets or d.name in chosen_sets],
        config.evaluation.units_per_dictionary,
        config.evaluation.seed,
        config.neurons.enabled,
        config.neurons.match_density,
        subject.d_mlp,
    )
    contexts = sample_contexts(run_dir, units, chunks, subject.tokenizer, config.evaluation.sampling)
    per_set = ", ".join(f"{name} {count}" for name, count in Counter(u.unit_set for u in units).items())
    log(f"units: {len(units)} ({per_set}); contexts → {run_dir / 'contexts.jsonl'}")
    repeats = sum(c.duplicates_dropped for c in contexts)
    if repeats:
        log(f"contexts: {repeats} held-out windows dropped: their text repeats one of the same unit's explanation windows")
    roles = {"explainer": config.explainer, "judge": config.judge, "simulator": config.simulator}
    if dry_run:
        plan = plan_calls(run_dir, contexts, config.evaluation, roles, config.prices, other_judges(config), config.steering.tokens)
        plan = log_plan(plan, log, upper_bound=False)
        for note in notes:
            log(f"note: {note}")
        return plan | {"resources": "foundation already built", "notes": notes}
    if config.cluster.ray:
        _explain_and_score_on_ray(run_dir, contexts, config, subject, max_cost, log)
    else:
        _explain_and_score(run_dir, contexts, config, subject, roles, max_cost, chunks)
    correlation_stage(run_dir, config, subject, chunks, dictionaries, units, log)
    neighbors_stage(run_dir, dictionaries, units, config.foundation.device)
    steering_stage(run_dir, config.steering, subject, units, log)
    return _finish(run_dir, units, started, log)


def _explain_and_score(
    run_dir: Path, contexts: list[Any], config: RunConfig, subject: Any, roles: dict[str, Any], max_cost: float | None, chunks: Any
) -> None:
    """Explain, score and (when configured) run the intervention scorer in this process, recording usage and spellings."""
    budget = Budget(max_cost) if max_cost is not None else None
    clients = {name: make_client(role, run_dir, subject, config.max_concurrency, config.prices, budget) for name, role in roles.items()}
    if config.simulator == config.judge:
        clients["simulator"] = clients["judge"]  # one client: shared accounting and concurrency limit
    # A role whose backend cannot serve its format stops here, before the explainer spends anything.
    if "rubric" in config.evaluation.scorers:
        clients["judge"].require(RUBRIC_FORMATS[config.evaluation.judge_format][0])
    if "simulation" in config.evaluation.scorers:
        clients["simulator"].require(SIMULATION_FORMATS[config.evaluation.simulator_format][0])
    try:
        with _timed_if_called(run_dir, "explain", clients), progress_bar(len(contexts), "explain", "unit") as bar:
            explain_stage(run_dir, contexts, clients["explainer"], config.evaluation, on_unit_done=lambda: bar.update(1))
        if config.evaluation.output_explanations:
            with _timed_if_called(run_dir, "explain_outputs", clients), progress_bar(len(contexts), "explain outputs", "unit") as bar:
                output_stage(run_dir, contexts, subject, clients["explainer"], chunks, lambda: bar.update(1))
        with _timed_if_called(run_dir, "score", clients), progress_bar(len(contexts), "score", "unit") as bar:
            spellings = score_stage(
                run_dir, contexts, clients["judge"], clients["simulator"], config.evaluation, None, lambda: bar.update(1)
            )
        if spellings:
            update_manifest(run_dir, answer_spelling={role: spelling.record() for role, spelling in spellings.items()})
        if "detection" in config.evaluation.scorers and config.evaluation.detection_setting == "saebench":
            with _timed_if_called(run_dir, "saebench", clients), progress_bar(len(contexts), "saebench", "unit") as bar:
                names = [c.unit for c in contexts]
                explainer, judge = clients["explainer"], clients["judge"]
                skipped = saebench_stage(
                    run_dir, names, chunks, subject.tokenizer, explainer, judge, config.evaluation, lambda: bar.update(1)
                )
            update_manifest(run_dir, saebench_skipped=skipped)
        if "intervention" in config.evaluation.scorers:
            with _timed_if_called(run_dir, "intervene", clients), progress_bar(len(contexts), "intervene", "unit") as bar:
                judge = clients["judge"]
                intervention_stage(run_dir, contexts, subject, judge, config.evaluation, config.steering, None, lambda: bar.update(1))
        for label, role in other_judges(config):
            clients[f"judge:{label}"] = make_client(role, run_dir, subject, config.max_concurrency, config.prices, budget)
            _other_judge(run_dir, contexts, config, subject, label, clients[f"judge:{label}"])
    except BudgetExhausted:  # a spending limit reached mid-stage still records what was spent
        record_usage(run_dir, usage_by_client(clients))
        raise
    record_usage(run_dir, usage_by_client(clients))


def _other_judge(run_dir: Path, contexts: list[Any], config: RunConfig, subject: Any, label: str, judge: Any) -> None:
    """Score every unit with a judge after the primary into its own directory (``harness.run.judges``)."""
    records = judge_directory(run_dir, label)
    records.mkdir(parents=True, exist_ok=True)
    explanations = read_records(run_dir / EXPLANATIONS, Explanation)
    evaluation = judge_evaluation(config.evaluation)
    with _timed_if_called(run_dir, f"score:{label}", {"judge": judge}), progress_bar(len(contexts), f"score ({label})", "unit") as bar:
        spellings = score_stage(records, contexts, judge, judge, evaluation, explanations, lambda: bar.update(1))
    if spellings:
        update_manifest(run_dir, answer_spelling={f"judge:{label}": spelling.record() for spelling in spellings.values()})
    if "intervention" in config.evaluation.scorers:
        with progress_bar(len(contexts), f"intervene ({label})", "unit") as bar:
            steering = config.steering
            intervention_stage(run_dir, contexts, subject, judge, config.evaluation, steering, explanations, lambda: bar.update(1), records)


def _explain_and_score_on_ray(
    run_dir: Path, contexts: list[Any], config: RunConfig, subject: Any, max_cost: float | None, log: Progress
) -> None:
    """Explain, score and intervene on Ray (``harness.run.ray_stages``), recording the answer spellings, usage and wall times."""
    from harness.run.ray_stages import ray_explain_and_score

    started = time.perf_counter()
    spellings, usage = ray_explain_and_score(run_dir, contexts, config, max_cost, log, subject)
    if spellings:
        update_manifest(run_dir, answer_spelling=spellings)
    record_usage(run_dir, usage)
    update_manifest(run_dir, timings={"explain_and_score": round(time.perf_counter() - started, 2)})


def _finish(run_dir: Path, units: list[Any], started: float, log: Progress) -> dict[str, Any]:
    """Write the results, record the summary and wall time, and raise UnitsFailed for units whose backend calls failed."""
    summary = results_stage(run_dir, log)
    failures = failed_units(run_dir, [u.unit for u in units])
    summary = {**summary, "failures": [{"unit": unit, "reason": reason} for unit, reason in sorted(failures.items())]}
    elapsed = round(time.perf_counter() - started, 1)
    first_completion = "wall_seconds" not in read_manifest(run_dir)  # a rerun's seconds say nothing of the run's cost
    update_manifest(
        run_dir,
        summary=summary,
        failures=summary["failures"],
        last_invocation_seconds=elapsed,
        **({"wall_seconds": elapsed} if first_completion and not failures else {}),
    )
    if failures:
        log(f"{len(failures)} unit(s) failed: {', '.join(sorted(failures))} (reasons in the manifest; a rerun redoes only them)")
        raise UnitsFailed(failures)
    return summary


@contextmanager
def _timed_if_called(run_dir: Path, stage: str, clients: dict[str, Any]) -> Iterator[None]:
    """Record a stage's wall time in the manifest only if it made backend calls (a skipped stage keeps its earlier time)."""
    calls, started = sum(client.backend_calls for client in set(clients.values())), time.perf_counter()
    yield
    if sum(client.backend_calls for client in set(clients.values())) > calls:
        update_manifest(run_dir, timings={stage: round(time.perf_counter() - started, 2)})


# --- checks before any work ----------------------------------------------------------------------------


def preflight(config: RunConfig, max_cost: float | None, dry_run: bool = False) -> list[str]:
    """Raise MonoscopeError for anything that would fail later: roles without keys, unreadable dictionaries, a bad corpus.

    A dry run spends nothing and may plan for another machine, so there a missing API key or a device this
    machine lacks is returned as a note instead of raised, and a model whose config cannot be read offline
    may be described by ``model.shape``. Returns the notes.
    """
    notes: list[str] = []
    if dry_run and "intervention" in config.evaluation.scorers:
        pairs = len(neutral_prompts()[: config.evaluation.intervention_prompts]) * len(config.evaluation.intervention_multiples)
        notes.append(
            f"the intervention scorer's judge calls are the 'intervene' row; it also runs {pairs} steered generations per explained"
            " unit on the subject model, which are not LLM calls and not in the table"
        )

    def device_here(device: str, what: str) -> None:
        parse_device(device)  # a malformed device is bad input, dry run or not
        try:
            check_device(device)
        except MonoscopeError as exc:
            if not dry_run:
                raise
            notes.append(f"{what}: {exc} (planned for another machine; a real run here stops)")

    if config.cluster.ray:
        from harness.run.cluster import ray_module, start_ray

        ray_module()  # a one-line error saying how to install Ray, before any work
        if len(judge_roles(config)) > 1:
            raise MonoscopeError("several judges (evaluation.judges) do not run on Ray yet", "run without --ray, or list one judge")
        if config.evaluation.output_explanations:
            raise MonoscopeError("output-centric explanations do not run on Ray yet", "run without --ray, or turn them off")
        if config.evaluation.detection_setting == "saebench":
            raise MonoscopeError("the SAEBench detection setting does not run on Ray yet", "run without --ray")
        if not dry_run:  # after the cheap refusals: a bad address or an unreachable cluster is one line, before any work
            start_ray(config.cluster)
    if max_cost is not None and max_cost < 0:
        raise MonoscopeError(f"--max-cost {max_cost} is negative", "give a limit in USD >= 0")
    check_corpus_spec(config.foundation.corpus)
    device_here(config.foundation.device, "model.device")
    resolve_dtype(config.foundation.dtype)
    extra_judges = [(f"evaluation.judges[{i}]", role) for i, role in enumerate(judge_roles(config)) if i > 0]
    for name, role in [(name, getattr(config, name)) for name in ("explainer", "judge", "simulator")] + extra_judges:
        if role.backend == "local":
            device_here(role.device or config.foundation.device, f"{name}.device")
            resolve_dtype(role.dtype or "float32")
            check_embedded_installed(role.model)  # a missing weights part is named before any work
        if role.backend != "local":
            options = {"base_url": role.base_url} if role.base_url else {}
            try:
                make_backend(role.backend, role.model, **options)  # raises when the API key is missing
            except MonoscopeError as exc:
                if not dry_run:
                    raise
                notes.append(f"{name}: {exc} (a real run stops here)")
        if max_cost is not None and role.backend != "local" and role.model not in config.prices:
            raise MonoscopeError(
                f"--max-cost needs the price of the {name}'s model {role.model!r}",
                "add it under llm.prices in the config: MODEL: [USD per 1M input tokens, USD per 1M output tokens]",
            )
    check_formats_served(config)
    n_layers, d_model = _layer_shape(config, dry_run)
    check_context_fits(config.foundation.model, config.foundation.context_length)
    layer = config.foundation.layer if config.foundation.layer is not None else n_layers // 2
    if not 0 <= layer < n_layers:
        raise MonoscopeError(f"model.layer {layer} is out of range", f"the model has blocks 0..{n_layers - 1}")
    names = {dictionary_label(size) for size in config.foundation.dictionary_sizes}
    for spec in config.load_dictionaries:
        dictionary = load_dictionary(spec)
        if dictionary.hook_name != f"blocks.{layer}.hook_resid_post" or dictionary.d_in != d_model:
            raise MonoscopeError(
                f"dictionary {spec!r} reads {dictionary.hook_name} (d_in {dictionary.d_in})",
                f"this run evaluates blocks.{layer}.hook_resid_post (d_in {d_model}): set model.layer or load another dictionary",
            )
        if dictionary.name in names or dictionary.name == POOL_NAME:
            raise MonoscopeError(f"two dictionaries are named {dictionary.name!r}", "rename the directory of the loaded one")
        names.add(dictionary.name)
    return notes


def check_formats_served(config: RunConfig) -> None:
    """Raise MonoscopeError when a judge or the simulator cannot serve its answer format (e.g. Anthropic's API, which
    gives no log-probabilities, with judge_format yes_no), before any plan, model load or call."""
    evaluation = config.evaluation
    wanted = []
    if "rubric" in evaluation.scorers:
        names = ["judge"] if not config.judges else [f"evaluation.judges[{i}]" for i in range(len(config.judges))]
        for name, role in zip(names, judge_roles(config), strict=True):
            wanted.append((name, role, "judge_format", evaluation.judge_format, RUBRIC_FORMATS))
    if "simulation" in evaluation.scorers:
        wanted.append(("simulator", config.simulator, "simulator_format", evaluation.simulator_format, SIMULATION_FORMATS))
    for name, role, setting, value, formats in wanted:
        needed = formats[value][0]
        if needed not in backend_capabilities(role.backend):
            served = sorted(fmt for fmt, (capability, _template) in formats.items() if capability in backend_capabilities(role.backend))
            raise MonoscopeError(
                f"the {name} ({role.backend} backend) cannot serve evaluation.{setting} {value}: it gives no {needed}",
                f"choose evaluation.{setting} {' or '.join(served)}, or a {name} on a backend that serves {value}",
            )


def _layer_shape(config: RunConfig, dry_run: bool) -> tuple[int, int]:
    """Return (n_layers, d_model): from the model's config, or, in a dry run offline, from ``model.shape``."""
    stated = config.foundation.model_shape
    if dry_run and stated is not None:
        try:
            found = read_model_shape(config.foundation.model, local_only=True)
        except MonoscopeError:
            return stated.n_layers, stated.d_model  # not on this machine: the stated shape stands
        if found != stated:
            raise MonoscopeError(f"model.shape {stated} differs from the model's own config {found}", "correct model.shape or remove it")
        return found.n_layers, found.d_model
    n_layers, d_model, _d_mlp = model_shape(config.foundation.model)
    return n_layers, d_model


def _dry_run_estimates(config: RunConfig, log: Progress) -> dict[str, Any] | None:
    """Log and return the foundation's time, memory and disk estimates (None when the model's shape is unknown)."""
    shape = config.foundation.model_shape
    if shape is None:
        try:
            shape = read_model_shape(config.foundation.model, local_only=True)
        except MonoscopeError:
            log("dry run: no time, memory or disk estimate: the model's config is not on this machine (state it under model.shape)")
            return None
    estimate = estimate_resources(config, shape)
    log_estimates(estimate, log)
    return estimate


# Foundation settings that change speed, memory or disk, not results: a run may resume with other values
# (with or without the residual store, stages read the same residuals: from disk or from the model again).
THROUGHPUT_KEYS = ("batch_size", "index_batch_tokens", "checkpoint_seconds", "store_residuals")


def check_same_foundation(run_dir: Path, config: RunConfig) -> None:
    """Refuse a run directory whose corpus, activations or dictionaries came from another foundation config.

    Batch sizes and the checkpoint interval (THROUGHPUT_KEYS) may differ: a run started on one device resumes on another.
    """
    stored = read_manifest(run_dir).get("config")
    if not stored:
        return
    current = _jsonable(config)
    for key in ("foundation", "load_dictionaries"):
        mine, theirs = current[key], stored.get(key)
        if key == "foundation" and isinstance(theirs, dict):
            mine = {name: value for name, value in mine.items() if name not in THROUGHPUT_KEYS}
            theirs = {name: value for name, value in theirs.items() if name not in THROUGHPUT_KEYS}
        if mine != theirs:
            changed = (
                sorted(name for name in set(mine) | set(theirs) if mine.get(name) != theirs.get(name)) if isinstance(theirs, dict) else []
            )
            which = f" ({', '.join(changed)} differ)" if changed else ""
            raise MonoscopeError(
                f"{str(run_dir)!r} was built with another {key.replace('_', ' ')} config{which}",
                "use a new run directory (or the config it was built with); evaluation settings may change between runs",
            )


def _jsonable(config: RunConfig) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(asdict(config)))
