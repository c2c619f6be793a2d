"""Shared pieces of the benchmarks: the registry, the repository root on sys.path, a random dictionary."""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict]] = {}


def benchmark(function: Callable[[argparse.Namespace], dict]) -> Callable[[argparse.Namespace], dict]:
    """Register a benchmark under its function name; return it unchanged."""
    BENCHMARKS[function.__name__] = function
    return function


def random_dictionary(d_in: int, d_sae: int, hook: str):
    """Return a seeded random ReLU dictionary (unit-norm decoder rows, encoder = decoder transposed)."""
    from harness.dictionaries.dictionary import Dictionary

    generator = torch.Generator().manual_seed(0)
    W_dec = torch.nn.functional.normalize(torch.randn(d_sae, d_in, generator=generator), dim=-1)
    return Dictionary(
        name="bench",
        hook_name=hook,
        architecture="relu",
        d_in=d_in,
        d_sae=d_sae,
        W_enc=W_dec.t().contiguous(),
        b_enc=torch.full((d_sae,), -0.5),
        W_dec=W_dec,
        b_dec=torch.zeros(d_in),
    )
