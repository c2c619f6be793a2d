"""The run's intervention stage (``evaluation.scorers`` naming "intervention"): each evaluated unit is steered on
the neutral prompts at ``evaluation.intervention_multiples`` and judged for its real, shuffled and
token-statistics explanations (``scorers.intervention``).

Reads the explanations and the units' contexts; writes ``interventions.jsonl`` and, for the
steerings it generates, ``steering.jsonl`` (shared with the steering stage: a steering already
on disk with the same settings is reused, never regenerated). A unit whose judgments are all
current (same explanation, judge backend, model and prompt) asks nothing.
"""

from collections.abc import Callable
from pathlib import Path

from explainers.llm_explainer import TOO_FEW_CONTEXTS
from harness.config import EvaluationConfig, SteeringConfig
from harness.llm.client import LLMClient
from harness.llm.templates import load_template
from harness.records import Explanation, UnitContexts
from harness.run.evaluate import EXPLANATIONS, INTERVENTIONS, shuffled_sources, source_texts
from harness.run.steering import cached_steerings, loaded_dictionaries, read_steerings
from harness.steering.units import resolve_unit
from harness.subject.model import SubjectModel
from results.store import append_records, latest_by_key, read_records
from scorers.intervention import TEMPLATE, InterventionJudgment, judge_interventions, neutral_prompts


def intervention_stage(
    run_dir: Path,
    units: list[UnitContexts],
    subject: SubjectModel,
    judge: LLMClient,
    config: EvaluationConfig,
    steering: SteeringConfig,
    all_explanations: list[Explanation] | None = None,
    on_unit_done: Callable[[], None] | None = None,
) -> None:
    """Write intervention judgments of every unit (all neutral prompts × ``config.intervention_multiples``) per source."""
    explanations = latest_by_key(all_explanations if all_explanations is not None else read_records(run_dir / EXPLANATIONS, Explanation))
    shuffle = shuffled_sources(sorted({unit for unit, explainer in explanations if explainer == "llm"}), config.seed)
    done = latest_by_key(read_records(run_dir / INTERVENTIONS, InterventionJudgment))
    settings = (judge.backend.name, judge.backend.model, load_template(TEMPLATE).sha256)
    prompts = neutral_prompts()
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
            continue  # not explained for lack of evidence: no source is scored, as in the other scorers
        texts = source_texts(contexts.unit, explanations, shuffle)
        todo = {source: text for source, text in texts.items() if text is not None and not current(contexts.unit, source, text)}
        if todo:
            unit = resolve_unit(run_dir, subject, contexts.unit, loaded)
            multiples, tokens = config.intervention_multiples, steering.tokens
            steerings = cached_steerings(
                run_dir, subject, unit, prompts, multiples, tokens, steering.positions, plains=plains, done=steered
            )
            for source, text in todo.items():
                append_records(run_dir / INTERVENTIONS, judge_interventions(contexts.unit, text, source, steerings, judge, config.seed))
        if on_unit_done is not None:
            on_unit_done()
