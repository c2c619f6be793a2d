"""Explain and score stages over a run directory: index → samples → explanations → scores.

Writes ``explanations.jsonl``, ``judgments.jsonl`` and ``simulations.jsonl`` in
the run directory, one record per explanation / judged context / simulated
context. Both stages are resumable: a unit whose records are all present and
parsed is skipped, and a rerun redoes only failures (the LLM response cache
makes any repeated call free).

A unit whose backend calls fail (a permanent error such as 401 or 400, or a
transient one that outlasted every retry) is recorded with ``failure`` naming
the reason (``harness.llm.client.BACKEND_FAILURE``) and no text, score or prediction;
the other units go on. ``failed_units`` lists such units; a run ends with
``UnitsFailed`` while any remain. ``BudgetExhausted`` is not a backend error:
it still stops the run.
"""

import random
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from explainers.llm_explainer import TOO_FEW_CONTEXTS, explain_unit, explainer_template, shown_contexts
from explainers.token_stats import token_statistics_explanation
from harness.config import EvaluationConfig, Role
from harness.errors import MonoscopeError
from harness.index.sampling import unit_contexts
from harness.index.store import is_partial_index, load_index, unit_samples
from harness.llm.budget import Budget
from harness.llm.client import BACKEND_FAILURE, BackendError, LLMClient, failure_reason, make_backend
from harness.llm.interface import CHOICE_LOGPROBS
from harness.llm.render import RENDERING
from harness.llm.templates import load_rubric, load_template
from harness.records import Explanation, Judgment, Simulation, UnitContexts, contexts_digest
from harness.run.binary_scores import BINARY_FILES, BINARY_TEMPLATES, DETECTIONS, FUZZINGS, binary_items, score_binary
from harness.run.directory import read_manifest, update_manifest
from harness.steering.generate import STEERING, Steering
from harness.subject.corpus import load_chunks
from results.store import append_records, compact, latest_by_key, read_records
from scorers.answers import AnswerSpelling, answer_spelling, answer_spellings
from scorers.binary import OPTIONS, BinaryJudgment
from scorers.intervention import InterventionJudgment
from scorers.rubric import RUBRIC_FORMATS, judge_unit
from scorers.simulation import SIMULATION_FORMATS, simulate_unit, simulator_prompt_hash

EXPLANATIONS, JUDGMENTS, SIMULATIONS = "explanations.jsonl", "judgments.jsonl", "simulations.jsonl"
SOURCES = ("real", "shuffled", "token_stats")
OUTPUT_SCORERS = ("detection", "intervention")  # the scorers of the output-centric explanation (source "output")
INTERVENTIONS = "interventions.jsonl"
# The record files of the explain and score stages (the last record per key wins).
RECORD_TYPES = {
    EXPLANATIONS: Explanation,
    JUDGMENTS: Judgment,
    SIMULATIONS: Simulation,
    INTERVENTIONS: InterventionJudgment,
    STEERING: Steering,
    DETECTIONS: BinaryJudgment,
    FUZZINGS: BinaryJudgment,
}


class UnitsFailed(MonoscopeError):  # noqa: N818 (reads as what happened to the run)
    """Some units' backend calls failed; they are recorded as failures, everything else is saved and written."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = dict(sorted(failures.items()))
        listing = "; ".join(f"{unit}: {reason}" for unit, reason in self.failures.items())
        super().__init__(
            f"{len(self.failures)} unit(s) failed, the rest of the run is complete: {listing}"[:2000],
            "fix the cause and rerun the same command: only the failed units are redone",
        )


def select_units(fire_count: np.ndarray, count: int, seed: int) -> list[int]:
    """Return ``count`` random alive units (fired at least once), seeded, in ascending order."""
    alive = [int(unit) for unit in np.flatnonzero(fire_count > 0)]
    return sorted(random.Random(seed).sample(alive, min(count, len(alive))))


def load_unit_contexts(run_dir: Path, config: EvaluationConfig, tokenizer: Any) -> list[UnitContexts]:
    """Return the explanation and scoring sets of the selected units of every configured dictionary."""
    chunks = load_chunks(run_dir / "corpus")
    names = list(config.dictionaries) or sorted(p.stem for p in (run_dir / "index").glob("*.safetensors") if not is_partial_index(p))
    if not names:
        raise MonoscopeError(f"no index in {str(run_dir)!r}", "run 'monoscope index' or 'monoscope demo' first")
    result = []
    for name in names:
        state, about = load_index(run_dir / "index" / f"{name}.safetensors")
        names_of_units = about.get("unit_names")  # the neuron pool names its units mlp.L/i
        for unit in select_units(state.fire_count.numpy(), config.units_per_dictionary, config.seed):
            unit_name = names_of_units[unit] if names_of_units else f"{about.get('dictionary', name)}/{unit}"
            samples = unit_samples(state, unit, unit_name)
            result.append(unit_contexts(unit_name, samples, float(state.maximum[unit]), chunks, tokenizer, config.sampling))
    update_manifest(run_dir, evaluation={"config": asdict(config), "units": [c.unit for c in result]})
    return result


def explain_stage(
    run_dir: Path, units: list[UnitContexts], client: LLMClient, config: EvaluationConfig, on_unit_done: Callable[[], None] | None = None
) -> dict[str, Explanation]:
    """Return {unit: LLM explanation}, explaining only units without a parsed one on disk."""
    path = run_dir / EXPLANATIONS
    done = latest_by_key(read_records(path, Explanation))
    template = explainer_template(config.explainer_chat)

    def current(contexts: UnitContexts) -> bool:  # a parsed explanation made with today's explainer, prompt and contexts
        record = done.get((contexts.unit, "llm"))
        shown = shown_contexts(contexts, config.explainer_chat, config.explain_contexts)
        return bool(
            record is not None
            and record.text
            and (record.backend, record.model, record.prompt_hash) == (client.backend.name, client.backend.model, template.sha256)
            and record.contexts_sha256 == contexts_digest(shown, RENDERING)
        )

    todo = [c for c in units if not current(c)]
    statistics = [token_statistics_explanation(c) for c in units]  # cheap and deterministic: recomputed, kept when unchanged
    append_records(path, [r for r in statistics if done.get(r.key) != r])

    def explain(contexts: UnitContexts) -> Explanation:
        try:
            explanation = explain_unit(
                contexts, client, chat=config.explainer_chat, max_contexts=config.explain_contexts, min_contexts=config.min_explain_contexts
            )
        except BackendError as error:
            explanation = Explanation(
                unit=contexts.unit,
                explainer="llm",
                text=None,
                backend=client.backend.name,
                model=client.backend.model,
                prompt_hash=template.sha256,
                n_contexts=0,
                failure=failure_reason(error),
            )
        append_records(path, [explanation])
        if on_unit_done is not None:
            on_unit_done()
        return explanation

    client.map(explain, todo)
    return compact_explanations(run_dir, units)


def compact_explanations(run_dir: Path, units: list[UnitContexts]) -> dict[str, Explanation]:
    """Rewrite the explanations file with the latest record per key in unit order; return {unit: LLM explanation}."""
    rank = {contexts.unit: index for index, contexts in enumerate(units)}  # explanations finish in any order: write them in unit order
    order = lambda record: (rank.get(record.unit, -1), record.explainer != "token_stats")  # noqa: E731
    records = compact(run_dir / EXPLANATIONS, Explanation, order=order)
    return {r.unit: r for r in records if r.explainer == "llm"}


def shuffled_sources(units: list[str], seed: int) -> dict[str, str]:
    """Return a derangement {unit: other unit whose explanation is its shuffled control}."""
    if len(units) < 2:
        return {}
    order = sorted(units)
    shift = random.Random(seed).randrange(1, len(order))
    return {unit: order[(index + shift) % len(order)] for index, unit in enumerate(order)}


def score_stage(
    run_dir: Path,
    units: list[UnitContexts],
    judge: LLMClient,
    simulator: LLMClient,
    config: EvaluationConfig,
    all_explanations: list[Explanation] | None = None,
    on_unit_done: Callable[[], None] | None = None,
) -> dict[str, AnswerSpelling]:
    """Write judgments and simulations of every unit for real, shuffled and token-statistics explanations.

    ``all_explanations`` (default: those in ``run_dir``) are the explanations of every unit of the
    run, the shuffled control's source; a Ray task scores its own ``units`` against all of them.
    Just before the first context is scored, the spelling of the answer options of a log-probability
    format is checked (``scorers.answers``: refused when the model puts under half its probability
    on them); returns {role: that spelling} ({} when nothing was left to score), for the caller to
    record in the manifest.
    """
    spellings: dict[str, AnswerSpelling] = {}
    probed = False

    def prefix(role: str) -> str:
        # The probe runs once, just before the first context is scored: a run with nothing left to score asks nothing.
        nonlocal probed
        if not probed:
            judge_format = config.judge_format if "rubric" in config.scorers else None
            simulator_format = config.simulator_format if "simulation" in config.scorers else None
            spellings.update(answer_spellings(judge, judge_format, simulator, simulator_format))
            probed = True
        if role in BINARY_FILES and role not in spellings and CHOICE_LOGPROBS in judge.backend.capabilities:
            template = BINARY_TEMPLATES[role]
            spellings[role] = answer_spelling(judge, template, OPTIONS, role, f"the {role} scorer")
        return spellings[role].prefix if role in spellings else " "

    if all_explanations is None:
        names = {c.unit for c in units}
        all_explanations = [r for r in read_records(run_dir / EXPLANATIONS, Explanation) if r.unit in names]
    explanations = latest_by_key(all_explanations)
    # The derangement runs over every unit with an LLM explanation record, parsed or not, so that a failed
    # explanation redone later changes only the control whose source it is (that control is skipped meanwhile).
    llm_units = sorted({unit for unit, explainer in explanations if explainer == "llm"})
    shuffle = shuffled_sources(llm_units, config.seed)
    judged = latest_by_key(read_records(run_dir / JUDGMENTS, Judgment))
    simulated = latest_by_key(read_records(run_dir / SIMULATIONS, Simulation))
    wanted = [
        name for name in config.scorers if name in BINARY_FILES and not (name == "detection" and config.detection_setting == "saebench")
    ]
    binary = {name: latest_by_key(read_records(run_dir / BINARY_FILES[name], BinaryJudgment)) for name in wanted}
    judge_settings = _scorer_settings(judge, "judge_format", config.judge_format, RUBRIC_FORMATS) | {"rubric_hash": load_rubric().sha256}
    simulator_settings = _scorer_settings(simulator, "simulator_format", config.simulator_format, SIMULATION_FORMATS)
    for contexts in units:
        own = explanations.get((contexts.unit, "llm"))
        if own is not None and own.failure is not None and own.failure.startswith(TOO_FEW_CONTEXTS):
            continue  # too little evidence to explain the unit: none of its sources is scored
        for source, text in source_texts(contexts.unit, explanations, shuffle).items():
            if text is None:
                continue
            if source == "output":  # scored by OUTPUT_SCORERS only
                score_binary(run_dir, contexts, source, text, judge, config, {"detection": binary.get("detection")}, prefix)
                continue
            ids = [c.context_id for c in contexts.score]
            if "rubric" in config.scorers and not all(_current(judged.get((contexts.unit, source, i)), text, judge_settings) for i in ids):
                judgments = judge_unit(contexts, text, source, judge, config.judge_format, answer_prefix=prefix("judge"))
                append_records(run_dir / JUDGMENTS, judgments)
            subset = simulation_subset(contexts, config.simulation_contexts)
            current = all(_current(simulated.get((contexts.unit, source, c.context_id)), text, simulator_settings) for c in subset.score)
            if "simulation" in config.scorers and not current:
                simulations = simulate_unit(subset, text, source, simulator, config.simulator_format, prefix("simulator"))
                append_records(run_dir / SIMULATIONS, simulations)
            score_binary(run_dir, contexts, source, text, judge, config, binary, prefix)
        if on_unit_done is not None:
            on_unit_done()
    compact_scores(run_dir, units, config)
    return spellings


def compact_scores(run_dir: Path, units: list[UnitContexts], config: EvaluationConfig) -> None:
    """Rewrite the judgment and simulation files with the latest record per key, dropping records of ``units``' contexts
    no longer scored (a smaller scoring set or simulation subset)."""
    scored = {(c.unit, context.context_id) for c in units for context in c.score}
    simulated_ids = {(c.unit, context.context_id) for c in units for context in simulation_subset(c, config.simulation_contexts).score}
    names = {c.unit for c in units}
    for name, kept in ((JUDGMENTS, scored), (SIMULATIONS, simulated_ids)):
        compact(
            run_dir / name,
            RECORD_TYPES[name],
            keep=lambda record, kept=kept: record.unit not in names or (record.unit, record.context_id) in kept,
        )
    for scorer, name in BINARY_FILES.items():
        if scorer in config.scorers:
            items = {(c.unit, item.context_id, item.variant) for c in units for item in binary_items(scorer, c, config)}
            compact(
                run_dir / name,
                BinaryJudgment,
                keep=lambda record, items=items: record.unit not in names or (record.unit, record.context_id, record.variant) in items,
            )


def source_texts(unit: str, explanations: dict[tuple[str, str], Explanation], shuffle: dict[str, str]) -> dict[str, str | None]:
    """Return {source: explanation text or None} of a unit: its own, the shuffled control's (``shuffle``), token statistics,
    and its output-centric explanation (``OUTPUT_SCORERS`` score that one)."""
    return {
        "real": _text(explanations.get((unit, "llm"))),
        "shuffled": _text(explanations.get((shuffle.get(unit), "llm"))),
        "token_stats": _text(explanations.get((unit, "token_stats"))),
        "output": _text(explanations.get((unit, "output"))),  # the output-centric explanation, when the run makes them
    }


def simulation_subset(contexts: UnitContexts, count: int) -> UnitContexts:
    """Return the unit with its scoring set cut to ``count`` contexts spread over activation levels.

    Contexts are ordered by target activation and taken at evenly spaced ranks, so
    the subset spans zero to the top (per-token simulation costs a call per token
    for likelihood judges, hence a subset).
    """
    ranked = sorted(contexts.score, key=lambda c: (c.target_activation, c.context_id))
    if len(ranked) <= count:
        return contexts
    picks = sorted({round(i * (len(ranked) - 1) / (count - 1)) for i in range(count)}) if count > 1 else [len(ranked) - 1]
    return UnitContexts(contexts.unit, contexts.max_activation, contexts.explain, tuple(ranked[i] for i in picks))


def _text(explanation: Explanation | None) -> str | None:
    return explanation.text if explanation is not None else None


def _parsed(record: Judgment | Simulation | None) -> bool:
    if record is None or record.failure is not None:
        return False
    return (record.score if isinstance(record, Judgment) else record.predicted) is not None


def _scorer_settings(client: LLMClient, format_field: str, format_name: str, formats: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Return the settings a judgment or simulation depends on beside its explanation: format, backend, model, prompt
    (for a simulation, ``simulator_prompt_hash``: its template and any forced reply) and the version of the context
    rendering (a record made with another rendering is redone)."""
    prompt_hash = simulator_prompt_hash(format_name) if formats is SIMULATION_FORMATS else load_template(formats[format_name][1]).sha256
    return {
        format_field: format_name,
        "backend": client.backend.name,
        "model": client.backend.model,
        "prompt_hash": prompt_hash,
        "rendering": RENDERING,
    }


def _current(record: Judgment | Simulation | None, explanation: str, settings: dict[str, str]) -> bool:
    """Return True for a parsed record of ``explanation`` made with ``settings``: anything else is redone."""
    return _parsed(record) and record.explanation == explanation and all(getattr(record, k) == v for k, v in settings.items())


def failed_units(run_dir: Path, units: list[str]) -> dict[str, str]:
    """Return {unit: reason} for ``units`` whose latest explanation, judgment or simulation records a backend failure."""
    wanted = set(units)
    failures: dict[str, str] = {}
    for name, record_type in RECORD_TYPES.items():
        for record in latest_by_key(read_records(run_dir / name, record_type)).values():
            failure, unit = getattr(record, "failure", None), getattr(record, "unit", None)  # a Steering record has neither
            if unit in wanted and failure and failure.startswith(BACKEND_FAILURE):
                failures.setdefault(unit, f"{name.split('.')[0]}: {failure}")
    return failures


def usage_by_client(clients: dict[str, LLMClient]) -> dict[str, Any]:
    """Return {role: usage by stage} of the clients, a client shared by two roles (judge and simulator) once."""
    seen: set[int] = set()
    usage = {}
    for name, client in clients.items():
        if id(client) not in seen:
            seen.add(id(client))
            usage[name] = client.usage_by_stage()
    return usage


def make_client(
    role: Role,
    run_dir: Path,
    shared_subject: Any = None,
    max_concurrency: int = 4,
    prices: dict[str, tuple[float, float]] | None = None,
    budget: Budget | None = None,
) -> LLMClient:
    """Return a cached, retrying client for ``role``.

    A local role runs on ``role.device`` (default: ``shared_subject``'s device, else the CPU) in
    ``role.dtype`` (default: float32 on a CPU, else the subject model's dtype); it reuses
    ``shared_subject`` when it names the same model on the same device in the same dtype, and
    roles that name one model share it (``harness.llm.backends.local.shared_model``). ``role.chat``
    chooses how messages are rendered (None: the model's chat template when it has one).
    """
    options: dict[str, Any] = {}
    if role.backend == "local":
        options |= local_placement(role, shared_subject)
        if shared_subject is not None and role.model == shared_subject.name and _same_placement(options, shared_subject):
            options = {"subject": shared_subject}
        options["chat"] = role.chat
    if role.base_url is not None:
        options["base_url"] = role.base_url
    backend = make_backend(role.backend, role.model, **options)
    # A local backend batches the greedy requests asked together (harness/llm/batching.py), so it gets the same concurrency.
    return LLMClient(backend, cache_dir=run_dir / "llm-cache", max_concurrency=max_concurrency, prices=prices, budget=budget)


def local_placement(role: Role, shared_subject: Any = None) -> dict[str, str]:
    """Return {device, dtype} of a local role: its own, else the subject model's device and float32 on a CPU."""
    device = role.device or (str(shared_subject.device) if shared_subject is not None else "cpu")
    if role.dtype is not None:
        dtype = role.dtype
    elif device == "cpu" or shared_subject is None:
        dtype = "float32"
    else:
        dtype = str(shared_subject.model.dtype).removeprefix("torch.")
    return {"device": device, "dtype": dtype}


def _same_placement(placement: dict[str, str], subject: Any) -> bool:
    return placement["device"] == str(subject.device) and placement["dtype"] == str(subject.model.dtype).removeprefix("torch.")


def run_tokenizer(run_dir: Path, shared_subject: Any = None) -> Any:
    """Return the tokenizer of the run's subject model (to decode context tokens)."""
    if shared_subject is not None:
        return shared_subject.tokenizer
    from transformers import AutoTokenizer

    from harness.subject.embedded import EMBEDDED_NAME, embedded_tokenizer

    name = read_manifest(run_dir).get("model", {}).get("name", EMBEDDED_NAME)
    return embedded_tokenizer() if name == EMBEDDED_NAME else AutoTokenizer.from_pretrained(name)
