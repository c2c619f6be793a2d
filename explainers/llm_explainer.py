"""The LLM explainer: marked contexts in, a one-phrase explanation of what the unit detects out."""

import re

from harness.llm.client import LLMClient, UnparseableReply
from harness.llm.interface import Message
from harness.llm.render import with_activations
from harness.llm.templates import Template, load_template
from harness.records import Explanation, TokenContext, UnitContexts, contexts_digest

EXPLAINER_NAME = "llm"
TOO_FEW_CONTEXTS = "too few firing explanation contexts"  # a unit with less evidence is not explained, nor scored


def parse_explanation(reply: str) -> str:
    """Return the first line of a reply as an explanation; raise ValueError when there is none.

    The prompt's token marks are unwrapped (a reply "[[ root]]{3}" names the token
    " root"); a line that continues the list of excerpts instead of explaining
    them counts as unparseable.
    """
    for line in reply.strip().splitlines():
        text = re.sub(r"\[\[(.*?)\]\](\{\d*\}?)?", r"\1", line).replace("[[", "").replace("]]", "")
        text = " ".join(text.split()).strip('"').strip().rstrip(".").strip()
        if text:
            if len(text) > 200:
                raise ValueError("explanation longer than 200 characters")
            if text.startswith("Excerpt"):
                raise ValueError("the reply continues the excerpts instead of explaining them")
            return text
    raise ValueError("empty reply")


def explainer_template(chat: bool) -> Template:
    """Return the explainer's prompt template: the chat or the base-model one."""
    return load_template("explainer_chat" if chat else "explainer_base")


def shown_contexts(contexts: UnitContexts, chat: bool, max_contexts: int | None = None) -> list[TokenContext]:
    """Return the firing explanation contexts the explainer is shown: up to 24 for a chat model, 10 for a base model."""
    return [c for c in contexts.explain if max(c.activations) > 0][: max_contexts or (24 if chat else 10)]


def explain_unit(
    contexts: UnitContexts, client: LLMClient, chat: bool, max_contexts: int | None = None, min_contexts: int = 1
) -> Explanation:
    """Return the LLM's explanation of a unit from its explanation set (a failure record if unparseable).

    Chat models see up to 24 firing contexts; base models 10, since a small base model
    given a long list tends to continue the list instead of summarising it.
    """
    template = explainer_template(chat)
    shown = shown_contexts(contexts, chat, max_contexts)
    lines = "\n".join(f"Excerpt {number}: {with_activations(c, contexts.max_activation)}" for number, c in enumerate(shown, 1))
    prompt = template.render(contexts=lines)
    params = {"max_new_tokens": 24, "stop": ["\n"]} if not chat else {"max_tokens": 40}
    base = dict(
        unit=contexts.unit,
        explainer=EXPLAINER_NAME,
        backend=client.backend.name,
        model=client.backend.model,
        prompt_hash=template.sha256,
        n_contexts=len(shown),
        contexts_sha256=contexts_digest(shown),
    )
    if len(shown) < min_contexts:  # too little evidence to explain: a failure, and no LLM call
        return Explanation(**base, text=None, failure=f"{TOO_FEW_CONTEXTS}: {len(shown)} firing, at least {min_contexts} needed")
    try:
        text = client.generate([Message("user", prompt)], stage="explain", parse=parse_explanation, **params)
    except UnparseableReply as error:
        return Explanation(**base, text=None, failure=f"unparseable reply after {error.attempts} attempts", raw=error.raw)
    return Explanation(**base, text=text)
