"""Scoring prompts that open alike reuse the KV cache of the opening: same log-probabilities, fewer positions run."""

import math

import pytest
import torch

from harness.llm.backends.local import make_local_backend
from harness.llm.interface import Message
from harness.subject.model import wrap_model
from tests.test_backend_local import _tokenizer
from tests.tiny_models import tiny_gemma_model

OPENING = "explanation: the letter q in words; rubric: 0 none, 3 exact. excerpt: "
EXCERPTS = ["a quick queen", "the lazy dog", "quiet quarters", "a quick brown fox"]  # the first and last share "a quick "


def _backends(**config):
    model = tiny_gemma_model(**config)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    subject = wrap_model(model, _tokenizer(), name="tiny")
    return make_local_backend(subject=subject), make_local_backend(subject=subject, reuse=False)


@pytest.mark.parametrize("config", [{"sliding_window": 256}, {"sliding_window": 16}], ids=["croppable", "sliding-window"])
def test_reused_openings_give_the_same_logprobs(config):
    reusing, plain = _backends(**config)
    positions = []
    original = reusing._forward

    def counting(input_ids, cache=None):
        positions.append(int(input_ids.shape[1]))
        return original(input_ids, cache)

    reusing._forward = counting
    for excerpt in EXCERPTS:
        messages = [Message("user", OPENING + excerpt + "\nrating:")]
        choices = ["0", "1", "2", "3", " 3"]
        got, want = reusing.choice_logprobs(messages, choices), plain.choice_logprobs(messages, choices)
        for choice in choices:
            assert math.isclose(got[choice], want[choice], rel_tol=1e-4, abs_tol=1e-4), (excerpt, choice)
    first = len(reusing.prompt_ids(OPENING + EXCERPTS[0] + "\nrating:"))
    prompt_passes = positions[::2]  # each call: the prompt's pass, then one for the two-token " 3"
    assert prompt_passes[0] == first
    if config["sliding_window"] == 256:  # every later prompt runs only what follows its opening
        assert all(n < first - len(OPENING) + 2 for n in prompt_passes[1:]), prompt_passes
        assert prompt_passes[3] < prompt_passes[1], "the last excerpt reuses the first one's longer opening"


def test_reuse_off_keeps_no_cache():
    _, plain = _backends(sliding_window=256)
    plain.choice_logprobs([Message("user", OPENING + "x\nrating:")], ["0", "1"])
    assert plain._prompt_caches == []
