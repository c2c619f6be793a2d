"""The LLM explainer: marked contexts in, a one-phrase explanation of what the unit detects out."""

import re

from harness.llm.client import LLMClient, UnparseableReply
from harness.llm.interface import Message
from harness.llm.render import RENDERING, display_words, normalised, with_activations
from harness.llm.replies import unwrap_reply
from harness.llm.templates import Template, load_template
from harness.records import Explanation, TokenContext, UnitContexts, contexts_digest

EXPLAINER_NAME = "llm"
TOO_FEW_CONTEXTS = "too few firing explanation contexts"  # a unit with less evidence is not explained, nor scored
EXPLANATION_LABELS = ("explanation", "answer")
EXPLANATION_FORMAT = "one short phrase on one line"
_MARK = re.compile(r"\u27e6([^\u27e6\u27e7\n]*)\u27e7(?:\{\d*\})?")  # a copied context mark ⟦token⟧{n} (never ASCII brackets)


def parse_explanation(reply: str) -> str:
    """Return the explanation in a reply: its first line after unwrapping; raise ValueError when there is none.

    The reply is unwrapped (``harness.llm.replies.unwrap_reply``: closed reasoning blocks, a
    fence, quotes, bold, an "Explanation:" or "Answer:" label, trailing periods); a reply that
    opens a reasoning block and never closes it is rejected, never explained as "<think>".
    Only the first non-empty line counts: a base model, or a chat model that goes on, may
    continue after its phrase. A copied context mark ``⟦ root⟧{3}`` is unwrapped to its
    token ("root"); brackets of any other kind are kept as written. The result is
    non-empty, at most 200 characters, and does not start with "Excerpt" (a reply that
    continues the list of excerpts instead of explaining them).
    """
    text = unwrap_reply(reply, EXPLANATION_LABELS, trailing_period=False)
    line = next((line for line in text.splitlines() if line.strip()), "")
    text = unwrap_reply(line, EXPLANATION_LABELS, trailing_period=True)  # one trailing period: "U.S." keeps "U.S"
    text = " ".join(_MARK.sub(r"\1", text).split()).strip()
    if not any(character.isalnum() for character in text):
        raise ValueError("empty reply" if not text else "no words in the reply")
    if len(text) > 200:
        raise ValueError("explanation longer than 200 characters")
    if text.startswith("Excerpt"):
        raise ValueError("the reply continues the excerpts instead of explaining them")
    return text


def explainer_template(chat: bool) -> Template:
    """Return the explainer's prompt template: the chat or the base-model one."""
    return load_template("explainer_chat" if chat else "explainer_base")


def shown_contexts(contexts: UnitContexts, chat: bool, max_contexts: int | None = None) -> list[TokenContext]:
    """Return the firing explanation contexts the explainer is shown: up to 24 for a chat model, 10 for a base model."""
    return [c for c in contexts.explain if max(c.activations) > 0][: max_contexts or (24 if chat else 10)]


def strongest_tokens(shown: list[TokenContext], max_activation: float, top: int = 8) -> list[str]:
    """Return the texts of the marked tokens of ``shown`` with the largest summed activation, largest first.

    A token is a display unit as the excerpts show it (``harness.llm.render``), stripped of
    surrounding spaces (" pos" and "pos" count as one); its weight is the sum over the excerpts of
    its activation level (0..10 of ``max_activation``). Ties are broken by the text. The chat
    explainer's prompt lists them after the excerpts, so a small model can name the tokens it
    would otherwise have to collect from 24 excerpts itself.
    """
    weights: dict[str, int] = {}
    for context in shown:
        levels = normalised(context.activations, max_activation)
        for word, unit in display_words(context):
            level = max(levels[index] for index in unit)
            if level > 0:
                weights[word] = weights.get(word, 0) + level
    return sorted(weights, key=lambda word: (-weights[word], word))[:top]


def explain_unit(
    contexts: UnitContexts, client: LLMClient, chat: bool, max_contexts: int | None = None, min_contexts: int = 1
) -> Explanation:
    """Return the LLM's explanation of a unit from its explanation set (a failure record if unparseable).

    Chat models see up to 24 firing contexts (most active first); base models 10, since a small
    base model given a long list tends to continue the list instead of summarising it.
    ``max_contexts`` (config ``evaluation.explain_contexts``) overrides either.
    """
    template = explainer_template(chat)
    shown = shown_contexts(contexts, chat, max_contexts)
    lines = "\n".join(f"Excerpt {number}: {with_activations(c, contexts.max_activation)}" for number, c in enumerate(shown, 1))
    prompt = template.render(contexts=lines, tokens=", ".join(f'"{token}"' for token in strongest_tokens(shown, contexts.max_activation)))
    params = {"max_new_tokens": 24, "stop": ["\n"]} if not chat else {"max_tokens": 40}
    base = dict(
        unit=contexts.unit,
        explainer=EXPLAINER_NAME,
        backend=client.backend.name,
        model=client.backend.model,
        prompt_hash=template.sha256,
        n_contexts=len(shown),
        contexts_sha256=contexts_digest(shown, RENDERING),
    )
    if len(shown) < min_contexts:  # too little evidence to explain: a failure, and no LLM call
        return Explanation(**base, text=None, failure=f"{TOO_FEW_CONTEXTS}: {len(shown)} firing, at least {min_contexts} needed")
    try:
        text = client.generate(
            [Message("user", prompt)], stage="explain", parse=parse_explanation, format_hint=EXPLANATION_FORMAT, **params
        )
    except UnparseableReply as error:
        return Explanation(**base, text=None, failure=f"unparseable reply after {error.attempts} attempts", raw=error.raw)
    return Explanation(**base, text=text)
