"""What a unit writes to the output: the tokens its direction promotes and suppresses, and the tokens clamping it raises.

After Gur-Arieh et al. (2025), "Enhancing automated interpretability with output-centric feature
descriptions": a feature is described from what it does to the next-token distribution, not
from the contexts where it fires.

- ``output_logits``: the unit's residual direction (a dictionary feature's decoder row ``W_dec[i]``;
  a neuron's column of its MLP output projection) through the model's final norm and the
  unembedding, a logit-lens reading of the direction alone [vocab].
- ``amplified_tokens``: the unit clamped at ``multiple`` × its maximum activation on each output
  prompt (``prompts/output_prompts.txt``, disjoint from the intervention scorer's neutral prompts),
  the rise of each token's probability at the last position over the plain model's, averaged over
  the prompts.
Both lists keep only tokens that occur in the run's corpus (``corpus_tokens``), so the explainer
never reads an unused vocabulary entry.
"""

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from harness.errors import MonoscopeError
from harness.llm.templates import PROMPTS
from harness.steering.clamp import clamped
from harness.steering.generate import prompt_ids
from harness.steering.units import SteeredUnit, unit_clamps
from harness.subject.model import SubjectModel, mlp_output_projection, parse_hook, transformer_blocks

OUTPUT_PROMPTS = "output_prompts.txt"
TOP_TOKENS = 10
DEFAULT_MULTIPLE = 5.0  # × the unit's maximum activation, as the intervention scorer's first strength


@dataclass(frozen=True)
class OutputProfile:
    """The tokens a unit promotes, suppresses and raises (decoded, strongest first) with their scores."""

    unit: str
    promoted: tuple[str, ...]
    promoted_logits: tuple[float, ...]
    suppressed: tuple[str, ...]
    suppressed_logits: tuple[float, ...]
    amplified: tuple[str, ...]
    amplified_gain: tuple[float, ...]  # mean rise in probability over the output prompts
    multiple: float
    model: str
    prompts_sha256: str

    @property
    def key(self) -> str:
        """Return what identifies the record in its file: a later record with the same key replaces it."""
        return self.unit


def output_prompts() -> list[str]:
    """Return the bundled output prompts (``prompts/output_prompts.txt``, comments and blank lines left out)."""
    lines = (PROMPTS / OUTPUT_PROMPTS).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def prompts_digest(prompts: list[str]) -> str:
    """Return the first 16 hex digits of the sha256 of the prompts (a profile made from other prompts is redone)."""
    return hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16]


def corpus_tokens(chunks: np.ndarray, vocab_size: int, rows: int = 4096) -> torch.Tensor:
    """Return a bool mask [vocab_size] of the token ids that occur in the corpus chunks [n, T] (a memmap is read
    ``rows`` chunks at a time: memory bounded by the vocabulary, not the corpus)."""
    seen = np.zeros(vocab_size, dtype=bool)
    for start in range(0, len(chunks), rows):
        block = np.asarray(chunks[start : start + rows]).ravel()
        seen[block[(block >= 0) & (block < vocab_size)]] = True
    return torch.from_numpy(seen)


def unit_direction(subject: SubjectModel, unit: SteeredUnit) -> torch.Tensor:
    """Return the residual-stream direction [d_model] a unit writes: its decoder row, or a neuron's output weights."""
    dictionary = unit.dictionary
    if dictionary.architecture == "identity" and dictionary.hook_name.endswith("mlp.hook_post"):
        layer = parse_hook(dictionary.hook_name, subject.n_layers).layer
        projection = mlp_output_projection(transformer_blocks(subject.model)[layer])
        return projection.weight[:, unit.index].detach().float()
    if dictionary.W_dec is None or dictionary.W_dec.shape[1] != subject.d_model:
        raise MonoscopeError(f"{unit.name}: no decoder row in the residual stream", "output-centric explanations read W_dec")
    return dictionary.W_dec[unit.index].detach().float()


def final_norm(model: torch.nn.Module) -> torch.nn.Module:
    """Return the norm a HF causal LM applies before its unembedding."""
    for path in (
        "model.norm",
        "model.language_model.norm",
        "transformer.ln_f",
        "gpt_neox.final_layer_norm",
        "model.decoder.final_layer_norm",
    ):
        module = model
        try:
            for attribute in path.split("."):
                module = getattr(module, attribute)
        except AttributeError:
            continue
        return module
    raise MonoscopeError(f"cannot find the final norm of {type(model).__name__}", "use a decoder-only HF model")


@torch.inference_mode()
def output_logits(subject: SubjectModel, direction: torch.Tensor) -> torch.Tensor:
    """Return the logits [vocab] of ``direction`` [d_model] alone through the final norm and the unembedding (float32)."""
    norm = final_norm(subject.model)
    unembedding = subject.model.get_output_embeddings()
    parameter = next(unembedding.parameters())
    normed = norm(direction.to(parameter.device, parameter.dtype)[None, None, :])
    return unembedding(normed)[0, 0].float().cpu()


@torch.inference_mode()
def amplified_tokens(
    subject: SubjectModel, unit: SteeredUnit, prompts: list[str], multiple: float, plains: dict[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """Return the mean rise [vocab] of each next-token probability at each prompt's last position when the unit is clamped.

    The clamp holds the unit at ``multiple`` × its maximum at every position after BOS. ``plains`` keeps
    the plain distributions across units (one forward pass per prompt).
    """
    plains = {} if plains is None else plains
    clamps = unit_clamps([unit], [multiple])
    first = 0 if subject.bos_token_id is None else 1
    rises = []
    for prompt in prompts:
        ids = prompt_ids(subject, prompt)
        if prompt not in plains:
            plains[prompt] = subject.model(ids, use_cache=False).logits[0, -1].float().softmax(-1).cpu()
        with clamped(subject, clamps, first):
            steered = subject.model(ids, use_cache=False).logits[0, -1].float().softmax(-1).cpu()
        rises.append(steered - plains[prompt])
    return torch.stack(rises).mean(0)


def output_profile(
    subject: SubjectModel,
    unit: SteeredUnit,
    allowed: torch.Tensor,
    prompts: list[str] | None = None,
    multiple: float = DEFAULT_MULTIPLE,
    top: int = TOP_TOKENS,
    plains: dict[str, torch.Tensor] | None = None,
) -> OutputProfile:
    """Return the unit's output profile: ``top`` promoted, suppressed and amplified tokens among ``allowed`` [vocab]."""
    prompts = output_prompts() if prompts is None else prompts
    logits = output_logits(subject, unit_direction(subject, unit))
    gains = amplified_tokens(subject, unit, prompts, multiple, plains)
    allowed = allowed[: logits.shape[0]]
    if not allowed.any():
        raise MonoscopeError("no token of the vocabulary occurs in the corpus", "check the corpus")

    def ranked(values: torch.Tensor, largest: bool) -> tuple[tuple[str, ...], tuple[float, ...]]:
        masked = values.masked_fill(~allowed, -torch.inf if largest else torch.inf)
        order = torch.topk(masked, min(top, int(allowed.sum())), largest=largest).indices.tolist()
        return tuple(subject.tokenizer.decode([i]) for i in order), tuple(round(float(values[i]), 6) for i in order)

    promoted, promoted_logits = ranked(logits, True)
    suppressed, suppressed_logits = ranked(logits, False)
    amplified, gain = ranked(gains, True)
    return OutputProfile(
        unit.name,
        promoted,
        promoted_logits,
        suppressed,
        suppressed_logits,
        amplified,
        gain,
        multiple,
        subject.name,
        prompts_digest(prompts),
    )
