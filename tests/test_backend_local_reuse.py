"""Greedy generation that reuses work across calls (shared-prompt-prefix KV cache, previous reply as a draft)
gives exactly the tokens of plain greedy decoding."""

import time

import pytest
import torch

from harness.llm.backends.local import GreedyRequest, make_local_backend
from harness.llm.client import LLMClient
from harness.llm.interface import Message
from harness.records import TokenContext, UnitContexts
from scorers.rubric import judge_unit
from tests.test_backend_local import backend  # noqa: F401  (the tiny Gemma 3 fixture, sliding window 16)

HEADER = "a feature explained as: the letter q; excerpt: "  # longer than the shared-prefix minimum
PROMPTS = [HEADER + body + " rating:" for body in ("xyz", "qqq", "hello", "ab ab", "zz")] + ["ab", "ab", "cd", "hi there"]


def _plain(backend):  # noqa: F811
    return make_local_backend(subject=backend.subject, reuse=False)


def _hf_greedy(backend, ids: list[int], n: int) -> list[int]:  # noqa: F811
    with torch.no_grad():
        out = backend.subject.model.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), do_sample=False, max_new_tokens=n
        )
    return out[0, len(ids) :].tolist()


def test_reusing_generation_equals_plain_greedy(backend):  # noqa: F811
    """Consecutive prompts with a shared opening, short and beyond the sliding window, several limits."""
    assert backend.reuse
    plain = _plain(backend)
    for limit in (1, 4, 12, 4):
        for prompt in PROMPTS:
            ids = backend.prompt_ids(prompt)
            expected = plain.generate_ids(ids, limit)
            assert backend.generate_ids(ids, limit) == expected == _hf_greedy(backend, ids, limit)
    assert backend._prefix is not None  # the header's cache was kept and reused


@pytest.mark.parametrize("prompt", ["ab", "cd: ", HEADER + "xyz rating:"])  # within the sliding window (cache cut) and beyond it
def test_any_draft_gives_the_greedy_answer(backend, prompt):  # noqa: F811
    """Right, partly right, wrong and EOS-carrying drafts are checked against the model's own greedy choices."""
    plain = _plain(backend)
    ids = backend.prompt_ids(prompt)
    expected = plain.generate_ids(ids, 6)
    eos = next(iter(backend._eos))
    wrong = [(t + 1) % 100 + 4 for t in expected]
    drafts = [expected, expected[:2] + wrong[2:], wrong, expected[:1] + [eos], [eos], []]
    for draft in drafts:
        backend._drafts[(6, ())] = list(draft)
        assert backend.generate_ids(ids, 6) == expected
    stop = backend._decode(expected)[1:3]
    if stop:
        backend._drafts[(6, (stop,))] = list(expected)
        assert backend.generate_ids(ids, 6, stop=[stop]) == plain.generate_ids(ids, 6, stop=[stop])


def test_reuse_leaves_sampling_and_options_alone(backend):  # noqa: F811
    plain = _plain(backend)
    messages = [Message("user", HEADER + "sample")]
    assert backend.generate(messages, temperature=1.0, seed=5, max_tokens=6) == plain.generate(
        messages, temperature=1.0, seed=5, max_tokens=6
    )
    assert not plain.reuse and make_local_backend(subject=backend.subject).reuse


def test_rating_judge_answers_are_unchanged(backend):  # noqa: F811
    """The rubric's default format through the client: same replies, scores and failures with and without reuse."""
    tokens = ("the", " q", "uick", " fox", " jumps")
    contexts = tuple(
        TokenContext("u/1", f"u/1@{i}:{i % 5}", "top", i, tokens[i % 5 :] + tokens[: i % 5], (0.0,) * 5, i % 5) for i in range(6)
    )
    unit = UnitContexts("u/1", 1.0, (), contexts)
    judged = {}
    for name, judge in (("reuse", backend), ("plain", _plain(backend))):
        client = LLMClient(judge, max_concurrency=1, max_parse_attempts=1)
        judged[name] = [(j.context_id, j.score, j.failure, j.raw) for j in judge_unit(unit, "the letter q", "real", client, "rating")]
    assert judged["reuse"] == judged["plain"]


def test_a_batch_of_prompts_gives_each_its_greedy_answer(backend):  # noqa: F811
    """Prompts of different lengths in one padded pass: with and without a shared prefix, any drafts, several limits and stops."""
    plain = _plain(backend)
    batches = [PROMPTS[:5], PROMPTS[5:], PROMPTS, [PROMPTS[0]] * 3, [PROMPTS[1], PROMPTS[3]]]
    for limit, stop in ((1, ()), (4, ()), (12, ()), (6, ("b",))):
        for prompts in batches:
            ids = [backend.prompt_ids(prompt) for prompt in prompts]
            requests = [GreedyRequest(tuple(i), limit, stop) for i in ids]
            expected = [plain.generate_ids(i, limit, stop=list(stop)) for i in ids]
            assert backend._greedy_batch(requests) == expected
            backend._drafts[(limit, stop)] = [(t + 1) % 100 + 4 for t in expected[0]]  # a wrong draft next time
            assert backend._greedy_batch(requests) == expected


def test_concurrent_judgments_run_in_batches_with_unchanged_answers(backend):  # noqa: F811
    """The rating judge through a client asking 4 at a time: the backend batches them, the answers are those of plain decoding."""
    tokens = ("the", " q", "uick", " fox", " jumps", " over")
    contexts = tuple(
        TokenContext("u/1", f"u/1@{i}:{i % 6}", "top", i, tokens[i % 6 :] + tokens[: i % 6], (0.0,) * 6, i % 6) for i in range(24)
    )
    unit = UnitContexts("u/1", 1.0, (), contexts)
    batching = make_local_backend(subject=backend.subject)
    run_batch = batching._batcher.run_batch

    def first_batch_slow(requests: list[GreedyRequest]) -> list[list[int]]:
        if sum(batching.generation_batches.values()) == 1:  # counted when the batch was taken, before it runs
            time.sleep(0.3)  # the tiny model is fast: give the other threads time to queue behind the first requests
        return run_batch(requests)

    batching._batcher.run_batch = first_batch_slow
    judged = {}
    for name, judge, concurrency in (("batched", batching, 4), ("plain", _plain(backend), 1)):
        client = LLMClient(judge, max_concurrency=concurrency, max_parse_attempts=1)
        judged[name] = [(j.context_id, j.score, j.failure, j.raw) for j in judge_unit(unit, "the letter q", "real", client, "rating")]
    assert judged["batched"] == judged["plain"]
    assert max(batching.generation_batches) > 1, "requests asked together ran together"


@pytest.mark.slow
def test_embedded_rating_replies_are_unchanged():
    from harness.llm.render import with_marked_target
    from harness.llm.templates import load_rubric, load_template
    from harness.subject.model import load_subject_model

    subject = load_subject_model("embedded")
    reusing, plain = make_local_backend(subject=subject), make_local_backend(subject=subject, reuse=False)
    template, rubric = load_template("rubric_rating"), load_rubric()
    words = ("def", " add", "(", "a", ",", " b", "):", " return", " a", " +", " b")
    for target in range(3, 7):
        context = TokenContext("u/1", f"u/1@0:{target}", "top", 0, words, (0.0,) * len(words), target)
        prompt = template.render(explanation='the tokens "a", "b"', context=with_marked_target(context), rubric=rubric.describe())
        ids = plain.prompt_ids(prompt)
        assert reusing.generate_ids(ids, 4) == plain.generate_ids(ids, 4)
