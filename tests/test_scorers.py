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


def test_explain_contexts_limits_what_the_explainer_sees_and_a_change_re_explains(tmp_path: Path):
    from dataclasses import replace

    from harness.config import EvaluationConfig
    from harness.run.evaluate import explain_stage

    backend = ScriptedBackend("cats")
    client = LLMClient(backend, cache_dir=tmp_path / "cache")
    unit = unit_with_firing(6)
    five = EvaluationConfig(explain_contexts=5)
    first = explain_stage(tmp_path, [unit], client, five)["d/2"]
    assert first.n_contexts == 5 and backend.prompts[-1].count("Excerpt") == 5 and "Excerpt 6" not in backend.prompts[-1]
    explain_stage(tmp_path, [unit], client, five)
    assert len(backend.prompts) == 1, "an unchanged setting asks nothing"
    again = explain_stage(tmp_path, [unit], client, replace(five, explain_contexts=None))["d/2"]
    assert again.n_contexts == 6 and len(backend.prompts) == 2, "more contexts shown: explained again"


def test_explain_contexts_below_the_minimum_is_refused(tmp_path: Path):
    from harness.config import load_config

    path = tmp_path / "run.yaml"
    path.write_text("evaluation: {explain_contexts: 2, min_explain_contexts: 3}\n")
    with pytest.raises(MonoscopeError, match="explain_contexts 2 is below evaluation.min_explain_contexts 3"):
        load_config(path)


class RecordingLogprobBackend(LogprobBackend):
    """LogprobBackend that keeps every prompt it is asked."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        self.prompts.append(messages[-1].content)
        return super().choice_logprobs(messages, choices)


def test_yes_no_prompts_name_the_marked_token_as_shown(tmp_path: Path):
    backend = RecordingLogprobBackend()
    judge_unit(contexts(), "cats", "real", LLMClient(backend, cache_dir=tmp_path), "yes_no")
    assert any('the token " cat" is marked as ⟦ cat⟧' in p and 'Is the marked token " cat"' in p for p in backend.prompts)
    # The bytes of one character are one display unit: the prompt names the character, never a byte piece.
    emoji = TokenContext("d/3", "d/3@1:1", "top", 1, ("a", "", " 🦜", "⟦x⟧\n"), (0.0, 3.0, 0.0, 0.0), 1)
    line = TokenContext("d/3", "d/3@2:3", "top", 2, ("a", "", " 🦜", "⟦x⟧\n"), (0.0, 0.0, 0.0, 1.0), 3)
    judge_unit(UnitContexts("d/3", 3.0, (emoji,), (emoji, line)), "birds", "real", LLMClient(backend, cache_dir=tmp_path), "yes_no")
    assert any('the token " 🦜" is marked as ⟦ 🦜⟧' in p for p in backend.prompts)
    escaped = 'the token "[x]⏎" is marked as ⟦[x]⏎⟧'
    assert any(escaped in p for p in backend.prompts), "marks and line breaks of the text are escaped as in the excerpt"


def test_yes_no_simulation_predicts_ten_times_p_yes(tmp_path: Path):
    import math

    client = LLMClient(LogprobBackend(), cache_dir=tmp_path)
    by_id = {s.context_id: s for s in simulate_unit(contexts(), "cats", "real", client, "yes_no")}
    p_yes, p_no = 10 / (1 + math.exp(-2.9)), 10 / (1 + math.exp(2.9))
    assert by_id["d/1@3:2"].predicted == pytest.approx((p_no, p_yes, p_no, p_no))
    assert by_id["d/1@8:0"].predicted == pytest.approx((p_no,) * 4)
    assert correlation_scores([by_id["d/1@3:2"]])["pearson"] > 0.8


class SlotBackend:
    """Answers slot_logprobs: "Yes" likely after a line that quotes " cat", "No" after any other line."""

    name = "slots"
    model = "fixed"
    capabilities = frozenset({"slot_logprobs"})

    def __init__(self) -> None:
        self.requests: list[tuple[str, list[str], str]] = []

    def slot_logprobs(self, messages: list[Message], lines: list[str], filler: str, choices: list[str]) -> list[dict[str, float]]:
        self.requests.append((messages[-1].content, list(lines), filler))  # (prompt, lines, placeholder)
        rows = []
        for line in lines:
            yes = -0.1 if line == '" cat":' else -3.0
            no = -3.0 if yes > -1 else -0.1
            # the options spelled with a leading space carry the mass; bare ones almost none
            rows.append({choice: (yes if choice == " Yes" else no if choice == " No" else -9.0) for choice in choices})
        return rows


def test_yes_no_all_simulates_a_context_in_one_call_with_one_line_per_display_unit(tmp_path: Path):
    import math

    from scorers.answers import answer_spellings

    backend = SlotBackend()
    client = LLMClient(backend, cache_dir=tmp_path)
    spelling = answer_spellings(client, "rating", client, "yes_no_all")["simulator"]
    assert spelling.prefix == " " and spelling.mass > 0.9 and spelling.other_mass < 0.01
    assert backend.requests[0][1:] == (['"import":'], " No"), "the probe reads the slot after the probe token's line"
    by_id = {s.context_id: s for s in simulate_unit(contexts(), "cats", "real", client, "yes_no_all")}
    high, low = 10 / (1 + math.exp(-2.9)), 10 / (1 + math.exp(2.9))
    assert by_id["d/1@3:2"].predicted == pytest.approx((low, high, low, low))
    assert by_id["d/1@8:0"].predicted == pytest.approx((low,) * 4)
    prompt, lines, _ = next(request for request in backend.requests if "Text: a cat" in request[0])
    assert "Text: a cat sat<b>" in prompt and "⟦" not in prompt, "the text is shown whole and unmarked"
    assert lines == ['"a":', '" cat":', '" sat":', '"<b>":']
    # the bytes of one character are one line, as the judge shows them; a rerun reads the cache
    emoji = TokenContext("d/3", "d/3@1:1", "top", 1, ("a", "", " 🦜", "\n"), (0.0, 3.0, 3.0, 0.0), 1)
    simulate_unit(UnitContexts("d/3", 3.0, (emoji,), (emoji,)), "birds", "real", client, "yes_no_all")
    assert backend.requests[-1][1] == ['"a":', '" 🦜":', '"⏎":']
    calls = len(backend.requests)
    simulate_unit(contexts(), "cats", "real", client, "yes_no_all")
    assert len(backend.requests) == calls


def test_yes_no_all_needs_slot_logprobs(tmp_path: Path):
    with pytest.raises(MonoscopeError, match="slot_logprobs"):
        simulate_unit(contexts(), "cats", "real", LLMClient(LogprobBackend(), cache_dir=tmp_path), "yes_no_all")
