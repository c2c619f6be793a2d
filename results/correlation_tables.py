"""Feature–neuron correlation tables: each feature's strongest neuron and residual-direction correlations, per dictionary."""

import numpy as np
import pandas as pd

from harness.records import FeatureCorrelation
from results.frames import defined, frame, unit_order
from results.store import latest_by_key

CORRELATION_COLUMNS = [
    "unit",
    "dictionary",
    "n_tokens",
    "fire_count",
    "max_neuron_correlation",
    "neuron",
    "max_residual_correlation",
    "residual_direction",
]
CORRELATION_SUMMARY_COLUMNS = [
    "dictionary",
    "threshold",
    "n_features",
    "n_defined",
    "fraction_at_most_threshold",
    "median_max_correlation",
    "n_residual_defined",
    "fraction_residual_at_most_threshold",
    "median_max_residual_correlation",
]


def _dictionary_order(names: set[str], dictionary_order: list[str] | None) -> list[str]:
    """Return ``names`` in ``dictionary_order`` first, then the rest by name."""
    order = [name for name in dictionary_order or [] if name in names]
    return order + sorted(names - set(order))


def correlation_table(correlations: list[FeatureCorrelation], dictionary_order: list[str] | None = None) -> pd.DataFrame:
    """Return one row per feature with its strongest neuron and residual-direction correlations.

    Rows are grouped by dictionary (in ``dictionary_order`` when given, else by
    name) and ordered by feature index within one.
    """
    records = list(latest_by_key(correlations).values())
    rank = {name: i for i, name in enumerate(_dictionary_order({r.dictionary for r in records}, dictionary_order))}
    records.sort(key=lambda r: (rank[r.dictionary], unit_order(r.unit)))
    rows = [{column: getattr(record, column) for column in CORRELATION_COLUMNS} for record in records]
    return frame(rows, CORRELATION_COLUMNS)


def correlation_summary(
    correlations: list[FeatureCorrelation], threshold: float = 0.3, dictionary_order: list[str] | None = None
) -> pd.DataFrame:
    """Return per dictionary how many features have a defined max neuron correlation and what fraction is at most ``threshold``.

    The same for the max residual-direction correlation; fractions and medians
    are over the features where the correlation is defined (None when none is).
    """
    table = correlation_table(correlations, dictionary_order)
    rows = []
    for name in dict.fromkeys(table["dictionary"]):
        members = table[table["dictionary"] == name]
        neuron = defined(members["max_neuron_correlation"])
        residual = defined(members["max_residual_correlation"])
        rows.append(
            {
                "dictionary": name,
                "threshold": threshold,
                "n_features": len(members),
                "n_defined": int(neuron.size),
                "fraction_at_most_threshold": float(np.mean(neuron <= threshold)) if neuron.size else None,
                "median_max_correlation": float(np.median(neuron)) if neuron.size else None,
                "n_residual_defined": int(residual.size),
                "fraction_residual_at_most_threshold": float(np.mean(residual <= threshold)) if residual.size else None,
                "median_max_residual_correlation": float(np.median(residual)) if residual.size else None,
            }
        )
    return frame(rows, CORRELATION_SUMMARY_COLUMNS)
