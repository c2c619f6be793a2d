"""Fuzzed replies: random and malformed text fed to every reply parser and through the judge and simulator.

A parser either returns a value in range or raises ValueError (never another
exception); a reply that does not parse is recorded as a failure with its raw
text, never as a score. Together these tests draw well over 1,000 replies.
"""

import os
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from explainers.llm_explainer import explain_unit, parse_explanation
from harness.llm.client import LLMClient, scrub
from harness.llm.interface import GENERATE, Completion, Message, Usage
from harness.records import TokenContext, UnitContexts
from scorers.parsing import parse_activation_list, parse_numbered_ratings, parse_rating
from scorers.rubric import judge_unit
from scorers.simulation import simulate_unit

# Replies that look almost right are where parsers go wrong: mix free text with digits, lists, JSON and markup.
FRAGMENTS = st.sampled_from(
    ["0", "1", "2", "3", "4", "10", "-1", "3.5", "1e3", "NaN", "nan", "inf", "[", "]", ",", ":", "\n", " ", "Rating:", "rating =",
     "[[", "]]", "{", "}", "null", "true", '"', "Excerpt 1:", "1: 2", "2: 3", "[0, 1, 2]", "[1, 2", "☃", "\x00", "<script>"]
)  # fmt: skip
REPLIES = st.one_of(
    st.text(max_size=80), st.lists(FRAGMENTS, max_size=12).map("".join), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))
)
# In CI (.ci/run sets CI=1) the examples are the same on every run, so a red build names a change, not a draw.
FUZZ = settings(
    max_examples=1000, deadline=None, derandomize=bool(os.environ.get("CI")), suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(REPLIES)
def test_parse_rating_returns_a_rating_in_range_or_raises_value_error(reply: str) -> None:
    try:
        value = parse_rating(reply)
    except ValueError:
        return
    assert isinstance(value, int) and 0 <= value <= 3


@FUZZ
@given(REPLIES, st.integers(min_value=1, max_value=6))
def test_parse_numbered_ratings_returns_every_rating_in_range_or_raises(reply: str, count: int) -> None:
    try:
        values = parse_numbered_ratings(reply, count)
    except ValueError:
        return
    assert len(values) == count and all(isinstance(v, int) and 0 <= v <= 3 for v in values)


@FUZZ
@given(REPLIES, st.integers(min_value=1, max_value=5))
def test_parse_activation_list_returns_finite_values_in_range_or_raises(reply: str, count: int) -> None:
    try:
        values = parse_activation_list(reply, count)
    except ValueError:
        return
    assert len(values) == count and all(0 <= v <= 10 for v in values)


@FUZZ
@given(REPLIES)
@example(".")  # once returned an empty explanation
@example(' ".." ')
def test_parse_explanation_returns_one_clean_line_or_raises(reply: str) -> None:
    try:
        text = parse_explanation(reply)
    except ValueError:
        return
    assert text and "\n" not in text and len(text) <= 200 and not text.startswith("Excerpt")


class ScriptedReply:
    """A backend that answers every request with one fixed reply."""

    name = "scripted"
    model = "fixed"
    capabilities = frozenset({GENERATE})

    def __init__(self, reply: str) -> None:
        self.reply = reply

    def generate(self, messages: list[Message], **params: object) -> Completion:
        return Completion(self.reply, Usage(1, 1))


def _unit() -> UnitContexts:
    firing = TokenContext("d/1", "d/1@3:1", "top", 3, ("a", " cat", " sat"), (0.0, 4.0, 0.0), 1)
    quiet = TokenContext("d/1", "d/1@8:0", "zero", 8, ("x", " y", " z"), (0.0, 0.0, 0.0), 0)
    return UnitContexts("d/1", 4.0, (firing,), (firing, quiet))


@settings(max_examples=150, deadline=None)
@given(REPLIES)
def test_an_unparseable_judge_reply_is_a_recorded_failure_never_a_score(reply: str) -> None:
    client = LLMClient(ScriptedReply(reply), cache_dir=None, max_parse_attempts=2)
    for judgment in judge_unit(_unit(), "cats", "real", client, "rating"):
        try:
            expected = float(parse_rating(reply))
        except ValueError:
            assert judgment.score is None and judgment.failure and judgment.raw == scrub(reply)
        else:
            assert judgment.score == expected and judgment.failure is None


@settings(max_examples=150, deadline=None)
@given(REPLIES)
def test_an_unparseable_simulator_reply_is_a_recorded_failure_never_a_prediction(reply: str) -> None:
    client = LLMClient(ScriptedReply(reply), cache_dir=None, max_parse_attempts=2)
    for simulation in simulate_unit(_unit(), "cats", "real", client, "structured"):
        try:
            expected = parse_activation_list(reply, 3)
        except ValueError:
            assert simulation.predicted is None and simulation.failure and simulation.raw == scrub(reply)
        else:
            assert simulation.predicted == tuple(expected)


@settings(max_examples=150, deadline=None)
@given(REPLIES)
def test_an_unparseable_explainer_reply_is_a_recorded_failure_never_an_explanation(reply: str) -> None:
    client = LLMClient(ScriptedReply(reply), cache_dir=None, max_parse_attempts=2)
    explanation = explain_unit(_unit(), client, chat=True)
    try:
        expected = parse_explanation(reply)
    except ValueError:
        assert explanation.text is None and explanation.failure and explanation.raw == scrub(reply)
    else:
        assert explanation.text == expected


def test_a_failed_reply_is_never_cached(tmp_path: Path) -> None:
    client = LLMClient(ScriptedReply("no rating here"), cache_dir=tmp_path, max_parse_attempts=2)
    judgments = judge_unit(_unit(), "cats", "real", client, "rating")
    assert all(j.score is None for j in judgments)
    assert not list(tmp_path.rglob("*.json"))
