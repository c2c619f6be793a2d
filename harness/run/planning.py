"""``--dry-run``: count the LLM calls and tokens a run still needs, and what they would cost, spending nothing.

The explain and score stages run for real against a planning backend that
answers every request with a canned reply the stage's parser accepts, in a
scratch copy of the run's records (so finished work is not counted). Tokens are
estimated (prompt characters / 4; completion tokens at the request's maximum),
so figures are upper-bound estimates, not quotes.
"""

import functools
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import EvaluationConfig, Role, RunConfig
from harness.dictionaries.formats import load_dictionary
from harness.dictionaries.neurons import POOL_NAME
from harness.llm.backends.local import planned_name
from harness.llm.budget import estimated_tokens
from harness.llm.client import LLMClient, report_usage
from harness.llm.interface import CHOICE_LOGPROBS, CONTINUATION_LOGPROB, GENERATE, SLOT_LOGPROBS, Completion, Message, Usage
from harness.llm.render import shown
from harness.llm.templates import load_template
from harness.progress import Progress
from harness.records import Explanation, TokenContext, UnitContexts
from harness.run.evaluate import BINARY_FILES, EXPLANATIONS, JUDGMENTS, SIMULATIONS, explain_stage, score_stage
from harness.run.foundation import dictionary_label
from harness.run.judges import judge_directory, judge_evaluation, other_judges
from results.store import read_records

_CAPABILITIES = {
    "local": frozenset({GENERATE, CHOICE_LOGPROBS, CONTINUATION_LOGPROB, SLOT_LOGPROBS}),
    "openai": frozenset({GENERATE, CHOICE_LOGPROBS}),
    "anthropic": frozenset({GENERATE}),
}


def backend_capabilities(backend: str) -> frozenset[str]:
    """Return what the backend named ``backend`` can serve (``harness.llm.interface``'s GENERATE, CHOICE_LOGPROBS …),
    known without building it (no API key needed); a backend not listed here is taken to serve everything."""
    return _CAPABILITIES.get(backend, _CAPABILITIES["local"])


@dataclass
class PlanningBackend:
    """Stands in for a backend: same name, model and capabilities; canned replies with estimated usage."""

    name: str
    model: str
    capabilities: frozenset[str]

    def generate(self, messages: list[Message], **params: Any) -> Completion:
        """Return a placeholder reply; usage = estimated prompt tokens and the request's output maximum."""
        limit = int(params.get("max_tokens") or params.get("max_new_tokens") or 256)
        return Completion("", Usage(estimated_tokens("".join(m.content for m in messages)), limit))

    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        """Return uniform log-probabilities over the choices (usage: estimated prompt tokens, one output token)."""
        report_usage(Usage(estimated_tokens("".join(m.content for m in messages)), 1))
        return dict.fromkeys(choices, -math.log(len(choices)))

    def slot_logprobs(self, messages: list[Message], lines: list[str], filler: str, choices: list[str]) -> list[dict[str, float]]:
        """Return uniform log-probabilities over the choices at every line (usage: estimated tokens of prompt and forced reply)."""
        report_usage(Usage(estimated_tokens("".join(m.content for m in messages) + "".join(line + filler + "\n" for line in lines)), 0))
        return [dict.fromkeys(choices, -math.log(len(choices))) for _ in lines]

    def continuation_logprob(self, prompt: str, continuation: str) -> float:
        """Return a fixed log-probability (usage: estimated tokens of prompt and continuation)."""
        report_usage(Usage(estimated_tokens(prompt + continuation), 0))
        return -1.0


class PlanningClient(LLMClient):
    """An LLMClient over a PlanningBackend whose ``generate`` hands the parser a reply it accepts."""

    def generate(
        self, messages: list[Message], stage: str, parse: Callable[[str], Any] | None = None, format_hint: str | None = None, **params: Any
    ) -> Any:
        """Count the call, then return ``parse`` of the first canned reply it accepts (``format_hint`` is not needed)."""
        completion = super().generate(messages, stage, **params)
        if parse is None:
            return completion
        for reply in _canned_replies():
            try:
                return parse(reply)
            except ValueError:
                continue
        raise ValueError("no canned reply fits this parser")


@functools.cache
def _canned_replies() -> tuple[str, ...]:
    numbered = ["\n".join(f"{i}: 2" for i in range(1, count + 1)) for count in range(1, 129)]
    lists = ["[" + ", ".join(["0"] * count) + "]" for count in range(1, 257)]
    return ("2", "Yes", *numbered, *lists)


def recorded_model(role: Role) -> str | None:
    """Return the model name ``role``'s records carry, so that the plan recognises finished ones; None if unknown here.

    A local backend names its chat rendering ("<model> [chat]", ``harness.llm.backends.local.recorded_name``);
    with ``chat`` unset that depends on the tokenizer, read from files on this machine (None when absent).
    """
    return planned_name(role.model, role.chat) if role.backend == "local" else role.model


def planning_client(role: Role, prices: dict[str, tuple[float, float]]) -> PlanningClient:
    """Return a PlanningClient standing in for ``role`` (named as its records are, where that can be told here)."""
    model = recorded_model(role) or role.model
    backend = PlanningBackend(role.backend, model, backend_capabilities(role.backend))
    return PlanningClient(backend, cache_dir=None, max_concurrency=1, max_parse_attempts=1, retry_attempts=1, prices=prices)


def plan_calls(
    run_dir: Path,
    units: list[UnitContexts],
    config: EvaluationConfig,
    roles: dict[str, Role],
    prices: dict[str, tuple[float, float]],
    other_judges: list[tuple[str, Role]] = (),
    steering_tokens: int = 12,
) -> dict[str, dict[str, Any]]:
    """Return {stage: {role, backend, model, calls, prompt_tokens, completion_tokens, cost_usd}} still needed.

    Stages: explain, and judge (the rubric), simulate, detection, fuzzing, saebench (detection in the SAEBench
    setting) and intervene (the intervention scorer's judge calls, its continuations ``steering_tokens`` long) when
    ``config.scorers`` names their scorer;
    for each of ``other_judges`` (label, role: ``harness.run.judges``) its judge stages again, named "<stage>:<label>".

    The run directory's records written so far are copied to a scratch directory, never written.
    """
    clients = {name: planning_client(role, prices) for name, role in roles.items()}
    with tempfile.TemporaryDirectory(prefix="monoscope-plan-") as scratch:
        work = Path(scratch)
        for name in (EXPLANATIONS, JUDGMENTS, SIMULATIONS, *BINARY_FILES.values()):
            if (run_dir / name).exists():
                shutil.copyfile(run_dir / name, work / name)
        explain_stage(work, units, clients["explainer"], config)
        simulator = clients["judge"] if roles["simulator"] == roles["judge"] else clients["simulator"]
        explanations = read_records(work / EXPLANATIONS, Explanation)
        score_stage(work, units, clients["judge"], simulator, config, explanations)
        others = {}
        for label, role in other_judges:
            records = judge_directory(work, label)
            records.mkdir(parents=True)
            for name in (JUDGMENTS, *BINARY_FILES.values()):
                if (judge_directory(run_dir, label) / name).exists():
                    shutil.copyfile(judge_directory(run_dir, label) / name, records / name)
            others[label] = (role, planning_client(role, prices))
            score_stage(records, units, others[label][1], others[label][1], judge_evaluation(config), explanations)
    plan = {}
    judge_stages = _judge_stages(config)
    stages = [("explain", "explainer"), *((stage, "judge") for stage in judge_stages)]
    if "simulation" in config.scorers:
        stages.insert(2 if "judge" in judge_stages else 1, ("simulate", "simulator"))
    for stage, role_name in stages:
        client = simulator if role_name == "simulator" else clients[role_name]
        plan[stage] = _plan_row(client, stage, role_name, roles[role_name])
    if "detection" in config.scorers and config.detection_setting == "saebench":
        plan["saebench"] = _saebench_row(len(units), roles, prices)
    if "intervention" in config.scorers:
        plan["intervene"] = _intervention_row(len(units), config, roles["judge"], prices, steering_tokens)
    for label, (role, client) in others.items():
        for stage in judge_stages:
            plan[f"{stage}:{label}"] = _plan_row(client, stage, "judge", role)
    return plan


def _judge_stages(config: EvaluationConfig) -> list[str]:
    """Return the judge's stages the run's scorers use: "judge" (the rubric), then detection and fuzzing, each under
    its scorer's name (detection in the SAEBench setting is the "saebench" stage instead)."""
    stages = ["judge"] if "rubric" in config.scorers else []
    saebench = config.detection_setting == "saebench"
    return stages + [scorer for scorer in BINARY_FILES if scorer in config.scorers and not (scorer == "detection" and saebench)]


def _saebench_row(n_units: int, roles: dict[str, Role], prices: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Return the plan of the SAEBench setting: per unit one explanation and two detection calls (real, shuffled), each
    prompt rendered with placeholder windows of 21 tokens (upper bound: finished units are not recognised here)."""
    from scorers import saebench

    window = " token" * (2 * saebench.BUFFER + 1)
    n_explain = saebench.N_TOP_EXPLAIN + saebench.N_WEIGHTED_EXPLAIN
    n_score = saebench.N_TOP_SCORE + saebench.N_WEIGHTED_SCORE + saebench.N_RANDOM
    explain = load_template(saebench.EXPLAIN_TEMPLATE).render(examples="\n".join(f"{i}. {window}" for i in range(1, n_explain + 1)))
    listing = "\n".join(f"{i}. {window}" for i in range(1, n_score + 1))
    score = load_template(saebench.DETECTION_TEMPLATE).render(
        count=n_score, example="1, 2", explanation="a short explanation", examples=listing
    )
    client = planning_client(roles["judge"], prices)
    for _ in range(n_units):
        client.generate([Message("user", explain)], stage="saebench", max_tokens=saebench.EXPLANATION_MAX_TOKENS)
        for _source in ("real", "shuffled"):
            client.generate([Message("user", score)], stage="saebench", max_tokens=2 * n_score + 5)
    return _plan_row(client, "saebench", "judge", roles["judge"])


def _intervention_row(
    n_units: int, config: EvaluationConfig, judge: Role, prices: dict[str, tuple[float, float]], tokens: int
) -> dict[str, Any]:
    """Return the plan of the intervention scorer's judge calls: per unit, neutral prompt, strength and explanation
    source (real, shuffled, token statistics) one call, its prompt rendered with two placeholder continuations of
    ``tokens`` tokens (upper bound: finished units are not recognised here). The steered generations themselves run on
    the subject model and are not LLM calls."""
    from scorers.intervention import LABELS, TEMPLATE, neutral_prompts

    client = planning_client(judge, prices)
    continuation = " token" * tokens
    template = load_template(TEMPLATE)
    explanation = "a short explanation of eight words here"
    rendered = [
        template.render(explanation=explanation, prompt=shown(prompt), first=continuation, second=continuation)
        for prompt in neutral_prompts()[: config.intervention_prompts]
    ]
    choices = [prefix + label for label in LABELS for prefix in ("", " ")]
    for _call in range(n_units * len(config.intervention_multiples) * 3):
        for prompt in rendered:
            if CHOICE_LOGPROBS in client.backend.capabilities:
                client.choice_logprobs([Message("user", prompt)], choices, stage="intervene")
            else:
                client.generate([Message("user", prompt)], stage="intervene", max_tokens=4)
    return _plan_row(client, "intervene", "judge", judge)


def _plan_row(client: LLMClient, stage: str, role_name: str, role: Role) -> dict[str, Any]:
    """Return one stage's row of the plan from a planning client's usage."""
    usage = client.usage_by_stage().get(stage, {})
    return {
        "role": role_name,
        "backend": role.backend,
        "model": role.model,
        "calls": usage.get("calls", 0),
        "prompt_tokens": usage.get("prompt_tokens", 0),
        "completion_tokens": usage.get("completion_tokens", 0),
        "cost_usd": usage.get("cost_usd") if usage else (0.0 if client._price() is not None else None),
        "records_recognised": recorded_model(role) is not None,
    }


def placeholder_units(unit_names: list[str], config: EvaluationConfig, window: int) -> list[UnitContexts]:
    """Return units with the most contexts the sampling config allows, of placeholder tokens (for planning before the index exists)."""
    sampling = config.sampling
    n_explain = sampling.explain_top + sampling.levels * sampling.explain_per_level + sampling.explain_random
    n_score = sampling.score_top + sampling.levels * sampling.score_per_level + sampling.score_random + sampling.score_zero
    units = []
    for name in unit_names:

        def context(index: int, split: str, firing: bool, unit: str = name) -> TokenContext:
            activations = tuple(1.0 if firing and position == window // 2 else 0.0 for position in range(window))
            return TokenContext(unit, f"{unit}@{index}:0", "top", index, (" token",) * window, activations, window // 2, None, split)

        explain = tuple(context(i, "explain", True) for i in range(n_explain))
        score = tuple(context(n_explain + i, "score", i < n_score - sampling.score_zero) for i in range(n_score))
        units.append(UnitContexts(name, 1.0, explain, score))
    return units


def placeholder_plan(run_dir: Path, config: RunConfig) -> dict[str, dict[str, Any]]:
    """Return the call plan of a run whose indexes do not exist yet, from placeholder contexts (an upper bound)."""
    sets = [dictionary_label(size) for size in config.foundation.dictionary_sizes]
    sets += [load_dictionary(spec).name for spec in config.load_dictionaries]
    if config.neurons.enabled:
        sets.append(POOL_NAME)
    names = [f"{unit_set}/{i}" for unit_set in sets for i in range(config.evaluation.units_per_dictionary)]
    units = placeholder_units(names, config.evaluation, config.foundation.index.window)
    roles = {"explainer": config.explainer, "judge": config.judge, "simulator": config.simulator}
    return plan_calls(run_dir, units, config.evaluation, roles, config.prices, other_judges(config), config.steering.tokens)


def log_plan(plan: dict[str, dict[str, Any]], log: Progress, upper_bound: bool) -> dict[str, Any]:
    note = " (upper bound: the indexes do not exist yet, so every sampling slot is counted)" if upper_bound else ""
    log(f"dry run: LLM calls still needed{note}; tokens are estimates (characters / 4)")
    width = max([9, *(len(stage) for stage in plan)])
    log(f"{'stage':<{width}} {'role':<10} {'backend/model':<32} {'calls':>8} {'prompt tok':>11} {'output tok':>11} {'est. cost':>10}")
    total = 0.0
    priced = True
    for stage, row in plan.items():
        cost = row["cost_usd"]
        priced = priced and cost is not None
        total += cost or 0.0
        cost_text = "unpriced" if cost is None else f"${cost:.4f}"
        model = f"{row['backend']}/{row['model']}"
        log(
            f"{stage:<{width}} {row['role']:<10} {model:<32} {row['calls']:>8} {row['prompt_tokens']:>11}"
            f" {row['completion_tokens']:>11} {cost_text:>10}"
        )
    log(f"estimated cost: ${total:.4f}" + ("" if priced else " for the priced models (add the others under llm.prices)"))
    for model in sorted({row["model"] for row in plan.values() if not row.get("records_recognised", True)}):
        log(
            f"note: {model}'s tokenizer is not on this machine, so whether it renders with a chat template is unknown: "
            "its finished records may be counted again (set chat: true or false in the role to say)"
        )
    return {"dry_run": True, "upper_bound": upper_bound, "stages": plan, "estimated_cost_usd": total}
