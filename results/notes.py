"""How the report's numbers are made: each judge and simulator format's mapping onto its scale, the rank metrics, the tables.

The mappings restate the docstrings of ``scorers.rubric`` and ``scorers.simulation``; the
report shows them all and marks the formats this run's records were scored with.
"""

from typing import Any

from results.page import escape

JUDGE_MAPPINGS = {
    "rating": "the digit the judge answers (0, 1, 2 or 3), parsed from a one-token reply.",
    "rating_batch": "the digit on each numbered line of one reply that rates several contexts.",
    "expected_value": (
        "the expected value of the digit, Σ d·p(d), under the probabilities of the answer tokens “0”…“3” normalised "
        "to sum to 1 (one forward pass, no sampling). The spelling of those tokens, with or without a leading space, "
        "is chosen per model at load and recorded in the manifest under answer_spelling."
    ),
    "yes_no": (
        "3 / (1 + exp(−(log P(Yes) − log P(No)))) of the judge's answer to “is the marked token (quoted in the "
        "question) an example of what the explanation describes?”: even odds give 1.5."
    ),
    "likelihood": (
        "3 / (1 + exp(−2r)), where r = [log P(explanation | marked context + cue) − log P(explanation | cue alone)] "
        "divided by the explanation's tokens: r = 0 gives 1.5."
    ),
}
SIMULATOR_MAPPINGS = {
    "structured": "the 0–10 activation per token parsed from the simulator's JSON list.",
    "expected_value": "per token, the expected value over the single-token answers 0…9, times 10/9.",
    "yes_no": "per token, 10 · P(Yes) / (P(Yes) + P(No)) of the yes/no judge's question with that token marked and quoted.",
    "yes_no_all": (
        "per token, 10 · P(Yes) / (P(Yes) + P(No)) read after the token's line in one forward pass per context: the "
        'prompt shows the explanation and the text, the reply is forced as one line per token, “"token": No”.'
    ),
    "likelihood": "per token, 10 / (1 + exp(−2r)) of the likelihood judge's per-token log-likelihood ratio r with that token marked.",
}
RANK_NOTES = (
    "Simulation score: the Pearson correlation of predicted with true activations over every token of a unit's held-out "
    "contexts; a constant prediction has none (0 in the paired control comparisons).",
    "AUC (rubric_auc): per unit and explanation source, the probability that a random firing held-out context "
    "(activation > 0) gets a higher rubric score than a random non-firing one (activation ≤ 0), ties counting 1/2: the "
    "Mann–Whitney U over n_firing · n_non_firing. 0.5 means the judge's scores do not separate firing from non-firing "
    "contexts; 1 means every firing context is scored above every non-firing one. It uses only the order of the scores, "
    "so a judge that ranks well but calibrates badly still shows it. A unit with no parsed judgment, no firing or no "
    "non-firing judged context has no AUC; the reason is in units.csv (rubric_auc_reason_*), never a 0.",
    "Specificity across activation levels (level_spearman): per unit, the Spearman correlation of the real explanation's "
    "rubric score with the context's activation level (equal-width levels of the unit's maximum; −1 for a non-firing "
    "context); none when the scores or the levels are constant (reason in units.csv). Above 0: the explanation fits "
    "strongly firing contexts better than weak or non-firing ones.",
    "Detection (detection, detection_auc): the judge sees a held-out window unmarked and says whether it contains what "
    "the explanation describes; right is Yes where the unit fires anywhere in the window. Unlike rubric_auc, nothing is "
    "marked and the question is about the whole window. Fuzzing (fuzzing, fuzzing_auc), after delphi: the judge sees a "
    "window with tokens marked, on the tokens where the unit fires (≥ 0.3 × the window's maximum) or on as many random "
    "tokens where it does not, and says whether every mark fits. For both, P(yes) is read from the Yes/No "
    "log-probabilities (or is the parsed word, 1 or 0); the score is the balanced accuracy of “yes when P(yes) > 0.5” "
    "(mean of the true-positive and true-negative rates: 0.5 is chance) and the AUC of P(yes) (a constant answer gives "
    "0.5). binary_levels.csv gives the fraction judged right per activation level, drawn as lines over the specificity bars.",
    "95% CI: percentile bootstrap interval (2000 resamples, seeded) over units, not over judgments; paired over units "
    "for real versus a control, each group resampled independently for features versus neurons and between dictionary "
    "sizes. No interval below 2 units.",
)
TABLE_NOTES = {
    "controls": (
        "Real versus control explanations, paired over units. In the simulation metrics a constant prediction "
        "(the same value on every token: it predicts nothing) scores 0 on either side; n_constant_real and "
        "n_constant_control count those units. Parse failures are not scored: a unit without a parsed simulation "
        "on both sides is left out of n_units. The rubric_auc rows pair each unit's judge AUC."
    ),
    "sets": (
        "Per unit set, the real explanation's mean over units of each metric (rubric, pearson, rubric_auc, "
        "level_spearman) with its 95% bootstrap interval over units."
    ),
    "set_means": (
        "Per unit set, metric and explanation source: the mean over the n_units that have the metric, its 95% bootstrap "
        "interval over units, and why the other n_missing have none (missing_reasons, for the rank metrics and the detection "
        "and fuzzing scores)."
    ),
    "sizes": (
        "Every pair of dictionaries: real-explanation means and larger minus smaller, with a 95% interval that resamples "
        "each dictionary's units independently."
    ),
}


def manifest_values(manifest: Any, key: str, path: str = "") -> list[tuple[str, Any]]:
    """Return (dotted path, value) of every entry named ``key`` anywhere in the manifest."""
    found: list[tuple[str, Any]] = []
    if isinstance(manifest, dict):
        for name, value in manifest.items():
            where = f"{path}.{name}" if path else str(name)
            if name == key:
                found.append((where, value))
            found.extend(manifest_values(value, key, where))
    elif isinstance(manifest, list):
        for i, value in enumerate(manifest):
            found.extend(manifest_values(value, key, f"{path}[{i}]"))
    return found


def _mapping_list(mappings: dict[str, str], used: set[str]) -> str:
    """Return an HTML list of format → mapping, marking the formats in ``used`` (and naming any unknown one)."""
    items = []
    for name, text in mappings.items():
        mark = " <span class='used'>(used in this run)</span>" if name in used else ""
        items.append(f"<li><code>{escape(name)}</code>{mark}: {escape(text)}</li>")
    for name in sorted(used - set(mappings)):
        items.append(f"<li><code>{escape(name)}</code> <span class='used'>(used in this run)</span>: no mapping stated.</li>")
    return "<ul>" + "".join(items) + "</ul>"


def scoring_notes(judge_formats: set[str], simulator_formats: set[str], manifest: dict[str, Any]) -> str:
    """Return the notes block: how each judge format maps to 0–3 and each simulator format to 0–10, and the rank metrics."""
    spellings = manifest_values(manifest, "answer_spelling")
    spelling = (
        "Answer spelling recorded in this run's manifest: " + "; ".join(f"{where} = {value!r}" for where, value in spellings) + "."
        if spellings
        else "This run's manifest records no answer_spelling."
    )
    return (
        "<div class='notes' id='score-notes'><h3>How the scores are made</h3>"
        "<p>Judge formats and how each maps the judge's answer onto the 0–3 rubric score:</p>"
        f"{_mapping_list(JUDGE_MAPPINGS, judge_formats)}<p class='muted'>{escape(spelling)}</p>"
        "<p>Simulator formats and how each gives a 0–10 predicted activation:</p>"
        f"{_mapping_list(SIMULATOR_MAPPINGS, simulator_formats)}"
        "<ul>" + "".join(f"<li>{escape(text)}</li>" for text in RANK_NOTES) + "</ul></div>"
    )
