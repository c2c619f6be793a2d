"""Dictionary training: the recipe learns a known sparse code; statistics are computed correctly."""

import torch

from harness.dictionaries.dictionary import decode, encode
from harness.dictionaries.training import TrainingConfig, dictionary_stats, input_scale, train_dictionary


def synthetic_activations(n: int = 8192, d: int = 16, n_features: int = 24, seed: int = 0) -> torch.Tensor:
    """Tokens that are sparse non-negative combinations of fixed directions, plus a large constant offset."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(n_features, d, generator=generator), dim=-1)
    codes = torch.rand(n, n_features, generator=generator) * (torch.rand(n, n_features, generator=generator) < 0.08)
    return codes @ directions * 3 + 5.0


def test_training_reconstructs_a_sparse_code():
    acts = synthetic_activations()
    config = TrainingConfig(d_sae=48, sparsity_coefficient=0.05, learning_rate=3e-3, batch_size=128, epochs=3)
    dictionary = train_dictionary(acts, config, "toy", "blocks.0.hook_resid_post")
    stats = dictionary_stats(dictionary, acts)
    assert stats.variance_explained > 0.8
    assert stats.l0 < 24
    assert 0.0 <= stats.dead_fraction < 1.0


def test_input_scale_is_folded_into_the_weights():
    acts = synthetic_activations(n=1024)
    dictionary = train_dictionary(
        acts, TrainingConfig(d_sae=8, sparsity_coefficient=0.1, batch_size=128), "toy", "blocks.0.hook_resid_post"
    )
    scale = input_scale(acts)
    assert abs((acts * scale).norm(dim=-1).mean().item() - 4.0) < 1e-3  # sqrt(16)
    # The saved dictionary reads raw activations: scaling the input scales nothing away.
    features = encode(dictionary, acts)
    reconstruction = decode(dictionary, features)
    assert reconstruction.shape == acts.shape
    assert dictionary.metadata["training"]["input_scale"] == scale


def test_stats_against_hand_computation():
    acts = synthetic_activations(n=512)
    dictionary = train_dictionary(acts, TrainingConfig(d_sae=8, sparsity_coefficient=0.1, batch_size=64), "toy", "blocks.0.hook_resid_post")
    stats = dictionary_stats(dictionary, acts, batch_size=100)
    features = encode(dictionary, acts)
    reconstruction = decode(dictionary, features)
    expected_fve = 1 - (reconstruction - acts).pow(2).sum() / (acts - acts.mean(0)).pow(2).sum()
    assert abs(stats.variance_explained - expected_fve.item()) < 1e-4
    assert abs(stats.l0 - (features > 0).sum(-1).float().mean().item()) < 1e-4
    assert abs(stats.dead_fraction - (~(features > 0).any(0)).float().mean().item()) < 1e-6
