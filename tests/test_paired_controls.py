"""Paired control comparisons: a constant simulation prediction scores 0 on either side, counted per side.

An explanation whose simulation predicts one value everywhere predicts nothing. Before the rule,
such a shuffled control dropped its unit from the paired comparison, so a planted check kept 1
of 4 units; now the unit stays, the constant side scores 0, and the table says how often.
"""

import pytest

from harness.records import Simulation
from results.summary import control_summary, paired_value, unit_scores
from results.tables import control_table, unit_table
from tests.test_results_tables import RANKED, RANKED_UNITS

ACTUAL = (0.0, 0.0, 3.0, 9.0, 0.0, 1.0)


def simulation(
    unit: str, source: str, predicted: tuple[float, ...] | None, context: str = "c0", actual: tuple[float, ...] = ACTUAL
) -> Simulation:
    return Simulation(unit, f"{unit}@{context}", source, "an explanation", predicted, actual, "structured", "loopback", "m", "h")


GOOD = (0.0, 0.0, 4.0, 8.0, 1.0, 1.0)  # correlates with ACTUAL
CONSTANT = (5.0,) * 6


def planted() -> list[Simulation]:
    """Four units whose real explanations predict well and whose shuffled controls all predict a constant."""
    return [simulation(f"sae/{i}", "real", GOOD) for i in range(4)] + [simulation(f"sae/{i}", "shuffled", CONSTANT) for i in range(4)]


def test_the_planted_check_keeps_every_unit_paired() -> None:
    summary = control_summary(unit_scores([], planted()), "pearson", "shuffled")
    assert summary["n_units"] == 4  # was 1 of 4 before the rule (here 0: every control was constant)
    assert summary["control_mean"] == 0.0
    assert summary["real"] == pytest.approx(summary["difference"]) and summary["real"] > 0.9
    assert (summary["n_constant_real"], summary["n_constant_control"]) == (0, 4)


def test_the_rule_applies_alike_to_real_explanations() -> None:
    records = [simulation("u/0", "real", CONSTANT), simulation("u/0", "shuffled", GOOD)]
    summary = control_summary(unit_scores([], records), "pearson", "shuffled")
    assert (summary["n_units"], summary["real"], summary["n_constant_real"], summary["n_constant_control"]) == (1, 0.0, 1, 0)
    assert summary["difference"] < -0.9


@pytest.mark.parametrize(
    ("predicted", "actual", "expected"),
    [
        (CONSTANT, ACTUAL, 0.0),  # constant prediction: 0 in paired comparisons
        ((0.0,) * 6, ACTUAL, 0.0),  # constant zero, same rule
        (None, ACTUAL, None),  # a parse failure stays a failure: the unit is not paired
        (GOOD, (2.0,) * 6, None),  # constant truth: no correlation exists for any explanation
        (CONSTANT, (2.0,) * 6, None),  # constant truth with a constant prediction: still no pair, not (0, 0)
    ],
)
def test_paired_value_per_kind_of_missing_score(predicted, actual, expected) -> None:
    scores = unit_scores([], [simulation("u/0", "real", predicted, actual=actual)])
    assert scores[("u/0", "real")]["pearson"] is None  # the unit's own score stays undefined
    assert paired_value(scores[("u/0", "real")], "pearson") == expected
    assert paired_value(scores[("u/0", "real")], "spearman") == expected


def test_a_constant_prediction_over_several_contexts_is_constant_overall() -> None:
    records = [simulation("u/0", "shuffled", CONSTANT, "c0"), simulation("u/0", "shuffled", CONSTANT, "c1")]
    records += [simulation("u/0", "real", GOOD, "c0"), simulation("u/0", "real", GOOD[::-1], "c1")]
    scores = unit_scores([], records)
    assert scores[("u/0", "shuffled")]["constant_prediction"] and not scores[("u/0", "real")]["constant_prediction"]


def test_rubric_scores_are_untouched_by_the_rule() -> None:
    scores = {("u/0", "real"): {"rubric": 2.0, "pearson": None, "spearman": None, "constant_prediction": True}}
    assert paired_value(scores[("u/0", "real")], "rubric") == 2.0
    scores[("u/0", "real")]["rubric"] = None
    assert paired_value(scores[("u/0", "real")], "rubric") is None


def test_the_control_table_counts_constant_predictions_per_side() -> None:
    from harness.records import EvaluatedUnit

    units = [
        EvaluatedUnit(unit=f"sae/{i}", unit_set="sae", kind="feature", layer=6, index=i, set_size=64, density=0.01, max_activation=3.0)
        for i in range(4)
    ]
    table = unit_table(units, [], [], planted(), [], [])
    assert table["constant_prediction_shuffled"].tolist() == [True] * 4
    assert table["constant_prediction_real"].tolist() == [False] * 4
    row = control_table(table)
    row = row[(row["metric"] == "pearson") & (row["control"] == "shuffled")].iloc[0]
    assert (row["n_units"], row["n_constant_real"], row["n_constant_control"]) == (4, 0, 4)
    assert row["control_mean"] == 0.0


def test_rubric_auc_real_minus_shuffled_is_paired_over_units() -> None:
    """The judge AUC pairs like the other metrics: hand values of tests/test_results_tables.RANKED."""
    table = unit_table(RANKED_UNITS, [], RANKED, [], [], [])
    controls = control_table(table)
    row = controls[(controls["metric"] == "rubric_auc") & (controls["control"] == "shuffled")].iloc[0]
    assert row["n_units"] == 2  # a and c have both AUCs
    assert (row["real"], row["control_mean"]) == pytest.approx(((11 / 12 + 1 / 2) / 2, (1 / 3 + 1) / 2))
    assert row["difference"] == pytest.approx(((11 / 12 - 1 / 3) + (1 / 2 - 1)) / 2)  # +7/12 and -1/2: 1/24
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((-0.5, 7 / 12))
    assert (row["n_constant_real"], row["n_constant_control"]) == (0, 0)
