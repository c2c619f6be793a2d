"""Stand-ins for modules a peer imports but the measured path never uses (each stub is stated where it is used).

Imported by the scripts that run inside the peers' environments (their folder is on ``sys.path`` as the script's
own); nothing in monoscope imports it.
"""

import sys
import types


def _placeholder(attribute: str) -> type:
    """Any public name an import asks a stubbed module for is a placeholder class; dunder names stay missing."""
    if attribute.startswith("__"):
        raise AttributeError(attribute)
    return object


def stub_modules(*names: str) -> None:
    """Put an empty module under each name in ``sys.modules`` (every public attribute a placeholder class), so that
    ``import name`` and ``from name import X`` succeed without the package; a real module already imported stays."""
    for name in names:
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__getattr__ = _placeholder  # type: ignore[method-assign]
            sys.modules[name] = module


# delphi's imports that its classifier scorers, OpenRouter client and LatentCache never call: vllm (the offline
# client), sentence_transformers and faiss (embedding scorers, neighbour search) and sparsify (its SAE loader).
DELPHI_UNUSED = (
    "vllm",
    "vllm.distributed",
    "vllm.distributed.parallel_state",
    "vllm.inputs",
    "sentence_transformers",
    "faiss",
    "sparsify",
)
