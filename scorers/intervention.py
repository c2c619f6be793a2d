"""Intervention scorer: does the explanation say what clamping the unit does to the model's output?

For one unit: the subject model continues each neutral prompt (``prompts/neutral_prompts.txt``)
plainly and with the unit clamped at each strength (a multiple of its maximum activation over the
index; ``harness.steering``). For each (prompt, strength) pair the judge reads the explanation and
the two continuations, labelled A and B, and says which one shows what the explanation
describes. Which continuation is A is fixed by the seed, and exactly half of a unit's pairs (rounded
down) show the steered one first, so a judge that always answers A scores 0.5.

The judge's answer: with log-probabilities (``choice_logprobs``), the probabilities of "A" and "B"
(each with or without a leading space, summed) normalised over the two; the pair is right when the
steered continuation's label has more than half. A judgment whose A and B hold under
``MIN_ANSWER_MASS`` of the probability, or hold exactly half each, is a failure (undecided), not a guess. Without log-probabilities the
judge generates the letter, parsed strictly (``parse_choice``).

Score of a unit: the fraction of its pairs judged right, with a Wilson 95% interval (Wilson 1927;
n = the judged pairs, failures excluded and counted), beside the mean KL(steered ‖ plain) per token
as the effect size. The idea follows delphi's intervention scoring and Scaling Monosemanticity's
steering experiments; the prompt and the balanced order are monoscope's.
"""

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

from harness.llm.client import BackendError, LLMClient, UnparseableReply, failure_reason
from harness.llm.interface import CHOICE_LOGPROBS, Message
from harness.llm.render import shown
from harness.llm.replies import unwrap_reply
from harness.llm.templates import PROMPTS, load_template
from harness.steering.generate import Steering, steer
from harness.steering.units import SteeredUnit, unit_clamps
from harness.subject.model import SubjectModel

SCORER_NAME = "intervention"
TEMPLATE = "intervention_choice"
LABELS = ("A", "B")
MIN_ANSWER_MASS = 0.5  # as the log-probability judge formats (scorers.answers)
DEFAULT_MULTIPLES = (5.0, 10.0)  # Scaling Monosemanticity clamped features to 5x and 10x their maximum, among others
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class InterventionJudgment:
    """The judge's choice between the plain and the steered continuation of one (prompt, strength) pair."""

    unit: str
    source: str  # "real", "shuffled" or "token_stats", as the other scorers
    explanation: str
    prompt: str
    multiple: float
    steered_first: bool  # the steered continuation was labelled A
    p_steered: float | None  # the judge's probability of the steered continuation's label (None: failure)
    correct: bool | None
    mean_kl: float  # of the steering: KL(steered ‖ plain) per token, nats
    backend: str
    model: str
    prompt_hash: str
    failure: str | None = None
    raw: str | None = None

    @property
    def key(self) -> tuple[str, str, str, float]:
        """Return what identifies the record in its file: a later record with the same key replaces it."""
        return (self.unit, self.source, self.prompt, self.multiple)


def neutral_prompts() -> list[str]:
    """Return the bundled neutral prompts (``prompts/neutral_prompts.txt``, comments and blank lines left out)."""
    lines = (PROMPTS / "neutral_prompts.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def steer_for_scoring(
    subject: SubjectModel,
    unit: SteeredUnit,
    prompts: list[str] | None = None,
    multiples: tuple[float, ...] = DEFAULT_MULTIPLES,
    max_new_tokens: int = 16,
    positions: str = "all",
) -> list[Steering]:
    """Return the unit's steerings on ``prompts`` (default: the neutral prompts) at each multiple: prompts × multiples pairs, greedy."""
    steerings = []
    for multiple in multiples:
        clamps = unit_clamps([unit], [multiple])
        for prompt in neutral_prompts() if prompts is None else prompts:
            labels = dict(units=(unit.name,), multiples=(multiple,), values=(multiple * unit.max_activation,))
            steerings.append(steer(subject, prompt, clamps, max_new_tokens=max_new_tokens, positions=positions, **labels))
    return steerings


def steered_first(unit: str, pairs: list[tuple[str, float]], seed: int) -> dict[tuple[str, float], bool]:
    """Return {(prompt, multiple): steered continuation shown first}: half the pairs (rounded down), chosen by the seed."""
    order = sorted(pairs, key=lambda pair: hashlib.sha256(f"{seed}|{unit}|{pair[0]}|{pair[1]!r}".encode()).hexdigest())
    first = set(order[: len(order) // 2])
    return {pair: pair in first for pair in pairs}


def parse_choice(reply: str) -> str:
    """Return "A" or "B" when that letter is the whole reply (after unwrapping; "Answer: B." is B); else ValueError."""
    answer = unwrap_reply(reply, ("answer", "continuation"), trailing_period=True).strip()
    if answer.upper() not in LABELS or len(answer) != 1:
        raise ValueError(f"expected A or B, got {answer[:40]!r}")
    return answer.upper()


def judge_interventions(
    unit: str, explanation: str, source: str, steerings: list[Steering], client: LLMClient, seed: int = 0
) -> list[InterventionJudgment]:
    """Return one judgment per steering of ``unit`` (its prompts × strengths) for one explanation.

    A backend error or an unparseable answer is a failure record, never a score.
    """
    template = load_template(TEMPLATE)
    order = steered_first(unit, [(s.prompt, s.multiples[0]) for s in steerings], seed)
    judgments = []
    for steering in steerings:
        first = order[(steering.prompt, steering.multiples[0])]
        texts = (steering.steered, steering.baseline) if first else (steering.baseline, steering.steered)
        prompt = template.render(explanation=explanation, prompt=shown(steering.prompt), first=shown(texts[0]), second=shown(texts[1]))
        steered_label = "A" if first else "B"
        base = dict(
            unit=unit,
            source=source,
            explanation=explanation,
            prompt=steering.prompt,
            multiple=steering.multiples[0],
            steered_first=first,
            mean_kl=steering.mean_kl,
            backend=client.backend.name,
            model=client.backend.model,
            prompt_hash=template.sha256,
        )
        p_steered, failure, raw = _ask(client, prompt, steered_label)
        if p_steered == 0.5:
            p_steered, failure = None, "A and B equally likely: undecided"
        correct = None if p_steered is None else p_steered > 0.5
        judgments.append(InterventionJudgment(**base, p_steered=p_steered, correct=correct, failure=failure, raw=raw))
    return judgments


def _ask(client: LLMClient, prompt: str, steered_label: str) -> tuple[float | None, str | None, str | None]:
    """Return (the judge's probability of ``steered_label``, failure, raw reply) for one rendered prompt."""
    messages = [Message("user", prompt)]
    try:
        if CHOICE_LOGPROBS not in client.backend.capabilities:
            answer = client.generate(messages, stage="intervene", parse=parse_choice, format_hint="one letter, A or B", max_tokens=4)
            return (1.0 if answer == steered_label else 0.0), None, None
        choices = [prefix + label for label in LABELS for prefix in ("", " ")]
        logprobs = client.choice_logprobs(messages, choices, stage="intervene")
    except UnparseableReply as error:
        return None, f"unparseable reply after {error.attempts} attempts", error.raw
    except BackendError as error:
        return None, failure_reason(error), None
    mass = {label: sum(math.exp(logprobs[c]) for c in choices if c.strip() == label and math.isfinite(logprobs[c])) for label in LABELS}
    total = mass["A"] + mass["B"]
    if total < MIN_ANSWER_MASS:
        return None, f"A and B hold {total:.3f} of the probability, under {MIN_ANSWER_MASS}", None
    return round(mass[steered_label] / total, 6), None, None


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Return the Wilson score interval of a proportion (Wilson 1927); (0, 1) when n is 0."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def intervention_summary(judgments: Iterable[InterventionJudgment]) -> dict[str, float | int | None]:
    """Return a unit's score for one source: fraction right, Wilson 95% interval, pairs judged, failures, mean KL."""
    judged = list(judgments)
    scored = [j for j in judged if j.correct is not None]
    right = sum(j.correct for j in scored)
    low, high = wilson_interval(right, len(scored))
    return {
        "fraction": right / len(scored) if scored else None,
        "low": low,
        "high": high,
        "n": len(scored),
        "failures": len(judged) - len(scored),
        "mean_kl": sum(j.mean_kl for j in judged) / len(judged) if judged else None,
    }
