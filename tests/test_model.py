"""Subject-model adapter: hooks read the right tensors and the forward pass stops early."""

import pytest
import torch

from harness.errors import MonoscopeError
from harness.subject.model import collect_activations, parse_hook, transformer_blocks, with_bos


def test_hooked_residual_equals_output_hidden_states(tiny_gemma):
    tokens = torch.randint(10, 128, (3, 12))
    for layer in range(tiny_gemma.n_layers - 1):  # the last hidden state is normed by HF
        hooked = collect_activations(tiny_gemma, tokens, [f"blocks.{layer}.hook_resid_post"])[f"blocks.{layer}.hook_resid_post"]
        with torch.no_grad():
            reference = tiny_gemma.model(input_ids=with_bos(tiny_gemma, tokens), output_hidden_states=True).hidden_states[layer + 1]
        assert hooked.shape == (3, 12, 32)
        torch.testing.assert_close(hooked, reference[:, 1:, :], rtol=1e-5, atol=1e-5)


def test_mlp_hook_is_gated_hidden_activation(tiny_gemma):
    tokens = torch.randint(10, 128, (2, 9))
    block = transformer_blocks(tiny_gemma.model)[1]
    seen = {}
    handle = block.mlp.register_forward_pre_hook(lambda module, inputs: seen.setdefault("x", inputs[0]))
    try:
        hooked = collect_activations(tiny_gemma, tokens, ["blocks.1.mlp.hook_post"])["blocks.1.mlp.hook_post"]
    finally:
        handle.remove()
    mlp = block.mlp
    with torch.inference_mode():
        expected = mlp.act_fn(mlp.gate_proj(seen["x"])) * mlp.up_proj(seen["x"])
    torch.testing.assert_close(hooked, expected[:, 1:, :], rtol=1e-5, atol=1e-6)
    assert (hooked < 0).any(), "Gemma's gated neurons are signed"


def test_forward_stops_after_deepest_needed_block(tiny_gemma):
    calls = []
    blocks = transformer_blocks(tiny_gemma.model)
    handles = [block.register_forward_hook(lambda *_a, i=i: calls.append(i)) for i, block in enumerate(blocks)]
    handles.append(tiny_gemma.model.lm_head.register_forward_hook(lambda *_a: calls.append("lm_head")))
    try:
        collect_activations(tiny_gemma, torch.randint(10, 128, (1, 5)), ["blocks.0.mlp.hook_post", "blocks.1.hook_resid_post"])
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [0, 1]


def test_bad_hook_names_and_layers():
    with pytest.raises(MonoscopeError, match="out of range"):
        parse_hook("blocks.18.hook_resid_post", n_layers=18)
    with pytest.raises(MonoscopeError, match="unknown hook"):
        parse_hook("blocks.3.attn.hook_z")
    assert parse_hook("blocks.3.mlp.hook_post").name == "blocks.3.mlp.hook_post"
