"""Intervention scorer: known answers with a planted feature and an oracle judge, the balanced order, parsing, intervals."""

import math
import re
from dataclasses import replace

import pytest
import torch

from harness.dictionaries.dictionary import Dictionary
from harness.llm.client import LLMClient
from harness.llm.interface import CHOICE_LOGPROBS, GENERATE, Completion, Message, Usage
from harness.steering.units import SteeredUnit
from scorers.intervention import (
    intervention_summary,
    judge_interventions,
    neutral_prompts,
    parse_choice,
    steer_for_scoring,
    steered_first,
    wilson_interval,
)
from tests.tiny_models import tiny_byte_gemma

TOKEN = "q"


class OracleJudge:
    """Answers which continuation holds more of the character the explanation quotes; A when it cannot tell."""

    name = "oracle"
    model = "oracle"
    capabilities = frozenset({CHOICE_LOGPROBS})

    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        text = messages[-1].content
        wanted = re.search(r'explanation: "[^"]*\'(.)\'', text).group(1)
        first = re.search(r"^Continuation A: (.*)$", text, re.MULTILINE).group(1).count(wanted)
        second = re.search(r"^Continuation B: (.*)$", text, re.MULTILINE).group(1).count(wanted)
        pick = "B" if second > first else "A"
        return {choice: math.log(0.98 if choice.strip() == pick else 0.01) for choice in choices}


@pytest.fixture(scope="module")
def planted_steerings():
    """The tiny model steered on the 20 neutral prompts at 2 strengths by a feature that writes the unembedding of 'q'."""
    subject = tiny_byte_gemma(initializer_range=0.2)  # weights large enough that one direction can move the logits
    token = 10 + ord(TOKEN)
    direction = subject.model.lm_head.weight[token].detach()
    generator = torch.Generator().manual_seed(3)
    W_dec = torch.nn.functional.normalize(torch.randn(4, subject.d_model, generator=generator), dim=-1)
    W_dec[0] = direction / direction.norm()
    layer = f"blocks.{subject.n_layers - 1}.hook_resid_post"
    dictionary = Dictionary(
        "planted",
        layer,
        "relu",
        subject.d_model,
        4,
        torch.randn(subject.d_model, 4, generator=generator) * 0.1,
        torch.zeros(4),
        W_dec,
        torch.zeros(subject.d_model),
    )
    return steer_for_scoring(subject, SteeredUnit("planted/0", dictionary, 0, 6.0), multiples=(10.0, 20.0), max_new_tokens=6)


def test_the_oracle_judge_scores_the_planted_feature_one_and_a_shuffled_explanation_near_half(planted_steerings, tmp_path):
    assert len(planted_steerings) == 40 == 2 * len(neutral_prompts()), "at least 40 (prompt, strength) pairs per unit"
    assert all(TOKEN in s.steered and s.mean_kl > 0 for s in planted_steerings)
    client = LLMClient(OracleJudge(), cache_dir=tmp_path)
    real = intervention_summary(judge_interventions("planted/0", "the letter 'q'", "real", planted_steerings, client, seed=0))
    assert real["fraction"] == 1.0 and real["n"] == 40 and real["failures"] == 0 and real["low"] > 0.9
    shuffled = intervention_summary(judge_interventions("planted/0", "the letter '~'", "shuffled", planted_steerings, client, seed=0))
    assert 0.35 <= shuffled["fraction"] <= 0.65 and shuffled["n"] == 40
    assert real["mean_kl"] == pytest.approx(sum(s.mean_kl for s in planted_steerings) / 40)


def test_half_the_pairs_show_the_steered_continuation_first_chosen_by_the_seed():
    pairs = [(f"prompt {i}", m) for i in range(21) for m in (5.0, 10.0)]
    order = steered_first("sae/1", pairs, seed=0)
    assert sum(order.values()) == 21 and order == steered_first("sae/1", list(reversed(pairs)), seed=0)
    assert order != steered_first("sae/1", pairs, seed=1) and order != steered_first("sae/2", pairs, seed=0)


class GeneratingJudge:
    name, model, capabilities = "text", "text", frozenset({GENERATE})

    def __init__(self, reply: str) -> None:
        self.reply = reply

    def generate(self, messages: list[Message], **params: object) -> Completion:
        return Completion(self.reply, Usage(10, 1))


@pytest.mark.parametrize(("reply", "expected"), [("A", "A"), (" b ", "B"), ("Answer: B.", "B"), ("**A**", "A"), ("<think>.</think>B", "B")])
def test_a_generated_answer_is_parsed_strictly(reply: str, expected: str):
    assert parse_choice(reply) == expected


@pytest.mark.parametrize("reply", ["AB", "A or B", "Continuation A is better", "", "C", "1"])
def test_anything_but_one_letter_is_a_failure_not_a_guess(reply: str, planted_steerings, tmp_path):
    with pytest.raises(ValueError):
        parse_choice(reply)
    client = LLMClient(GeneratingJudge(reply), cache_dir=tmp_path, max_parse_attempts=1)
    judgments = judge_interventions("planted/0", "x", "real", planted_steerings[:3], client)
    assert all(j.correct is None and j.failure.startswith("unparseable") and j.raw == reply for j in judgments)
    assert intervention_summary(judgments)["n"] == 0 and intervention_summary(judgments)["fraction"] is None


def test_a_judge_that_puts_little_mass_on_a_and_b_or_splits_it_evenly_is_undecided(planted_steerings, tmp_path):
    class Unsure(OracleJudge):
        def __init__(self, logprob: float) -> None:
            self.logprob = logprob

        def choice_logprobs(self, messages, choices):
            return {choice: self.logprob for choice in choices}

    for logprob, failure in ((math.log(0.05), "hold 0.200 of the probability"), (math.log(0.2), "equally likely")):
        judgments = judge_interventions("planted/0", "x", "real", planted_steerings[:2], LLMClient(Unsure(logprob), cache_dir=None))
        assert all(j.correct is None and failure in j.failure for j in judgments)


def test_wilson_interval_matches_the_formula_and_its_edges():
    low, high = wilson_interval(40, 40)
    assert low == pytest.approx(0.9124, abs=1e-4) and high == 1.0
    assert wilson_interval(20, 40) == pytest.approx((0.3520, 0.6480), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_a_record_keeps_what_identifies_it(planted_steerings, tmp_path):
    judgment = judge_interventions(
        "planted/0", "the letter 'q'", "real", planted_steerings[:1], LLMClient(OracleJudge(), cache_dir=tmp_path)
    )[0]
    assert judgment.key == ("planted/0", "real", planted_steerings[0].prompt, 10.0)
    assert replace(judgment, p_steered=0.1).key == judgment.key
