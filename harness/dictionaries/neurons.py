"""The neuron baseline: a seeded pool of MLP neurons drawn from blocks 0..L, indexed like a dictionary.

Indexing every neuron of every block up to L would cost L+1 times a whole
dictionary (neurons fire on about half of all tokens); a uniform pool of a few
hundred gives the random neurons the comparison needs at a fraction of that.
Pool units are named ``mlp.<layer>/<neuron>``.
"""

import random

import torch

from harness.dictionaries.dictionary import Dictionary

POOL_NAME = "neurons"


def sample_neuron_pool(n_blocks: int, d_mlp: int, size: int, seed: int) -> list[tuple[int, int]]:
    """Return ``size`` distinct (layer, neuron) pairs drawn uniformly from blocks 0..n_blocks-1, sorted."""
    total = n_blocks * d_mlp
    picks = random.Random(f"neuron-pool|{seed}").sample(range(total), min(size, total))
    return sorted((index // d_mlp, index % d_mlp) for index in picks)


def pool_hooks(pool: list[tuple[int, int]]) -> list[str]:
    """Return the MLP hooks the pool reads, one per layer it draws from."""
    return [f"blocks.{layer}.mlp.hook_post" for layer in sorted({layer for layer, _ in pool})]


def pool_unit_names(pool: list[tuple[int, int]]) -> list[str]:
    """Return the unit names of the pool, in pool order."""
    return [f"mlp.{layer}/{neuron}" for layer, neuron in pool]


def pool_activations(activations: dict[str, torch.Tensor], pool: list[tuple[int, int]]) -> torch.Tensor:
    """Return the pool's activations [B, T, len(pool)] gathered from per-layer MLP hook activations."""
    columns = []
    for layer in sorted({layer for layer, _ in pool}):
        hidden = activations[f"blocks.{layer}.mlp.hook_post"]
        neurons = torch.tensor([neuron for pool_layer, neuron in pool if pool_layer == layer], device=hidden.device)
        columns.append(hidden[..., neurons])
    return torch.cat(columns, dim=-1)


def pool_dictionary(pool: list[tuple[int, int]], top_layer: int) -> Dictionary:
    """Return the identity pseudo-dictionary the pool index is named and sized after."""
    return Dictionary(
        name=POOL_NAME,
        hook_name=f"blocks.0-{top_layer}.mlp.hook_post",
        architecture="identity",
        d_in=len(pool),
        d_sae=len(pool),
    )
