"""Steering: a no-op clamp is exact, a planted feature moves the distribution its way, positions and errors."""

from dataclasses import replace

import pytest
import torch

from harness.dictionaries.dictionary import Dictionary, identity_dictionary
from harness.errors import MonoscopeError
from harness.steering.clamp import Clamp, clamped
from harness.steering.generate import prompt_ids, steer
from tests.tiny_models import tiny_byte_gemma

D_MODEL, D_MLP, D_SAE = 32, 64, 48


@pytest.fixture(scope="module")
def subject():
    return tiny_byte_gemma(initializer_range=0.2)  # weights large enough that one direction can move the logits


def random_dictionary(architecture: str, layer: int = 1, **settings) -> Dictionary:
    generator = torch.Generator().manual_seed(7)

    def randn(*shape: int, scale: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    weights = dict(W_enc=randn(D_MODEL, D_SAE), b_enc=randn(D_SAE, scale=0.1), W_dec=randn(D_SAE, D_MODEL), b_dec=randn(D_MODEL))
    if architecture == "jumprelu":
        weights["threshold"] = torch.rand(D_SAE, generator=generator) * 0.2
    if architecture == "topk":
        settings = {"k": 6} | settings
    if architecture == "gated":
        weights |= dict(b_enc=None, b_gate=randn(D_SAE, scale=0.1), b_mag=randn(D_SAE, scale=0.1), r_mag=randn(D_SAE, scale=0.1))
    return Dictionary(
        name=f"test-{architecture}",
        hook_name=f"blocks.{layer}.hook_resid_post",
        architecture=architecture,
        d_in=D_MODEL,
        d_sae=D_SAE,
        **weights,
        **settings,
    )


DICTIONARIES = {
    "relu": lambda: random_dictionary("relu"),
    "jumprelu": lambda: random_dictionary("jumprelu"),
    "topk rescaled by decoder norm": lambda: random_dictionary("topk", rescale_acts_by_decoder_norm=True),
    "gated": lambda: random_dictionary("gated"),
    "relu, layer_norm, b_dec subtracted": lambda: random_dictionary("relu", normalize_activations="layer_norm", apply_b_dec_to_input=True),
    "relu, constant_norm_rescale": lambda: random_dictionary("relu", normalize_activations="constant_norm_rescale"),
    "residual basis": lambda: identity_dictionary("residual-basis", 2, D_MODEL),
    "neurons": lambda: identity_dictionary("neurons", 2, D_MLP),
}


@pytest.mark.parametrize("kind", list(DICTIONARIES))
def test_a_clamp_to_each_units_own_value_leaves_the_logits_bitwise_equal(subject, kind: str):
    dictionary = DICTIONARIES[kind]()
    ids = prompt_ids(subject, "def total(values): return sum(values)")
    with torch.inference_mode():
        plain = subject.model(ids, use_cache=False).logits
        calls = []
        handle = subject.model.register_forward_hook(lambda *_: calls.append(1))
        with clamped(subject, [Clamp(dictionary, (0, 5, 17), (None, None, None))]):
            kept = subject.model(ids, use_cache=False).logits
        handle.remove()
    assert calls and torch.equal(plain, kept), "the no-op clamp went through the hook and changed nothing, bit for bit"
    record = steer(subject, "x = [1, 2", [Clamp(dictionary, (3,), (None,))], max_new_tokens=6)
    assert record.steered == record.baseline and set(record.kl) == {0.0}


def test_the_no_op_clamp_really_runs_the_dictionary(subject, monkeypatch: pytest.MonkeyPatch):
    import harness.steering.clamp as clamp_module

    seen = []
    original = clamp_module.encode
    monkeypatch.setattr(clamp_module, "encode", lambda d, x: seen.append(x.shape) or original(d, x))
    ids = prompt_ids(subject, "abc")
    with torch.inference_mode(), clamped(subject, [Clamp(random_dictionary("relu"), (0,), (None,))]):
        subject.model(ids, use_cache=False)
    assert seen == [torch.Size([1, 4, D_MODEL])]


def planted(subject, token: int, layer: int) -> Dictionary:
    """A dictionary whose feature 0 writes the direction of ``token``'s unembedding into the last block's residual."""
    direction = subject.model.lm_head.weight[token].detach().clone()
    dictionary = random_dictionary("relu", layer=layer)
    W_dec = dictionary.W_dec.clone()
    W_dec[0] = direction / direction.norm()
    return replace(dictionary, W_dec=W_dec)


@pytest.mark.parametrize("positions", ["all", "new"])
def test_clamping_a_planted_feature_moves_the_next_token_distribution_its_way(subject, positions: str):
    token = 10 + ord("q")
    dictionary = planted(subject, token, layer=subject.n_layers - 1)
    prompt = prompt_ids(subject, "for item in items:")
    ids = prompt_ids(subject, "for item in items: total")  # "new" clamps the positions after the prompt
    clamp = Clamp(dictionary, (0,), (60.0,))
    first = 1 if positions == "all" else prompt.shape[1]
    with torch.inference_mode():
        plain = subject.model(ids, use_cache=False).logits[0].softmax(-1)
        with clamped(subject, [clamp], first_clamped=first):
            steered = subject.model(ids, use_cache=False).logits[0].softmax(-1)
    assert ids.shape[1] - first >= 6
    assert (steered[first:, token] > plain[first:, token] + 0.2).all(), "every clamped position puts more mass on the planted token"
    assert torch.equal(steered[:first], plain[:first]), "positions before the first clamped one are untouched"
    record = steer(subject, "for item in items:", [clamp], max_new_tokens=5, positions=positions)
    if positions == "all":
        assert record.steered == "q" * 5 and record.baseline != record.steered
        assert len(record.kl) == 5 and min(record.kl) > 0.1
    else:  # the first new token comes from the last prompt position, which "new" leaves alone
        assert record.steered[0] == record.baseline[0] and record.steered[1:] == "q" * 4
        assert record.kl[0] == 0.0 and min(record.kl[1:]) > 0.1
    assert record.mean_kl == pytest.approx(sum(record.kl) / 5, abs=1e-5)


def test_a_neuron_clamp_sets_the_down_projections_input(subject):
    seen = []
    down_proj = subject.model.model.layers[2].mlp.down_proj
    ids = prompt_ids(subject, "hello")
    with torch.inference_mode(), clamped(subject, [Clamp(identity_dictionary("neurons", 2, D_MLP), (9,), (4.5,))], first_clamped=1):
        # registered after the clamp's own pre-hook, so it sees the input the projection receives
        handle = down_proj.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0][0, :, 9].clone()))
        subject.model(ids, use_cache=False)
    handle.remove()
    assert seen[0][0] != 4.5, "position 0 (BOS) comes before the first clamped position"
    assert bool((seen[0][1:] == 4.5).all()), "every later position holds the clamped value"


def test_sampling_is_seeded_and_both_continuations_share_the_seed(subject):
    clamp = [Clamp(random_dictionary("relu"), (0,), (None,))]
    first = steer(subject, "import os", clamp, max_new_tokens=8, seed=3)
    again = steer(subject, "import os", clamp, max_new_tokens=8, seed=3)
    assert first == again and first.baseline == first.steered and first.sampling == "sample seed=3 temperature=1.0"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s, c: steer(s, "", c), "the steering prompt is empty"),
        (lambda s, c: steer(s, "x", c, positions="middle"), "unknown positions 'middle'"),
        (lambda s, c: steer(s, "x", c, max_new_tokens=0), "max_new_tokens is 0"),
        (lambda s, c: steer(s, "x", []), "nothing to clamp"),
        (
            lambda s, c: steer(s, "x", [Clamp(replace(c[0].dictionary, hook_name="blocks.9.hook_resid_post"), (0,), (1.0,))]),
            "layer 9 of hook",
        ),
        (lambda s, c: Clamp(c[0].dictionary, (D_SAE,), (1.0,)), f"unit {D_SAE} is outside"),
        (lambda s, c: Clamp(c[0].dictionary, (1, 2), (1.0,)), "one value per unit"),
        (lambda s, c: steer(s, "x", [Clamp(identity_dictionary("neurons", 1, D_MODEL), (0,), (1.0,))]), "has width 64"),
    ],
)
def test_bad_steering_input_is_a_clear_error(subject, call, message: str):
    with pytest.raises(MonoscopeError, match=message):
        call(subject, [Clamp(random_dictionary("relu"), (0,), (1.0,))])


def test_hooks_are_removed_after_steering_even_on_error(subject):
    layers = subject.model.model.layers
    before = [len(layer._forward_hooks) for layer in layers]
    with pytest.raises(RuntimeError), clamped(subject, [Clamp(random_dictionary("relu"), (0,), (1.0,))]):
        raise RuntimeError("interrupted")
    assert [len(layer._forward_hooks) for layer in layers] == before
