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

import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from harness.dictionaries.activation_buffer import ActivationSource, ShuffleBuffer, TensorSource
from harness.dictionaries.dictionary import Dictionary, decode, dictionary_to, encode
from harness.storage import atomic_write_bytes


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
    buffer_tokens: int | None = None  # rows of the shuffling buffer (None: the whole training set)


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
    activations: torch.Tensor | ActivationSource,
    config: TrainingConfig,
    name: str,
    hook_name: str,
    on_step: Callable[[int, int, float], None] | None = None,
    device: str | torch.device | None = None,
    checkpoint: Path | None = None,
    checkpoint_seconds: float = 60.0,
) -> Dictionary:
    """Return a ReLU dictionary trained with ``config`` on ``activations`` [N, d_in] or an ActivationSource.

    Batches come through a ShuffleBuffer of ``config.buffer_tokens`` rows (None: the whole training
    set), so memory is bounded by the buffer, not by N. The weights and every step live on
    ``device`` (default: the device of ``activations``, the CPU for a source). Initial weights and
    every permutation are drawn on the CPU from ``config.seed``, so runs on any device start alike.
    The input scale and the initial biases come from the buffer's first fill (every row when the
    buffer holds the whole set).

    With ``checkpoint`` (a file path) the weights, the optimiser, the buffer and the stream position
    are saved every ``checkpoint_seconds``; a call with the same arguments resumes from that file and
    gives the dictionary an uninterrupted run would; the file is removed when training ends.
    """
    source = TensorSource(activations) if isinstance(activations, torch.Tensor) else activations
    if device is None:
        device = activations.device if isinstance(activations, torch.Tensor) else "cpu"
    device = torch.device(device)
    n_tokens, d_in = source.n_rows, source.width
    capacity = n_tokens if config.buffer_tokens is None else max(config.buffer_tokens, 2 * config.batch_size)
    generator = torch.Generator().manual_seed(config.seed)
    buffer = ShuffleBuffer(source, capacity, config.batch_size, generator, device)
    steps_per_epoch = n_tokens // config.batch_size
    total_steps = max(1, steps_per_epoch * config.epochs)
    warmup_steps = max(1, int(config.warmup_fraction * total_steps))
    decay_start = int((1 - config.decay_fraction) * total_steps)
    saved = _load_checkpoint(checkpoint, config, n_tokens)
    if saved is None:
        decoder = initial_decoder(config.d_sae, d_in, generator).to(device)
        first_fill = _first_rows(source, capacity)
        scale = input_scale(first_fill)
        # The residual stream carries a large near-constant component; start the decoder
        # bias at the data mean and the encoder bias at minus its projection, so that
        # features begin centred instead of spending training on re-learning the mean.
        sample = first_fill[cpu_permutation(first_fill.shape[0], generator)[:65536]].to(device).float() * scale
        del first_fill
        mean = sample.mean(dim=0)
        W_dec = torch.nn.Parameter(decoder)
        W_enc = torch.nn.Parameter(decoder.t().clone())
        b_enc = torch.nn.Parameter(-(mean @ W_enc.detach()))
        b_dec = torch.nn.Parameter(mean.clone())
        step, epoch = 0, 0
    else:
        W_enc, b_enc, W_dec, b_dec = (torch.nn.Parameter(saved["weights"][key].to(device)) for key in ("W_enc", "b_enc", "W_dec", "b_dec"))
        scale, step, epoch = saved["scale"], saved["step"], saved["epoch"]
    parameters = [W_enc, b_enc, W_dec, b_dec]
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        buffer.load_state_dict(saved["buffer"])
    last_save = time.perf_counter()
    while epoch < config.epochs:
        if saved is None or saved["epoch"] != epoch:
            buffer.start_epoch()
        for batch in buffer.batches(steps_per_epoch):
            x = batch * scale
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
            if checkpoint is not None and time.perf_counter() - last_save > checkpoint_seconds:
                _save_checkpoint(checkpoint, config, n_tokens, parameters, optimizer, buffer, scale, step, epoch)
                last_save = time.perf_counter()
        epoch += 1
        saved = None
    with torch.no_grad():
        dictionary = Dictionary(
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
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return dictionary


def _first_rows(source: ActivationSource, count: int) -> torch.Tensor:
    """Return the first ``count`` rows of ``source`` (all of them if it has fewer), float32 on the CPU."""
    rows, held = [], 0
    for chunk in source.rows_from(0):
        rows.append(chunk[: count - held].float())
        held += rows[-1].shape[0]
        if held >= count:
            break
    return torch.cat(rows)


def _save_checkpoint(
    path: Path,
    config: TrainingConfig,
    n_tokens: int,
    parameters: list[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    buffer: ShuffleBuffer,
    scale: float,
    step: int,
    epoch: int,
) -> None:
    """Write the whole training state atomically (tensors on the CPU)."""
    state = {
        "config": asdict(config),
        "n_tokens": n_tokens,
        "weights": {key: tensor.detach().cpu() for key, tensor in zip(("W_enc", "b_enc", "W_dec", "b_dec"), parameters, strict=True)},
        "optimizer": optimizer.state_dict(),
        "buffer": buffer.state_dict(),
        "scale": scale,
        "step": step,
        "epoch": epoch,
    }
    data = io.BytesIO()
    torch.save(state, data)
    atomic_write_bytes(path, data.getvalue())


def _load_checkpoint(path: Path | None, config: TrainingConfig, n_tokens: int) -> dict[str, Any] | None:
    """Return the saved training state at ``path``, or None when there is none for this config and data."""
    if path is None or not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("config") != asdict(config) or state.get("n_tokens") != n_tokens:
        return None  # another recipe or training set: start afresh (the file is overwritten at the next save)
    return state


@torch.inference_mode()
def dictionary_stats(
    dictionary: Dictionary, activations: torch.Tensor | ActivationSource, batch_size: int = 4096, device: str | torch.device | None = None
) -> DictionaryStats:
    """Return L0, fraction of variance explained and dead fraction over ``activations`` [N, d_in] or a source.

    Runs on ``device`` (default: the dictionary's weights' device); sums stay on the device until the
    end. A source is read twice (its mean in float64, then the sums), in memory flat in its size.
    """
    if device is None:
        fallback = activations.device if isinstance(activations, torch.Tensor) else torch.device("cpu")
        device = dictionary.W_enc.device if dictionary.W_enc is not None else fallback
    dictionary = dictionary_to(dictionary, device)
    source = TensorSource(activations, batch_size) if isinstance(activations, torch.Tensor) else activations
    n_tokens = source.n_rows
    if isinstance(activations, torch.Tensor):
        mean = activations.float().mean(dim=0).to(device)
    else:
        total = torch.zeros(source.width, dtype=torch.float64, device="cpu")
        for rows in source.rows_from(0):
            total += rows.double().sum(dim=0)
        mean = (total / max(n_tokens, 1)).float().to(device)
    total_variance = torch.zeros((), dtype=torch.float64, device=device)
    residual = torch.zeros((), dtype=torch.float64, device=device)
    active_count = torch.zeros((), dtype=torch.int64, device=device)
    ever_active = torch.zeros(dictionary.d_sae, dtype=torch.bool, device=device)
    for rows in source.rows_from(0):
        for x in rows.split(batch_size):
            x = x.to(device).float()
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
