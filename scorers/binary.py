"""Binary-classification scorers (``scorers.detection``, ``scorers.fuzzing``): the judge answers Yes or No to one
(explanation, shown text) pair, and the unit's score is how well those answers separate the right texts from the wrong.

The judge's answer: with log-probabilities (``choice_logprobs``), P(yes) = P("Yes") / (P("Yes") + P("No"))
at the first answer position, in the spelling the judge emits (``scorers.answers``); without them the
judge generates the word, parsed strictly (``scorers.parsing.parse_yes_no``), and P(yes) is 1 or 0. A
backend error or an unparseable reply is a failure record, never a score.

Per unit and source (``binary_summary``): the balanced accuracy of "yes when P(yes) > 0.5" (the mean
of the true-positive and true-negative rates, as delphi and SAEBench report it), the AUC of P(yes)
between right and wrong texts (Mann–Whitney with ties counted 1/2, so a constant answer scores 0.5),
and per activation level the fraction answered right (``level_accuracy``).
"""

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from harness.llm.client import BackendError, LLMClient, UnparseableReply, failure_reason
from harness.llm.interface import CHOICE_LOGPROBS, Message
from harness.llm.render import RENDERING
from harness.llm.templates import load_template
from scorers.parsing import parse_yes_no, yes_no_format

OPTIONS = ["Yes", "No"]
YES_NO_MAX_TOKENS = 2


@dataclass(frozen=True)
class ClassifierItem:
    """One text a binary scorer shows the judge: its context, how it is marked, the right answer and the window's activation."""

    context_id: str
    variant: str  # detection: "window"; fuzzing: "firing" (marks where the unit fires) or "random" (marks where it does not)
    text: str  # as shown, on one line
    label: bool  # the right answer: True when the text is an example of the unit (fires / marked where it fires)
    activation: float  # the unit's largest activation in the window
    level: int  # equal-width level of ``activation`` (-1: the unit does not fire in the window)


@dataclass(frozen=True)
class BinaryJudgment:
    """The judge's Yes/No on one item of a binary scorer, for one explanation."""

    scorer: str  # "detection" or "fuzzing"
    setting: str  # which variant of the scorer made the items (e.g. "monoscope", "delphi-default")
    unit: str
    context_id: str
    variant: str
    source: str  # "real", "shuffled" or "token_stats", as the other scorers
    explanation: str
    label: bool
    activation: float
    level: int
    p_yes: float | None  # None: failure
    answer: str  # "logprobs" (P(yes) normalised over Yes/No) or "generated" (the parsed word: 1 or 0)
    backend: str
    model: str
    prompt_hash: str
    rendering: str
    text_sha256: str  # of the text shown (its marks included): a record of another text is redone
    failure: str | None = None
    raw: str | None = None

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """Return what identifies the record in its file: a later record with the same key replaces it."""
        return (self.scorer, self.unit, self.source, self.context_id, self.variant)

    @property
    def correct(self) -> bool | None:
        """Return whether the answer (yes when P(yes) > 0.5) is the label; None for a failure."""
        return None if self.p_yes is None else (self.p_yes > 0.5) == self.label


def classify_unit(
    unit: str,
    items: list[ClassifierItem],
    explanation: str,
    source: str,
    client: LLMClient,
    scorer: str,
    setting: str,
    template_name: str,
    answer_prefix: str = " ",
) -> list[BinaryJudgment]:
    """Return one judgment per item: the judge's P(yes) that ``item.text`` shows what ``explanation`` describes.

    ``answer_prefix`` ("" or " ") is written before Yes and No when they are read from log-probabilities
    (``scorers.answers.answer_spelling`` chooses it per model). Every item is asked on its own (one
    context per prompt, as delphi's default); a local judge runs a unit's prompts as one batch.
    """
    template = load_template(template_name)
    prompts = [[Message("user", template.render(explanation=explanation, text=item.text))] for item in items]

    def record(item: ClassifierItem, p_yes: float | None, answer: str, failure: str | None = None, raw: str | None = None):
        return BinaryJudgment(
            scorer=scorer,
            setting=setting,
            unit=unit,
            context_id=item.context_id,
            variant=item.variant,
            source=source,
            explanation=explanation,
            label=item.label,
            activation=item.activation,
            level=item.level,
            p_yes=p_yes,
            answer=answer,
            backend=client.backend.name,
            model=client.backend.model,
            prompt_hash=template.sha256,
            rendering=RENDERING,
            text_sha256=text_digest(item.text),
            failure=failure,
            raw=raw,
        )

    if CHOICE_LOGPROBS in client.backend.capabilities:
        yes, no = (answer_prefix + option for option in OPTIONS)
        answers = client.choice_logprobs_many(prompts, [yes, no], stage=scorer)
        judgments = []
        for item, answer in zip(items, answers, strict=True):
            if isinstance(answer, BackendError):
                judgments.append(record(item, None, "logprobs", failure_reason(answer)))
                continue
            p_yes = yes_probability(answer[yes], answer[no])
            failure = None if p_yes is not None else "Yes and No log-probabilities are not finite"
            judgments.append(record(item, p_yes, "logprobs", failure, None if p_yes is not None else str(answer)))
        return judgments

    def ask(pair: tuple[ClassifierItem, list[Message]]) -> BinaryJudgment:
        item, messages = pair
        try:
            said = client.generate(messages, stage=scorer, parse=parse_yes_no, format_hint=yes_no_format(), max_tokens=YES_NO_MAX_TOKENS)
        except UnparseableReply as error:
            return record(item, None, "generated", f"unparseable reply after {error.attempts} attempts", error.raw)
        except BackendError as error:
            return record(item, None, "generated", failure_reason(error))
        return record(item, 1.0 if said else 0.0, "generated")

    return client.map(ask, list(zip(items, prompts, strict=True)))


def text_digest(text: str) -> str:
    """Return the first 16 hex digits of the sha256 of a shown text (``BinaryJudgment.text_sha256``)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def yes_probability(yes: float, no: float) -> float | None:
    """Return P(yes) normalised over the two answers from their log-probabilities; None when neither is finite."""
    if not math.isfinite(yes) and not math.isfinite(no):
        return None
    if not math.isfinite(no):
        return 1.0
    if not math.isfinite(yes):
        return 0.0
    return round(1.0 / (1.0 + math.exp(no - yes)), 6)


def auc(scores: list[float], labels: list[bool]) -> float | None:
    """Return the probability that a random positive scores above a random negative, ties counted 1/2 (Mann–Whitney).

    None when either class is empty. A constant score gives 0.5.
    """
    positives = [s for s, label in zip(scores, labels, strict=True) if label]
    negatives = [s for s, label in zip(scores, labels, strict=True) if not label]
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def binary_summary(judgments: Iterable[BinaryJudgment]) -> dict[str, float | int | str | None]:
    """Return a unit's score for one source: balanced accuracy, F1, AUC, counts, failures, and why a score is missing.

    ``balanced_accuracy`` and ``f1`` are None unless both classes have a parsed answer; ``reason`` then says which is
    empty. F1 is that of "yes" on the right texts, 0 when nothing right is answered yes (delphi's
    ``compute_classification_metrics`` convention; delphi counts P = 0.5 as yes, monoscope as no).
    """
    judged = list(judgments)
    parsed = [j for j in judged if j.p_yes is not None]
    positives = [j for j in parsed if j.label]
    negatives = [j for j in parsed if not j.label]
    reason = None
    if not judged:
        reason = "not scored"
    elif not positives or not negatives:
        side = "right" if not positives else "wrong"
        shown = any(j.label == (side == "right") for j in judged)
        where = "the unit fires in every window" if side == "wrong" else "the unit fires in no window"
        reason = f"no {side} text with a parsed answer" if shown else f"no {side} text: {where}"
    balanced = f1 = None
    if reason is None:
        true_positives = sum(j.p_yes > 0.5 for j in positives)
        false_positives = sum(j.p_yes > 0.5 for j in negatives)
        tpr = true_positives / len(positives)
        tnr = 1 - false_positives / len(negatives)
        balanced = (tpr + tnr) / 2
        precision = true_positives / (true_positives + false_positives) if true_positives + false_positives else 0.0
        f1 = 2 * precision * tpr / (precision + tpr) if precision + tpr else 0.0
    return {
        "balanced_accuracy": balanced,
        "f1": f1,
        "auc": auc([j.p_yes for j in parsed], [j.label for j in parsed]),
        "n_positive": len(positives),
        "n_negative": len(negatives),
        "failures": len(judged) - len(parsed),
        "reason": reason,
    }


def level_accuracy(judgments: Iterable[BinaryJudgment]) -> dict[int, tuple[int, int]]:
    """Return {activation level: (answered right, parsed answers)}; level -1 holds the windows where the unit does not fire."""
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for judgment in judgments:
        if judgment.correct is not None:
            counts[judgment.level][0] += judgment.correct
            counts[judgment.level][1] += 1
    return {level: (right, n) for level, (right, n) in sorted(counts.items())}
