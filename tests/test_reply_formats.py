"""Reply formats: a reply is accepted only if it IS the asked-for answer, after removing known wrappers.

Known wrappers (harness/llm/replies.py): closed reasoning blocks at the start, whitespace, one code fence,
quotes, bold/italic markdown, one label, a trailing period. A non-integer or out-of-range rating fails
(never rounded), an unclosed reasoning block fails, and a rejected reply is re-asked once with a message
naming the expected format, then recorded as a failure with its raw text.
"""

import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explainers.llm_explainer import EXPLANATION_FORMAT, explain_unit, parse_explanation
from harness.llm.client import EMPTY_REPLY, LLMClient, UnparseableReply, reask_message
from harness.llm.interface import GENERATE, Completion, Message, Usage
from harness.llm.replies import strip_reasoning, unwrap_reply
from harness.records import TokenContext, UnitContexts
from scorers.parsing import (
    activation_list_format,
    numbered_ratings_format,
    parse_activation_list,
    parse_numbered_ratings,
    parse_rating,
    rating_format,
)
from scorers.rubric import RATING_MAX_TOKENS, judge_unit
from scorers.simulation import simulate_unit

# --- the examples, with their right values ------------------------------------------------------


def test_a_fractional_rating_is_a_failure_never_rounded_down() -> None:
    with pytest.raises(ValueError, match="not an integer"):
        parse_rating("2.5")


def test_a_closed_reasoning_block_is_removed_before_the_rating() -> None:
    assert parse_rating("<think>The token is a noun, so 2 fits.</think>\n2") == 2


def test_an_unclosed_reasoning_block_is_a_failure() -> None:
    with pytest.raises(ValueError, match="unclosed reasoning block"):
        parse_rating("<think>The token is a noun, so")
    with pytest.raises(ValueError, match="unclosed reasoning block"):
        parse_explanation("<think>")  # never the explanation "<think>"
    with pytest.raises(ValueError, match="unclosed reasoning block"):
        parse_explanation("<think>\nthe feature fires on")


def test_an_explanation_after_a_reasoning_block() -> None:
    assert parse_explanation('<think>reasoning</think>\nthe word "cat"') == 'the word "cat"'


def test_an_explanation_that_quotes_brackets_survives() -> None:
    reply = 'the "[[" token that opens nested lists'
    assert parse_explanation(reply) == reply
    assert parse_explanation('the "]]" token that closes them') == 'the "]]" token that closes them'
    assert parse_explanation("[[ and ]] in wiki links") == "[[ and ]] in wiki links"


# --- more of the same kind: ratings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, value",
    [
        ("2", 2), (" 2 ", 2), ("\n3\n", 3), ("0", 0), ("2.", 2), ("**2**", 2), ("*2*", 2), ("__1__", 1), ('"2"', 2), ("'2'", 2),
        ("“2”", 2), ("`2`", 2), ("```\n2\n```", 2), ("```text\n1\n```", 1), ("Rating: 2", 2), ("rating:2", 2), ("RATING: 3", 3),
        ("Answer: 1", 1), ("Score: 0", 0), ("**Rating:** 2", 2), ("**Rating**: 2", 2), ("Rating: **2**", 2), ('Answer: "3".', 3),
        ('**"2"**', 2), ("<think>hmm</think>2", 2), ("<THINK>hmm</THINK> 1", 1), ("<thinking>a\nb</thinking>\n\n3", 3),
        ("<reasoning>r</reasoning>\nRating: 2", 2), ("<think>a</think>\n<think>b</think>\n0", 0), ("<think></think>**1**", 1),
    ],
)  # fmt: skip
def test_wrapped_ratings_are_accepted(reply: str, value: int) -> None:
    assert parse_rating(reply) == value


@pytest.mark.parametrize(
    "reply",
    [
        "2.5", "3/3", "2/3", "-1", "+2", "4", "10", "1e0", "2.0", "two", "Two.", "", "   ", "\n", "1 — The explanation",
        "2 because it fits", "The rating is 2", "2\nThe explanation names the token", "1 2", "1, 2", "2-3", "[2]", "(2)",
        "Rating: ", "Rating: 2.5", "**2.5**", '"2', "2..", "²", "٣", "<think>2", "<think>a</think><think>b", "2 <think>x</think>",
        "Rating = 2", "Excerpt 1: 2", "```\n2\n", "<think>x</think>", "Rating: Rating: 2", "N/A", "0x2", "2️⃣",
    ],
)  # fmt: skip
def test_malformed_ratings_are_failures(reply: str) -> None:
    with pytest.raises(ValueError):
        parse_rating(reply)


INNER_WRAPPERS = {  # any of these, in any order, at most one label
    "bold": lambda s: f"**{s}**",
    "italic": lambda s: f"*{s}*",
    "double quotes": lambda s: f'"{s}"',
    "single quotes": lambda s: f"'{s}'",
    "curly quotes": lambda s: f"“{s}”",
    "backticks": lambda s: f"`{s}`",
    "period": lambda s: f"{s}.",
}
LABELS = ("Rating: ", "Answer: ", "Score: ", "rating:", "ANSWER:\n")  # "**Rating:** 2" is tested above, not inside bold


@settings(max_examples=400, deadline=None)
@given(
    st.integers(0, 3),
    st.permutations(list(INNER_WRAPPERS)).flatmap(lambda names: st.integers(0, len(names)).map(lambda n: names[:n])),
    st.one_of(st.none(), st.sampled_from(LABELS)),
    st.integers(0, len(INNER_WRAPPERS)),
    st.booleans(),
    st.sampled_from(["", " ", "\n", "\n\n  "]),
    st.one_of(st.none(), st.sampled_from(["think", "thinking", "reasoning", "THINK"])),
)
def test_any_stack_of_known_wrappers_around_a_rating_is_accepted(
    value: int, inner: list[str], label: str | None, label_at: int, fence: bool, space: str, reasoning: str | None
) -> None:
    reply = str(value)
    for index, name in enumerate(inner):
        if label is not None and index == min(label_at, len(inner)):
            reply = label + reply
        reply = INNER_WRAPPERS[name](reply)
    if label is not None and label_at >= len(inner):
        reply = label + reply
    if fence:
        reply = f"```\n{reply}\n```"
    reply = f"{space}{reply}{space}"
    if reasoning is not None:
        reply = f"<{reasoning}>maybe {value}, or {value + 1}?</{reasoning}>{space}{reply}"
    assert parse_rating(reply) == value, reply


WRAPPERS = (*INNER_WRAPPERS.values(), lambda s: f"Rating: {s}", lambda s: f"```\n{s}\n```", lambda s: f"<think>x</think>\n{s}")


NOT_A_RATING = st.one_of(
    st.floats(-10, 10, allow_nan=False).filter(lambda x: x != int(x)).map(str),  # fractions
    st.integers(0, 3).map(lambda v: f"{v}.0"),  # integers written as decimals
    st.integers(-100, -1).map(str),  # negative
    st.integers(4, 10**6).map(str),  # out of range
    st.sampled_from(["zero", "one", "two", "three", "none", "N/A", "high", "3/3", "1-2", "2 or 3"]),  # words and ranges
    st.tuples(st.integers(0, 3), st.integers(0, 3)).map(lambda p: f"{p[0]} {p[1]}"),  # two numbers
    st.tuples(st.integers(0, 3), st.text(string.ascii_letters + " ,—", min_size=1, max_size=20).filter(str.strip)).map(
        lambda p: f"{p[0]} {p[1]}"
    ),  # trailing prose
    st.integers(0, 3).map(lambda v: f"<think>{v}"),  # unclosed reasoning
)


@settings(max_examples=300, deadline=None)
@given(NOT_A_RATING, st.sampled_from(range(len(WRAPPERS))))
def test_malformed_ratings_fail_however_they_are_wrapped(reply: str, wrapper: int) -> None:
    with pytest.raises(ValueError):
        parse_rating(WRAPPERS[wrapper](reply))


# --- numbered ratings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    ["1: 2\n2: 0\n3: 3", "1. 2\n2) 0\n3 - 3", "\n1: 2\n\n2: 0\n3: 3\n", "Ratings:\n1: 2\n2: 0\n3: 3", "```\n1: 2\n2: 0\n3: 3\n```",
     "<think>three lines</think>\n1: 2\n2: 0\n3: 3", "3: 3\n1: 2\n2: 0"],
)  # fmt: skip
def test_numbered_ratings_are_accepted(reply: str) -> None:
    assert parse_numbered_ratings(reply, 3) == [2, 0, 3]


@pytest.mark.parametrize(
    "reply",
    [
        "1: 2\n2: 0\n3: 3\nThese are my ratings.", "Here are the ratings:\n1: 2\n2: 0\n3: 3", "1: 2\n2: 0", "1: 2\n2: 0\n3: 3\n4: 1",
        "1: 2\n2: 0.5\n3: 3", "1: 2\n2: -1\n3: 3", "1: 2\n2: 4\n3: 3", "1: 2\n1: 0\n3: 3", "1: 2 (close)\n2: 0\n3: 3",
        "Excerpt 1: 2\nExcerpt 2: 0\nExcerpt 3: 3", "1: two\n2: 0\n3: 3", "<think>1: 2\n2: 0\n3: 3", "", "1: 2, 2: 0, 3: 3",
    ],
)  # fmt: skip
def test_malformed_numbered_ratings_are_failures(reply: str) -> None:
    with pytest.raises(ValueError):
        parse_numbered_ratings(reply, 3)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=6),
    st.text(string.ascii_letters + " .,", min_size=1, max_size=30).filter(lambda s: s.strip() and not s.strip().isdigit()),
    st.booleans(),
)
def test_a_prose_line_among_numbered_ratings_is_a_failure(values: list[int], prose: str, before: bool) -> None:
    lines = [f"{n}: {v}" for n, v in enumerate(values, 1)]
    assert parse_numbered_ratings("\n".join(lines), len(values)) == values
    with pytest.raises(ValueError):
        parse_numbered_ratings("\n".join([prose, *lines] if before else [*lines, prose]), len(values))


# --- activation lists ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    ["[0, 10, 2.5]", " [0,10,2.5]\n", "```json\n[0, 10, 2.5]\n```", "```\n[0, 10, 2.5]\n```", "Answer: [0, 10, 2.5]",
     "<think>hmm</think>\n[0, 10, 2.5]", "`[0, 10, 2.5]`"],
)  # fmt: skip
def test_activation_lists_are_accepted(reply: str) -> None:
    assert parse_activation_list(reply, 3) == [0.0, 10.0, 2.5]


@pytest.mark.parametrize(
    "reply",
    [
        "sure: [0, 10, 2.5]", "[0, 10, 2.5] is my prediction", "Here you go:\n[0, 10, 2.5]", "[0, 10]", "[0, 10, 2.5, 1]",
        "[0, 10, 2.5][1, 2, 3]", "[0, 11, 2]", "[0, -1, 2]", "[NaN, 1, 2]", "[Infinity, 1, 2]", "[true, 1, 2]", '["1", 1, 2]',
        "[[0], 1, 2]", "0, 10, 2.5", "{0, 10, 2.5}", "", "<think>[0, 10, 2.5]", "[0, 10, 2.5",
    ],
)  # fmt: skip
def test_malformed_activation_lists_are_failures(reply: str) -> None:
    with pytest.raises(ValueError):
        parse_activation_list(reply, 3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10), min_size=1, max_size=8), st.integers(-2, 2), st.sampled_from(["", "Sure! ", "x "]))
def test_a_list_of_the_wrong_length_or_with_prose_is_a_failure(values: list[int], extra: int, prefix: str) -> None:
    reply = prefix + str(values)
    count = len(values) + extra
    if prefix or extra:
        with pytest.raises(ValueError):
            parse_activation_list(reply, max(count, 0))
    else:
        assert parse_activation_list(reply, count) == [float(v) for v in values]


# --- explanations ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, text",
    [
        ("the word cat", "the word cat"), (" the word cat.\n", "the word cat"), ('"the word cat"', "the word cat"),
        ("**the word cat**", "the word cat"), ("Explanation: the word cat", "the word cat"), ("Answer: **numbers**", "numbers"),
        ("```\nthe word cat\n```", "the word cat"), ("<think>x</think>the word cat", "the word cat"),
        ("the word cat\nExcerpt 11: more text", "the word cat"), ("the word cat\n\nIt fires on cats.", "the word cat"),
        ('"the word cat".', "the word cat"), ("closing brackets ]", "closing brackets ]"), ("the [ token", "the [ token"),
        ('the tokens "a", "b"', 'the tokens "a", "b"'), ("__init__", "__init__"), ("⟦ root⟧{3}", "root"), ("⟦ for⟧", "for"),
        ("the token ⟦ for⟧{7} in loops", "the token for in loops"), ("[[ root]]{3}", "[[ root]]{3}"), ("it's", "it's"),
        ("numbers in   lists", "numbers in lists"), ("1", "1"),
    ],
)  # fmt: skip
def test_wrapped_explanations_are_accepted(reply: str, text: str) -> None:
    assert parse_explanation(reply) == text


@pytest.mark.parametrize(
    "reply",
    ["", "   \n ", ".", "...", '""', "<think>x</think>", "<think>x</think>\n\n", "<think>", "<thinking>long reasoning",
     "Excerpt 11: the cat sat", "Explanation:", "x" * 201, "<think>a</think><reasoning>b"],
)  # fmt: skip
def test_malformed_explanations_are_failures(reply: str) -> None:
    with pytest.raises(ValueError):
        parse_explanation(reply)


@settings(max_examples=200, deadline=None)
@given(st.text(string.ascii_letters + string.digits + ' "[](){}<>/-', min_size=1, max_size=60).filter(lambda s: s.strip()))
def test_ascii_brackets_and_quotes_inside_an_explanation_are_kept(phrase: str) -> None:
    reply = f"tokens like {phrase} here"
    assert parse_explanation(reply) == " ".join(reply.split())


# --- the unwrapping step itself ---------------------------------------------------------------------------------


def test_unwrap_removes_only_known_wrappers() -> None:
    assert unwrap_reply("Rating: 2", ("rating",)) == "2"
    assert unwrap_reply("Rating: 2") == "Rating: 2"  # a label the caller does not allow stays
    assert unwrap_reply("Label: Rating: 2", ("rating",)) == "Label: Rating: 2"
    assert unwrap_reply("2.") == "2." and unwrap_reply("2.", trailing_period=True) == "2"
    assert unwrap_reply('"a" and "b"') == '"a" and "b"'  # not one quoted string
    assert strip_reasoning("  <think>a</think>  b ") == "b" and strip_reasoning("b <think>a</think>") == "b <think>a</think>"


# --- one re-ask naming the format, then a failure with the raw text --------------------------------------------


class ScriptedChat:
    """A chat backend answering with the given replies in turn (the last one again when they run out); it keeps every request."""

    name = "scripted"
    model = "script"
    capabilities = frozenset({GENERATE})

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[list[Message], dict[str, object]]] = []

    def generate(self, messages: list[Message], **params: object) -> Completion:
        self.requests.append((list(messages), dict(params)))
        return Completion(self.replies[min(len(self.requests), len(self.replies)) - 1], Usage(10, 1))


def _unit() -> UnitContexts:
    firing = TokenContext("d/1", "d/1@3:1", "top", 3, ("a", " cat", " sat"), (0.0, 4.0, 0.0), 1, split="explain")
    return UnitContexts("d/1", 4.0, (firing,), (TokenContext("d/1", "d/1@3:1", "top", 3, ("a", " cat", " sat"), (0.0, 4.0, 0.0), 1),))


def test_a_rejected_reply_is_reasked_once_naming_the_format_and_the_answer_is_cached(tmp_path: Path) -> None:
    backend = ScriptedChat("2.5", "2")
    client = LLMClient(backend, cache_dir=tmp_path)
    question = [Message("user", "Rate it.\nRating:")]
    assert client.generate(question, "judge", parse=parse_rating, format_hint=rating_format(), max_tokens=1) == 2
    assert client.backend_calls == 2 and len(backend.requests) == 2
    first, second = backend.requests
    assert first[0] == question
    assert second[0][:2] == [question[0], Message("assistant", "2.5")]
    assert second[0][2].role == "user" and len(second[0]) == 3
    assert "2.5" in second[0][2].content and "Reply with only one integer from 0 to 3." in second[0][2].content
    assert second[0][2].content == reask_message("rating '2.5' is not an integer from 0 to 3", "one integer from 0 to 3")
    assert second[1] == first[1] == {"temperature": 0, "max_tokens": 1}
    # a rerun reads the accepted answer from the cache, filed under the original request: no call
    rerun_backend = ScriptedChat("never asked")
    rerun = LLMClient(rerun_backend, cache_dir=tmp_path)
    assert rerun.generate(question, "judge", parse=parse_rating, format_hint=rating_format(), max_tokens=1) == 2
    assert rerun.backend_calls == 0 and not rerun_backend.requests
    assert rerun.usage_by_stage()["judge"]["cached_calls"] == 1


def test_a_reply_rejected_twice_is_a_failure_with_its_raw_text(tmp_path: Path) -> None:
    backend = ScriptedChat("2.5")
    client = LLMClient(backend, cache_dir=tmp_path)
    with pytest.raises(UnparseableReply) as caught:
        client.generate([Message("user", "Rating:")], "judge", parse=parse_rating, format_hint=rating_format())
    assert caught.value.raw == "2.5" and caught.value.attempts == 2 and len(backend.requests) == 2
    assert not list(tmp_path.rglob("*.json")), "a rejected reply is never cached"


def test_a_judge_records_the_failure_with_the_raw_reply_after_exactly_two_calls(tmp_path: Path) -> None:
    backend = ScriptedChat("2.5")
    judgments = judge_unit(_unit(), "the word cat", "real", LLMClient(backend, cache_dir=tmp_path), "rating")
    assert [(j.score, j.raw) for j in judgments] == [(None, "2.5")]
    assert judgments[0].failure == "unparseable reply after 2 attempts"
    assert len(backend.requests) == 2
    assert backend.requests[0][1]["max_tokens"] == RATING_MAX_TOKENS == 1, "a rating asks for one token: the digit alone"


def test_a_judge_rescued_by_the_reask_scores_the_reasked_reply(tmp_path: Path) -> None:
    backend = ScriptedChat("1 — The explanation", "3")
    judgments = judge_unit(_unit(), "the word cat", "real", LLMClient(backend, cache_dir=tmp_path), "rating")
    assert [(j.score, j.failure, j.raw) for j in judgments] == [(3.0, None, None)]
    rerun = ScriptedChat("0")
    again = judge_unit(_unit(), "the word cat", "real", LLMClient(rerun, cache_dir=tmp_path), "rating")
    assert [j.score for j in again] == [3.0] and not rerun.requests


@pytest.mark.parametrize(
    "run, bad, expected_format",
    [
        (lambda c: judge_unit(_unit(), "cats", "real", c, "rating_batch"), "1: 2\nthat is all", numbered_ratings_format(1)),
        (lambda c: simulate_unit(_unit(), "cats", "real", c, "structured"), "sure: [0, 9, 0]", activation_list_format(3)),
        (lambda c: [explain_unit(_unit(), c, chat=True)], "<think>the feature", EXPLANATION_FORMAT),
    ],
)
def test_every_caller_names_its_format_and_records_the_raw_reply(run, bad: str, expected_format: str, tmp_path: Path) -> None:
    backend = ScriptedChat(bad)
    records = run(LLMClient(backend, cache_dir=tmp_path))
    assert len(backend.requests) == 2
    note = backend.requests[1][0][-1].content
    assert note.endswith(f"Reply with only {expected_format}.")
    assert all(r.failure == "unparseable reply after 2 attempts" and r.raw == bad for r in records)


def test_an_empty_rejected_reply_is_sent_back_as_a_placeholder(tmp_path: Path) -> None:
    backend = ScriptedChat("", "the word cat")
    explanation = explain_unit(_unit(), LLMClient(backend, cache_dir=tmp_path), chat=True)
    assert explanation.text == "the word cat"
    assert backend.requests[1][0][1] == Message("assistant", EMPTY_REPLY), "chat APIs refuse an empty assistant turn"


def test_parse_needs_a_format_hint(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="format_hint"):
        LLMClient(ScriptedChat("2"), cache_dir=tmp_path).generate([Message("user", "x")], "judge", parse=parse_rating)


def test_a_base_model_reads_a_reask_as_the_note_then_the_original_prompt() -> None:
    """The local backend in plain-text mode: no turns, so the note comes first and the prompt keeps its answer cue last."""
    from harness.llm.backends.local import make_local_backend
    from harness.subject.model import wrap_model
    from tests.test_backend_local import VOCAB_SIZE, _tokenizer
    from tests.tiny_models import tiny_gemma_model

    backend = make_local_backend(subject=wrap_model(tiny_gemma_model(vocab_size=VOCAB_SIZE, num_hidden_layers=2), _tokenizer(), name="t"))
    prompt = Message("user", "Rate it.\nRating:\n")
    note = Message("user", reask_message("'x' is not a rating", rating_format()))
    assert backend.render([prompt]) == prompt.content
    assert backend.render([prompt, Message("assistant", "x"), note]) == f"{note.content}\n\n{prompt.content}"
    assert backend.render([prompt, Message("assistant", "pre")]) == f"{prompt.content}\n\npre", "a prefill is still continued"
    client = LLMClient(backend, max_concurrency=1)
    with pytest.raises(UnparseableReply) as caught:  # the tiny random model answers no digit: asked twice, then a failure
        client.generate([prompt], "judge", parse=lambda reply: parse_rating("no"), format_hint=rating_format(), max_tokens=1)
    assert caught.value.attempts == 2 and client.backend_calls == 2


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("the abbreviation U.S.", "the abbreviation U.S"),
        ("abbreviations like e.g..", "abbreviations like e.g.."),
        ("ellipses...", "ellipses..."),
    ],
)
def test_an_explanation_loses_one_trailing_period_only(reply: str, expected: str) -> None:
    assert parse_explanation(reply) == expected
