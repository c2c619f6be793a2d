"""The run's intervention stage (``evaluation.scorers`` naming "intervention"): each evaluated unit is steered on
the neutral prompts at ``evaluation.intervention_multiples`` and judged for its real, shuffled and
token-statistics explanations (``scorers.intervention``).

Reads the explanations and the units' contexts; writes ``interventions.jsonl`` and, for the
steerings it generates, ``steering.jsonl`` (shared with the steering stage: a steering already
on disk with the same settings is reused, never regenerated). A unit whose judgments are all
current (same explanation, judge backend, model and prompt) asks nothing.

Two halves, so that Ray can split the second: ``intervention_tasks`` steers (the subject model,
in the process that holds it) and says what each unit still needs judged; ``judge_task`` asks the
judge (in this process, or on the Ray actor that holds the judge: ``harness.run.ray_stages``).
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from explainers.llm_explainer import TOO_FEW_CONTEXTS
from harness.config import EvaluationConfig, SteeringConfig
from harness.llm.client import LLMClient
from harness.llm.templates import load_template
from harness.records import Explanation, UnitContexts
from harness.run.evaluate import EXPLANATIONS, INTERVENTIONS, shuffled_sources, source_texts
from harness.run.steering import cached_steerings, loaded_dictionaries, read_steerings
from harness.steering.generate import Steering
from harness.steering.units import resolve_unit
from harness.subject.model import SubjectModel
from results.store import append_records, latest_by_key, read_records
from scorers.intervention import TEMPLATE, InterventionJudgment, judge_interventions, neutral_prompts


@dataclass(frozen=True)
class InterventionTask:
    """What one unit still needs judged: the (source, explanation) pairs not yet current, and the unit's steerings."""

    unit: str
    texts: tuple[tuple[str, str], ...] = ()
    steerings: tuple[Steering, ...] = ()


def judge_settings(judge: LLMClient) -> tuple[str, str, str]:
    """Return what makes an intervention judgment current: the judge's backend name, model and the prompt's hash."""
    return (judge.backend.name, judge.backend.model, load_template(TEMPLATE).sha256)


def intervention_tasks(
    run_dir: Path,
    units: list[UnitContexts],
    subject: SubjectModel,
    settings: tuple[str, str, str],
    config: EvaluationConfig,
    steering: SteeringConfig,
    all_explanations: list[Explanation] | None = None,
    records_dir: Path | None = None,
) -> Iterator[InterventionTask]:
    """Yield one task per unit, in order, generating (and recording) the steerings of units that have something to judge.

    ``settings``: ``judge_settings`` of the judge that will answer; ``records_dir``: where its judgments are
    (default ``run_dir``; another judge's directory, ``harness.run.judges``), steerings staying in ``run_dir``.
    A task with no texts asks nothing:
    its unit is current, or was not explained for lack of evidence (no source is scored, as in the
    other scorers).
    """
    explanations = latest_by_key(all_explanations if all_explanations is not None else read_records(run_dir / EXPLANATIONS, Explanation))
    shuffle = shuffled_sources(sorted({unit for unit, explainer in explanations if explainer == "llm"}), config.seed)
    done = latest_by_key(read_records((records_dir or run_dir) / INTERVENTIONS, InterventionJudgment))
    prompts = neutral_prompts()[: config.intervention_prompts]
    pairs = [(prompt, multiple) for multiple in config.intervention_multiples for prompt in prompts]
    loaded = loaded_dictionaries(run_dir)
    plains: dict = {}  # one plain continuation per prompt, shared by every unit
    steered = read_steerings(run_dir)  # read once, kept current as steerings are generated

    def current(unit: str, source: str, text: str) -> bool:
        records = [done.get((unit, source, prompt, multiple)) for prompt, multiple in pairs]
        return all(
            r is not None and r.correct is not None and r.explanation == text and (r.backend, r.model, r.prompt_hash) == settings
            for r in records
        )

    for contexts in units:
        own = explanations.get((contexts.unit, "llm"))
        if own is not None and own.failure is not None and own.failure.startswith(TOO_FEW_CONTEXTS):
            yield InterventionTask(contexts.unit)
            continue
        texts = source_texts(contexts.unit, explanations, shuffle)
        todo = tuple((source, text) for source, text in texts.items() if text is not None and not current(contexts.unit, source, text))
        if not todo:
            yield InterventionTask(contexts.unit)
            continue
        unit = resolve_unit(run_dir, subject, contexts.unit, loaded)
        steerings = cached_steerings(
            run_dir, subject, unit, prompts, config.intervention_multiples, steering.tokens, steering.positions, plains=plains, done=steered
        )
        yield InterventionTask(contexts.unit, todo, tuple(steerings))


def judge_task(task: InterventionTask, judge: LLMClient, seed: int) -> list[InterventionJudgment]:
    """Return the judgments of one task: every steering of its unit, for each of its (source, explanation) pairs."""
    return [
        judgment
        for source, text in task.texts
        for judgment in judge_interventions(task.unit, text, source, list(task.steerings), judge, seed)
    ]


def intervention_stage(
    run_dir: Path,
    units: list[UnitContexts],
    subject: SubjectModel,
    judge: LLMClient,
    config: EvaluationConfig,
    steering: SteeringConfig,
    all_explanations: list[Explanation] | None = None,
    on_unit_done: Callable[[], None] | None = None,
    records_dir: Path | None = None,
) -> None:
    """Write intervention judgments of every unit (all neutral prompts × ``config.intervention_multiples``) per source.

    ``records_dir``: where the judgments go (default ``run_dir``); steerings are generated and kept in ``run_dir``.
    """
    tasks = intervention_tasks(run_dir, units, subject, judge_settings(judge), config, steering, all_explanations, records_dir)
    for task in tasks:
        append_records((records_dir or run_dir) / INTERVENTIONS, judge_task(task, judge, config.seed))
        if on_unit_done is not None:
            on_unit_done()
