"""Small helpers shared by the result tables: fixed-column frames, missing values, means with bootstrap intervals."""

import math
from typing import Any

import numpy as np
import pandas as pd

from results.summary import bootstrap_interval


def frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """Return a DataFrame of ``rows`` with exactly ``columns`` (an empty one keeps the columns)."""
    return pd.DataFrame(rows, columns=columns)


def missing_as_none(value: Any) -> Any:
    """Return ``value`` with NaN (and pandas' missing markers) as None."""
    if value is None:
        return None
    if isinstance(value, float | np.floating) and math.isnan(value):
        return None
    if value is pd.NA:
        return None
    return value


def defined(values: pd.Series) -> np.ndarray:
    """Return the non-missing values of a column as a float array."""
    return pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)


def unit_order(unit: str) -> tuple[str, int, str]:
    """Return a sort key for a unit name "prefix/index" that orders indexes numerically."""
    prefix, _, index = unit.rpartition("/")
    return (prefix, int(index), unit) if index.isdigit() else (prefix, -1, unit)


def mean_and_interval(values: np.ndarray, seed: int) -> tuple[float | None, float | None, float | None]:
    """Return the mean of ``values`` (None when empty) and its 95% bootstrap interval over them (None below 2 values)."""
    if values.size == 0:
        return None, None, None
    if values.size < 2:
        return float(values.mean()), None, None
    low, high = bootstrap_interval(values, seed)
    return float(values.mean()), low, high
