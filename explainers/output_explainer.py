"""The output-centric explainer: an LLM explains a unit from what it writes to the output (``harness.steering.outputs``).

After Gur-Arieh et al. (2025): the prompt (``prompts/explainer_output.txt``) lists the tokens whose
probability rises most when the unit is clamped on the output prompts, and the tokens its
direction promotes and suppresses through the unembedding; the reply is parsed as every
explanation is (``explainers.llm_explainer.parse_explanation``). The record's explainer is
"output"; its ``contexts_sha256`` digests the profile it was made from, so a changed profile is
explained again.
"""

import hashlib
import json
from dataclasses import asdict

from explainers.llm_explainer import EXPLANATION_FORMAT, parse_explanation
from harness.llm.client import UnparseableReply
from harness.llm.interface import Message
from harness.llm.templates import load_template
from harness.records import Explanation
from harness.steering.outputs import OutputProfile

EXPLAINER_NAME = "output"
TEMPLATE = "explainer_output"


def profile_digest(profile: OutputProfile) -> str:
    """Return the sha256 of a profile's content (the explanation's ``contexts_sha256``)."""
    return hashlib.sha256(json.dumps(asdict(profile), sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def quoted(tokens: tuple[str, ...]) -> str:
    """Return tokens as a comma-separated list of JSON strings (a space or a line break stays visible)."""
    return ", ".join(json.dumps(token, ensure_ascii=False) for token in tokens) or "(none)"


def explain_outputs(profile: OutputProfile, client) -> Explanation:  # noqa: ANN001 (an LLMClient)
    """Return the LLM's output-centric explanation of the profile's unit (a failure record when unparseable)."""
    template = load_template(TEMPLATE)
    prompt = template.render(amplified=quoted(profile.amplified), promoted=quoted(profile.promoted), suppressed=quoted(profile.suppressed))
    base = dict(
        unit=profile.unit,
        explainer=EXPLAINER_NAME,
        backend=client.backend.name,
        model=client.backend.model,
        prompt_hash=template.sha256,
        n_contexts=0,
        contexts_sha256=profile_digest(profile),
    )
    try:
        text = client.generate(
            [Message("user", prompt)], stage="explain", parse=parse_explanation, format_hint=EXPLANATION_FORMAT, max_tokens=40
        )
    except UnparseableReply as error:
        return Explanation(**base, text=None, failure=f"unparseable reply after {error.attempts} attempts", raw=error.raw)
    return Explanation(**base, text=text)
