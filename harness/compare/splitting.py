"""Feature splitting across dictionary sizes: a small dictionary's features among a larger one's.

Two features are compared by the cosine similarity of their decoder rows
(W_dec [d_sae, d_in]): the direction each writes back into the activation.
"""

import torch

from harness.dictionaries.dictionary import Dictionary
from harness.errors import MonoscopeError
from harness.records import NearestFeatures

_ROWS_PER_BLOCK = 1024  # small-dictionary rows per matmul, so the cosine block stays [1024, d_sae of large]


def _unit_decoder(dictionary: Dictionary, device: torch.device) -> torch.Tensor:
    """Return the decoder rows of ``dictionary`` on ``device``, scaled to unit norm (a zero row stays zero)."""
    if dictionary.W_dec is None:
        raise MonoscopeError(
            f"dictionary {dictionary.name!r} has no decoder", "compare dictionaries with weights (not neurons or residual basis)"
        )
    decoder = dictionary.W_dec.to(device).float()
    return decoder / decoder.norm(dim=1, keepdim=True).clamp_min(1e-12)


def nearest_features(
    small: Dictionary, units: list[int], large: Dictionary, k: int = 3, device: str | torch.device | None = None
) -> list[NearestFeatures]:
    """Return, per unit of ``small`` (in order), the ``k`` features of ``large`` with the most similar decoder rows.

    The cosines are computed on ``device`` (default: where ``large``'s decoder is).
    """
    if device is None:
        device = large.W_dec.device if large.W_dec is not None else "cpu"
    small_decoder, large_decoder = _unit_decoder(small, torch.device(device)), _unit_decoder(large, torch.device(device))
    if small_decoder.shape[1] != large_decoder.shape[1]:
        raise MonoscopeError(
            f"dictionaries {small.name!r} (d_in={small_decoder.shape[1]}) and {large.name!r} (d_in={large_decoder.shape[1]}) "
            "write to spaces of different widths",
            "compare dictionaries trained on the same hook of the same model",
        )
    bad = [unit for unit in units if not 0 <= unit < small_decoder.shape[0]]
    if bad:
        raise MonoscopeError(
            f"feature indices {bad[:5]} are out of range for {small.name!r}", f"it has features 0..{small_decoder.shape[0] - 1}"
        )
    if k < 1:
        raise MonoscopeError(f"k={k} nearest features asked for", "ask for at least one")
    k = min(k, large_decoder.shape[0])

    results: list[NearestFeatures] = []
    for start in range(0, len(units), _ROWS_PER_BLOCK):
        block = units[start : start + _ROWS_PER_BLOCK]
        cosine = small_decoder[torch.tensor(block, dtype=torch.long, device=small_decoder.device)] @ large_decoder.T
        values, indices = cosine.topk(k, dim=1)
        for unit, row_values, row_indices in zip(block, values.tolist(), indices.tolist(), strict=True):
            results.append(
                NearestFeatures(
                    unit=small.unit_name(unit),
                    dictionary=small.name,
                    other_dictionary=large.name,
                    nearest=tuple(large.unit_name(index) for index in row_indices),
                    cosine=tuple(row_values),
                )
            )
    return results
