"""The specificity rubric: a judge rates (explanation, context with the target token marked) on 0–3.

Formats (the run records which one produced each judgment):
- ``rating``: one call per judgment asking for one output token, the digit (any backend);
- ``rating_batch``: several contexts per call, one numbered line per context;
- ``expected_value``: expected value of the answer over "0".."3" from the
  backend's log-probabilities (one forward pass, no sampling), the probabilities
  normalised over the four options;
- ``yes_no``: the log-odds d = log P("Yes") − log P("No") of "does the explanation
  describe the marked token?", mapped by the stated rule score = 3 / (1 + exp(−d));

The two log-probability formats read the options in the spelling the model emits
(with or without a leading space), chosen once per model by ``scorers.answers``.
- ``likelihood``: for small base models, which carry signal in likelihoods and
  not in ratings: r = [log P(explanation | marked context + cue) −
  log P(explanation | cue alone)] / explanation tokens, mapped onto the rubric
  by the stated rule score = 3 / (1 + exp(−2 r)) (r = 0 → 1.5).
"""

import math
from collections.abc import Callable

from harness.errors import MonoscopeError
from harness.index.sampling import activation_level
from harness.llm.client import BackendError, LLMClient, UnparseableReply, failure_reason
from harness.llm.interface import CHOICE_LOGPROBS, CONTINUATION_LOGPROB, GENERATE, Message
from harness.llm.render import RENDERING, marked_text, with_marked_target
from harness.llm.templates import Rubric, load_rubric, load_template
from harness.records import Judgment, TokenContext, UnitContexts
from scorers.parsing import numbered_ratings_format, parse_numbered_ratings, parse_rating, rating_format

# The ``rating`` format asks for one output token: the reply must be the digit alone (parse_rating accepts
# nothing else), and a base model continues the prompt's "Rating:" line past the digit ("1 — The
# explanation", as the rubric's lines read) when allowed more. Digits are single tokens in the
# tokenizers of the embedded Gemma, GPT and Claude; a reasoning model cannot answer in one token.
RATING_MAX_TOKENS = 1

# The answer options of the formats read from log-probabilities; ``scorers.answers`` chooses their spelling per model.
ANSWER_OPTIONS = {"expected_value": ["0", "1", "2", "3"], "yes_no": ["Yes", "No"]}

RUBRIC_FORMATS = {
    "rating": (GENERATE, "rubric_rating"),
    "rating_batch": (GENERATE, "rubric_rating_batch"),
    "expected_value": (CHOICE_LOGPROBS, "rubric_rating"),
    "yes_no": (CHOICE_LOGPROBS, "rubric_yes_no"),
    "likelihood": (CONTINUATION_LOGPROB, "rubric_likelihood"),
}


def likelihood_to_rubric(ratio_per_token: float) -> float:
    """Return the rubric score 0..3 of a per-token log-likelihood ratio (the stated mapping)."""
    return 3.0 / (1.0 + math.exp(-2.0 * ratio_per_token))


def explanation_token_count(explanation: str) -> int:
    """Return a rough token count of an explanation (words + punctuation) used to normalise likelihoods."""
    return max(1, len(explanation.split()))


def judge_unit(
    contexts: UnitContexts,
    explanation: str,
    source: str,
    client: LLMClient,
    judge_format: str = "rating",
    rubric: Rubric | None = None,
    batch_size: int = 8,
    answer_prefix: str = " ",
) -> list[Judgment]:
    """Return one Judgment per scoring context of a unit (failures recorded, never scored as 0).

    ``answer_prefix`` ("" or " ") is written before each answer option of the log-probability
    formats (``scorers.answers.answer_spelling`` chooses it per model).

    A context whose backend call fails (BackendError: permanent, or retries exhausted) gets a
    failure record naming the error; the other contexts are still judged.
    """
    if judge_format not in RUBRIC_FORMATS:
        raise MonoscopeError(f"unknown rubric format {judge_format!r}", f"choose one of {', '.join(RUBRIC_FORMATS)}")
    capability, template_name = RUBRIC_FORMATS[judge_format]
    client.require(capability)
    rubric = rubric or load_rubric()
    template = load_template(template_name)

    def record(context: TokenContext, score: float | None, failure: str | None = None, raw: str | None = None) -> Judgment:
        return Judgment(
            unit=contexts.unit,
            context_id=context.context_id,
            context_kind=context.kind,
            activation=context.target_activation,
            level=activation_level(context.target_activation, contexts.max_activation, 10),
            source=source,
            explanation=explanation,
            score=score,
            judge_format=judge_format,
            backend=client.backend.name,
            model=client.backend.model,
            prompt_hash=template.sha256,
            rubric_hash=rubric.sha256,
            failure=failure,
            raw=raw,
            rendering=RENDERING,
        )

    def prompt_for(context: TokenContext) -> str:
        return template.render(
            explanation=explanation, context=with_marked_target(context), token=marked_text(context), rubric=rubric.describe()
        )

    if judge_format == "rating_batch":
        judgments: list[Judgment] = []
        batches = [contexts.score[i : i + batch_size] for i in range(0, len(contexts.score), batch_size)]
        for batch in client.map(lambda group: _judge_batch(group, explanation, client, template, rubric), batches):
            judgments += [record(context, score, failure, raw) for context, (score, failure, raw) in zip(batch[0], batch[1], strict=True)]
        return judgments

    single: Callable[[TokenContext], Judgment]
    if judge_format == "rating":

        def single(context: TokenContext) -> Judgment:
            try:
                score = client.generate(
                    [Message("user", prompt_for(context))],
                    stage="judge",
                    parse=parse_rating,
                    format_hint=rating_format(),
                    max_tokens=RATING_MAX_TOKENS,
                )
            except UnparseableReply as error:
                return record(context, None, f"unparseable reply after {error.attempts} attempts", error.raw)
            except BackendError as error:
                return record(context, None, failure_reason(error))
            return record(context, float(score))

    elif judge_format in ("expected_value", "yes_no"):
        # All contexts of the unit at once: a local judge runs them as one batch after the shared opening.
        choices = [answer_prefix + option for option in ANSWER_OPTIONS[judge_format]]
        requests = [[Message("user", prompt_for(context))] for context in contexts.score]
        answers = client.choice_logprobs_many(requests, choices, stage="judge")
        pairs = zip(contexts.score, answers, strict=True)
        return [_choice_judgment(record, context, answer, judge_format, choices) for context, answer in pairs]

    else:
        try:
            baseline = client.continuation_logprob(template.render(context=""), f" {explanation}", stage="judge")
        except BackendError as error:
            return [record(context, None, failure_reason(error)) for context in contexts.score]
        n_tokens = explanation_token_count(explanation)

        def single(context: TokenContext) -> Judgment:
            try:
                with_context = client.continuation_logprob(
                    template.render(context=with_marked_target(context)), f" {explanation}", stage="judge"
                )
            except BackendError as error:
                return record(context, None, failure_reason(error))
            return record(context, likelihood_to_rubric((with_context - baseline) / n_tokens))

    return client.map(single, list(contexts.score))


def expected_value(logprobs: list[float]) -> float | None:
    """Return the expected answer index under the normalised probabilities; None if none is finite."""
    finite = [lp for lp in logprobs if math.isfinite(lp)]
    if not finite:
        return None
    top = max(finite)
    weights = [math.exp(lp - top) if math.isfinite(lp) else 0.0 for lp in logprobs]
    return sum(index * weight for index, weight in enumerate(weights)) / sum(weights)


def _judge_batch(group, explanation, client, template, rubric):
    listing = "\n".join(f"{number}. {with_marked_target(context)}" for number, context in enumerate(group, 1))
    prompt = template.render(explanation=explanation, rubric=rubric.describe(), contexts=listing)
    try:
        scores = client.generate(
            [Message("user", prompt)],
            stage="judge",
            parse=lambda reply: parse_numbered_ratings(reply, len(group)),
            format_hint=numbered_ratings_format(len(group)),
            max_tokens=8 * len(group),
        )
    except UnparseableReply as error:
        failure = f"unparseable reply after {error.attempts} attempts"
        return group, [(None, failure, error.raw) for _ in group]
    except BackendError as error:
        return group, [(None, failure_reason(error), None) for _ in group]
    return group, [(float(score), None, None) for score in scores]


def _choice_judgment(
    record: Callable[..., Judgment], context: TokenContext, answer: dict[str, float] | BackendError, judge_format: str, choices: list[str]
) -> Judgment:
    """Return the judgment of one context from its answer log-probabilities (``expected_value`` or ``yes_no``)."""
    if isinstance(answer, BackendError):
        return record(context, None, failure_reason(answer))
    if judge_format == "expected_value":
        value = expected_value([answer[c] for c in choices])
        if value is None:
            return record(context, None, "no answer option had a finite log-probability", str(answer))
        return record(context, value)
    yes, no = choices
    odds = answer[yes] - answer[no]
    if not math.isfinite(odds):
        return record(context, None, "yes/no log-probabilities are not finite", str(answer))
    return record(context, 3.0 / (1.0 + math.exp(-odds)))
