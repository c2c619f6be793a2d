"""Train a sparse dictionary with the Scaling Monosemanticity recipe, and measure one.

Recipe: f = ReLU(W_enc x + b_enc), x̂ = W_dec f + b_dec; loss = ‖x − x̂‖₂² summed
over d_in plus λ·Σ_i f_i·‖W_dec,i‖₂; inputs scaled by one constant so that
E‖x‖₂ = √d_in; W_enc initialised to W_dec transposed, decoder rows of norm 0.1;
b_dec starts at the data mean and b_enc at minus the mean's projection;
λ warms up linearly over the first 5% of steps and the learning rate decays
linearly to zero over the last 20%; gradient norm clipped to 1. The input
scale is folded into the saved weights, so the saved dictionary reads raw
activations.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.dictionaries.dictionary import Dictionary, decode, dictionary_to, encode


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of one dictionary-training run."""

    d_sae: int
    sparsity_coefficient: float  # λ
    learning_rate: float = 1e-3
    batch_size: int = 1024
    epochs: int = 1
    seed: int = 0
    warmup_fraction: float = 0.05
    decay_fraction: float = 0.2


@dataclass(frozen=True)
class DictionaryStats:
    """Reconstruction and sparsity figures of a dictionary over a set of tokens."""

    n_tokens: int
    l0: float
    variance_explained: float
    dead_fraction: float
    mean_squared_error: float


def input_scale(activations: torch.Tensor) -> float:
    """Return the constant s such that E‖s·x‖₂ = √d_in over ``activations`` [N, d_in]."""
    mean_norm = activations.float().norm(dim=-1).mean().item()
    return math.sqrt(activations.shape[-1]) / max(mean_norm, 1e-12)


def initial_decoder(d_sae: int, d_in: int, generator: torch.Generator) -> torch.Tensor:
    """Return the initial decoder [d_sae, d_in]: Gaussian rows scaled to norm 0.1, drawn on the CPU from ``generator``.

    Drawn on the CPU whatever the training device (and whatever ``torch.device`` context is active), so
    a run on a GPU starts from the same weights as one on the CPU.
    """
    decoder = torch.randn(d_sae, d_in, generator=generator, device="cpu")
    return 0.1 * decoder / decoder.norm(dim=-1, keepdim=True)


def cpu_permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    """Return a permutation of range(n) drawn on the CPU from ``generator`` (the shuffling order on any device)."""
    return torch.randperm(n, generator=generator, device="cpu")


def train_dictionary(
    activations: torch.Tensor,
    config: TrainingConfig,
    name: str,
    hook_name: str,
    on_step: Callable[[int, int, float], None] | None = None,
    device: str | torch.device | None = None,
) -> Dictionary:
    """Return a ReLU dictionary trained on ``activations`` [N, d_in] with ``config``.

    The weights and every step live on ``device`` (default: the device of ``activations``); batches
    are moved there as they are drawn. Initial weights and the shuffling order are drawn on the CPU
    from ``config.seed`` and then moved, so runs on any device start from the same weights.
    """
    device = torch.device(device) if device is not None else activations.device
    generator = torch.Generator().manual_seed(config.seed)
    n_tokens, d_in = activations.shape
    scale = input_scale(activations)
    decoder = initial_decoder(config.d_sae, d_in, generator).to(device)
    W_dec = torch.nn.Parameter(decoder)
    W_enc = torch.nn.Parameter(decoder.t().clone())
    # The residual stream carries a large near-constant component; start the decoder
    # bias at the data mean and the encoder bias at minus its projection, so that
    # features begin centred instead of spending training on re-learning the mean.
    sample = activations[cpu_permutation(n_tokens, generator)[:65536].to(activations.device)].to(device).float() * scale
    mean = sample.mean(dim=0)
    b_enc = torch.nn.Parameter(-(mean @ W_enc.detach()))
    b_dec = torch.nn.Parameter(mean.clone())
    parameters = [W_enc, b_enc, W_dec, b_dec]
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
    steps_per_epoch = n_tokens // config.batch_size
    total_steps = max(1, steps_per_epoch * config.epochs)
    warmup_steps = max(1, int(config.warmup_fraction * total_steps))
    decay_start = int((1 - config.decay_fraction) * total_steps)
    step = 0
    for _epoch in range(config.epochs):
        order = cpu_permutation(n_tokens, generator).to(activations.device)
        for batch_start in range(0, steps_per_epoch * config.batch_size, config.batch_size):
            x = activations[order[batch_start : batch_start + config.batch_size]].to(device).float() * scale
            features = torch.relu(x @ W_enc + b_enc)
            reconstruction = features @ W_dec + b_dec
            squared_error = (reconstruction - x).pow(2).sum(dim=-1).mean()
            penalty = (features * W_dec.norm(dim=-1)).sum(dim=-1).mean()
            coefficient = config.sparsity_coefficient * min(1.0, (step + 1) / warmup_steps)
            loss = squared_error + coefficient * penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            if step >= decay_start:
                for group in optimizer.param_groups:
                    group["lr"] = config.learning_rate * max(0.0, (total_steps - step) / max(1, total_steps - decay_start))
            optimizer.step()
            step += 1
            if on_step is not None:
                on_step(step, total_steps, float(loss.item()))
    with torch.no_grad():
        return Dictionary(
            name=name,
            hook_name=hook_name,
            architecture="relu",
            d_in=d_in,
            d_sae=config.d_sae,
            W_enc=(W_enc * scale).detach().clone(),
            b_enc=b_enc.detach().clone(),
            W_dec=(W_dec / scale).detach().clone(),
            b_dec=(b_dec / scale).detach().clone(),
            metadata={"training": config.__dict__ | {"input_scale": scale, "n_tokens": n_tokens}},
        )


@torch.inference_mode()
def dictionary_stats(
    dictionary: Dictionary, activations: torch.Tensor, batch_size: int = 4096, device: str | torch.device | None = None
) -> DictionaryStats:
    """Return L0, fraction of variance explained and dead fraction over ``activations`` [N, d_in].

    Runs on ``device`` (default: the dictionary's weights' device); sums stay on the device until the end.
    """
    if device is None:
        device = dictionary.W_enc.device if dictionary.W_enc is not None else activations.device
    dictionary = dictionary_to(dictionary, device)
    n_tokens = activations.shape[0]
    mean = activations.float().mean(dim=0).to(device)
    total_variance = torch.zeros((), dtype=torch.float64, device=device)
    residual = torch.zeros((), dtype=torch.float64, device=device)
    active_count = torch.zeros((), dtype=torch.int64, device=device)
    ever_active = torch.zeros(dictionary.d_sae, dtype=torch.bool, device=device)
    for start in range(0, n_tokens, batch_size):
        x = activations[start : start + batch_size].to(device).float()
        features = encode(dictionary, x)
        reconstruction = decode(dictionary, features, x)
        residual += (reconstruction - x).pow(2).sum().double()
        total_variance += (x - mean).pow(2).sum().double()
        active = features > 0
        active_count += active.sum()
        ever_active |= active.any(dim=0)
    residual_sum, variance_sum = residual.item(), total_variance.item()
    return DictionaryStats(
        n_tokens=n_tokens,
        l0=active_count.item() / n_tokens,
        variance_explained=1.0 - residual_sum / max(variance_sum, 1e-12),
        dead_fraction=1.0 - ever_active.float().mean().item(),
        mean_squared_error=residual_sum / (n_tokens * dictionary.d_in),
    )
