"""Output-centric explanations (``harness.steering.outputs``, ``explainers.output_explainer``, ``harness.run.output_stage``):
known answers on a tiny model whose unembedding rows are orthonormal, the neuron direction, the prompt sets, and a run."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness.dictionaries.dictionary import Dictionary, identity_dictionary
from harness.steering.outputs import (
    amplified_tokens,
    corpus_tokens,
    output_logits,
    output_profile,
    output_prompts,
    unit_direction,
)
from harness.steering.units import SteeredUnit
from scorers.intervention import neutral_prompts
from tests.test_batch import tiny_subject  # noqa: F401 (fixture)
from tests.tiny_models import tiny_byte_gemma

WIDTH = 128  # vocabulary (the byte tokenizer's ids reach 127) = model width, so the unembedding rows can be orthonormal


@pytest.fixture(scope="module")
def orthonormal_subject():
    subject = tiny_byte_gemma(vocab_size=WIDTH, hidden_size=WIDTH, tie_word_embeddings=False)
    q, _ = torch.linalg.qr(torch.randn(WIDTH, WIDTH, generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        subject.model.get_output_embeddings().weight.copy_(q)  # rows orthonormal
        norm = subject.model.model.norm
        norm.weight.zero_()  # Gemma's RMSNorm multiplies by (1 + weight): the identity scale
    return subject


def planted(subject, tokens: list[int]) -> Dictionary:
    """A ReLU dictionary at block 2 whose feature i's decoder row is the unembedding row of ``tokens[i]``."""
    rows = subject.model.get_output_embeddings().weight.detach()[tokens].clone()
    return Dictionary(
        name="planted",
        hook_name="blocks.2.hook_resid_post",
        architecture="relu",
        d_in=WIDTH,
        d_sae=len(tokens),
        W_enc=rows.T.clone(),
        b_enc=torch.zeros(len(tokens)),
        W_dec=rows,
        b_dec=torch.zeros(WIDTH),
    )


def test_a_decoder_direction_equal_to_a_tokens_unembedding_row_promotes_that_token_first(orthonormal_subject) -> None:
    tokens = [20, 41, 57]
    dictionary = planted(orthonormal_subject, tokens)
    allowed = torch.ones(WIDTH, dtype=torch.bool)
    for index, token in enumerate(tokens):
        unit = SteeredUnit(f"planted/{index}", dictionary, index, 1.0)
        logits = output_logits(orthonormal_subject, unit_direction(orthonormal_subject, unit))
        # RMSNorm of a unit vector is √d times it; the orthonormal rows give √d on its token and 0 elsewhere
        assert logits[token] == pytest.approx(WIDTH**0.5, rel=1e-4) and logits.abs().sort().values[-2] < 1e-3
        profile = output_profile(orthonormal_subject, unit, allowed, prompts=["ab"], multiple=5.0)
        assert profile.promoted[0] == orthonormal_subject.tokenizer.decode([token])
        assert profile.promoted_logits[0] == pytest.approx(WIDTH**0.5, rel=1e-4)
    masked = torch.ones(WIDTH, dtype=torch.bool)
    masked[tokens[0]] = False  # a token absent from the corpus is never listed
    profile = output_profile(orthonormal_subject, SteeredUnit("planted/0", dictionary, 0, 1.0), masked, prompts=["ab"])
    assert orthonormal_subject.tokenizer.decode([tokens[0]]) not in profile.promoted + profile.suppressed + profile.amplified


def test_clamping_a_feature_that_writes_a_tokens_row_raises_that_tokens_probability_most(orthonormal_subject) -> None:
    token = 41
    dictionary = planted(orthonormal_subject, [token])
    gains = amplified_tokens(orthonormal_subject, SteeredUnit("planted/0", dictionary, 0, 10.0), ["hello", "abc"], multiple=20.0)
    assert int(gains.argmax()) == token and gains[token] > 0.5


def test_a_neurons_direction_is_its_column_of_the_mlp_output_projection(orthonormal_subject) -> None:
    neuron = SteeredUnit("mlp.1/5", identity_dictionary("neurons", 1, orthonormal_subject.d_mlp), 5, 1.0)
    expected = orthonormal_subject.model.model.layers[1].mlp.down_proj.weight[:, 5]
    assert torch.equal(unit_direction(orthonormal_subject, neuron), expected.detach().float())


def test_the_output_prompts_are_disjoint_from_the_intervention_scorers_and_corpus_tokens_are_read_in_blocks() -> None:
    assert output_prompts() and not set(output_prompts()) & set(neutral_prompts())
    chunks = np.array([[1, 2], [2, 5], [7, 7]], dtype=np.int32)
    assert corpus_tokens(chunks, 8, rows=1).nonzero().flatten().tolist() == [1, 2, 5, 7]


@pytest.mark.usefixtures("tiny_subject")
def test_a_run_with_output_explanations_scores_both_explanations_and_a_rerun_asks_nothing(tmp_path: Path) -> None:
    from harness.run.runner import run_evaluation
    from tests.test_batch import CALLS, TINY_CONFIG, tiny_config

    evaluation = {
        **TINY_CONFIG["evaluation"],
        "scorers": ["rubric", "detection", "intervention"],
        "intervention_multiples": [5.0],
        "output_explanations": True,
    }
    config = tiny_config(evaluation=evaluation, steering={"prompts": 1, "multiples": [5.0], "tokens": 3})
    run_evaluation(config, tmp_path, log=lambda _message: None)
    profiles = [json.loads(line) for line in (tmp_path / "outputs.jsonl").read_text().splitlines()]
    explanations = [json.loads(line) for line in (tmp_path / "explanations.jsonl").read_text().splitlines()]
    output = [e for e in explanations if e["explainer"] == "output"]
    assert profiles and {p["unit"] for p in profiles} == {e["unit"] for e in output}
    assert all(len(p["promoted"]) == len(p["suppressed"]) == len(p["amplified"]) == 10 for p in profiles)
    detections = [json.loads(line) for line in (tmp_path / "detection.jsonl").read_text().splitlines()]
    assert any(r["source"] == "output" for r in detections)
    interventions = [json.loads(line) for line in (tmp_path / "interventions.jsonl").read_text().splitlines()]
    assert any(r["source"] == "output" for r in interventions)
    judgments = [json.loads(line) for line in (tmp_path / "judgments.jsonl").read_text().splitlines()]
    assert not any(r["source"] == "output" for r in judgments), "the rubric does not score the output explanation"
    tables = tmp_path / "results" / "tables"
    assert pd.read_csv(tables / "units.csv")[["detection_output", "intervention_output"]].notna().any().all()
    table = pd.read_csv(tables / "output_centric.csv")
    assert {"detection", "detection_auc", "intervention"} <= set(table["metric"])
    assert "Explanations from contexts and from outputs" in (tmp_path / "results" / "report.html").read_text()
    CALLS.clear()
    before = {name: (tmp_path / name).read_bytes() for name in ("outputs.jsonl", "detection.jsonl", "interventions.jsonl")}
    run_evaluation(config, tmp_path, log=lambda _message: None)
    assert CALLS == [] and before == {name: (tmp_path / name).read_bytes() for name in before}


def test_output_explanations_without_a_scorer_for_them_are_refused() -> None:
    from harness.config import config_from_mapping
    from harness.errors import MonoscopeError

    with pytest.raises(MonoscopeError, match="nothing would score them"):
        config_from_mapping({"evaluation": {"output_explanations": True, "scorers": ["rubric"]}})
