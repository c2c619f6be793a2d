"""The detection and fuzzing scorers per activation level: the table beside the specificity table, for the same plots.

``binary_level_table`` reads the binary-classification records (``scorers.binary``) and returns, per
unit set, scorer, explanation source and activation level of the window, how many parsed answers
there were and the fraction answered right: at level "0" (the unit does not fire in the window)
that is the fraction judged No; at a firing level, for detection the fraction judged Yes, for
fuzzing the fraction judged right over both marked kinds of that window's level.
"""

from collections import defaultdict

import pandas as pd

from harness.records import EvaluatedUnit
from results.frames import frame
from results.store import latest_by_key
from results.tables import SOURCES, level_label
from scorers.binary import BinaryJudgment, level_accuracy

BINARY_LEVEL_COLUMNS = ["unit_set", "scorer", "source", "level", "label", "n", "accuracy"]


def binary_level_table(classifications: list[BinaryJudgment], units: list[EvaluatedUnit], levels: int = 10) -> pd.DataFrame:
    """Return accuracy per (unit set, scorer, source, activation level), pooled over the set's units; levels -1 first."""
    set_of = {u.unit: u.unit_set for u in latest_by_key(units).values()}
    groups: dict[tuple[str, str, str], list[BinaryJudgment]] = defaultdict(list)
    for record in latest_by_key(classifications).values():
        if record.unit in set_of:
            groups[(set_of[record.unit], record.scorer, record.source)].append(record)
    rows = []
    order = (*SOURCES, "output")  # the output-centric explanation last
    for (unit_set, scorer, source), records in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1], order.index(item[0][2]))):
        for level, (right, n) in level_accuracy(records).items():
            rows.append(
                {
                    "unit_set": unit_set,
                    "scorer": scorer,
                    "source": source,
                    "level": level,
                    "label": level_label(level, levels),
                    "n": n,
                    "accuracy": right / n,
                }
            )
    return frame(rows, BINARY_LEVEL_COLUMNS)
