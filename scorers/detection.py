"""Detection scorer: given the explanation, does the judge tell the windows where the unit fires from those where it does not?

Items: the unit's held-out scoring contexts (drawn across the activation intervals, plus windows drawn
around a non-firing token; ``harness.index.sampling``), each shown whole and **unmarked**
(``harness.llm.render.plain_text``). The right answer is Yes when the unit fires anywhere in the
window (its largest activation there is > 0), No otherwise; the level of a window is the
equal-width level of that largest activation. The judge answers Yes or No (``scorers.binary``);
the unit's score is balanced accuracy, AUC and accuracy per activation level.

How it differs from the rubric's firing-vs-non-firing AUC (``results.ranking``): the rubric
judge sees one token marked and is asked about that token; here nothing is marked and the
question is about the whole window. After delphi's detection scorer (one example per prompt,
balanced accuracy and AUC) and SAEBench's autointerp detection; the prompt is monoscope's.
"""

from harness.index.sampling import activation_level
from harness.llm.render import plain_text
from harness.records import UnitContexts
from scorers.binary import ClassifierItem

SCORER_NAME = "detection"
TEMPLATE = "detection_yes_no"
SETTING = "monoscope"
LEVELS = 10


def detection_items(contexts: UnitContexts) -> list[ClassifierItem]:
    """Return one unmarked item per scoring context of the unit, labelled by whether the unit fires in the window."""
    items = []
    for context in contexts.score:
        peak = max(context.activations)
        items.append(
            ClassifierItem(
                context_id=context.context_id,
                variant="window",
                text=plain_text(context),
                label=peak > 0,
                activation=peak,
                level=activation_level(peak, contexts.max_activation, LEVELS),
            )
        )
    return items
