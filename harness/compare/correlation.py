"""Feature–neuron correlation (Scaling Monosemanticity): is a feature just a neuron, or a residual direction?

For a sample of dictionary features reading ``blocks.L.hook_resid_post`` this
module computes the Pearson correlation of each feature with every MLP neuron
of blocks 0..L and with every residual-stream basis direction at the hook, and
keeps each feature's largest (signed) correlation. The correlations are
accumulated streaming over tokens from sufficient statistics (count, means,
sums of squared deviations, co-moments) kept in float64, so memory is
O(features × units) whatever the number of tokens.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from harness.dictionaries.dictionary import Dictionary, dictionary_to, encode
from harness.errors import MonoscopeError
from harness.records import FeatureCorrelation
from harness.subject.activations import stream_activations
from harness.subject.model import SubjectModel, parse_hook


class CorrelationAccumulator:
    """Streaming Pearson correlation between two sets of variables (x: n_x columns, y: n_y columns).

    State (all float64): token count, column means, sums of squared deviations
    from the mean, and the co-moment matrix sum((x - mean_x)(y - mean_y)) [n_x, n_y].

    Each batch is centred on its own (rounded) column means and its co-moment
    is computed with one matmul, then folded into the totals with the exact
    pairwise update of Chan, Golub and LeVeque. For float32 inputs on the CPU
    that matmul runs in float32 (about 2.5x faster than float64 there); the
    batch-centred values it multiplies are small, so the correlations agree
    with float64 to about 1e-6. Float64 inputs, or inputs on an accelerator,
    use a float64 matmul. The state starts on ``device`` and moves to the device of the first batch.
    """

    def __init__(self, n_x: int, n_y: int, device: str | torch.device = "cpu") -> None:
        self.n_x = n_x
        self.n_y = n_y
        self._n = 0
        self._mean_x = torch.zeros(n_x, dtype=torch.float64, device=device)
        self._mean_y = torch.zeros(n_y, dtype=torch.float64, device=device)
        self._m2_x = torch.zeros(n_x, dtype=torch.float64, device=device)
        self._m2_y = torch.zeros(n_y, dtype=torch.float64, device=device)
        self._comoment = torch.zeros(n_x, n_y, dtype=torch.float64, device=device)

    @property
    def n(self) -> int:
        """Return the number of tokens accumulated so far."""
        return self._n

    @property
    def device(self) -> torch.device:
        """Return the device the accumulated state lives on."""
        return self._comoment.device

    def to(self, device: str | torch.device) -> "CorrelationAccumulator":
        """Return this accumulator with its state moved to ``device`` (in place; e.g. to the CPU to send it elsewhere)."""
        self._move_to(torch.device(device))
        return self

    def _move_to(self, device: torch.device) -> None:
        for name in ("_mean_x", "_mean_y", "_m2_x", "_m2_y", "_comoment"):
            setattr(self, name, getattr(self, name).to(device))

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add ``B`` tokens: x [B, n_x] and y [B, n_y] (row b of both is the same token)."""
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != self.n_x or y.shape[1] != self.n_y:
            raise ValueError(f"expected x [B, {self.n_x}] and y [B, {self.n_y}], got {tuple(x.shape)} and {tuple(y.shape)}")
        batch = x.shape[0]
        if batch == 0:
            return
        if self._n == 0:
            self._move_to(x.device)
        x, y = x.to(self.device), y.to(self.device)
        on_cpu_float32 = x.dtype == torch.float32 and y.dtype == torch.float32 and x.device.type == "cpu"
        dtype = torch.float32 if on_cpu_float32 else torch.float64
        x, y = x.to(dtype), y.to(dtype)

        # Centre on the rounded batch means; s_* (the sums of the centred values) correct for that rounding exactly.
        rounded_mean_x, rounded_mean_y = x.mean(0), y.mean(0)
        x_centred = x - rounded_mean_x
        y_centred = y - rounded_mean_y
        s_x = x_centred.sum(0).double()
        s_y = y_centred.sum(0).double()
        batch_mean_x = rounded_mean_x.double() + s_x / batch
        batch_mean_y = rounded_mean_y.double() + s_y / batch
        batch_m2_x = (x_centred * x_centred).sum(0).double() - s_x * s_x / batch
        batch_m2_y = (y_centred * y_centred).sum(0).double() - s_y * s_y / batch

        total = self._n + batch
        weight = self._n * batch / total
        delta_x = batch_mean_x - self._mean_x
        delta_y = batch_mean_y - self._mean_y
        self._comoment += x_centred.T @ y_centred
        self._comoment.addr_(s_x, s_y, alpha=-1.0 / batch)
        self._comoment.addr_(delta_x, delta_y, alpha=weight)
        self._m2_x += batch_m2_x + delta_x * delta_x * weight
        self._m2_y += batch_m2_y + delta_y * delta_y * weight
        self._mean_x += delta_x * (batch / total)
        self._mean_y += delta_y * (batch / total)
        self._n = total

    def merge(self, other: "CorrelationAccumulator") -> None:
        """Fold in ``other``, accumulated over a disjoint set of tokens (exact: as if one had seen them all)."""
        if (other.n_x, other.n_y) != (self.n_x, self.n_y):
            raise ValueError(f"cannot merge a {other.n_x}x{other.n_y} accumulator into a {self.n_x}x{self.n_y} one")
        if other.n == 0:
            return
        if self._n == 0:
            self._move_to(other.device)
        total = self._n + other.n
        weight = self._n * other.n / total
        delta_x = other._mean_x.to(self.device) - self._mean_x
        delta_y = other._mean_y.to(self.device) - self._mean_y
        self._comoment += other._comoment.to(self.device)
        self._comoment.addr_(delta_x, delta_y, alpha=weight)
        self._m2_x += other._m2_x.to(self.device) + delta_x * delta_x * weight
        self._m2_y += other._m2_y.to(self.device) + delta_y * delta_y * weight
        self._mean_x += delta_x * (other.n / total)
        self._mean_y += delta_y * (other.n / total)
        self._n = total

    def pearson(self) -> np.ndarray:
        """Return the float64 correlation matrix [n_x, n_y]; NaN where either variable is constant (or n < 2)."""
        # A constant column has a sum of squared deviations of exactly 0: its batch-centred values all equal
        # c - rounded mean, a number of a few significant bits whose sums and squares are exact.
        scale_x = np.sqrt(np.clip(self._m2_x.cpu().numpy(), 0.0, None))
        scale_y = np.sqrt(np.clip(self._m2_y.cpu().numpy(), 0.0, None))
        denominator = np.outer(scale_x, scale_y)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(denominator > 0, self._comoment.cpu().numpy() / denominator, np.nan)
        return np.clip(r, -1.0, 1.0)


def best_matches(pearson: np.ndarray, names: list[str]) -> list[tuple[str | None, float | None]]:
    """Per row: (name of the column with the largest correlation, that correlation); (None, None) for an all-NaN row."""
    if pearson.ndim != 2 or pearson.shape[1] != len(names):
        raise ValueError(f"{len(names)} names for a correlation matrix of shape {pearson.shape}")
    if not names:
        return [(None, None)] * pearson.shape[0]
    missing = np.isnan(pearson)
    best = np.where(missing, -np.inf, pearson).argmax(axis=1)
    matches: list[tuple[str | None, float | None]] = []
    for row, column in enumerate(best):
        if missing[row].all():
            matches.append((None, None))
        else:
            matches.append((names[column], float(pearson[row, column])))
    return matches


def check_correlation_inputs(
    subject: SubjectModel, chunks: np.ndarray, chunk_ids: list[int], features: list[tuple[Dictionary, list[int]]], batch_size: int
) -> int:
    """Raise MonoscopeError for anything that would fail or mislead mid-run; return L, the block the dictionaries read."""
    if not features or not any(indices for _, indices in features):
        raise MonoscopeError("no dictionary features to correlate", "select at least one feature")
    hooks = sorted({dictionary.hook_name for dictionary, _ in features})
    if len(hooks) > 1:
        raise MonoscopeError(
            f"the dictionaries read different hooks ({', '.join(hooks)})",
            "correlate the dictionaries of each hook in a separate run",
        )
    point = parse_hook(hooks[0], subject.n_layers)
    if point.site != "resid_post":
        raise MonoscopeError(
            f"feature–neuron correlation needs dictionaries on a residual-stream hook, not {hooks[0]!r}",
            "use dictionaries reading blocks.L.hook_resid_post",
        )
    for dictionary, indices in features:
        if dictionary.d_in != subject.d_model:
            raise MonoscopeError(
                f"dictionary {dictionary.name!r} has d_in={dictionary.d_in} but {hooks[0]} has width {subject.d_model}",
                "use a dictionary trained on this model",
            )
        bad = [index for index in indices if not 0 <= index < dictionary.d_sae]
        if bad:
            raise MonoscopeError(
                f"feature indices {bad[:5]} are out of range for dictionary {dictionary.name!r}",
                f"it has features 0..{dictionary.d_sae - 1}",
            )
    if not chunk_ids:
        raise MonoscopeError("no chunks to correlate over", "give at least one chunk id")
    bad_chunks = [chunk for chunk in chunk_ids if not 0 <= chunk < len(chunks)]
    if bad_chunks:
        raise MonoscopeError(f"chunk ids {bad_chunks[:5]} are out of range", f"the corpus has chunks 0..{len(chunks) - 1}")
    if batch_size < 1:
        raise MonoscopeError(f"batch size {batch_size} is not positive", "use a batch size of at least 1")
    return point.layer


def _selected_encoder(dictionary: Dictionary, indices: list[int]) -> tuple[Dictionary, list[int] | None]:
    """Return (dictionary to encode with, columns of its output to keep; None: all of them).

    ReLU, JumpReLU and gated features depend only on their own encoder column, so the
    encoder is cut down to the selected features; TopK (whose features compete)
    and identity dictionaries encode in full.
    """
    if dictionary.architecture not in ("relu", "jumprelu", "gated"):
        return dictionary, indices
    select = torch.tensor(indices, dtype=torch.long, device=dictionary.W_enc.device)
    per_unit = {name: getattr(dictionary, name) for name in ("b_enc", "threshold", "b_gate", "b_mag", "r_mag")}
    reduced = replace(
        dictionary,
        d_sae=len(indices),
        W_enc=dictionary.W_enc[:, select],
        W_dec=dictionary.W_dec[select],
        **{name: None if value is None else value[select] for name, value in per_unit.items()},
    )
    return reduced, None


@dataclass
class CorrelationSums:
    """The sufficient statistics of a correlation pass over some tokens: they merge exactly over disjoint tokens."""

    neurons: CorrelationAccumulator  # features × every MLP neuron of blocks 0..L
    residual: CorrelationAccumulator  # features × every residual basis direction at the hook
    fire_count: torch.Tensor  # [features] tokens where each feature is positive

    def merge(self, other: "CorrelationSums") -> None:
        """Fold in ``other``, accumulated over a disjoint set of tokens."""
        self.neurons.merge(other.neurons)
        self.residual.merge(other.residual)
        self.fire_count += other.fire_count.to(self.fire_count.device)

    def to(self, device: str | torch.device) -> "CorrelationSums":
        """Return these sums with every tensor on ``device``."""
        return CorrelationSums(self.neurons.to(device), self.residual.to(device), self.fire_count.to(device))


def accumulate_correlations(
    subject: SubjectModel,
    chunks: np.ndarray,
    chunk_ids: list[int],
    features: list[tuple[Dictionary, list[int]]],
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> CorrelationSums:
    """Return the correlation sums of the selected features over the tokens of ``chunk_ids`` (see ``correlate_features``)."""
    layer = check_correlation_inputs(subject, chunks, chunk_ids, features, batch_size)
    hook = features[0][0].hook_name
    mlp_hooks = [f"blocks.{block}.mlp.hook_post" for block in range(layer + 1)]
    encoders = []
    for dictionary, indices in features:
        if indices:
            reduced, keep = _selected_encoder(dictionary, indices)
            encoders.append((dictionary_to(reduced, subject.device), keep))
    n_features = sum(len(indices) for _, indices in features)
    sums = CorrelationSums(
        CorrelationAccumulator(n_features, len(mlp_hooks) * subject.d_mlp, subject.device),
        CorrelationAccumulator(n_features, subject.d_model, subject.device),
        torch.zeros(n_features, dtype=torch.long, device=subject.device),
    )
    for batch in stream_activations(subject, chunks, mlp_hooks + [hook], chunk_ids, batch_size):
        resid = batch.activations[hook].reshape(-1, subject.d_model)
        activations = []
        for dictionary, keep in encoders:
            encoded = encode(dictionary, resid)
            activations.append(encoded if keep is None else encoded[:, keep])
        x = torch.cat(activations, dim=1)
        y = torch.cat([batch.activations[name].reshape(-1, subject.d_mlp) for name in mlp_hooks], dim=1)
        sums.neurons.update(x, y)
        sums.residual.update(x, resid)
        sums.fire_count += (x > 0).sum(0)
        if progress is not None:
            progress(len(batch.chunk_ids))
    return sums


def correlation_records(
    sums: CorrelationSums, features: list[tuple[Dictionary, list[int]]], layer: int, d_mlp: int, d_model: int
) -> list[FeatureCorrelation]:
    """Return one FeatureCorrelation per selected feature (input order): its best neuron and residual direction."""
    neuron_names = [f"mlp.{block}/{i}" for block in range(layer + 1) for i in range(d_mlp)]
    residual_names = [f"resid.{layer}/{i}" for i in range(d_model)]
    neuron_best = best_matches(sums.neurons.pearson(), neuron_names)
    residual_best = best_matches(sums.residual.pearson(), residual_names)
    units = [(dictionary, index) for dictionary, indices in features for index in indices]
    return [
        FeatureCorrelation(
            unit=dictionary.unit_name(index),
            dictionary=dictionary.name,
            n_tokens=sums.neurons.n,
            fire_count=int(sums.fire_count[row]),
            max_neuron_correlation=neuron_best[row][1],
            neuron=neuron_best[row][0],
            max_residual_correlation=residual_best[row][1],
            residual_direction=residual_best[row][0],
        )
        for row, (dictionary, index) in enumerate(units)
    ]


def correlate_features(
    subject: SubjectModel,
    chunks: np.ndarray,
    chunk_ids: list[int],
    features: list[tuple[Dictionary, list[int]]],
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> list[FeatureCorrelation]:
    """Return one FeatureCorrelation per selected feature (input order) over the tokens of ``chunk_ids``.

    All dictionaries must read the same hook ``blocks.L.hook_resid_post``; each
    feature is correlated with every MLP neuron of blocks 0..L (``mlp.l/i``)
    and every residual basis direction at the hook (``resid.L/i``), in one
    forward pass on the subject model's device, where the encoders and the
    accumulators live too. ``progress`` is called with the number of chunks done
    after each batch.
    """
    layer = check_correlation_inputs(subject, chunks, chunk_ids, features, batch_size)
    sums = accumulate_correlations(subject, chunks, chunk_ids, features, batch_size, progress)
    return correlation_records(sums, features, layer, subject.d_mlp, subject.d_model)
