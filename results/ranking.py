"""Rank-based views of the judge's rubric scores per unit: small judges rank better than they calibrate.

- ``rubric_auc``: the probability that a random firing held-out context (activation > 0) gets a
  higher rubric score than a random non-firing one (activation <= 0: a unit fires where its
  activation is positive, and Gemma's gated neurons are negative where they do not fire), ties
  counting 1/2; that is the Mann–Whitney U of the firing scores over n_firing · n_non_firing.
  0.5: the scores do not separate firing from non-firing contexts; 1: every firing context is
  scored above every non-firing one. Only the order of the scores matters, not their scale.
- ``level_spearman``: the Spearman correlation of the rubric score with the activation level
  (``Judgment.level``, -1 for a non-firing context) over a unit's judgments.

Both use parsed judgments only. Where a value does not exist it is None with a stated reason,
never 0.
"""

import math
from collections import defaultdict
from typing import NamedTuple

import numpy as np
from scipy import stats as scipy_stats

from harness.records import Judgment

NOT_JUDGED = "not judged"
NO_PARSED = "no parsed judgments"
NO_FIRING = "no firing context judged"
NO_NON_FIRING = "no non-firing context judged"
TOO_FEW = "fewer than 2 parsed judgments"
CONSTANT_SCORE = "constant rubric score"
ONE_LEVEL = "one activation level"


class RankScore(NamedTuple):
    """A rank-based score: ``value``, or None and the ``reason`` it does not exist."""

    value: float | None
    reason: str | None = None


def _parsed(judgments: list[Judgment]) -> list[Judgment]:
    """Return the judgments with a finite parsed score and a finite activation."""
    return [j for j in judgments if j.score is not None and math.isfinite(j.score) and math.isfinite(j.activation)]


def rubric_auc(judgments: list[Judgment]) -> RankScore:
    """Return the AUC of the rubric scores of ``judgments`` (one unit, one source) between firing and non-firing contexts.

    In: the judgments, parsed or not. Out: U / (n_firing · n_non_firing) with ties counting 1/2,
    or None with the reason (not judged, no parsed judgments, no firing / no non-firing context).
    """
    if not judgments:
        return RankScore(None, NOT_JUDGED)
    parsed = _parsed(judgments)
    if not parsed:
        return RankScore(None, NO_PARSED)
    firing = [float(j.score) for j in parsed if j.activation > 0]  # type: ignore[arg-type]
    quiet = [float(j.score) for j in parsed if j.activation <= 0]  # type: ignore[arg-type]
    if not firing:
        return RankScore(None, NO_FIRING)
    if not quiet:
        return RankScore(None, NO_NON_FIRING)
    ranks = scipy_stats.rankdata(np.array(firing + quiet))  # ties get their average rank
    u = float(ranks[: len(firing)].sum()) - len(firing) * (len(firing) + 1) / 2
    return RankScore(u / (len(firing) * len(quiet)))


def level_spearman(judgments: list[Judgment]) -> RankScore:
    """Return the Spearman correlation of rubric score with activation level over ``judgments`` (one unit, one source).

    In: the judgments, parsed or not. Out: Spearman's rho, or None with the reason (not judged,
    no parsed judgments, fewer than 2, a constant score, or one activation level).
    """
    if not judgments:
        return RankScore(None, NOT_JUDGED)
    parsed = _parsed(judgments)
    if not parsed:
        return RankScore(None, NO_PARSED)
    if len(parsed) < 2:
        return RankScore(None, TOO_FEW)
    scores = [float(j.score) for j in parsed]  # type: ignore[arg-type]
    levels = [j.level for j in parsed]
    if len(set(scores)) == 1:
        return RankScore(None, CONSTANT_SCORE)
    if len(set(levels)) == 1:
        return RankScore(None, ONE_LEVEL)
    return RankScore(float(scipy_stats.spearmanr(scores, levels).statistic))


def unit_rankings(judgments: list[Judgment]) -> dict[tuple[str, str], dict[str, RankScore]]:
    """Return {(unit, source): {"rubric_auc": …}} for every (unit, source) judged, with "level_spearman" for source "real".

    In: judgment records (one per key: pass the latest). A (unit, source) absent from the result
    was not judged (``RankScore(None, NOT_JUDGED)``).
    """
    grouped: dict[tuple[str, str], list[Judgment]] = defaultdict(list)
    for judgment in judgments:
        grouped[(judgment.unit, judgment.source)].append(judgment)
    rankings = {}
    for key, group in grouped.items():
        rankings[key] = {"rubric_auc": rubric_auc(group)}
        if key[1] == "real":
            rankings[key]["level_spearman"] = level_spearman(group)
    return rankings
