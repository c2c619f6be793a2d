"""The report opens with the answers, then the controls, then the tables: sentences written from the measured numbers."""

import html
import re
from pathlib import Path

import pytest

from harness.records import EvaluatedUnit, Judgment
from harness.storage import atomic_write_json
from results.build import write_results
from results.report import write_report
from results.sentences import NOT_RESOLVED, verdict
from results.store import append_records
from results.tables import load_table
from tests.test_report import build_run
from tests.test_results_tables import synthetic_records, write_run


def _text(page: str) -> str:
    """Return the page's text: tags dropped, entities unescaped, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def _section(page: str, section_id: str) -> str:
    """Return the HTML of the <section> with ``section_id``."""
    start = page.index(f"<section id='{section_id}'>")
    return page[start : page.index("</section>", start)]


def _row(run_dir: Path, table: str, **keys: str) -> dict:
    """Return the one row of ``table`` whose columns equal ``keys``."""
    df = load_table(run_dir, table)
    for column, value in keys.items():
        df = df[df[column] == value]
    assert len(df) == 1, keys
    return df.iloc[0].to_dict()


def _difference(row: dict) -> str:
    return f"{row['difference']:+.2f} (95% CI [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}])"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A run with two dictionaries and a neuron set, its tables and plots built, the report written."""
    run_dir = tmp_path_factory.mktemp("answers") / "run"
    write_run(run_dir)
    atomic_write_json(run_dir / "manifest.json", {"roles": {"judge": {"backend": "local", "answer_spelling": "0"}}})
    write_results(run_dir)
    return run_dir, write_report(run_dir).read_text(encoding="utf-8")


def test_the_page_opens_with_answers_then_controls_then_tables(full_run: tuple[Path, str]) -> None:
    _run_dir, page = full_run
    order = [page.index(marker) for marker in ("id='answers'", "id='controls'", "id='run'", "id='tables'", "id='units'")]
    assert order == sorted(order)
    assert page.index("<h1>") < page.index("<section") == page.index("<section id='answers'>")
    answers = _section(page, "answers")
    assert [answers.index(f"id='answer-{name}'") for name in ("neurons", "sizes", "specificity")] == sorted(
        answers.index(f"id='answer-{name}'") for name in ("neurons", "sizes", "specificity")
    )
    for plot in ("features_vs_neurons.png", "metrics_vs_size.png", "specificity_sae-512.png", "specificity_neurons.png"):
        assert f"<code>{plot}</code>" in answers
        assert page.count(f"<code>{plot}</code>") == 1  # shown with its answer, not again under Plots
    assert "<code>max_correlation.png</code>" in _section(page, "plots")


def test_question_one_features_versus_neurons_carries_the_compare_numbers(full_run: tuple[Path, str]) -> None:
    run_dir, page = full_run
    text = _text(_section(page, "answers"))
    rubric = _row(run_dir, "compare", feature_set="sae-512", metric="rubric")
    assert rubric["difference"] == pytest.approx(11 / 6 - 1 / 3)  # sae-512: 5/3 and 2; neurons: 2/3, 0, 1/3 (the 0 at level -1 counts)
    sets = load_table(run_dir, "sets").set_index("unit_set")
    low, high = sets.loc["neurons", "rubric_ci_low"], sets.loc["neurons", "rubric_ci_high"]
    assert f"sae-512 1.83 (95% CI [{sets.loc['sae-512', 'rubric_ci_low']:.2f}, {sets.loc['sae-512', 'rubric_ci_high']:.2f}])" in text
    assert f"over 2 units vs neurons 0.33 (95% CI [{low:.2f}, {high:.2f}]) over 3 units" in text
    # 2 units against 3: an interval over so few units claims no direction, whatever it spans
    assert f"difference {_difference(rubric)}: {NOT_RESOLVED}, 2 units are too few for an interval over units to say" in text
    pooled = _row(run_dir, "compare", feature_set="all features", metric="rubric")
    assert f"the features of the 2 dictionaries pooled minus the neurons: rubric score (0–3) {_difference(pooled)}" in text


def test_question_two_sizes_says_not_resolved_when_the_interval_contains_zero(full_run: tuple[Path, str]) -> None:
    run_dir, page = full_run
    text = _text(_section(page, "answers"))
    rubric = _row(run_dir, "sizes", metric="rubric")
    assert rubric["difference"] == pytest.approx(4 / 3 - 11 / 6)
    assert "From the smallest dictionary (sae-512, 512 features) to the largest (sae-2k, 2048 features)" in text
    assert rubric["ci_high"] < 0  # the interval excludes 0, but over 2 units per dictionary it claims nothing
    assert f"goes from 1.83 to 1.33, difference {_difference(rubric)}: {NOT_RESOLVED}, 2 units are too few" in text
    pearson = _row(run_dir, "sizes", metric="pearson")  # both dictionaries predict perfectly: difference 0, interval [0, 0]
    assert f"difference {_difference(pearson)}: {NOT_RESOLVED}" in text
    assert "sae-512 (512 features, 2 units): L0 20.0, variance explained 0.700, dead fraction 0.000" in text


def test_question_three_specificity_is_the_per_unit_spearman_over_units(full_run: tuple[Path, str]) -> None:
    run_dir, page = full_run
    text = _text(_section(page, "answers"))
    row = _row(run_dir, "set_means", unit_set="sae-512", metric="level_spearman", source="real")
    # sae-512/0 scores 3, 2, 0 at levels 9, 5, -1: rho 1; sae-512/1 scores 3, 3, 0: rho 1.5 / sqrt(3)
    assert row["mean"] == pytest.approx((1 + 1.5 / 3**0.5) / 2)
    assert (
        f"sae-512, over 2 units: the mean per-unit Spearman correlation of the real explanation's rubric score with activation "
        f"level is +0.93 (95% CI [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]): {NOT_RESOLVED}, 2 units are too few"
    ) in text
    assert "neurons, over 2 units (1 unit without a value: 1 constant rubric score)" in text  # mlp.3/2 scores 0 everywhere


def test_controls_give_paired_differences_auc_and_every_mapping(full_run: tuple[Path, str]) -> None:
    run_dir, page = full_run
    text = _text(_section(page, "controls"))
    neurons = _row(run_dir, "controls", unit_set="neurons", metric="rubric", control="shuffled")
    assert neurons["ci_low"] <= 0 <= neurons["ci_high"]
    assert f"real − shuffled, paired over 3 units: {_difference(neurons)}: {NOT_RESOLVED}, 3 units are too few" in text
    features = _row(run_dir, "controls", unit_set="sae-512", metric="rubric", control="shuffled")
    assert features["ci_low"] > 0  # excludes 0, but over 2 units
    assert f"{_difference(features)}: {NOT_RESOLVED}, 2 units are too few" in text
    assert "the 95% interval lies above 0 in 0 of 3 unit sets, below 0 in 0, and the difference is not resolved in 3" in text
    # the pooled row pairs every unit of every set: its mean difference is the unit-weighted mean of the sets'
    pooled = _row(run_dir, "controls", unit_set="all units", metric="rubric", control="shuffled")
    sets = [_row(run_dir, "controls", unit_set=name, metric="rubric", control="shuffled") for name in ("sae-512", "sae-2k", "neurons")]
    assert pooled["n_units"] == sum(row["n_units"] for row in sets)
    weighted = sum(row["difference"] * row["n_units"] for row in sets) / pooled["n_units"]
    assert pooled["difference"] == pytest.approx(weighted)
    assert pooled["ci_low"] <= pooled["difference"] <= pooled["ci_high"]
    assert f"Pooled over all {pooled['n_units']} units, rubric score (0–3), real − shuffled: {_difference(pooled)}" in text
    auc = _row(run_dir, "set_means", unit_set="neurons", metric="rubric_auc", source="real")
    assert f"mean judge AUC of the real explanation is {auc['mean']:.2f} (95% CI [{auc['ci_low']:.2f}, {auc['ci_high']:.2f}])" in text
    assert "shuffled not measured (0 units with a value)" in text  # no shuffled judgment of a non-firing context
    for mapping in ("the digit the judge answers", "Σ d·p(d)", "3 / (1 + exp(−(log P(Yes) − log P(No))))", "3 / (1 + exp(−2r))"):
        assert mapping in text
    assert "rating (used in this run)" in text and "structured (used in this run)" in text
    assert "roles.judge.answer_spelling = '0'" in text
    assert "Mann–Whitney U over n_firing · n_non_firing" in text


def test_without_neurons_question_one_says_so(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    records = synthetic_records()
    append_records(run_dir / "units.jsonl", [u for u in records["units"] if u.kind == "feature"])
    append_records(run_dir / "judgments.jsonl", records["judgments"])
    write_results(run_dir)
    text = _text(_section(write_report(run_dir).read_text(encoding="utf-8"), "answers"))
    assert "No neuron set in this run" in text
    assert "No dictionary of known size was evaluated in this run" in text  # no dictionaries.json: sizes unknown


def test_an_unresolved_auc_and_a_single_unit(tmp_path: Path) -> None:
    def judged(unit: str, context: str, activation: float, score: float) -> Judgment:
        level = 0 if activation > 0 else -1
        return Judgment(unit, f"{unit}@{context}", "top", activation, level, "real", "e", score, "yes_no", "t", "t", "p", "r")

    run_dir = tmp_path / "run"
    append_records(run_dir / "units.jsonl", [EvaluatedUnit("f/0", "f", "feature", 1, 0, 8, 0.1, 1.0)])
    append_records(run_dir / "judgments.jsonl", [judged("f/0", "a", 1.0, 2.0), judged("f/0", "b", 0.0, 2.5), judged("f/0", "c", 0.5, 1.0)])
    write_results(run_dir)
    text = _text(write_report(run_dir).read_text(encoding="utf-8"))
    # firing 2.0 and 1.0 against 2.5: AUC 0; one unit: no interval, so nothing is resolved
    assert "the mean judge AUC of the real explanation is 0.00 with no interval (fewer than 2 units): not resolved" in text
    assert "yes_no (used in this run)" in text and "This run's manifest records no answer_spelling." in text


def test_tables_from_an_older_version_are_named_not_guessed(tmp_path: Path) -> None:
    run_dir = build_run(tmp_path / "run")  # its sets.csv has none of the columns the answers read
    text = _text(_section(write_report(run_dir).read_text(encoding="utf-8"), "answers"))
    assert "Not measured: results/tables/sets.csv has no column" in text
    assert "results/tables/set_means.csv is missing" in text


@pytest.mark.parametrize(
    ("value", "low", "high", "reference", "expected"),
    [
        (0.4, 0.1, 0.7, 0.0, "+0.40 (95% CI [+0.10, +0.70]): up"),
        (-0.4, -0.7, -0.1, 0.0, "-0.40 (95% CI [-0.70, -0.10]): down"),
        (0.2, -0.1, 0.5, 0.0, "+0.20 (95% CI [-0.10, +0.50]): not resolved, the interval contains 0"),
        (0.0, 0.0, 0.0, 0.0, "+0.00 (95% CI [+0.00, +0.00]): not resolved, the interval contains 0"),
        (0.3, None, None, 0.0, "+0.30 with no interval (fewer than 2 units): not resolved"),
        (None, None, None, 0.0, "not measured"),
        (0.7, 0.45, 0.9, 0.5, "0.70 (95% CI [0.45, 0.90]): not resolved, the interval contains 0.5"),
        (0.8, 0.6, 0.9, 0.5, "0.80 (95% CI [0.60, 0.90]): up"),
    ],
)
def test_a_direction_is_claimed_only_when_the_interval_excludes_the_reference(value, low, high, reference, expected) -> None:
    assert verdict(value, low, high, "up", "down", reference) == expected
    assert verdict(value, low, high, "up", "down", reference, n=5) == expected  # 5 units per side: enough


@pytest.mark.parametrize("n", [2, 3, 4])
def test_no_direction_is_claimed_from_fewer_than_five_units(n: int) -> None:
    assert verdict(0.4, 0.1, 0.7, "up", "down", n=n) == (
        f"+0.40 (95% CI [+0.10, +0.70]): {NOT_RESOLVED}, {n} units are too few for an interval over units to say (at least 5)"
    )
    assert verdict(0.4, 0.4, 0.4, "up", "down", n=n).endswith("too few for an interval over units to say (at least 5)")
