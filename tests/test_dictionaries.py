"""Dictionaries: SAELens-format round trips, encode/decode against reference math, bad files."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from harness.dictionaries.dictionary import Dictionary, decode, encode
from harness.dictionaries.formats import load_dictionary, load_saelens_directory, resolve_dictionary, save_saelens_directory
from harness.errors import MonoscopeError

D_IN, D_SAE = 6, 10


def random_dictionary(architecture: str, **extra) -> Dictionary:
    generator = torch.Generator().manual_seed(3)
    return Dictionary(
        name=f"test-{architecture}",
        hook_name="blocks.1.hook_resid_post",
        architecture=architecture,
        d_in=D_IN,
        d_sae=D_SAE,
        W_enc=torch.randn(D_IN, D_SAE, generator=generator),
        b_enc=torch.randn(D_SAE, generator=generator) * 0.3,
        W_dec=torch.randn(D_SAE, D_IN, generator=generator),
        b_dec=torch.randn(D_IN, generator=generator),
        threshold=torch.rand(D_SAE, generator=generator) if architecture == "jumprelu" else None,
        k=3 if architecture == "topk" else None,
        **extra,
    )


def reference_encode(d: Dictionary, x: np.ndarray) -> np.ndarray:
    """The SAELens equations written out in numpy."""
    W_enc, b_enc, b_dec = d.W_enc.numpy(), d.b_enc.numpy(), d.b_dec.numpy()
    if d.normalize_activations == "constant_norm_rescale":
        x = x * np.sqrt(d.d_in) / np.linalg.norm(x, axis=-1, keepdims=True)
    if d.apply_b_dec_to_input:
        x = x - b_dec
    pre = x @ W_enc + b_enc
    if d.architecture == "relu":
        return np.maximum(pre, 0)
    if d.architecture == "jumprelu":
        return np.where(pre > d.threshold.numpy(), np.maximum(pre, 0), 0)
    out = np.zeros_like(pre)
    for row in range(pre.shape[0]):
        top = np.argsort(-pre[row])[: d.k]
        out[row, top] = np.maximum(pre[row, top], 0)
    return out


def reference_decode(d: Dictionary, f: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = f @ d.W_dec.numpy() + d.b_dec.numpy()
    if d.normalize_activations == "constant_norm_rescale":
        out = out * np.linalg.norm(x, axis=-1, keepdims=True) / np.sqrt(d.d_in)
    return out


@pytest.mark.parametrize("architecture", ["relu", "jumprelu", "topk"])
@pytest.mark.parametrize("normalize", ["none", "constant_norm_rescale"])
@pytest.mark.parametrize("apply_b_dec", [False, True])
def test_round_trip_and_reference_math(tmp_path: Path, architecture: str, normalize: str, apply_b_dec: bool):
    dictionary = random_dictionary(architecture, normalize_activations=normalize, apply_b_dec_to_input=apply_b_dec)
    save_saelens_directory(dictionary, tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["d_in"] == D_IN and cfg["d_sae"] == D_SAE and cfg["hook_name"] == "blocks.1.hook_resid_post"
    loaded = load_saelens_directory(tmp_path / "sae")
    assert loaded.architecture == architecture and loaded.k == dictionary.k and loaded.name == dictionary.name
    for key in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(loaded, key), getattr(dictionary, key))
    x = torch.randn(20, D_IN, generator=torch.Generator().manual_seed(5)) * 2
    features = encode(loaded, x)
    np.testing.assert_allclose(features.numpy(), reference_encode(dictionary, x.numpy()), rtol=1e-5, atol=1e-5)
    if architecture == "topk":
        assert ((features > 0).sum(dim=-1) <= 3).all()
    np.testing.assert_allclose(
        decode(loaded, features, x).numpy(), reference_decode(dictionary, features.numpy(), x.numpy()), rtol=1e-4, atol=1e-4
    )


def test_saelens_style_config_keys(tmp_path: Path):
    """A directory as SAELens writes it (activation_fn_str / activation_fn_kwargs) loads as TopK."""
    dictionary = random_dictionary("relu")
    directory = tmp_path / "sae"
    directory.mkdir()
    save_file(
        {"W_enc": dictionary.W_enc, "b_enc": dictionary.b_enc, "W_dec": dictionary.W_dec, "b_dec": dictionary.b_dec},
        directory / "sae_weights.safetensors",
    )
    cfg = {
        "d_in": D_IN,
        "d_sae": D_SAE,
        "hook_name": "blocks.1.hook_resid_post",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 4},
        "apply_b_dec_to_input": True,
    }
    (directory / "cfg.json").write_text(json.dumps(cfg))
    loaded = load_saelens_directory(directory)
    assert loaded.architecture == "topk" and loaded.k == 4 and loaded.apply_b_dec_to_input


def test_plain_safetensors_with_threshold_is_jumprelu(tmp_path: Path):
    dictionary = random_dictionary("jumprelu")
    path = tmp_path / "plain.safetensors"
    save_file({k: getattr(dictionary, k) for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}, path)
    loaded = load_dictionary(str(path), hook_name="blocks.1.hook_resid_post")
    assert loaded.architecture == "jumprelu" and loaded.name == "plain"
    x = torch.randn(4, D_IN)
    np.testing.assert_allclose(encode(loaded, x).numpy(), reference_encode(dictionary, x.numpy()), rtol=1e-5, atol=1e-5)


def test_identity_dictionaries():
    neurons = resolve_dictionary("neurons:2", n_layers=4, d_model=8, d_mlp=16)
    assert neurons.name == "mlp.2" and neurons.hook_name == "blocks.2.mlp.hook_post" and neurons.d_sae == 16
    x = torch.randn(3, 16)
    assert torch.equal(encode(neurons, x), x)
    basis = resolve_dictionary("residual-basis:1", n_layers=4, d_model=8, d_mlp=16)
    assert basis.hook_name == "blocks.1.hook_resid_post" and basis.d_sae == 8


def write_dictionary(tmp_path: Path, **overrides) -> Path:
    dictionary = random_dictionary("relu")
    directory = tmp_path / "sae"
    save_saelens_directory(dictionary, directory)
    tensors = {k: getattr(dictionary, k) for k in ("W_enc", "b_enc", "W_dec", "b_dec")} | overrides
    save_file(tensors, directory / "sae_weights.safetensors")
    return directory


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "not found"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no cfg.json"),
        (lambda p: write_dictionary(p, W_enc=torch.full((D_IN, D_SAE), float("nan"))), "NaN"),
        (lambda p: write_dictionary(p, b_enc=torch.zeros(D_SAE + 1)), "shape"),
    ],
)
def test_bad_dictionary_files(tmp_path: Path, make, message: str):
    with pytest.raises(MonoscopeError, match=message):
        load_dictionary(str(make(tmp_path)))


def test_corrupt_weights_file(tmp_path: Path):
    directory = write_dictionary(tmp_path)
    (directory / "sae_weights.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(MonoscopeError, match="corrupt"):
        load_dictionary(str(directory))


def test_wrong_d_in_for_the_model(tmp_path: Path):
    directory = write_dictionary(tmp_path)
    with pytest.raises(MonoscopeError, match="d_in=6"):
        resolve_dictionary(str(directory), n_layers=4, d_model=8, d_mlp=16)


def test_hook_layer_out_of_range(tmp_path: Path):
    directory = write_dictionary(tmp_path)
    with pytest.raises(MonoscopeError, match="out of range"):
        resolve_dictionary(str(directory), n_layers=1, d_model=6, d_mlp=16)
