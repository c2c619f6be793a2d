"""Fuzzing scorer, after delphi's ``FuzzingScorer`` (eai-delphi 0.1.3): are the marked tokens what the explanation describes?

Positives: each held-out scoring context where the unit fires, marked (``harness.llm.render.with_marks``)
on the display units holding a token whose activation is at least ``THRESHOLD`` × the window's largest
(delphi's ``threshold``, 0.3). Negatives, in one of delphi's two variants (``fuzz_type``):

- ``default`` (delphi's default): the scoring contexts where the unit does not fire, each marked on
  ``n`` display units chosen at random;
- ``active``: the firing contexts again, each marked on ``n`` randomly chosen display units where
  the unit does not fire (never a firing token; a context whose every unit fires is skipped and counted);

``n`` is delphi's ``n_incorrect``: the mean number of firing tokens per positive context, rounded up.
The judge answers whether every marked token fits the explanation (``scorers.binary``: one context per
prompt, delphi's ``n_examples_shown`` default; Yes/No rather than delphi's 0/1 list). Random choices are
seeded by (seed, unit, context), so a rerun shows the same marks. The marks are monoscope's ⟦ ⟧.
"""

import hashlib
import math
import random

from harness.errors import MonoscopeError
from harness.index.sampling import activation_level
from harness.llm.render import display_units, with_marks
from harness.records import TokenContext, UnitContexts
from scorers.binary import ClassifierItem

SCORER_NAME = "fuzzing"
TEMPLATE = "fuzzing_yes_no"
VARIANTS = ("default", "active")  # delphi's fuzz_type values
THRESHOLD = 0.3  # delphi's FuzzingScorer threshold: marked tokens reach this fraction of the window's largest activation
LEVELS = 10


def fuzzing_items(contexts: UnitContexts, variant: str = "default", seed: int = 0) -> tuple[list[ClassifierItem], int]:
    """Return (the unit's items, contexts skipped): marked firing contexts as positives, randomly marked ones as negatives.

    Raises MonoscopeError for a variant not in ``VARIANTS``. Skipped: contexts of the ``active``
    variant whose every display unit fires (no token can be marked wrongly).
    """
    if variant not in VARIANTS:
        raise MonoscopeError(f"unknown fuzzing variant {variant!r}", f"choose one of {', '.join(VARIANTS)} (delphi's fuzz_type)")
    firing = [c for c in contexts.score if max(c.activations) > 0]
    silent = [c for c in contexts.score if max(c.activations) <= 0]
    n_wrong = math.ceil(sum(sum(a > 0 for a in c.activations) for c in firing) / len(firing)) if firing else 1
    items = []
    for context in firing:
        peak = max(context.activations)
        marked = [i for i, a in enumerate(context.activations) if a >= THRESHOLD * peak]
        items.append(_item(context, contexts.max_activation, "firing", marked, True))
    skipped = 0
    for context in silent if variant == "default" else firing:
        candidates = [unit for unit in display_units(context.tokens) if all(context.activations[i] <= 0 for i in unit)]
        if not candidates:
            skipped += 1
            continue
        rng = random.Random(hashlib.sha256(f"{seed}|{contexts.unit}|{context.context_id}".encode()).digest())
        chosen = rng.sample(candidates, min(n_wrong, len(candidates)))
        items.append(_item(context, contexts.max_activation, "random", [unit[-1] for unit in chosen], False))
    return items, skipped


def _item(context: TokenContext, max_activation: float, variant: str, positions: list[int], label: bool) -> ClassifierItem:
    peak = max(context.activations)
    return ClassifierItem(
        context_id=context.context_id,
        variant=variant,
        text=with_marks(context, positions),
        label=label,
        activation=peak,
        level=activation_level(peak, max_activation, LEVELS),
    )
