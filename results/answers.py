"""The report's opening: the answers to the three questions a run is made for, then the controls on the judge.

In: the run directory's tables (``results/tables/*.csv``, as the results stage writes them), its
plots and its manifest; out: HTML sections. Every sentence comes from ``results.sentences``,
written from the measured numbers; a table that is missing or lacks a column makes its sentence
say so instead.
"""

from pathlib import Path
from typing import Any

import pandas as pd

from results.comparisons import ALL_FEATURES, NEURON_SET
from results.frames import missing_as_none
from results.page import escape, figure
from results.sentences import (
    NOT_RESOLVED,
    auc_chance_sentence,
    control_sentence,
    dictionary_sentence,
    neuron_sentence,
    pooled_control_sentence,
    pooled_neuron_sentence,
    size_sentence,
    specificity_sentence,
    tally_sentence,
)
from results.tables import ALL_UNITS, CONTROLS, OPTIONAL_METRICS, SOURCES, load_table, table_path

ANSWER_METRICS = ("rubric", "pearson")
SIZE_METRICS = ("rubric", "pearson", "rubric_auc")
CONTROL_METRICS = ("rubric", "pearson", "rubric_auc")
NEEDED = {
    "sets": ("unit_set", "kind", "d_sae", "n_units", "rubric_mean", "pearson_mean", "rubric_auc_mean"),
    "set_means": ("unit_set", "metric", "source", "n_units", "n_missing", "mean", "ci_low", "ci_high", "missing_reasons"),
    "compare": ("feature_set", "metric", "n_features", "n_neurons", "difference", "ci_low", "ci_high"),
    "sizes": ("metric", "smaller_set", "larger_set", "smaller_mean", "larger_mean", "difference", "ci_low", "ci_high"),
    "controls": ("unit_set", "metric", "control", "difference", "ci_low", "ci_high", "n_units"),
}
Rows = list[dict[str, Any]]


def table_rows(df: pd.DataFrame) -> Rows:
    """Return a table's rows as dicts with None for every missing value."""
    return [{key: missing_as_none(value) for key, value in row.items()} for row in df.astype(object).to_dict("records")]


def read_answer_tables(run_dir: Path) -> dict[str, Rows | str]:
    """Return {table: rows (None for a missing value)} of the tables the answers read, or why one cannot be read."""
    tables: dict[str, Rows | str] = {}
    for name, columns in NEEDED.items():
        path = table_path(run_dir, name)
        if not path.exists():
            tables[name] = f"results/tables/{name}.csv is missing"
            continue
        df = load_table(run_dir, name)
        absent = [column for column in columns if column not in df.columns]
        if absent:
            tables[name] = f"results/tables/{name}.csv has no column {', '.join(absent)} (written by an older version?)"
            continue
        tables[name] = table_rows(df)
    return tables


def _unavailable(tables: dict[str, Rows | str], *names: str) -> str | None:
    """Return why one of the tables ``names`` cannot be read, or None when all can."""
    reasons = [reason for name in names if isinstance(reason := tables[name], str)]
    return "Not measured: " + "; ".join(reasons) + "." if reasons else None


def _index(rows: Rows, *keys: str) -> dict[tuple, dict[str, Any]]:
    """Return the rows keyed by the values of ``keys``."""
    return {tuple(row[key] for key in keys): row for row in rows}


def _answer(question_id: str, question: str, sentences: list[str], figures: list[str]) -> str:
    """Return one answer: the question, its first sentence as the answer, the rest as a list, then its figures."""
    parts = [f"<h3 id='{question_id}'>{escape(question)}</h3>"]
    if sentences:
        parts.append(f"<p class='answer'>{escape(sentences[0])}</p>")
    if sentences[1:]:
        parts.append("<ul class='answer-details'>" + "".join(f"<li>{escape(text)}</li>" for text in sentences[1:]) + "</ul>")
    return "".join(parts + figures)


def neuron_answer(tables: dict[str, Rows | str]) -> list[str]:
    """Return the sentences of question 1: the features of each dictionary versus the neuron set, on real scores."""
    missing = _unavailable(tables, "sets", "compare")
    if missing:
        return [missing]
    sets, compare = _index(tables["sets"], "unit_set"), _index(tables["compare"], "feature_set", "metric")  # type: ignore[arg-type]
    if (NEURON_SET,) not in sets:
        return ["No neuron set in this run: features cannot be compared with neurons."]
    feature_sets = [name for (name, metric) in compare if metric == ANSWER_METRICS[0] and name != ALL_FEATURES]
    if not feature_sets:
        return ["No dictionary features in this run: only the neuron set was evaluated."]
    pooled = {metric: compare[(ALL_FEATURES, metric)] for metric in ANSWER_METRICS if (ALL_FEATURES, metric) in compare}
    sentences = [pooled_neuron_sentence(pooled, len(feature_sets))] if pooled else []
    for name in feature_sets:
        for metric in ANSWER_METRICS:
            if (name, metric) in compare:
                sentences.append(neuron_sentence(compare[(name, metric)], sets.get((name,)), sets[(NEURON_SET,)]))
    return sentences


def size_answer(tables: dict[str, Rows | str]) -> list[str]:
    """Return the sentences of question 2: the largest versus the smallest dictionary, then each dictionary's numbers."""
    missing = _unavailable(tables, "sets", "sizes")
    if missing:
        return [missing]
    dictionaries = [row for row in tables["sets"] if row["d_sae"] is not None]  # type: ignore[union-attr]
    if len(dictionaries) < 2:
        names = ", ".join(f"{row['unit_set']} ({int(row['d_sae'])} features)" for row in dictionaries)
        return [f"Only one dictionary of known size was evaluated ({names}): there is no size comparison." if names else
                "No dictionary of known size was evaluated in this run: there is no size comparison."]  # fmt: skip
    smallest, largest = dictionaries[0]["unit_set"], dictionaries[-1]["unit_set"]
    sizes = _index(tables["sizes"], "metric", "smaller_set", "larger_set")  # type: ignore[arg-type]
    headline = {metric: sizes[(metric, smallest, largest)] for metric in SIZE_METRICS if (metric, smallest, largest) in sizes}
    sentences = (
        [size_sentence(headline)] if headline else ["Not measured: sizes.csv has no row for the largest versus the smallest dictionary."]
    )
    sentences += [dictionary_sentence(row, SIZE_METRICS) for row in dictionaries]
    if len(dictionaries) > 2:
        sentences.append("Every pair of dictionaries, with the difference and its interval, is in the sizes table below.")
    return sentences


def specificity_answer(tables: dict[str, Rows | str]) -> list[str]:
    """Return the sentences of question 3: per unit set, the mean per-unit Spearman of rubric score with activation level."""
    missing = _unavailable(tables, "set_means")
    if missing:
        return [missing]
    rows = [row for row in tables["set_means"] if row["metric"] == "level_spearman" and row["source"] == "real"]  # type: ignore[union-attr]
    if not rows:
        return ["No unit set has real-explanation judgments: specificity across activation levels is not measured."]
    return [specificity_sentence(row) for row in rows]


def answers_section(tables: dict[str, Rows | str], plots: dict[str, Path]) -> tuple[str, set[str]]:
    """Return the Answers section and the names of the plots it shows (``plots``: file name → path)."""
    shown: set[str] = set()

    def figures(names: list[str], caption: str) -> list[str]:
        present = [name for name in names if name in plots]
        shown.update(present)
        return [figure(plots[name], caption.format(name=Path(name).stem.removeprefix("specificity_"))) for name in present]

    unit_sets = [row["unit_set"] for row in tables["sets"]] if not isinstance(tables["sets"], str) else []
    parts = [
        "<section id='answers'><h2>Answers</h2><p class='muted'>Each sentence is written from this run's measured numbers. "
        "Means are over units; 95% CI: percentile bootstrap interval over units (paired where the same units are compared). "
        f"A difference whose interval contains 0 (an AUC whose interval contains 0.5) is called {NOT_RESOLVED}.</p>",
        _answer(
            "answer-neurons",
            "1. Are features more interpretable than neurons?",
            neuron_answer(tables),
            figures(["features_vs_neurons.png"], "Per-unit real-explanation scores of each unit set."),
        ),
        _answer(
            "answer-sizes",
            "2. How do the dictionary sizes compare?",
            size_answer(tables),
            figures(["metrics_vs_size.png"], "Dictionary statistics and real-explanation scores against dictionary size."),
        ),
        _answer(
            "answer-specificity",
            "3. How specific are explanations across activation levels?",
            specificity_answer(tables),
            figures([f"specificity_{name}.png" for name in unit_sets], "Specificity of {name}: rubric score against activation level."),
        ),
        "</section>",
    ]
    return "".join(parts), shown


def control_answer(tables: dict[str, Rows | str]) -> list[str]:
    """Return the controls' sentences: a tally per metric, the judge's AUC against chance, then each set's real versus controls."""
    missing = _unavailable(tables, "set_means", "controls")
    if missing:
        return [missing]
    means = _index(tables["set_means"], "unit_set", "metric", "source")  # type: ignore[arg-type]
    controls = _index(tables["controls"], "unit_set", "metric", "control")  # type: ignore[arg-type]
    unit_sets = list(dict.fromkeys(row["unit_set"] for row in tables["set_means"]))  # type: ignore[union-attr]
    if not unit_sets:
        return ["No unit set was scored: there are no controls to compare."]
    per_set = [controls[key] for key in controls if key[1:] == ("rubric", "shuffled") and key[0] != ALL_UNITS]
    scored = [metric for metric in OPTIONAL_METRICS if any(key[1] == metric for key in means)]  # detection, fuzzing, …
    pooled_keys = [(ALL_UNITS, metric, "shuffled") for metric in ("rubric", "pearson", *scored)]
    pooled = [pooled_control_sentence(key[1], controls[key]) for key in pooled_keys if key in controls]
    sentences = [" ".join([tally_sentence(per_set, "rubric", "shuffled"), *pooled])]
    sentences += [
        auc_chance_sentence(name, means[(name, "rubric_auc", "real")]) for name in unit_sets if (name, "rubric_auc", "real") in means
    ]
    for name in unit_sets:
        for metric in (*CONTROL_METRICS, *scored):
            by_source = {source: means[(name, metric, source)] for source in SOURCES if (name, metric, source) in means}
            paired = {control: controls[(name, metric, control)] for control in CONTROLS if (name, metric, control) in controls}
            sentences.append(control_sentence(name, metric, by_source, paired))
    return sentences


def controls_section(tables: dict[str, Rows | str], notes: str) -> str:
    """Return the Controls section: how far the judge can be trusted, then ``notes`` (how the scores are made)."""
    sentences = control_answer(tables)
    details = "".join(f"<li>{escape(text)}</li>" for text in sentences[1:])
    return (
        "<section id='controls'><h2>Controls: how far the judge can be trusted</h2>"
        "<p class='muted'>The same judge and simulator score each unit's real explanation, another unit's explanation "
        "(shuffled) and the token-statistics explanation; a judge worth trusting scores real explanations above shuffled ones "
        "and ranks firing contexts above non-firing ones (AUC above 0.5).</p>"
        f"<p class='answer'>{escape(sentences[0])}</p><ul class='answer-details'>{details}</ul>{notes}</section>"
    )
