"""Held-out activation prediction: the simulator predicts 0–10 on every token from the explanation alone.

Score per unit = Pearson and Spearman correlation between predicted and true
activations over all tokens of its scoring contexts. A constant prediction has
no correlation; it is reported as such (None with a reason), never as 0.

Formats:
- ``structured``: one call per context; the reply is a JSON list of 0–10 per token;
- ``expected_value``: per token, the expected value over the answers "0".."9"
  (Gemma and Qwen split "10", so the scale is 0–9; with or without a leading space,
  as the model writes them: ``scorers.answers``), times 10/9;
- ``yes_no``: per token, the yes/no judge's question (``rubric_yes_no``: is this marked token an
  example of what the explanation describes?) with that token marked and named, predicted as
  10 · P("Yes") / (P("Yes") + P("No"));
- ``yes_no_all``: the same question for every token in one forward pass per context: the prompt
  gives the explanation and the context's text, and the reply is forced as one line per
  display unit, ``"token": No``; P("Yes") and P("No") are read after each line's colon
  (``slot_logprobs``; the "all at once" reading of OpenAI's neuron-explainer simulator, which
  also fills every answer with a placeholder), predicted as 10 · P("Yes") / (P("Yes") + P("No"));
- ``likelihood``: per token, the likelihood judge's per-token log-likelihood
  ratio r with that token marked, mapped by the stated rule 10 / (1 + exp(−2 r)).

The simulator sees a context's display units (``harness.llm.render.display_units``), not its
raw tokens: the byte tokens of one character are one unit, shown as that character. It
predicts once per unit (one numbered line, or one marked prompt, per unit), and the unit's
prediction is given to each of its tokens, so a Simulation keeps one predicted and one true
activation per token (the true ones as recorded) and the correlation runs over tokens.
"""

import hashlib
import math

import numpy as np
from scipy import stats as scipy_stats

from harness.errors import MonoscopeError
from harness.llm.client import BackendError, LLMClient, UnparseableReply, failure_reason
from harness.llm.interface import CHOICE_LOGPROBS, CONTINUATION_LOGPROB, GENERATE, SLOT_LOGPROBS, Message
from harness.llm.render import RENDERING, display_units, marked_text, shown, unit_text, with_marked_target
from harness.llm.templates import load_template
from harness.records import Simulation, TokenContext, UnitContexts
from scorers.parsing import activation_list_format, parse_activation_list
from scorers.rubric import expected_value, explanation_token_count

SIMULATION_FORMATS = {
    "structured": (GENERATE, "simulator_structured"),
    "expected_value": (CHOICE_LOGPROBS, "simulator_digit"),
    "yes_no": (CHOICE_LOGPROBS, "rubric_yes_no"),
    "yes_no_all": (SLOT_LOGPROBS, "simulator_yes_no_all"),
    "likelihood": (CONTINUATION_LOGPROB, "rubric_likelihood"),
}


# The answer options of the log-probability formats; their spelling is chosen per model by scorers.answers.
SIMULATION_OPTIONS = {"expected_value": [str(digit) for digit in range(10)], "yes_no": ["Yes", "No"], "yes_no_all": ["Yes", "No"]}
# The forced answer after each token line of ``yes_no_all``: a placeholder, the same on every line. Chosen on units
# outside the signal check's set before its run: " No" kept real above shuffled explanations, " ?" did not (README).
SLOT_FILLER = " No"


def slot_line(token: str) -> str:
    """Return the forced reply line of one display unit in ``yes_no_all`` (its shown text, quoted, and a colon)."""
    return f'"{token}":'


def simulator_prompt_hash(simulator_format: str) -> str:
    """Return the prompt hash a simulation record of ``simulator_format`` carries: its template's, and for
    ``yes_no_all`` also the forced reply's form (line and placeholder), so a change of either redoes the records."""
    template = load_template(SIMULATION_FORMATS[simulator_format][1])
    if simulator_format != "yes_no_all":
        return template.sha256
    return hashlib.sha256(f"{template.sha256}\n{slot_line('{token}')}{SLOT_FILLER}".encode()).hexdigest()[:16]


def simulate_unit(
    contexts: UnitContexts, explanation: str, source: str, client: LLMClient, simulator_format: str = "structured", answer_prefix: str = " "
) -> list[Simulation]:
    """Return one Simulation per scoring context of a unit (failures recorded with the raw reply).

    ``answer_prefix`` ("" or " ") is written before each answer option of the log-probability formats
    (``expected_value``, ``yes_no``, ``yes_no_all``; ``scorers.answers.answer_spelling`` chooses it per model).

    A context whose backend calls fail (BackendError: permanent, or retries exhausted) gets a
    failure record naming the error and no prediction; the other contexts are still simulated.
    """
    if simulator_format not in SIMULATION_FORMATS:
        raise MonoscopeError(f"unknown simulator format {simulator_format!r}", f"choose one of {', '.join(SIMULATION_FORMATS)}")
    capability, template_name = SIMULATION_FORMATS[simulator_format]
    client.require(capability)
    template = load_template(template_name)

    def record(context: TokenContext, predicted: list[float] | None, failure: str | None = None, raw: str | None = None) -> Simulation:
        return Simulation(
            unit=contexts.unit,
            context_id=context.context_id,
            source=source,
            explanation=explanation,
            predicted=None if predicted is None else tuple(predicted),
            actual=context.activations,
            simulator_format=simulator_format,
            backend=client.backend.name,
            model=client.backend.model,
            prompt_hash=simulator_prompt_hash(simulator_format),
            failure=failure,
            raw=raw,
            rendering=RENDERING,
        )

    if simulator_format == "structured":

        def simulate(context: TokenContext) -> Simulation:
            units = display_units(context.tokens)
            numbered = "\n".join(f"{index}: {shown(unit_text(context.tokens, unit))!r}" for index, unit in enumerate(units, 1))
            prompt = template.render(explanation=explanation, tokens=numbered, n_tokens=len(units))
            try:
                values = client.generate(
                    [Message("user", prompt)],
                    stage="simulate",
                    parse=lambda reply: parse_activation_list(reply, len(units)),
                    format_hint=activation_list_format(len(units)),
                    max_tokens=4 * len(units) + 8,
                )
            except UnparseableReply as error:
                return record(context, None, f"unparseable reply after {error.attempts} attempts", error.raw)
            except BackendError as error:
                return record(context, None, failure_reason(error))
            return record(context, per_token(units, values))

    elif simulator_format == "yes_no_all":
        choices = [answer_prefix + option for option in SIMULATION_OPTIONS[simulator_format]]

        def simulate(context: TokenContext) -> Simulation:
            units = display_units(context.tokens)
            prompt = template.render(explanation=explanation, text=shown("".join(context.tokens)))
            lines = [slot_line(shown(unit_text(context.tokens, unit))) for unit in units]
            try:
                rows = client.slot_logprobs([Message("user", prompt)], lines, SLOT_FILLER, choices, stage="simulate")
            except BackendError as error:
                return record(context, None, failure_reason(error))
            values = []
            for row in rows:
                value = _yes_no_prediction([row[c] for c in choices])
                if value is None:
                    return record(context, None, "yes/no log-probabilities are not finite", str(row))
                values.append(value)
            return record(context, per_token(units, values))

    elif simulator_format in SIMULATION_OPTIONS:
        choices = [answer_prefix + option for option in SIMULATION_OPTIONS[simulator_format]]
        to_prediction = _digits_prediction if simulator_format == "expected_value" else _yes_no_prediction

        def simulate(context: TokenContext) -> Simulation:
            # One request per display unit, asked together: a local simulator runs them as one batch after the
            # opening they share (explanation, question and the context up to the first unit).
            units = display_units(context.tokens)
            requests = [
                [
                    Message(
                        "user",
                        template.render(
                            explanation=explanation,
                            context=with_marked_target(context, unit.start),
                            token=marked_text(context, unit.start),
                        ),
                    )
                ]
                for unit in units
            ]
            values = []
            for logprobs in client.choice_logprobs_many(requests, choices, stage="simulate"):
                if isinstance(logprobs, BackendError):
                    return record(context, None, failure_reason(logprobs))
                value = to_prediction([logprobs[c] for c in choices])
                if value is None:
                    reason = "no answer option had a finite log-probability"
                    if simulator_format == "yes_no":
                        reason = "yes/no log-probabilities are not finite"
                    return record(context, None, reason, str(logprobs))
                values.append(value)
            return record(context, per_token(units, values))

    else:
        try:
            baseline = client.continuation_logprob(template.render(context=""), f" {explanation}", stage="simulate")
        except BackendError as error:
            return [record(context, None, failure_reason(error)) for context in contexts.score]
        n_tokens = explanation_token_count(explanation)

        def simulate(context: TokenContext) -> Simulation:
            units = display_units(context.tokens)
            values = []
            for unit in units:
                prompt = template.render(context=with_marked_target(context, unit.start))
                try:
                    ratio = (client.continuation_logprob(prompt, f" {explanation}", stage="simulate") - baseline) / n_tokens
                except BackendError as error:
                    return record(context, None, failure_reason(error))
                values.append(10.0 / (1.0 + math.exp(-2.0 * ratio)))
            return record(context, per_token(units, values))

    return client.map(simulate, list(contexts.score))


def _digits_prediction(logprobs: list[float]) -> float | None:
    """Return 0–10 from the log-probabilities of "0".."9": their expected value times 10/9 (None if none is finite)."""
    value = expected_value(logprobs)
    return None if value is None else value * 10 / 9


def _yes_no_prediction(logprobs: list[float]) -> float | None:
    """Return 0–10 from the log-probabilities of "Yes" and "No": 10 · P(Yes) / (P(Yes) + P(No)) (None if either is not finite)."""
    yes, no = logprobs
    if not (math.isfinite(yes) and math.isfinite(no)):
        return None
    return 10.0 / (1.0 + math.exp(no - yes))


def per_token(units: list[range], values: list[float]) -> list[float]:
    """Return one prediction per token from one per display unit: each token of a unit gets the unit's value."""
    return [value for unit, value in zip(units, values, strict=True) for _ in unit]


def correlation_scores(simulations: list[Simulation]) -> dict[str, float | int | str | None]:
    """Return Pearson and Spearman correlations over all tokens of a unit's parsed simulations.

    ``reason`` says why a correlation is None: no parsed simulation, or a constant
    prediction or a constant truth (no correlation exists).
    """
    parsed = [s for s in simulations if s.predicted is not None]
    result: dict[str, float | int | str | None] = {
        "pearson": None,
        "spearman": None,
        "n_tokens": 0,
        "failed_contexts": len(simulations) - len(parsed),
        "reason": None,
    }
    if not parsed:
        result["reason"] = "no parsed simulation"
        return result
    predicted = np.concatenate([np.asarray(s.predicted, dtype=float) for s in parsed])
    actual = np.concatenate([np.asarray(s.actual, dtype=float) for s in parsed])
    result["n_tokens"] = int(predicted.size)
    if np.ptp(actual) == 0:  # first: no explanation can correlate with a constant truth
        result["reason"] = "constant true activations"
        return result
    if np.ptp(predicted) == 0:
        result["reason"] = "constant prediction"
        return result
    result["pearson"] = float(np.corrcoef(predicted, actual)[0, 1])
    result["spearman"] = float(scipy_stats.spearmanr(predicted, actual).statistic)
    return result
