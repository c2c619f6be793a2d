"""Scorers and explainers: failures are recorded with the raw reply, never scored; correlations are honest."""

from pathlib import Path

import pytest

from explainers.llm_explainer import explain_unit
from explainers.token_stats import token_statistics_explanation
from harness.errors import MonoscopeError
from harness.llm.client import LLMClient
from harness.llm.interface import GENERATE, Completion, Message, Usage
from harness.records import Simulation, TokenContext, UnitContexts
from scorers.parsing import parse_activation_list, parse_numbered_ratings, parse_rating
from scorers.rubric import judge_unit
from scorers.simulation import correlation_scores, simulate_unit


class ScriptedBackend:
    name = "scripted"
    model = "script"
    capabilities = frozenset({GENERATE})

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.prompts: list[str] = []

    def generate(self, messages: list[Message], **params: object) -> Completion:
        self.prompts.append(messages[-1].content)
        return Completion(self.reply, Usage(10, 2))


def contexts() -> UnitContexts:
    firing = TokenContext("d/1", "d/1@3:2", "top", 3, ("a", " cat", " sat", "<b>"), (0.0, 4.0, 0.0, 1.0), 1)
    quiet = TokenContext("d/1", "d/1@8:0", "zero", 8, ("x", " y", " z", " w"), (0.0, 0.0, 0.0, 0.0), 0)
    return UnitContexts("d/1", 4.0, (firing,), (firing, quiet))


def test_unparseable_judgments_are_failures_with_raw_text(tmp_path: Path):
    client = LLMClient(ScriptedBackend("I cannot rate this."), cache_dir=tmp_path, max_parse_attempts=2)
    judgments = judge_unit(contexts(), "cats", "real", client, "rating")
    assert all(j.score is None and j.failure and j.raw == "I cannot rate this." for j in judgments)
    assert client.backend_calls == 2 * 2, "each judgment re-asked a bounded number of times"
    assert not list(tmp_path.rglob("*.json")), "unparseable replies are never cached"


def test_unparseable_simulation_is_a_failure_not_zeros(tmp_path: Path):
    client = LLMClient(ScriptedBackend("[1, 2]"), cache_dir=tmp_path, max_parse_attempts=1)
    simulations = simulate_unit(contexts(), "cats", "real", client, "structured")
    assert all(s.predicted is None and s.failure and s.raw == "[1, 2]" for s in simulations)
    assert correlation_scores(simulations)["reason"] == "no parsed simulation"


def test_constant_prediction_has_no_correlation():
    flat = Simulation("d/1", "c", "real", "x", (5.0, 5.0, 5.0), (0.0, 3.0, 1.0), "structured", "b", "m", "h")
    result = correlation_scores([flat])
    assert result["pearson"] is None and result["spearman"] is None and result["reason"] == "constant prediction"


def test_explainer_failure_record_and_prompt(tmp_path: Path):
    backend = ScriptedBackend("   \n  ")
    explanation = explain_unit(contexts(), LLMClient(backend, cache_dir=tmp_path, max_parse_attempts=1), chat=True)
    assert explanation.text is None and explanation.failure and explanation.prompt_hash
    assert "⟦ cat⟧{10}" in backend.prompts[0] and "⟦<b>⟧{2}" in backend.prompts[0]


def test_format_needs_capability(tmp_path: Path):
    client = LLMClient(ScriptedBackend("1"), cache_dir=tmp_path)
    with pytest.raises(MonoscopeError, match="choice_logprobs"):
        judge_unit(contexts(), "cats", "real", client, "expected_value")


def test_token_statistics_names_the_firing_token():
    assert '"cat"' in token_statistics_explanation(contexts()).text


def test_parsers():
    assert parse_rating(" 2") == 2 and parse_rating("Rating: 3") == 3
    for bad in ("", "four", "7", "-1"):
        with pytest.raises(ValueError):
            parse_rating(bad)
    assert parse_numbered_ratings("1: 0\n2: 3", 2) == [0, 3]
    with pytest.raises(ValueError):
        parse_numbered_ratings("1: 0", 2)
    assert parse_activation_list("[0, 10, 2.5]", 3) == [0.0, 10.0, 2.5]
    for bad in ("[0, 11, 1]", "[true, 1, 1]", "[1, 2]", "none", "[NaN, 1, 2]", "sure: [0, 10, 2.5]"):  # the whole reply is the list
        with pytest.raises(ValueError):
            parse_activation_list(bad, 3)


class LogprobBackend:
    name = "logprobs"
    model = "fixed"
    capabilities = frozenset({GENERATE, "choice_logprobs"})

    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        marked_cat = "⟦ cat⟧" in messages[-1].content
        table = {" Yes": -0.1 if marked_cat else -3.0, " No": -3.0 if marked_cat else -0.1}
        table |= {f" {d}": (-0.1 if (d == 3) == marked_cat else -5.0) for d in range(10)}
        return {choice: table[choice] for choice in choices}


def test_logprob_formats_map_by_the_stated_rules(tmp_path: Path):
    import math

    client = LLMClient(LogprobBackend(), cache_dir=tmp_path)
    by_id = {j.context_id: j for j in judge_unit(contexts(), "cats", "real", client, "yes_no")}
    assert by_id["d/1@3:2"].score == pytest.approx(3 / (1 + math.exp(-2.9)))
    assert by_id["d/1@8:0"].score == pytest.approx(3 / (1 + math.exp(2.9)))
    expected = {j.context_id: j.score for j in judge_unit(contexts(), "cats", "real", client, "expected_value")}
    assert expected["d/1@3:2"] > 2.9 and expected["d/1@8:0"] < 1.6


def unit_with_firing(count: int, quiet: int = 3) -> UnitContexts:
    """A unit whose explanation set holds ``count`` firing and ``quiet`` non-firing contexts."""
    firing = tuple(
        TokenContext("d/2", f"d/2@{i}:1", "top", i, ("a", " cat", " b"), (0.0, 2.0 + i, 0.0), 1, split="explain") for i in range(count)
    )
    silent = tuple(
        TokenContext("d/2", f"d/2@{50 + i}:0", "zero", 50 + i, ("x", " y", " z"), (0.0,) * 3, 0, split="explain") for i in range(quiet)
    )
    return UnitContexts("d/2", 10.0, firing + silent, firing[:1] + silent[:1])


@pytest.mark.parametrize(("firing", "minimum", "asked"), [(0, 3, False), (2, 3, False), (3, 3, True), (1, 1, True), (0, 1, False)])
def test_a_unit_with_too_few_firing_explanation_contexts_fails_without_a_call(tmp_path: Path, firing: int, minimum: int, asked: bool):
    backend = ScriptedBackend("cats")
    explanation = explain_unit(unit_with_firing(firing), LLMClient(backend, cache_dir=tmp_path), chat=True, min_contexts=minimum)
    assert bool(backend.prompts) == asked
    if asked:
        assert explanation.text == "cats" and explanation.n_contexts == firing
    else:
        assert explanation.text is None and explanation.failure.startswith("too few firing explanation contexts")
        assert f"{firing} firing, at least {minimum} needed" in explanation.failure
