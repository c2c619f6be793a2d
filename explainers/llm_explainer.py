"""The LLM explainer: marked contexts in, a one-phrase explanation of what the unit detects out."""

from harness.llm import LLMClient, UnparseableReply
from harness.llm_types import Message
from harness.records import Explanation, UnitContexts
from harness.render import with_activations
from harness.templates import load_template

EXPLAINER_NAME = "llm"


def parse_explanation(reply: str) -> str:
    """Return the first line of a reply as an explanation; raise ValueError when there is none.

    A line that echoes the prompt's own notation (an "Excerpt" line, or [[ ]] marks)
    is not an explanation and counts as unparseable.
    """
    for line in reply.strip().splitlines():
        text = line.strip().strip('"').strip()
        if text:
            if len(text) > 200:
                raise ValueError("explanation longer than 200 characters")
            if text.startswith("Excerpt") or "[[" in text or "]]" in text:
                raise ValueError("the reply echoes the excerpts instead of explaining them")
            return text.rstrip(".")
    raise ValueError("empty reply")


def explain_unit(contexts: UnitContexts, client: LLMClient, chat: bool, max_contexts: int = 24) -> Explanation:
    """Return the LLM's explanation of a unit from its explanation set (a failure record if unparseable)."""
    template = load_template("explainer_chat" if chat else "explainer_base")
    shown = [c for c in contexts.explain if max(c.activations) > 0][:max_contexts]
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
    )
    try:
        text = client.generate([Message("user", prompt)], stage="explain", parse=parse_explanation, **params)
    except UnparseableReply as error:
        return Explanation(**base, text=None, failure=f"unparseable reply after {error.attempts} attempts", raw=error.raw)
    return Explanation(**base, text=text)
