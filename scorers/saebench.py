"""SAEBench-compatible detection (``evaluation.detection_setting: saebench``): SAEBench's autointerp procedure, so a
monoscope number can stand beside a published SAEBench ``autointerp_score``.

Read from sae-bench 0.6.0 (``sae_bench/evals/autointerp``) and reproduced here in monoscope's own code:

- windows of 21 tokens (10 either side of the chosen token: SAEBench's ``buffer``) within 128-token
  sequences; the chosen token's window always fits the sequence unshifted;
- per latent, the 12 largest activations with no two of a sequence within 10 tokens
  (``spaced_top`` of the index) and 7 importance-weighted draws ∝ activation² among the tokens below
  the smallest of those 12 (``weighted``, drawn without replacement; SAEBench's ``get_iw_sample_indices``);
  a latent with no such token is skipped, as SAEBench skips it;
- to explain: 10 of the top and 5 of the weighted windows (a seeded random split), listed from the
  most to the least active, the tokens above 1% of the latent's largest top activation marked
  ``<<token>>``; the explanation is the reply after its last "activates on", without a final period;
- to score: the other 2 top and 2 weighted windows and 10 windows drawn uniformly from the corpus
  (labelled negative without checking, as SAEBench does), shuffled, listed unmarked in one prompt;
  the judge answers with the numbers of the windows where the latent fires; a window is right
  when its answer equals "some token above 1% of the top activation";
- score: the fraction of the 14 windows answered right (accuracy, not balanced accuracy).
- SAEBench's lenient reply rule, an exception to monoscope's strict parsers and recorded as such
  (``PARSE_RULE``): strip, drop one final ".", read "and" as a comma and "None" as nothing, split on
  commas; every remaining piece must be digits, else the reply is unparseable and the latent is
  counted and left out of the mean, as SAEBench leaves it out.

The prompts (``prompts/saebench_explain.txt``, ``prompts/saebench_detection.txt``) say what SAEBench's
say in monoscope's words; the system and user parts are split at a line "---".
"""

import hashlib
import random
from dataclasses import dataclass

from harness.llm.client import BackendError, LLMClient, failure_reason
from harness.llm.interface import Message
from harness.llm.templates import Template, load_template
from harness.records import ContextSample

SCORER_NAME = "saebench"
EXPLAIN_TEMPLATE, DETECTION_TEMPLATE = "saebench_explain", "saebench_detection"
BUFFER = 10
CONTEXT_LENGTH = 128
N_TOP_EXPLAIN, N_TOP_SCORE = 10, 2
N_WEIGHTED_EXPLAIN, N_WEIGHTED_SCORE = 5, 2
N_RANDOM = 10
ACTIVE_FRACTION = 0.01  # SAEBench's act_threshold_frac
EXPLANATION_MAX_TOKENS = 30
PARSE_RULE = "saebench-lenient"


@dataclass(frozen=True)
class SaebenchWindow:
    """One window of the SAEBench setting: where it comes from, its token pieces and activations, and its label."""

    chunk: int
    position: int
    tokens: tuple[str, ...]
    activations: tuple[float, ...] | None  # None: a random window, never read (labelled negative)
    active: bool
    kind: str  # "top", "weighted" or "random"


@dataclass(frozen=True)
class SaebenchJudgment:
    """The judge's answer for one latent and explanation: the windows it named and the accuracy over the 14."""

    unit: str
    source: str  # "real" (the SAEBench explanation) or "shuffled" (another unit's)
    explanation: str
    windows: tuple[str, ...]  # "chunk:position" of the scored windows, in the order shown
    labels: tuple[bool, ...]
    predictions: tuple[int, ...] | None  # 1-based numbers named; None: unparseable (the latent is left out)
    score: float | None
    backend: str
    model: str
    prompt_hash: str
    parse_rule: str = PARSE_RULE
    failure: str | None = None
    raw: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Return what identifies the record in its file: a later record with the same key replaces it."""
        return (self.unit, self.source)


def _rng(seed: int, unit: str, purpose: str) -> random.Random:
    return random.Random(hashlib.sha256(f"{seed}|{unit}|{purpose}".encode()).digest())


def select_windows(
    top: list[ContextSample], weighted: list[ContextSample], random_windows: list[SaebenchWindow], unit: str, seed: int, pieces
) -> tuple[list[SaebenchWindow], list[SaebenchWindow]] | None:
    """Return (windows to explain from, windows to score), or None when SAEBench would skip the latent.

    ``top``: the unit's ``spaced_top`` samples, largest first; ``weighted``: its ``weighted`` samples in
    key order (the first ones are the draws); ``pieces(sample)``: the token pieces of a sample's window.
    """
    if len(top) < N_TOP_EXPLAIN + N_TOP_SCORE:
        return None
    top = top[: N_TOP_EXPLAIN + N_TOP_SCORE]
    threshold = min(sample.value for sample in top)
    below = [sample for sample in weighted if sample.value < threshold][: N_WEIGHTED_EXPLAIN + N_WEIGHTED_SCORE]
    if len(below) < N_WEIGHTED_EXPLAIN + N_WEIGHTED_SCORE:
        return None
    active_level = ACTIVE_FRACTION * max(max(sample.activations) for sample in top)

    def window(sample: ContextSample, kind: str) -> SaebenchWindow:
        return SaebenchWindow(
            sample.chunk, sample.position, pieces(sample), sample.activations, max(sample.activations) > active_level, kind
        )

    rng = _rng(seed, unit, "split")
    top_order, weighted_order = rng.sample(range(len(top)), len(top)), rng.sample(range(len(below)), len(below))
    explain = [window(top[i], "top") for i in top_order[:N_TOP_EXPLAIN]] + [
        window(below[i], "weighted") for i in weighted_order[:N_WEIGHTED_EXPLAIN]
    ]
    score = (
        [window(top[i], "top") for i in top_order[N_TOP_EXPLAIN:]]
        + [window(below[i], "weighted") for i in weighted_order[N_WEIGHTED_EXPLAIN:]]
        + list(random_windows)
    )
    explain.sort(key=lambda w: max(w.activations or (0.0,)), reverse=True)
    rng.shuffle(score)
    return explain, score


def marked(window: SaebenchWindow, active_level: float | None) -> str:
    """Return a window's text as SAEBench shows it: tokens above ``active_level`` as <<token>>, line breaks as ↵, "�" dropped."""
    pieces = []
    for index, token in enumerate(window.tokens):
        hot = active_level is not None and window.activations is not None and window.activations[index] > active_level
        pieces.append(f"<<{token}>>" if hot else token)
    return "".join(pieces).replace("\ufffd", "").replace("\n", "↵")


def split_template(template: Template, **fields: object) -> list[Message]:
    """Return the system and user messages of a template whose parts are separated by a line "---"."""
    system, user = template.render(**fields).split("\n---\n", 1)
    return [Message("system", system.strip()), Message("user", user.strip())]


def parse_saebench_explanation(reply: str) -> str:
    """Return SAEBench's reading of an explanation reply: the text after its last "activates on", no final period."""
    return reply.split("activates on")[-1].rstrip(".").strip()


def parse_predictions(reply: str) -> list[int] | None:
    """Return the 1-based window numbers a reply names by SAEBench's lenient rule (``PARSE_RULE``); None when unparseable."""
    pieces = reply.strip().rstrip(".").replace("and", ",").replace("None", "").split(",")
    numbers = [piece.strip() for piece in pieces if piece.strip()]
    if not all(piece.isdigit() for piece in numbers):
        return None
    return [int(piece) for piece in numbers]


def prediction_accuracy(predictions: list[int], labels: list[bool]) -> float:
    """Return the fraction of windows whose named-or-not equals its label (SAEBench's score of a latent)."""
    named = set(predictions)
    return sum((number in named) == label for number, label in enumerate(labels, start=1)) / len(labels)


def explain_latent(explain: list[SaebenchWindow], client: LLMClient) -> tuple[str | None, str | None, str | None]:
    """Return (explanation, failure, raw reply) of one latent from its explanation windows (one call)."""
    top = max(max(w.activations or (0.0,)) for w in explain)
    level = ACTIVE_FRACTION * top
    listing = "\n".join(f"{number}. {marked(w, level)}" for number, w in enumerate(explain, start=1))
    messages = split_template(load_template(EXPLAIN_TEMPLATE), examples=listing)
    try:
        reply = client.generate(messages, stage="saebench", max_tokens=EXPLANATION_MAX_TOKENS)
    except BackendError as error:
        return None, failure_reason(error), None
    text = parse_saebench_explanation(reply.text)
    return (text, None, None) if text else (None, "empty explanation", reply.text)


def score_latent(unit: str, source: str, explanation: str, score: list[SaebenchWindow], client: LLMClient, seed: int) -> SaebenchJudgment:
    """Return the judgment of one latent: one call listing the shuffled scoring windows, parsed by SAEBench's rule."""
    template = load_template(DETECTION_TEMPLATE)
    labels = [w.active for w in score]
    n_right = N_TOP_SCORE + N_WEIGHTED_SCORE
    example = ", ".join(str(i) for i in sorted(_rng(seed, unit, "example").sample(range(1, len(score) + 1), n_right)))
    listing = "\n".join(f"{number}. {marked(w, None)}" for number, w in enumerate(score, start=1))
    messages = split_template(template, count=len(score), example=example, explanation=explanation, examples=listing)
    base = dict(
        unit=unit,
        source=source,
        explanation=explanation,
        windows=tuple(f"{w.chunk}:{w.position}" for w in score),
        labels=tuple(labels),
        backend=client.backend.name,
        model=client.backend.model,
        prompt_hash=template.sha256,
    )
    try:
        reply = client.generate(messages, stage="saebench", max_tokens=2 * len(score) + 5)
    except BackendError as error:
        return SaebenchJudgment(**base, predictions=None, score=None, failure=failure_reason(error))
    predictions = parse_predictions(reply.text)
    if predictions is None:
        return SaebenchJudgment(**base, predictions=None, score=None, failure="unparseable by SAEBench's rule", raw=reply.text)
    return SaebenchJudgment(**base, predictions=tuple(predictions), score=prediction_accuracy(predictions, labels))
