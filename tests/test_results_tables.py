"""Result tables, figures and the results build on small hand-made records."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg

from harness.records import EvaluatedUnit, Explanation, FeatureCorrelation, Judgment, NearestFeatures, Simulation
from harness.storage import atomic_write_json
from results.build import safe_name, write_results
from results.comparisons import compare_table, size_table
from results.correlation_tables import correlation_summary, correlation_table
from results.ranking import RankScore, level_spearman, rubric_auc
from results.store import append_records
from results.tables import (
    control_table,
    level_label,
    load_table,
    set_means_table,
    set_table,
    specificity_table,
    unit_table,
    write_table,
)


def judgment(unit: str, context: str, level: int, score: float | None, source: str = "real") -> Judgment:
    return Judgment(
        unit=unit,
        context_id=f"{unit}@{context}",
        context_kind="interval",
        activation=0.0 if level < 0 else level + 0.5,
        level=level,
        source=source,
        explanation="an explanation",
        score=score,
        judge_format="rating",
        backend="test",
        model="test",
        prompt_hash="p",
        rubric_hash="r",
        failure=None if score is not None else "unparseable reply",
    )


def simulation(unit: str, context: str, predicted: tuple[float, ...] | None, source: str = "real") -> Simulation:
    return Simulation(
        unit=unit,
        context_id=f"{unit}@{context}",
        source=source,
        explanation="an explanation",
        predicted=predicted,
        actual=(0.0, 1.0, 2.0, 3.0),
        simulator_format="structured",
        backend="test",
        model="test",
        prompt_hash="p",
        failure=None if predicted is not None else "unparseable reply",
    )


# ---------------------------------------------------------------- specificity, counted by hand

HAND_JUDGMENTS = [
    judgment("sae-512/3", "c3", 0, 0.0),  # superseded by the rerun below: must not count
    judgment("sae-512/3", "c1", -1, 0.0),
    judgment("sae-512/3", "c2", -1, 1.0),
    judgment("sae-512/3", "c3", 0, 1.0),  # rerun of c3: this one wins
    judgment("sae-512/3", "c4", 0, 2.5),  # rounds half up to 3
    judgment("sae-512/3", "c5", 0, 1.4),  # rounds to 1
    judgment("sae-512/3", "c6", 9, 3.0),
    judgment("sae-512/3", "c7", 9, 3.0),
    judgment("sae-512/3", "c8", 9, 2.0),
    judgment("sae-512/3", "c9", 9, None),  # unparsed failure: excluded
    judgment("sae-512/3", "c10", 9, 0.0, source="shuffled"),  # control: excluded
    judgment("sae-512/4", "c1", 5, 2.0),  # another unit of the same set
    judgment("sae-2k/1", "c1", 5, 0.0),  # a unit of another set
]
HAND_UNITS = [
    EvaluatedUnit("sae-512/3", "sae-512", "feature", 3, 3, 512, 0.01, 4.0),
    EvaluatedUnit("sae-512/4", "sae-512", "feature", 3, 4, 512, 0.01, 4.0),
    EvaluatedUnit("sae-2k/1", "sae-2k", "feature", 3, 1, 2048, 0.01, 4.0),
]


def test_specificity_table_of_one_unit_matches_the_hand_count():
    table = specificity_table(HAND_JUDGMENTS, unit="sae-512/3")
    assert list(table["level"]) == [-1, 0, 9]
    assert list(table["label"]) == ["0", "(0.0, 0.1]", "(0.9, 1.0]"]
    assert list(table["n"]) == [2, 3, 3]
    counts = table[["count_0", "count_1", "count_2", "count_3"]].to_numpy().tolist()
    assert counts == [[1, 1, 0, 0], [0, 2, 0, 1], [0, 0, 1, 2]]
    freqs = table[["freq_0", "freq_1", "freq_2", "freq_3"]].to_numpy()
    np.testing.assert_allclose(freqs, [[1 / 2, 1 / 2, 0, 0], [0, 2 / 3, 0, 1 / 3], [0, 0, 1 / 3, 2 / 3]])
    np.testing.assert_allclose(freqs.sum(axis=1), 1.0)


def test_specificity_table_of_a_set_pools_its_units_only():
    table = specificity_table(HAND_JUDGMENTS, unit_set="sae-512", units=HAND_UNITS)
    assert list(table["level"]) == [-1, 0, 5, 9]
    assert list(table["n"]) == [2, 3, 1, 3]
    assert table.loc[table["level"] == 5, ["count_0", "count_1", "count_2", "count_3"]].to_numpy().tolist() == [[0, 0, 1, 0]]
    assert table.loc[table["level"] == 5, "label"].item() == "(0.5, 0.6]"
    everything = specificity_table(HAND_JUDGMENTS)
    assert list(everything["n"]) == [2, 3, 2, 3]
    with pytest.raises(ValueError):
        specificity_table(HAND_JUDGMENTS, unit_set="sae-512")


def test_specificity_table_without_judgments_is_empty_with_its_columns():
    table = specificity_table([judgment("sae-512/3", "c1", 2, None)])
    assert table.empty
    assert list(table.columns)[:3] == ["level", "label", "n"]
    assert level_label(-1, 10) == "0"
    assert level_label(3, 4) == "(0.75, 1.0]"


# ---------------------------------------------------------------- a small synthetic run: 2 feature sets + neurons

REAL_RUBRIC = {
    "sae-512/0": [3, 2],
    "sae-512/1": [3, 3],
    "sae-2k/0": [2, 2],
    "sae-2k/1": [3, 1],
    "mlp.3/1": [1, 0],
    "mlp.3/2": [0, 0],
    "mlp.3/3": [1, 1],
}
FEATURE_PREDICTION = (0.0, 2.0, 4.0, 6.0)  # Pearson 1 with the true activations 0..3
NEURON_PREDICTION = (3.0, 0.0, 0.0, 1.0)


def synthetic_units() -> list[EvaluatedUnit]:
    units = []
    for name in REAL_RUBRIC:
        prefix, index = name.split("/")
        if prefix == "mlp.3":
            units.append(EvaluatedUnit(name, "neurons", "neuron", 3, int(index), 1024, 0.2, 5.0))
        else:
            units.append(EvaluatedUnit(name, prefix, "feature", 3, int(index), 512 if prefix == "sae-512" else 2048, 0.01, 4.0))
    return units


def synthetic_records() -> dict[str, list]:
    judgments, simulations, explanations = [], [], []
    for name, scores in REAL_RUBRIC.items():
        for i, score in enumerate(scores):
            judgments.append(judgment(name, f"c{i}", 9 - 4 * i, float(score)))
            judgments.append(judgment(name, f"c{i}", 9 - 4 * i, 0.0, source="shuffled"))
            judgments.append(judgment(name, f"c{i}", 9 - 4 * i, 1.0, source="token_stats"))
        judgments.append(judgment(name, "z", -1, 0.0))
        prediction = NEURON_PREDICTION if name.startswith("mlp") else FEATURE_PREDICTION
        simulations.append(simulation(name, "c0", prediction))
        simulations.append(simulation(name, "c0", (1.0, 0.0, 1.0, 0.0), source="shuffled"))
        explanations.append(Explanation(name, "llm", f"text of {name}", "test", "test", "p", 10))
        explanations.append(Explanation(name, "token_stats", f"tokens of {name}", "token_stats", "none", "", 10))
    judgments.append(judgment("sae-512/0", "broken", 3, None))  # a judge failure
    simulations.append(simulation("sae-512/0", "broken", None))  # a simulator failure
    correlations = [
        FeatureCorrelation("sae-512/0", "sae-512", 100, 5, 0.2, "mlp.3/9", 0.4, "resid.3/1"),
        FeatureCorrelation("sae-512/1", "sae-512", 100, 5, 0.5, "mlp.1/2", 0.25, "resid.3/7"),
        FeatureCorrelation("sae-2k/0", "sae-2k", 100, 3, 0.1, "mlp.0/4", 0.1, "resid.2/3"),
        FeatureCorrelation("sae-2k/1", "sae-2k", 100, 0, None, None, None, None),
    ]
    neighbors = [
        NearestFeatures("sae-512/0", "sae-512", "sae-2k", ("sae-2k/7", "sae-2k/1"), (0.83, 0.5)),
        NearestFeatures("sae-512/0", "sae-512", "sae-8k", ("sae-8k/100",), (0.91,)),
        NearestFeatures("sae-2k/0", "sae-2k", "sae-512", ("sae-512/1",), (0.7,)),  # a smaller dictionary: not "larger"
    ]
    return {
        "units": synthetic_units(),
        "explanations": explanations,
        "judgments": judgments,
        "simulations": simulations,
        "correlations": correlations,
        "neighbors": neighbors,
    }


DICTIONARY_ROWS = [
    {"dictionary": "sae-2k", "d_sae": 2048, "l0": 30.0, "variance_explained": 0.8, "dead_fraction": 0.1, "dead_fraction_all_tokens": 0.05},
    {"dictionary": "sae-512", "d_sae": 512, "l0": 20.0, "variance_explained": 0.7, "dead_fraction": 0.0, "dead_fraction_all_tokens": 0.0},
]


def test_unit_table_has_one_row_per_unit_with_checkable_values():
    table = unit_table(**synthetic_records()).set_index("unit")
    assert list(table.index) == ["sae-512/0", "sae-512/1", "sae-2k/0", "sae-2k/1", "mlp.3/1", "mlp.3/2", "mlp.3/3"]
    row = table.loc["sae-512/0"]
    assert row["rubric_real"] == pytest.approx(5 / 3)  # 3, 2 and 0 on the non-firing context
    assert row["rubric_shuffled"] == pytest.approx(0.0)
    assert row["rubric_token_stats"] == pytest.approx(1.0)
    assert row["pearson_real"] == pytest.approx(1.0)
    assert row["n_judgments"] == 2 * 3 + 1 + 1
    assert row["n_failures"] == 2
    assert table.loc["sae-512/1", "n_failures"] == 0
    assert row["explanation"] == "text of sae-512/0"
    assert row["token_stats_explanation"] == "tokens of sae-512/0"
    assert row["max_neuron_correlation"] == pytest.approx(0.2)
    assert row["neuron"] == "mlp.3/9"
    assert row["nearest_larger"] == "sae-2k/7 (0.83), sae-8k/100 (0.91)"
    assert table.loc["sae-2k/0", "nearest_larger"] == ""
    assert table.loc["mlp.3/2", "rubric_real"] == pytest.approx(0.0)
    assert table.loc["mlp.3/1", "pearson_real"] < 0
    assert table.loc["mlp.3/1", "max_neuron_correlation"] is None or math.isnan(table.loc["mlp.3/1", "max_neuron_correlation"])


def test_set_table_orders_dictionaries_by_size_and_bootstraps_real_scores():
    units = unit_table(**synthetic_records())
    table = set_table(units, DICTIONARY_ROWS).set_index("unit_set")
    assert list(table.index) == ["sae-512", "sae-2k", "neurons"]
    assert table.loc["sae-512", "d_sae"] == 512
    assert pd.isna(table.loc["neurons", "d_sae"])
    assert table.loc["sae-512", "kind"] == "feature" and table.loc["neurons", "kind"] == "neuron"
    assert table.loc["sae-512", "n_units"] == 2 and table.loc["neurons", "n_units"] == 3
    expected = np.mean([5 / 3, 2.0])  # sae-512/0: 3, 2, 0; sae-512/1: 3, 3, 0
    assert table.loc["sae-512", "rubric_mean"] == pytest.approx(expected)
    assert 5 / 3 <= table.loc["sae-512", "rubric_ci_low"] <= expected <= table.loc["sae-512", "rubric_ci_high"] <= 2.0
    assert table.loc["sae-512", "pearson_mean"] == pytest.approx(1.0)
    assert table.loc["sae-512", "l0"] == 20.0


def test_compare_table_features_score_above_neurons():
    units = unit_table(**synthetic_records())
    table = compare_table(units)
    assert list(table["feature_set"].unique()) == ["sae-512", "sae-2k", "all features"]
    pooled = table[(table["feature_set"] == "all features") & (table["metric"] == "rubric")].iloc[0]
    features = units.loc[units["kind"] == "feature", "rubric_real"].to_numpy(dtype=float)
    neurons = units.loc[units["kind"] == "neuron", "rubric_real"].to_numpy(dtype=float)
    assert pooled["n_features"] == 4 and pooled["n_neurons"] == 3
    assert pooled["difference"] == pytest.approx(features.mean() - neurons.mean())
    assert pooled["difference"] > 0
    assert pooled["ci_low"] <= pooled["difference"] <= pooled["ci_high"]
    assert pooled["mannwhitney_u"] == 12.0  # every feature above every neuron
    assert 0 < pooled["p_value"] <= 1
    pearson = table[(table["feature_set"] == "sae-2k") & (table["metric"] == "pearson")].iloc[0]
    assert pearson["difference"] > 0
    assert compare_table(units, seed=0).equals(table)


def test_compare_table_without_neurons_leaves_the_test_empty():
    units = unit_table(**synthetic_records())
    table = compare_table(units[units["kind"] == "feature"])
    assert (table["n_neurons"] == 0).all()
    assert table["p_value"].isna().all() and table["difference"].isna().all()


def test_control_table_pairs_real_with_each_control():
    units = unit_table(**synthetic_records())
    table = control_table(units)
    row = table[(table["unit_set"] == "sae-512") & (table["metric"] == "rubric") & (table["control"] == "shuffled")].iloc[0]
    assert row["n_units"] == 2
    assert row["control_mean"] == pytest.approx(0.0)
    assert row["difference"] == pytest.approx(row["real"])
    token_stats = table[(table["unit_set"] == "neurons") & (table["metric"] == "pearson") & (table["control"] == "token_stats")].iloc[0]
    assert token_stats["n_units"] == 0  # no token_stats simulations


def test_correlation_tables():
    correlations = synthetic_records()["correlations"]
    table = correlation_table(correlations, dictionary_order=["sae-512", "sae-2k"])
    assert list(table["unit"]) == ["sae-512/0", "sae-512/1", "sae-2k/0", "sae-2k/1"]
    summary = correlation_summary(correlations, 0.3, dictionary_order=["sae-512", "sae-2k"]).set_index("dictionary")
    assert summary.loc["sae-512", "fraction_at_most_threshold"] == pytest.approx(0.5)
    assert summary.loc["sae-512", "median_max_correlation"] == pytest.approx(0.35)
    assert summary.loc["sae-512", "fraction_residual_at_most_threshold"] == pytest.approx(0.5)
    assert summary.loc["sae-2k", "n_features"] == 2 and summary.loc["sae-2k", "n_defined"] == 1
    assert summary.loc["sae-2k", "fraction_at_most_threshold"] == pytest.approx(1.0)


def test_write_table_round_trips(tmp_path: Path):
    table = set_table(unit_table(**synthetic_records()), DICTIONARY_ROWS)
    path = write_table(tmp_path, "sets", table)
    assert path == tmp_path / "results" / "tables" / "sets.csv"
    pd.testing.assert_frame_equal(load_table(tmp_path, "sets"), table, check_dtype=False)


# ---------------------------------------------------------------- the whole build on a run directory


def write_run(run_dir: Path) -> None:
    records = synthetic_records()
    for name, file in [
        ("units", "units.jsonl"),
        ("explanations", "explanations.jsonl"),
        ("judgments", "judgments.jsonl"),
        ("simulations", "simulations.jsonl"),
        ("correlations", "correlations.jsonl"),
        ("neighbors", "neighbors.jsonl"),
    ]:
        append_records(run_dir / file, records[name])
    atomic_write_json(run_dir / "dictionaries.json", DICTIONARY_ROWS)


TABLES = [
    "binary_levels",  # empty without detection or fuzzing records, kept so the columns are known
    "units",
    "sets",
    "set_means",
    "compare",
    "sizes",
    "controls",
    "correlations",
    "correlation_summary",
    "specificity_pooled",
    "specificity_units",
]


def _normalised(df: pd.DataFrame) -> pd.DataFrame:
    """Return ``df`` with every missing marker and empty text as None, numbers as floats where possible."""
    return df.astype(object).map(lambda v: None if v is None or v == "" or (isinstance(v, float) and math.isnan(v)) else v)


def test_write_results_writes_every_table_and_figure(tmp_path: Path):
    run_dir = tmp_path / "run"
    write_run(run_dir)
    summary = write_results(run_dir)

    tables_dir, plots_dir = run_dir / "results" / "tables", run_dir / "results" / "plots"
    assert sorted(p.stem for p in tables_dir.glob("*.csv")) == sorted(TABLES)
    expected_plots = ["specificity_sae-512", "specificity_sae-2k", "specificity_neurons"]
    expected_plots += [f"specificity_unit_{safe_name(unit)}" for unit in REAL_RUBRIC]
    expected_plots += ["features_vs_neurons", "max_correlation", "metrics_vs_size"]
    assert sorted(p.stem for p in plots_dir.glob("*.png")) == sorted(expected_plots)
    assert "specificity_unit_mlp_3_1" in expected_plots
    for stem in ["specificity_sae-512", "specificity_unit_sae-512_0", "features_vs_neurons", "max_correlation", "metrics_vs_size"]:
        image = mpimg.imread(plots_dir / f"{stem}.png")
        assert image.shape[0] >= 300 and image.shape[1] >= 700
        assert image.std() > 0.01  # something was drawn

    units = load_table(run_dir, "units")
    expected = unit_table(**synthetic_records())
    pd.testing.assert_frame_equal(_normalised(units), _normalised(expected), check_dtype=False)
    pooled = load_table(run_dir, "specificity_pooled")
    assert list(pooled.columns[:3]) == ["unit_set", "level", "label"]
    assert set(pooled["unit_set"]) == {"sae-512", "sae-2k", "neurons"}
    assert pooled["label"].iloc[0] == "0"
    per_unit = load_table(run_dir, "specificity_units")
    assert set(per_unit["unit"]) == set(REAL_RUBRIC)

    assert set(summary["tables"]) == set(TABLES)
    assert [row["unit_set"] for row in summary["sets"]] == ["sae-512", "sae-2k", "neurons"]
    assert summary["max_correlation"]["fraction_at_most_threshold"] == {"sae-512": 0.5, "sae-2k": 1.0}
    text = json.dumps(summary, allow_nan=False)  # JSON-serialisable, no NaN
    assert "NaN" not in text

    before = {name: (tables_dir / f"{name}.csv").read_bytes() for name in TABLES}
    write_results(run_dir)
    after = {name: (tables_dir / f"{name}.csv").read_bytes() for name in TABLES}
    assert before == after


def test_write_results_copes_with_features_only_and_no_correlations(tmp_path: Path):
    run_dir = tmp_path / "run"
    records = synthetic_records()
    append_records(run_dir / "units.jsonl", [u for u in records["units"] if u.kind == "feature"])
    append_records(run_dir / "judgments.jsonl", records["judgments"])
    summary = write_results(run_dir)
    assert "features_vs_neurons" not in summary["plots"]
    assert "max_correlation" not in summary["plots"]
    assert Path(summary["plots"]["metrics_vs_size"]).exists()
    assert load_table(run_dir, "correlations").empty
    sets = load_table(run_dir, "sets")
    assert list(sets["unit_set"]) == ["sae-512", "sae-2k"]
    assert sets["pearson_mean"].isna().all()


# ---------------------------------------------------------------- rank-based views: AUC and Spearman, by hand

# Unit a: firing scores 1, 2, 3 (levels 2, 5, 9) against non-firing 1, 0: U = (0.5 + 1) + 2 + 2 = 5.5 of 3 x 2 pairs.
# Score ranks (2.5, 1, 2.5, 4, 5) against level ranks (1.5, 1.5, 3, 4, 5): Spearman = 8.75 / 9.5 = 35/38.
RANKED = [
    judgment("s/a", "c1", -1, 1.0),
    judgment("s/a", "c2", -1, 0.0),
    judgment("s/a", "c3", 2, 1.0),
    judgment("s/a", "c4", 5, 2.0),
    judgment("s/a", "c5", 9, 3.0),
    judgment("s/a", "c6", 9, None),  # a failure: in no rank
    judgment("s/a", "c1", -1, 2.0, source="shuffled"),  # shuffled: firing 0, 1, 2 against 2, 1: U = 0 + 0.5 + 1.5 = 2 of 6
    judgment("s/a", "c2", -1, 1.0, source="shuffled"),
    judgment("s/a", "c3", 2, 0.0, source="shuffled"),
    judgment("s/a", "c4", 5, 1.0, source="shuffled"),
    judgment("s/a", "c5", 9, 2.0, source="shuffled"),
    judgment("s/b", "c1", 4, 2.0),  # b: firing contexts only; Spearman of (2, 3) with levels (4, 8) = 1
    judgment("s/b", "c2", 8, 3.0),
    judgment("s/c", "c1", -1, 2.0),  # c: one score everywhere: AUC 0.5 (all ties), no Spearman
    judgment("s/c", "c2", 3, 2.0),
    judgment("s/c", "c3", 6, 2.0),
    judgment("s/c", "c1", -1, 0.0, source="shuffled"),  # shuffled: 1, 1 over 0: AUC 1
    judgment("s/c", "c2", 3, 1.0, source="shuffled"),
    judgment("s/c", "c3", 6, 1.0, source="shuffled"),
    judgment("s/d", "c1", 4, None),  # d: no parsed judgment
    judgment("s/d", "c2", -1, None),
]
RANKED_UNITS = [EvaluatedUnit(f"s/{name}", "s", "feature", 3, i, 64, 0.01, 4.0) for i, name in enumerate("abcd")]


def test_rubric_auc_and_level_spearman_by_hand():
    by_unit = {name: [j for j in RANKED if j.unit == f"s/{name}" and j.source == "real"] for name in "abcd"}
    assert rubric_auc(by_unit["a"]).value == pytest.approx(5.5 / 6)
    assert rubric_auc([j for j in RANKED if j.unit == "s/a" and j.source == "shuffled"]).value == pytest.approx(2 / 6)
    assert rubric_auc(by_unit["c"]) == RankScore(0.5)
    assert rubric_auc(by_unit["b"]) == RankScore(None, "no non-firing context judged")
    assert rubric_auc([j for j in by_unit["a"] if j.level < 0]) == RankScore(None, "no firing context judged")
    assert rubric_auc(by_unit["d"]) == RankScore(None, "no parsed judgments")
    assert rubric_auc([]) == RankScore(None, "not judged")
    negative = [replace(by_unit["b"][0], activation=-0.3, level=-1), by_unit["b"][1]]  # a signed neuron below 0 does not fire
    assert rubric_auc(negative).value == pytest.approx(1.0)

    assert level_spearman(by_unit["a"]).value == pytest.approx(35 / 38)
    assert level_spearman(by_unit["b"]).value == pytest.approx(1.0)
    assert level_spearman(by_unit["c"]) == RankScore(None, "constant rubric score")
    assert level_spearman(by_unit["d"]) == RankScore(None, "no parsed judgments")
    assert level_spearman(by_unit["b"][:1]) == RankScore(None, "fewer than 2 parsed judgments")
    assert level_spearman([by_unit["b"][0], replace(by_unit["b"][1], level=4)]) == RankScore(None, "one activation level")


def test_rank_columns_per_unit_and_per_set():
    table = unit_table(RANKED_UNITS, [], RANKED, [], [], [])
    rows = table.set_index("unit")
    assert rows.loc["s/a", "rubric_auc_real"] == pytest.approx(11 / 12)
    assert rows.loc["s/a", "rubric_auc_shuffled"] == pytest.approx(1 / 3)
    assert rows.loc["s/a", "level_spearman_real"] == pytest.approx(35 / 38)
    assert pd.isna(rows.loc["s/b", "rubric_auc_real"]) and rows.loc["s/b", "rubric_auc_reason_real"] == "no non-firing context judged"
    assert rows.loc["s/b", "rubric_auc_reason_shuffled"] == "not judged"
    assert pd.isna(rows.loc["s/c", "level_spearman_real"]) and rows.loc["s/c", "level_spearman_reason_real"] == "constant rubric score"
    assert rows.loc["s/d", "rubric_auc_reason_real"] == "no parsed judgments"
    assert pd.isna(rows.loc["s/a", "rubric_auc_reason_real"]) and pd.isna(rows.loc["s/a", "level_spearman_reason_real"])

    sets = set_table(table, []).set_index("unit_set")
    # AUC defined for a (11/12) and c (1/2); a bootstrap of two values spans both
    assert sets.loc["s", "rubric_auc_mean"] == pytest.approx((11 / 12 + 1 / 2) / 2)
    assert (sets.loc["s", "rubric_auc_ci_low"], sets.loc["s", "rubric_auc_ci_high"]) == pytest.approx((0.5, 11 / 12))
    assert sets.loc["s", "level_spearman_mean"] == pytest.approx((35 / 38 + 1) / 2)  # a and b; c is constant, d unparsed
    assert (sets.loc["s", "level_spearman_ci_low"], sets.loc["s", "level_spearman_ci_high"]) == pytest.approx((35 / 38, 1.0))

    means = set_means_table(table).set_index(["metric", "source"])
    spearman = means.loc[("level_spearman", "real")]
    assert (spearman["n_units"], spearman["n_missing"]) == (2, 2)
    assert spearman["missing_reasons"] == "1 constant rubric score; 1 no parsed judgments"
    shuffled = means.loc[("rubric_auc", "shuffled")]
    assert shuffled["mean"] == pytest.approx((1 / 3 + 1) / 2) and shuffled["n_units"] == 2
    assert shuffled["missing_reasons"] == "2 not judged"
    assert list(means.loc[("rubric", "real"), ["n_units", "n_missing"]]) == [3, 1]  # d has no parsed score
    assert pd.isna(means.loc[("rubric", "real"), "missing_reasons"])  # reasons are kept for the rank metrics


def test_size_table_pairs_dictionaries_by_size():
    units = unit_table(**synthetic_records())
    sizes = size_table(set_table(units, DICTIONARY_ROWS), units)
    assert list(sizes["metric"]) == ["rubric", "pearson", "rubric_auc"]
    row = sizes.set_index("metric").loc["rubric"]
    assert (row["smaller_set"], row["larger_set"], row["smaller_d_sae"], row["larger_d_sae"]) == ("sae-512", "sae-2k", 512, 2048)
    assert row["difference"] == pytest.approx(4 / 3 - 11 / 6)  # sae-2k: 4/3, 4/3; sae-512: 5/3, 2
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((-2 / 3, -1 / 3))
    assert size_table(set_table(units[units["unit_set"] != "sae-2k"], DICTIONARY_ROWS[1:]), units).empty


def test_plots_draw_dollar_signs_as_written(tmp_path: Path) -> None:
    """An explanation or a dictionary name with "$" (shell variables, prices) must not be parsed as mathtext."""
    from results.plots import plot_metrics_vs_size, plot_specificity

    table = pd.DataFrame({"level": [0, 1], "label": ["$0", "1$"], "n": [3, 2], **{f"freq_{s}": [0.25, 0.25] for s in range(4)}})
    for title in ("sae-16/7: $$$$****;;;H&&&^^^", "fires on $PATH and costs $5", "unbalanced $x^"):
        path = plot_specificity(table, title, tmp_path / "specificity.png")
        assert path.read_bytes().startswith(b"\x89PNG")
    columns = ["l0", "variance_explained", "dead_fraction", "rubric_mean", "rubric_ci_low", "rubric_ci_high"]
    columns += ["pearson_mean", "pearson_ci_low", "pearson_ci_high"]
    sizes = pd.DataFrame(
        {"unit_set": ["$ae-16", "neur$ns"], "kind": ["feature", "neuron"], "d_sae": [16, None], **{c: [0.5, 0.4] for c in columns}}
    )
    assert plot_metrics_vs_size(sizes, tmp_path / "sizes.png").read_bytes().startswith(b"\x89PNG")


def test_the_console_summary_shows_only_the_scores_the_run_has(tmp_path: Path) -> None:
    from harness.run.reporting import log_results

    tables = tmp_path / "results" / "tables"
    tables.mkdir(parents=True)
    sets = pd.DataFrame(
        [
            {"unit_set": "sae-2k", "d_sae": 2048, "l0": 161.6, "variance_explained": 0.687, "dead_fraction": 0.05, "n_units": 8,
             "rubric_mean": None, "pearson_mean": None, "detection_mean": 0.59, "detection_ci_low": 0.44, "detection_ci_high": 0.76,
             "fuzzing_mean": None, "saebench_mean": None, "intervention_mean": None},
        ]
    )  # fmt: skip
    sets.to_csv(tables / "sets.csv", index=False)
    compare = pd.DataFrame(
        [
            {"feature_set": "sae-2k", "metric": "rubric", "feature_mean": None, "neuron_mean": None, "n_features": 0, "n_neurons": 0,
             "difference": None, "ci_low": None, "ci_high": None, "p_value": None},
            {"feature_set": "sae-2k", "metric": "detection", "feature_mean": 0.59, "neuron_mean": None, "n_features": 6, "n_neurons": 0,
             "difference": None, "ci_low": None, "ci_high": None, "p_value": None},
        ]
    )  # fmt: skip
    compare.to_csv(tables / "compare.csv", index=False)
    lines: list[str] = []
    log_results(tmp_path, lines.append)
    header, row = lines[1], lines[2]
    assert "detection (95% CI)" in header and "0.590 [0.44, 0.76]" in row
    assert not any(name in header for name in ("rubric", "simulation", "fuzzing", "SAEBench", "intervention"))
    assert not any(line.startswith("features vs neurons") for line in lines)  # no neurons: no comparison to print
    assert len(lines) == 3
