"""How contexts are written into prompts: marked tokens, normalised activations, one line each."""

from harness.records import TokenContext

NEWLINE = "⏎"


def clean(token: str) -> str:
    """Return a token with line breaks made visible, so a context stays on one line."""
    return token.replace("\r", "").replace("\n", NEWLINE)


def normalised(activations: tuple[float, ...], max_activation: float) -> list[int]:
    """Return activations scaled to integers 0..10 by the unit's maximum (negative values count as 0)."""
    if max_activation <= 0:
        return [0 for _ in activations]
    return [max(0, min(10, round(10 * value / max_activation))) for value in activations]


def with_activations(context: TokenContext, max_activation: float) -> str:
    """Return the context with every firing token written as [[token]]{n} (n = activation 0..10)."""
    pieces = []
    for token, level in zip(context.tokens, normalised(context.activations, max_activation), strict=True):
        pieces.append(f"[[{clean(token)}]]{{{level}}}" if level > 0 else clean(token))
    return "".join(pieces)


def with_marked_target(context: TokenContext, position: int | None = None) -> str:
    """Return the context with one token (the target unless ``position`` is given) written as [[token]]."""
    marked = context.target if position is None else position
    return "".join(f"[[{clean(token)}]]" if index == marked else clean(token) for index, token in enumerate(context.tokens))
