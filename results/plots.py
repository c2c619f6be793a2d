"""Result figures as PNG files, drawn with matplotlib's Agg backend (no display, no pyplot state).

Each function takes a table from ``results.tables``, writes one PNG atomically
and returns its path. Missing values are skipped; an empty input draws axes
saying "no data".
"""

import functools
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.storage import atomic_write_bytes

SCORE_COLOURS = ("#dbe9f6", "#9ecae1", "#4292c6", "#08306b")  # light to dark: score 0 to 3
SCORE_LABELS = ("0 – unrelated", "1 – vaguely related", "2 – loosely fits", "3 – specific")
ACCURACY_STYLES = (("#d95f02", "o"), ("#7570b3", "s"))  # the detection and fuzzing lines over the specificity bars
SET_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
NEURON_COLOUR = "#d62728"
DPI = 100


Plot = TypeVar("Plot", bound=Callable[..., Path])


def _literal_text(plot: Plot) -> Plot:
    """Draw every text of ``plot`` as written: explanations and unit names may hold "$", which matplotlib
    would otherwise parse as mathtext (and raise on when unbalanced)."""

    @functools.wraps(plot)
    def drawn(*args: Any, **kwargs: Any) -> Path:
        with rc_context({"text.parse_math": False}):
            return plot(*args, **kwargs)

    return drawn  # type: ignore[return-value]


def _figure(width: float, height: float) -> Figure:
    """Return a new figure attached to an Agg canvas (``width`` inches at 100 dpi)."""
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as PNG to ``path`` atomically; return the path."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def _no_data(axes: Axes, text: str = "no data") -> None:
    """Write ``text`` in the middle of empty axes."""
    axes.text(0.5, 0.5, text, transform=axes.transAxes, ha="center", va="center", fontsize=14, color="grey")
    axes.set_xticks([])
    axes.set_yticks([])


def _numbers(values: pd.Series) -> np.ndarray:
    """Return the non-missing values of a column as floats."""
    return pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)


def _present(value: object) -> bool:
    """Return whether a table cell holds a number."""
    return value is not None and value is not pd.NA and not (isinstance(value, float) and math.isnan(value))


def _set_colours(names: list[str], neuron_set: str) -> dict[str, str]:
    """Return a colour per unit set: neurons red, the others from a fixed cycle in order."""
    colours = {}
    others = [name for name in names if name != neuron_set]
    for i, name in enumerate(others):
        colours[name] = SET_COLOURS[i % len(SET_COLOURS)]
    colours[neuron_set] = NEURON_COLOUR
    return colours


@_literal_text
def plot_specificity(table: pd.DataFrame, title: str, path: Path, accuracy: pd.DataFrame | None = None) -> Path:
    """Draw the specificity-versus-activation figure (stacked score fractions per activation level); return the path.

    ``accuracy``: rows of ``results.binary_tables.binary_level_table`` (one source) drawn over the bars as
    one line per scorer, the fraction of windows at each level it judged right, on the same 0–1 axis.
    """
    figure = _figure(8, 5)
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel("Activation level (fraction of the unit's max activation; 0 = not firing)")
    axes.set_ylabel("Fraction of held-out contexts")
    if table.empty:
        _no_data(axes)
        return _save(figure, path)
    table = table.sort_values("level")
    positions = np.arange(len(table))
    bottom = np.zeros(len(table))
    for score, (colour, label) in enumerate(zip(SCORE_COLOURS, SCORE_LABELS, strict=True)):
        heights = table[f"freq_{score}"].to_numpy(dtype=float)
        axes.bar(positions, heights, bottom=bottom, color=colour, edgecolor="white", linewidth=0.5, width=0.8, label=label)
        bottom += heights
    for position, n in zip(positions, table["n"], strict=True):
        axes.text(position, 1.02, f"n={int(n)}", ha="center", va="bottom", fontsize=8)
    at = {int(level): position for level, position in zip(table["level"], positions, strict=True)}
    for (scorer, rows), (colour, marker) in zip(
        (accuracy if accuracy is not None else pd.DataFrame(columns=["scorer"])).groupby("scorer"), ACCURACY_STYLES, strict=False
    ):
        rows = rows[rows["level"].astype(int).isin(at)].sort_values("level")
        xs = [at[int(level)] for level in rows["level"]]
        axes.plot(xs, rows["accuracy"].astype(float), color=colour, marker=marker, linewidth=1.5, label=f"{scorer} accuracy")
    axes.set_xticks(positions)
    axes.set_xticklabels([str(label) for label in table["label"]], rotation=35, ha="right", fontsize=9)
    axes.set_xlim(-0.6, len(table) - 0.4)
    axes.set_ylim(0, 1.12)
    axes.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    handles, labels = axes.get_legend_handles_labels()
    title = "Rubric score" if len(handles) == len(SCORE_LABELS) else "Rubric score; lines: fraction right"
    axes.legend(handles[::-1], labels[::-1], title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    figure.subplots_adjust(left=0.09, right=0.76, bottom=0.2, top=0.9)  # fixed margins: tight_layout costs as much as drawing
    return _save(figure, path)


def _set_names(unit_table_df: pd.DataFrame, neuron_set: str) -> list[str]:
    """Return the unit sets of a unit table: feature sets by set size and name, then the neuron set."""
    sizes = unit_table_df.groupby("unit_set")["set_size"].max()
    features = sorted((name for name in sizes.index if name != neuron_set), key=lambda name: (sizes[name], name))
    return features + ([neuron_set] if neuron_set in sizes.index else [])


@_literal_text
def plot_score_distributions(unit_table_df: pd.DataFrame, path: Path, neuron_set: str = "neurons") -> Path:
    """Draw per-unit real rubric and Pearson scores per unit set (box plot with the units as points); return the path."""
    figure = _figure(9, 4.5)
    panels = (("rubric_real", "Mean rubric score (0–3)", (-0.1, 3.1)), ("pearson_real", "Simulation Pearson r", None))
    names = _set_names(unit_table_df, neuron_set) if not unit_table_df.empty else []
    colours = _set_colours(names, neuron_set)
    rng = np.random.default_rng(0)
    for i, (column, label, limits) in enumerate(panels):
        axes = figure.add_subplot(1, 2, i + 1)
        axes.set_title(f"{label} per unit")
        axes.set_xlabel("Unit set")
        axes.set_ylabel(label)
        groups = [(name, _numbers(unit_table_df.loc[unit_table_df["unit_set"] == name, column])) for name in names]
        groups = [(name, values) for name, values in groups if values.size]
        if not groups:
            _no_data(axes)
            continue
        positions = np.arange(len(groups))
        axes.boxplot(
            [values for _name, values in groups],
            positions=positions,
            widths=0.5,
            showfliers=False,
            medianprops={"color": "black"},
        )
        for position, (name, values) in zip(positions, groups, strict=True):
            jitter = rng.uniform(-0.15, 0.15, size=values.size)
            axes.scatter(position + jitter, values, s=14, alpha=0.7, color=colours[name], zorder=3)
        axes.set_xticks(positions)
        axes.set_xticklabels([f"{name}\n(n={values.size})" for name, values in groups], fontsize=9)
        if limits is not None:
            axes.set_ylim(*limits)
        else:
            axes.axhline(0, color="grey", linewidth=0.8, linestyle=":")
    figure.suptitle("Features versus neurons: real-explanation scores per unit")
    figure.tight_layout()
    return _save(figure, path)


@_literal_text
def plot_max_correlation(correlations_df: pd.DataFrame, path: Path, threshold: float = 0.3) -> Path:
    """Draw histograms of each feature's max correlation with any neuron, one step outline per dictionary; return the path."""
    figure = _figure(8, 5)
    axes = figure.add_subplot()
    axes.set_title("Max Pearson correlation of each feature with any MLP neuron")
    axes.set_xlabel("Max correlation with a neuron")
    axes.set_ylabel("Features")
    values = _numbers(correlations_df["max_neuron_correlation"]) if not correlations_df.empty else np.array([])
    if values.size == 0:
        _no_data(axes)
        return _save(figure, path)
    low = min(0.0, math.floor(values.min() * 10) / 10)
    bins = np.linspace(low, 1.0, int(round((1.0 - low) / 0.05)) + 1)
    names = list(dict.fromkeys(correlations_df["dictionary"]))
    for i, name in enumerate(names):
        members = _numbers(correlations_df.loc[correlations_df["dictionary"] == name, "max_neuron_correlation"])
        if members.size == 0:
            continue
        fraction = float(np.mean(members <= threshold))
        label = f"{name} (n={members.size}, {fraction:.0%} ≤ {threshold:g})"
        axes.hist(members, bins=bins, histtype="step", linewidth=1.8, color=SET_COLOURS[i % len(SET_COLOURS)], label=label)
    axes.axvline(threshold, color="black", linestyle="--", linewidth=1.2, label=f"threshold {threshold:g}")
    axes.set_xlim(bins[0], bins[-1])
    axes.legend(fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


@_literal_text
def plot_metrics_vs_size(set_table_df: pd.DataFrame, path: Path) -> Path:
    """Draw L0, variance explained, dead fraction, mean rubric and mean Pearson against dictionary size; return the path."""
    figure = _figure(10, 6.5)
    panels = (
        ("l0", "L0 (active features per token)", None),
        ("variance_explained", "Variance explained", None),
        ("dead_fraction", "Dead fraction", None),
        ("rubric_mean", "Mean rubric score (real)", ("rubric_ci_low", "rubric_ci_high")),
        ("pearson_mean", "Mean simulation Pearson r (real)", ("pearson_ci_low", "pearson_ci_high")),
    )
    dictionaries = set_table_df[set_table_df["d_sae"].notna()] if not set_table_df.empty else set_table_df
    neurons = set_table_df[set_table_df["kind"] == "neuron"] if not set_table_df.empty else set_table_df
    legend: dict[str, Any] = {}
    for i, (column, label, interval) in enumerate(panels):
        axes = figure.add_subplot(2, 3, i + 1)
        axes.set_title(label, fontsize=10)
        axes.set_xlabel("Dictionary size (features)")
        axes.set_ylabel(label.split(" (")[0])
        rows = [row for row in dictionaries.to_dict("records") if _present(row[column])]
        if not rows:
            _no_data(axes)
            continue
        sizes = np.array([float(row["d_sae"]) for row in rows])
        means = np.array([float(row[column]) for row in rows])
        axes.plot(sizes, means, marker="o", color=SET_COLOURS[0], label="dictionaries")
        if interval is not None:
            for size, mean, row in zip(sizes, means, rows, strict=True):
                if _present(row[interval[0]]) and _present(row[interval[1]]):
                    error = [[mean - float(row[interval[0]])], [float(row[interval[1]]) - mean]]
                    axes.errorbar([size], [mean], yerr=error, color=SET_COLOURS[0], capsize=4)
            for row in neurons.to_dict("records"):
                if _present(row[column]):
                    axes.axhline(float(row[column]), color=NEURON_COLOUR, linestyle="--", linewidth=1.2, label=f"{row['unit_set']} (mean)")
            for handle, text in zip(*axes.get_legend_handles_labels(), strict=True):
                legend.setdefault(text, handle)
        axes.set_xscale("log", base=2)
        axes.set_xticks(sizes)
        axes.set_xticklabels([f"{int(size)}" for size in sizes], fontsize=8)
        axes.minorticks_off()
        if len(sizes) == 1:
            axes.set_xlim(sizes[0] / 2, sizes[0] * 2)
    key = figure.add_subplot(2, 3, 6)
    key.axis("off")
    if legend:
        key.legend(list(legend.values()), list(legend), loc="center", fontsize=10, title="Error bars: 95% bootstrap CI", title_fontsize=9)
    figure.suptitle("Dictionary statistics and explanation quality against dictionary size")
    figure.tight_layout()
    return _save(figure, path)
