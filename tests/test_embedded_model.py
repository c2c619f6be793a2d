"""The embedded Gemma 3 270M: offline load, hooks, and index samples against a fresh forward pass."""

from pathlib import Path

import pytest
import torch

from harness.api import index_command
from harness.index.state import IndexConfig
from harness.index.store import load_index, unit_samples
from harness.subject.corpus import load_chunks
from harness.subject.model import collect_activations, load_subject_model, with_bos

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma():
    return load_subject_model("embedded")


def test_embedded_model_shape(gemma):
    assert (gemma.n_layers, gemma.d_model, gemma.d_mlp) == (18, 640, 2048)
    assert gemma.default_layer == 9


def test_hooked_residual_equals_hidden_states(gemma):
    tokens = torch.tensor([gemma.tokenizer("def add(a, b):\n    return a + b\n", add_special_tokens=False)["input_ids"]])
    hooked = collect_activations(gemma, tokens, ["blocks.9.hook_resid_post"])["blocks.9.hook_resid_post"]
    with torch.no_grad():
        reference = gemma.model(input_ids=with_bos(gemma, tokens), output_hidden_states=True).hidden_states[10]
    # The residual stream has norm ~6,000 (a few near-constant dimensions), so float32
    # rounding differences between two code paths reach ~1e-2 in absolute terms; a wrong
    # layer or position would differ by orders of magnitude more.
    torch.testing.assert_close(hooked, reference[:, 1:], rtol=1e-4, atol=2e-2)
    assert (hooked - reference[:, 1:]).abs().max() < 1e-5 * reference.norm(dim=-1).max()


def test_index_samples_match_a_fresh_forward_pass(gemma, tmp_path: Path, monkeypatch):
    import harness.api

    monkeypatch.setattr(harness.api, "load_subject_model", lambda *args: gemma)
    config = IndexConfig(top_k=3, interval_samples=1, random_nonzero=2, random_zero=2)
    paths = index_command(
        tmp_path,
        ["neurons:4", "residual-basis:9"],
        None,
        log=lambda _m: None,
        model="embedded",
        corpus="python-stdlib",
        tokens=2048,
        context_length=64,
        batch_size=8,
        device="cpu",
        dtype="float32",
        seed=0,
        index_config=config,
    )
    chunks = load_chunks(tmp_path / "corpus")
    hooks = {"mlp.4": "blocks.4.mlp.hook_post", "resid.9": "blocks.9.hook_resid_post"}
    for path in paths:
        state, about = load_index(path)
        hook = hooks[about["dictionary"]]
        checked = 0
        for unit in range(0, state.n_units, 97):
            for sample in unit_samples(state, unit, f"{about['dictionary']}/{unit}"):
                tokens = torch.from_numpy(chunks[sample.chunk : sample.chunk + 1]).long()
                fresh = collect_activations(gemma, tokens, [hook])[hook][0, sample.window_start : sample.window_start + config.window, unit]
                # Batched and single-sequence float32 forwards differ only by summation order.
                torch.testing.assert_close(torch.tensor(sample.activations), fresh, rtol=1e-3, atol=1e-3)
                checked += 1
        assert checked > 20
