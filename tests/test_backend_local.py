"""The local backend: exact log-probabilities with the LM head only where needed, greedy generation."""

import math

import pytest
import torch

from harness.errors import MonoscopeError
from harness.llm.backends.local import LocalBackend, make_local_backend
from harness.llm.interface import CHOICE_LOGPROBS, CONTINUATION_LOGPROB, GENERATE, SLOT_LOGPROBS, Message
from tests.tiny_models import tiny_gemma_model

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
VOCAB_SIZE = 128


def _tokenizer():
    """A character-level BPE tokenizer of exactly 128 tokens with one merge ("a" + "b" -> "ab")."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + [chr(c) for c in range(192, 192 + VOCAB_SIZE - len(SPECIALS) - 95 - 1)]
    tokens = SPECIALS + chars + ["ab"]
    assert len(tokens) == VOCAB_SIZE
    vocab = {token: i for i, token in enumerate(tokens)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


@pytest.fixture(scope="module")
def backend():
    from harness.subject.model import wrap_model

    model = tiny_gemma_model(vocab_size=VOCAB_SIZE, num_hidden_layers=2, final_logit_softcapping=5.0)
    with torch.no_grad():  # sharper random logits, so soft-capping and greedy choices matter
        model.lm_head.weight.mul_(20)
    return make_local_backend(subject=wrap_model(model, _tokenizer(), name="tiny-gemma3"), batch_size=2, logit_rows=3)


def _reference(backend: LocalBackend, prompt_ids: list[int], tokens: list[int]) -> float:
    """log P(tokens | prompt) from one plain forward pass with logits at every position."""
    with torch.no_grad():
        logits = backend.subject.model(input_ids=torch.tensor([prompt_ids + tokens])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    start = len(prompt_ids) - 1
    return sum(float(logprobs[start + k, token]) for k, token in enumerate(tokens))


# Longer than the sliding window (16), so the cached prefix is a trimmed sliding-window cache.
LONG_PROMPT = "the quick brown fox jumps over the lazy dog; answer:"


def test_backend_identity(backend):
    assert backend.name == "local" and backend.model == "tiny-gemma3"
    assert backend.capabilities == frozenset({GENERATE, CHOICE_LOGPROBS, CONTINUATION_LOGPROB, SLOT_LOGPROBS})
    assert backend.prompt_ids("xy") == [2, *backend.encode("xy")]
    assert backend.prompt_ids("<bos>xy") == backend.prompt_ids("xy")  # BOS once


def test_continuation_logprobs_equal_full_forward(backend):
    continuations = [" yes", " no", "!", " maybe not", "", " ab ab"]
    ids = backend.prompt_ids(LONG_PROMPT)
    assert len(ids) > 16
    got = backend.continuation_logprobs(LONG_PROMPT, continuations)
    for continuation, value in zip(continuations, got, strict=True):
        expected = _reference(backend, ids, backend.continuation_ids(LONG_PROMPT, ids, continuation))
        assert value == pytest.approx(expected, abs=1e-4)
        assert backend.continuation_logprob(LONG_PROMPT, continuation) == pytest.approx(expected, abs=1e-4)
    assert got[4] == 0.0
    assert backend.prefix_scores([LONG_PROMPT, "short"], " yes") == pytest.approx(
        [got[0], backend.continuation_logprob("short", " yes")], abs=1e-5
    )


def test_choice_logprobs_equal_full_forward(backend):
    messages = [Message("system", "rate it"), Message("user", "how good is this? score:")]
    prompt = backend.render(messages)
    assert prompt == "rate it\n\nhow good is this? score:"
    choices = [" 0", " 1", " 2", " 3", "3"]
    got = backend.choice_logprobs(messages, choices)
    ids = backend.prompt_ids(prompt)
    for choice in choices:
        assert got[choice] == pytest.approx(_reference(backend, ids, backend.encode(choice)), abs=1e-4)


def test_batched_choice_logprobs_equal_one_prompt_at_a_time(backend):
    # prompts that share an opening and differ in length after it, more of them than one batch holds (batch_size 2)
    requests = [[Message("user", f"rate the mark in: x = {text} now. score:")] for text in ("[1]", "[12] + 3", "y[3]", "[[4]]", "z")]
    requests.append([Message("user", "another opening altogether:")])  # the common prefix is then short
    choices = [" 0", " 1", " 2", "3"]
    batched = backend.choice_logprobs_batch(requests, choices)
    one_by_one = [backend.choice_logprobs(messages, choices) for messages in requests]
    assert len(batched) == len(requests)
    for got, want in zip(batched, one_by_one, strict=True):
        assert list(got) == choices
        for choice in choices:
            assert got[choice] == pytest.approx(want[choice], abs=1e-4)
    # no prompt or one prompt: the one-prompt path
    assert backend.choice_logprobs_batch([], choices) == []
    assert backend.choice_logprobs_batch(requests[:1], choices) == [backend.choice_logprobs(requests[0], choices)]
    # a choice of several tokens takes the one-prompt path, with the same answers
    assert backend.choice_logprobs_batch(requests[:2], [" 0", "ab0"]) == [backend.choice_logprobs(m, [" 0", "ab0"]) for m in requests[:2]]


def test_single_token_choices_over_whole_vocabulary_sum_to_one(backend):
    tokenizer = backend.subject.tokenizer
    choices = [tokenizer.convert_ids_to_tokens(i) for i in range(VOCAB_SIZE)]
    prompt = "pick one: "  # ends with a character that merges with nothing
    ids = backend.prompt_ids(prompt)
    assert all(backend.continuation_ids(prompt, ids, c) == [i] for i, c in enumerate(choices))
    total = sum(math.exp(v) for v in backend.choice_logprobs([Message("user", prompt)], choices).values())
    assert total == pytest.approx(1.0, abs=1e-4)


def test_boundary_rule(backend):
    # "xa" + "b": the joined text merges "ab", so the prompt's tokens are no prefix of it.
    ids = backend.prompt_ids("xa")
    assert backend.continuation_ids("xa", ids, "b") == backend.encode("b")
    assert backend.continuation_ids("xa", ids, " b") == backend.encode(" b")
    assert backend.continuation_ids("x", backend.prompt_ids("x"), "ab") == backend.encode("ab") == [VOCAB_SIZE - 1]


def test_greedy_generate_equals_hf_generate(backend):
    messages = [Message("user", LONG_PROMPT)]
    ids = backend.prompt_ids(backend.render(messages))
    completion = backend.generate(messages, max_new_tokens=12)
    with torch.no_grad():
        reference = backend.subject.model.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), do_sample=False, max_new_tokens=12
        )[0, len(ids) :].tolist()
    assert backend.generate_ids(ids, 12) == reference
    assert completion.text == backend.subject.tokenizer.decode(reference, skip_special_tokens=True)
    assert completion.usage.prompt_tokens == len(ids)
    assert completion.usage.completion_tokens == len(reference)


def test_generate_stops_at_stop_string(backend):
    messages = [Message("user", LONG_PROMPT)]
    full = backend.generate(messages, max_new_tokens=12)
    stop = full.text[3:5]
    if not stop or stop not in full.text:
        pytest.skip("generation too short to test stop strings")
    cut = backend.generate(messages, max_new_tokens=12, stop=[stop])
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.usage.completion_tokens <= full.usage.completion_tokens


def test_sampling_is_seeded_and_errors_are_clear(backend):
    messages = [Message("user", "hello")]
    first = backend.generate(messages, temperature=1.0, seed=3, max_tokens=8)
    assert first == backend.generate(messages, temperature=1.0, seed=3, max_tokens=8)
    with pytest.raises(MonoscopeError, match="unknown generate parameter"):
        backend.generate(messages, top_k=3)
    with pytest.raises(MonoscopeError, match="unknown option"):
        make_local_backend(subject=backend.subject, colour="red")
    with pytest.raises(MonoscopeError, match="does not match"):
        make_local_backend("gpt2", subject=backend.subject)
    with pytest.raises(MonoscopeError, match="chat template"):
        make_local_backend(subject=backend.subject, chat=True)


def test_lm_head_runs_only_at_scored_positions(backend):
    rows = []
    handle = backend.subject.model.lm_head.register_forward_hook(lambda _m, inputs, _o: rows.append(inputs[0].shape[0]))
    try:
        backend.continuation_logprobs(LONG_PROMPT, [" 0", " 1", " 22"])  # first tokens share one row
        assert sum(rows) == 1 + 1 + 1 + 2
        rows.clear()
        backend.continuation_logprob(LONG_PROMPT, " abc")  # " ", "ab", "c"
        assert sum(rows) == 3
    finally:
        handle.remove()


@pytest.mark.slow
def test_embedded_model_scores():
    from harness.subject.model import load_subject_model

    backend = make_local_backend(subject=load_subject_model("embedded"))
    assert backend.model == "embedded"
    scores = backend.choice_logprobs([Message("user", "Rate from 0 to 3.\nScore:")], [" 0", " 1", " 2", " 3"])
    assert all(math.isfinite(v) and v < 0 for v in scores.values())
    prompt = "def add(a, b):\n    return a"
    assert backend.continuation_logprob(prompt, " + b") > backend.continuation_logprob(prompt, " banana elephant")


def test_every_call_follows_the_model_device(backend):
    """Inside a meta default-device context, a tensor made without the model's device fails loudly."""
    messages = [Message("user", LONG_PROMPT)]
    expected = (
        backend.choice_logprobs(messages, [" 0", " 1", " 2"]),
        backend.continuation_logprob(LONG_PROMPT, " yes"),
        backend.generate(messages, max_new_tokens=5).text,
        backend.generate(messages + [Message("user", "ab")], max_new_tokens=5).text,
    )
    with torch.device("meta"):
        found = (
            backend.choice_logprobs(messages, [" 0", " 1", " 2"]),
            backend.continuation_logprob(LONG_PROMPT, " yes"),
            backend.generate(messages, max_new_tokens=5).text,
            backend.generate(messages + [Message("user", "ab")], max_new_tokens=5).text,
        )
    assert found == expected


WARNINGS_AS_ERRORS_SCRIPT = """
import torch
from harness.llm.backends.local import make_local_backend
from harness.llm.interface import Message
from harness.subject.model import wrap_model
from tests.test_backend_local import LONG_PROMPT, _tokenizer
from tests.tiny_models import tiny_gemma_model

backend = make_local_backend(subject=wrap_model(tiny_gemma_model(vocab_size=128, num_hidden_layers=2), _tokenizer(), name="tiny"))
messages = [Message("user", LONG_PROMPT)]
backend.choice_logprobs(messages, [" 0", " 1", " 23"])  # several continuations: the prompt's cache is reused
backend.continuation_logprob(LONG_PROMPT, " yes")
backend.generate(messages, max_new_tokens=4)  # greedy: shared prefix and drafts
backend.generate(messages + [Message("user", "ab")], max_new_tokens=4)
backend.generate(messages, max_new_tokens=3, temperature=0.7, seed=1)  # sampled: a cache of its own
print("ok")
"""


def test_backend_runs_with_deprecation_warnings_as_errors():
    """The backend uses transformers' current APIs: no FutureWarning or DeprecationWarning on any path."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-W", "error::FutureWarning", "-W", "error::DeprecationWarning", "-c", WARNINGS_AS_ERRORS_SCRIPT]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_slot_logprobs_equal_full_forward_at_every_line(backend):
    # The forced reply's pieces are tokenised one by one and read after each line, in one pass; a second
    # request sharing the opening (another text) reuses its cache and must read the same as a fresh pass.
    choices = ["Y", "N", "ab"]  # one token each (the tokenizer is by character, with one merge "ab")
    lines = ['"a":', '"b c":', '"ab":', '"⏎":']
    for text in ("x = a + b c ab", "x = a + bb"):
        messages = [Message("user", f"the quick brown fox jumps over the lazy dog; text: {text}")]
        got = backend.slot_logprobs(messages, lines, " ?", choices)
        ids, slots = backend.prompt_ids(backend.render(messages)), []
        for line in lines:
            ids += backend.encode(line)
            slots.append(len(ids) - 1)
            ids += backend.encode(" ?\n")
        with torch.no_grad():
            logprobs = torch.log_softmax(backend.subject.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
        assert len(got) == len(lines)
        for row, slot in zip(got, slots, strict=True):
            for choice in choices:
                assert row[choice] == pytest.approx(float(logprobs[slot, backend.encode(choice)[0]]), abs=1e-4)
    # The same prompt with another placeholder: the kept cache covers the first line, so the reply runs afresh.
    again = backend.slot_logprobs(messages, lines, " !", choices)
    fresh = LocalBackend(backend.subject, reuse=False).slot_logprobs(messages, lines, " !", choices)
    for row, want in zip(again, fresh, strict=True):
        for choice in choices:
            assert row[choice] == pytest.approx(want[choice], abs=1e-4)
    assert again[0] == pytest.approx(got[0], abs=1e-4), "the first line is read before any placeholder"
    assert backend.slot_logprobs(messages, [], " ?", choices) == []
    with pytest.raises(MonoscopeError, match="one token"):
        backend.slot_logprobs(messages, lines, " ?", ["Y", " maybe"])


def test_log_probability_calls_count_the_tokens_they_read(backend, tmp_path):
    """The client's accounting of a local judge: prompt tokens of choice, batched choice, slot and continuation calls."""
    from harness.llm.client import LLMClient

    client = LLMClient(backend, cache_dir=tmp_path / "cache")
    messages = [Message("user", "Is this an example? Answer Yes or No.")]
    client.choice_logprobs(messages, ["Y", "N"], stage="one")
    client.choice_logprobs_many([[Message("user", f"Is {i} an example?")] for i in range(3)], ["Y", "N"], stage="many")
    client.slot_logprobs(messages, ['"a":', '"b":'], " ?", ["Y", "N"], stage="slots")
    client.continuation_logprob("The capital of France is", " Paris", stage="continue")
    usage = client.usage_by_stage()
    assert usage["one"]["prompt_tokens"] == len(backend.prompt_ids(backend.render(messages)))
    assert usage["many"]["calls"] == 3 and usage["many"]["prompt_tokens"] >= 3 * 4
    assert usage["slots"]["prompt_tokens"] > usage["one"]["prompt_tokens"]
    assert usage["continue"]["prompt_tokens"] > 0
