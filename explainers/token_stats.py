"""Token-statistics baseline: the tokens most over-represented where the unit fires. No LLM."""

import math
from collections import Counter

from harness.llm.render import RENDERING, display_words
from harness.records import Explanation, UnitContexts, contexts_digest

EXPLAINER_NAME = "token_stats"


def token_statistics_explanation(contexts: UnitContexts, top: int = 3) -> Explanation:
    """Return an explanation listing the tokens with the highest smoothed log-odds of firing.

    Counts come from the explanation set only: tokens where the unit fires
    against all tokens of those windows. A "token" is a display unit (``harness.llm.render``):
    byte tokens of one character count as that character, with the largest activation among them.
    """
    firing: Counter[str] = Counter()
    everywhere: Counter[str] = Counter()
    for context in contexts.explain:
        for word, unit in display_words(context):  # " pos" and "pos" count as one token
            value = max(context.activations[index] for index in unit)
            everywhere[word] += 1
            if value > 0:
                firing[word] += value / max(contexts.max_activation, 1e-9)
    n_firing = sum(firing.values())
    n_total = sum(everywhere.values())
    if not firing:
        return Explanation(
            contexts.unit,
            EXPLAINER_NAME,
            None,
            "none",
            "none",
            "",
            len(contexts.explain),
            failure="unit never fires in its explanation contexts",
            contexts_sha256=contexts_digest(contexts.explain, RENDERING),
        )

    def log_odds(token: str) -> float:
        return math.log((firing[token] + 0.5) / (n_firing + 1)) - math.log((everywhere[token] + 0.5) / (n_total + 1))

    ranked = sorted(firing, key=lambda token: (-(log_odds(token) * math.sqrt(firing[token])), token))[:top]
    text = "the tokens " + ", ".join(f'"{token}"' for token in ranked)
    digest = contexts_digest(contexts.explain, RENDERING)
    return Explanation(contexts.unit, EXPLAINER_NAME, text, "none", "none", "", len(contexts.explain), contexts_sha256=digest)
