"""Explain and score on Ray (``cluster.ray``): the units split over tasks on the actors that hold the LLM roles.

A ``StageWorker`` actor builds the run's clients once (a local model loaded once per actor: a
1.5B judge takes 7–9 GB, so never one per task) and runs the unchanged stage functions
(``harness.run.evaluate.explain_stage`` and ``score_stage``) on the units of one task, in a
scratch directory seeded with those units' records from the run directory: finished work is
recognised there exactly as in a single process, and only new records come back. The driver
appends them to the run's files as tasks finish (it is the only writer) and compacts at the
end. Explaining ends before scoring starts, so the shuffled control sees every explanation.

How many actors: one when every role is hosted (one concurrency limit and one spending limit
for the run) or local on a CPU (one copy of the model per machine); on a GPU device one per GPU.
Each actor answers one task at a time and runs up to ``llm.max_concurrency`` requests in it.

The intervention scorer (``evaluation.scorers`` naming "intervention") steers in the driver, which
holds the subject model as for the run's steering stage (``harness.run.intervene.intervention_tasks``),
and sends each task's steerings to the actors, whose judge answers (``judge_task``).
"""

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from harness.config import RunConfig
from harness.llm.budget import Budget
from harness.progress import Progress, progress_bar
from harness.records import Explanation, Judgment, Simulation, UnitContexts
from harness.run.cluster import RETRIES, start_ray, task_results
from harness.run.directory import cpu_threads, sum_usage
from harness.run.evaluate import (
    EXPLANATIONS,
    INTERVENTIONS,
    JUDGMENTS,
    SIMULATIONS,
    compact_explanations,
    compact_scores,
    explain_stage,
    make_client,
    score_stage,
    usage_by_client,
)
from harness.run.intervene import InterventionTask, intervention_tasks, judge_settings, judge_task
from harness.subject.model import SubjectModel
from results.store import append_records, latest_by_key, read_records
from scorers.intervention import InterventionJudgment

UNITS_PER_TASK = 2


def worker_setup() -> None:
    """Run first in every StageWorker (tests replace it to register their backends there); nothing by default."""


@dataclass(frozen=True)
class TaskRecords:
    """What one task sends back: the records it made or changed, the answer spellings it probed, its clients' usage."""

    units: tuple[str, ...]
    explanations: tuple[Explanation, ...] = ()
    judgments: tuple[Judgment, ...] = ()
    simulations: tuple[Simulation, ...] = ()
    interventions: tuple[InterventionJudgment, ...] = ()
    spellings: tuple[tuple[str, Any], ...] = ()


class StageWorker:
    """A Ray actor: the run's explainer, judge and simulator clients, built once; ``explain`` and ``score`` run one task."""

    def __init__(self, config: RunConfig, run_dir: str, max_cost: float | None, setup: Callable[[], None]):
        self.config = config
        self.clients: dict[str, Any] = {}
        self.error: Exception | None = None  # raised by the first task: Ray reports a failed constructor only as text
        try:
            setup()
            # Ray gives an actor asking no CPU one thread; a local model computes here with the driver's threads, as a
            # single process would (sums over other thread counts differ in their last digits)
            torch.set_num_threads(cpu_threads())
            budget = Budget(max_cost) if max_cost is not None else None
            roles = {"explainer": config.explainer, "judge": config.judge, "simulator": config.simulator}
            cache, limit = Path(run_dir), config.max_concurrency
            self.clients = {name: make_client(role, cache, None, limit, config.prices, budget) for name, role in roles.items()}
            if config.simulator == config.judge:
                self.clients["simulator"] = self.clients["judge"]  # one client: shared accounting and concurrency limit
        except Exception as error:  # noqa: BLE001 (kept and raised where the driver sees it as itself)
            self.error = error

    def _ready(self) -> None:
        if self.error is not None:
            raise self.error

    def explain(self, units: list[UnitContexts], records: list[Explanation]) -> TaskRecords:
        """Explain the units that lack a current explanation among ``records``; return the new records."""
        self._ready()
        with tempfile.TemporaryDirectory(prefix="monoscope-task-") as scratch:
            work = Path(scratch)
            append_records(work / EXPLANATIONS, records)
            explain_stage(work, units, self.clients["explainer"], self.config.evaluation)
            return TaskRecords(tuple(u.unit for u in units), explanations=_new(read_records(work / EXPLANATIONS, Explanation), records))

    def score(
        self, units: list[UnitContexts], explanations: list[Explanation], judgments: list[Judgment], simulations: list[Simulation]
    ) -> TaskRecords:
        """Score the units against every unit's ``explanations``; return the judgments and simulations made."""
        self._ready()
        with tempfile.TemporaryDirectory(prefix="monoscope-task-") as scratch:
            work = Path(scratch)
            append_records(work / JUDGMENTS, judgments)
            append_records(work / SIMULATIONS, simulations)
            clients = self.clients
            spellings = score_stage(work, units, clients["judge"], clients["simulator"], self.config.evaluation, explanations)
            return TaskRecords(
                tuple(u.unit for u in units),
                judgments=_new(read_records(work / JUDGMENTS, Judgment), judgments),
                simulations=_new(read_records(work / SIMULATIONS, Simulation), simulations),
                spellings=tuple((role, spelling.record()) for role, spelling in spellings.items()),
            )

    def intervention_settings(self) -> tuple[str, str, str]:
        """Return ``judge_settings`` of this actor's judge (what makes an intervention judgment current)."""
        self._ready()
        return judge_settings(self.clients["judge"])

    def intervene(self, tasks: list[InterventionTask]) -> TaskRecords:
        """Judge the steerings of each task's unit for its explanations; return the judgments."""
        self._ready()
        judged = [judgment for task in tasks for judgment in judge_task(task, self.clients["judge"], self.config.evaluation.seed)]
        return TaskRecords(tuple(task.unit for task in tasks), interventions=tuple(judged))

    def usage(self) -> dict[str, Any]:
        """Return {role: usage by stage} of this actor's clients."""
        return usage_by_client(self.clients)


def _new(records: list[Any], given: list[Any]) -> tuple[Any, ...]:
    """Return the latest record per key of ``records`` that is not among ``given`` (what a task made or changed)."""
    before = latest_by_key(given)
    return tuple(record for key, record in latest_by_key(records).items() if before.get(key) != record)


def _tasks(units: list[Any]) -> list[list[Any]]:
    return [units[start : start + UNITS_PER_TASK] for start in range(0, len(units), UNITS_PER_TASK)]


def _stage_workers(ray: ModuleType, config: RunConfig, run_dir: Path, max_cost: float | None, n_tasks: int) -> list[Any]:
    """Return the StageWorker actors: one per GPU when every local role runs on a GPU, else one (see the module docstring)."""
    roles = (config.explainer, config.judge, config.simulator)
    on_gpu = [role for role in roles if role.backend == "local" and (role.device or config.foundation.device).startswith("cuda")]
    local = [role for role in roles if role.backend == "local"]
    gpus = int(ray.cluster_resources().get("GPU", 0)) if on_gpu and len(on_gpu) == len(local) else 0
    count = max(1, min(gpus, n_tasks)) if gpus else 1
    actor = ray.remote(StageWorker).options(num_cpus=0, num_gpus=1 if gpus else 0, max_restarts=RETRIES, max_task_retries=RETRIES)
    return [actor.remote(config, str(run_dir), max_cost, worker_setup) for _ in range(count)]


def ray_explain_and_score(
    run_dir: Path, units: list[UnitContexts], config: RunConfig, max_cost: float | None, log: Progress, subject: SubjectModel | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Explain, then score, ``units`` on Ray; write the records to ``run_dir``; return (answer spellings, usage by role).

    With the intervention scorer, ``subject`` (the driver's subject model) steers each unit first.

    A task's records are appended when it finishes, so an interrupted run keeps them, and a rerun
    finds them current. Raises what a task raised (BudgetExhausted, a MonoscopeError) after
    writing the tasks finished before it.
    """
    ray = start_ray(config.cluster)
    tasks = _tasks(units)
    workers = _stage_workers(ray, config, run_dir, max_cost, len(tasks))
    log(f"ray: explaining and scoring {len(units)} units in {len(tasks)} tasks on {len(workers)} LLM workers")
    spellings: dict[str, Any] = {}
    try:
        existing = latest_by_key(read_records(run_dir / EXPLANATIONS, Explanation))
        with progress_bar(len(units), "explain (ray)", "unit") as bar:

            def explain(worker: Any, task: list[UnitContexts]) -> Any:
                names = {u.unit for u in task}
                return worker.explain.remote(task, [r for (unit, _), r in existing.items() if unit in names])

            for result in task_results(ray, workers, tasks, explain):
                append_records(run_dir / EXPLANATIONS, list(result.explanations))
                bar.update(len(result.units))
        compact_explanations(run_dir, units)
        explanations = read_records(run_dir / EXPLANATIONS, Explanation)
        judged = latest_by_key(read_records(run_dir / JUDGMENTS, Judgment))
        simulated = latest_by_key(read_records(run_dir / SIMULATIONS, Simulation))
        explanations_ref = ray.put(explanations)
        with progress_bar(len(units), "score (ray)", "unit") as bar:

            def score(worker: Any, task: list[UnitContexts]) -> Any:
                names = {u.unit for u in task}
                mine = [r for key, r in judged.items() if key[0] in names], [r for key, r in simulated.items() if key[0] in names]
                return worker.score.remote(task, explanations_ref, *mine)

            for result in task_results(ray, workers, tasks, score):
                append_records(run_dir / JUDGMENTS, list(result.judgments))
                append_records(run_dir / SIMULATIONS, list(result.simulations))
                spellings.update(dict(result.spellings))
                bar.update(len(result.units))
        compact_scores(run_dir, units, config.evaluation)
        if "intervention" in config.evaluation.scorers:
            if subject is None:
                raise ValueError("the intervention scorer needs the driver's subject model")
            _intervene(ray, workers, run_dir, units, config, subject, explanations)
        usage = sum_usage(ray.get([worker.usage.remote() for worker in workers]))
    finally:
        for worker in workers:
            ray.kill(worker)
    return spellings, usage


def _intervene(
    ray: ModuleType,
    workers: list[Any],
    run_dir: Path,
    units: list[UnitContexts],
    config: RunConfig,
    subject: SubjectModel,
    explanations: list[Explanation],
) -> None:
    """Steer every unit that has something to judge (in the driver), then judge on the actors; append the judgments."""
    settings = ray.get(workers[0].intervention_settings.remote())
    tasks = []
    with progress_bar(len(units), "steer for intervention", "unit") as bar:
        for task in intervention_tasks(run_dir, units, subject, settings, config.evaluation, config.steering, explanations):
            tasks.append(task)
            bar.update(1)
    todo = [task for task in tasks if task.texts]
    with progress_bar(len(units), "intervene (ray)", "unit") as bar:
        bar.update(len(tasks) - len(todo))
        for result in task_results(ray, workers, _tasks(todo), lambda worker, task: worker.intervene.remote(task)):
            append_records(run_dir / INTERVENTIONS, list(result.interventions))
            bar.update(len(result.units))
