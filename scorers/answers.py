"""Which spelling of the answer options a judge or simulator actually emits, checked once before scoring.

Formats that read scores from log-probabilities (``expected_value``: "0".."3" or "0".."9";
``yes_no``: "Yes"/"No") are only meaningful when the model puts its probability on those
options at the first answer position. Whether it writes them with a leading space depends
on the model and on how the prompt is rendered: a base model after "Rating:" writes " 2",
a chat model after its generation prompt writes "2" (Qwen2.5-Coder-1.5B-Instruct puts 0.99
on the bare digits and under 0.001 on the spaced ones; see shared/research). So the scorer
asks once, on a fixed probe prompt made from the format's own template, how much
probability each spelling's options carry, uses the larger, and refuses to score when even
that is below ``MIN_ANSWER_MASS`` (0.5): the expected value of a distribution that mostly
lies elsewhere says little about the model's answer.
"""

import math
from dataclasses import asdict, dataclass

from harness.errors import MonoscopeError
from harness.llm.client import LLMClient
from harness.llm.interface import Message
from harness.llm.templates import load_rubric, load_template

MIN_ANSWER_MASS = 0.5
SPELLINGS = ("", " ")  # the options as written, or after one space
PROBE_EXPLANATION = "the keyword import at the start of Python import statements"
PROBE_CONTEXT = "⟦import⟧ numpy as np"  # one excerpt with its marked token, as the scorers render them
PROBE_TOKEN = "import"  # the marked token's text, for the prompts that name it
PROBE_TEXT = "import numpy as np"  # the excerpt unmarked, for the prompts that show the text and list its tokens


@dataclass(frozen=True)
class AnswerSpelling:
    """The spelling a model's answers are read in: ``prefix`` ("" or " ") before each option, and the
    probability ``mass`` its options carried on the probe prompt (``other_mass``: the other spelling's)."""

    prefix: str
    mass: float
    other_mass: float
    options: tuple[str, ...]

    def record(self) -> dict[str, object]:
        """Return the spelling as a JSON-ready dict for the run manifest."""
        return asdict(self)


def probe_prompt(template_name: str) -> str:
    """Return the probe prompt of a template: its fields filled with one fixed explanation and excerpt."""
    return load_template(template_name).render(
        explanation=PROBE_EXPLANATION, context=PROBE_CONTEXT, token=PROBE_TOKEN, text=PROBE_TEXT, rubric=load_rubric().describe()
    )


def answer_spelling(
    client: LLMClient, template_name: str, options: list[str], stage: str, what: str, slots: bool = False
) -> AnswerSpelling:
    """Return the spelling of ``options`` that carries more probability after the probe prompt of ``template_name``.

    One ``choice_logprobs`` call (cached like any other); with ``slots`` (the ``yes_no_all``
    simulator), one ``slot_logprobs`` call whose forced reply is the probe token's line, read after
    it. Raises MonoscopeError when the larger mass is below MIN_ANSWER_MASS, naming ``what`` (e.g.
    "judge format expected_value").
    """
    from scorers.simulation import SLOT_FILLER, slot_line

    spelled = {prefix: [prefix + option for option in options] for prefix in SPELLINGS}
    every = [choice for choices in spelled.values() for choice in choices]
    messages = [Message("user", probe_prompt(template_name))]
    if slots:
        logprobs = client.slot_logprobs(messages, [slot_line(PROBE_TOKEN)], SLOT_FILLER, every, stage=stage)[0]
    else:
        logprobs = client.choice_logprobs(messages, every, stage=stage)
    mass = {prefix: sum(math.exp(logprobs[c]) for c in choices if math.isfinite(logprobs[c])) for prefix, choices in spelled.items()}
    prefix = max(SPELLINGS, key=lambda p: mass[p])
    other = next(p for p in SPELLINGS if p != prefix)
    if mass[prefix] < MIN_ANSWER_MASS:
        raise MonoscopeError(
            f"{what}: model {client.backend.model!r} puts {mass[prefix]:.3f} of its probability on the answers "
            f"{options[0]!r}..{options[-1]!r} (with or without a leading space) after the prompt; at least {MIN_ANSWER_MASS} is needed",
            "use a format that generates its answer (judge_format: rating, simulator_format: structured) or another model",
        )
    return AnswerSpelling(prefix=prefix, mass=round(mass[prefix], 6), other_mass=round(mass[other], 6), options=tuple(options))


def answer_spellings(
    judge: LLMClient, judge_format: str | None, simulator: LLMClient, simulator_format: str | None
) -> dict[str, AnswerSpelling]:
    """Return {"judge": spelling, "simulator": spelling} for the roles whose format reads answer log-probabilities.

    A role whose format generates its answer, or scores a likelihood, or is None (its scorer is not run), has no entry.
    """
    from scorers.rubric import ANSWER_OPTIONS, RUBRIC_FORMATS
    from scorers.simulation import SIMULATION_FORMATS, SIMULATION_OPTIONS

    spellings = {}
    if judge_format in ANSWER_OPTIONS:
        template = RUBRIC_FORMATS[judge_format][1]
        spellings["judge"] = answer_spelling(judge, template, ANSWER_OPTIONS[judge_format], "judge", f"judge format {judge_format}")
    if simulator_format in SIMULATION_OPTIONS:
        template = SIMULATION_FORMATS[simulator_format][1]
        what = f"simulator format {simulator_format}"
        options = SIMULATION_OPTIONS[simulator_format]
        slots = simulator_format == "yes_no_all"
        spellings["simulator"] = answer_spelling(simulator, template, options, "simulate", what, slots=slots)
    return spellings
