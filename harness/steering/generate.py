"""Generate with and without clamps, and measure how far the clamps move the next-token distribution.

``steer`` returns the plain and the steered continuation of one prompt and, at each position
of the steered continuation, KL(steered ‖ plain) of the next-token distributions, both
models fed the same (steered) prefix: the effect size of the intervention, in nats.
Generation is Hugging Face ``generate`` with its KV cache; the clamps are forward hooks
(``harness.steering.clamp``), so a plain and a steered token cost the same forward pass plus
one encode and two decodes at the hook.
"""

from dataclasses import dataclass

import torch

from harness.errors import MonoscopeError
from harness.steering.clamp import POSITIONS, Clamp, clamped
from harness.subject.model import SubjectModel, with_bos

STEERING = "steering.jsonl"  # a run's Steering records


@dataclass(frozen=True)
class Steering:
    """One prompt continued without and with clamps (a record of ``steering.jsonl``).

    ``values`` are the clamped activations, ``multiples`` the same as multiples of each unit's
    maximum activation over the index (None where a value was given directly). ``kl`` holds,
    per token of the steered continuation, KL(steered ‖ plain) in nats of the distribution that
    chose it; ``mean_kl`` is their mean.
    """

    model: str
    units: tuple[str, ...]
    multiples: tuple[float | None, ...]
    values: tuple[float, ...]
    positions: str  # "all" or "new" (generated tokens only)
    prompt: str
    max_new_tokens: int
    sampling: str  # "greedy", or "sample seed=S temperature=T"
    baseline: str
    steered: str
    kl: tuple[float, ...]
    mean_kl: float

    @property
    def key(self) -> tuple:
        """Return what identifies the record in its file: a later record with the same key replaces it."""
        return (self.model, self.units, self.prompt, self.multiples, self.positions, self.max_new_tokens, self.sampling)


def prompt_ids(subject: SubjectModel, prompt: str) -> torch.Tensor:
    """Return the prompt's token ids [1, P] on the model's device, BOS first when the model has one."""
    if not prompt:
        raise MonoscopeError("the steering prompt is empty", "give a prompt of at least one token")
    ids = list(subject.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if not ids:
        raise MonoscopeError(f"the steering prompt {prompt!r} has no tokens", "give a prompt of at least one token")
    return with_bos(subject, torch.tensor([ids], device=subject.device))


def _generate(subject: SubjectModel, ids: torch.Tensor, max_new_tokens: int, seed: int | None, temperature: float) -> torch.Tensor:
    """Return the new token ids [n] after ``ids`` [1, P]: greedy, or sampled with a seeded generator."""
    options: dict[str, object] = {"max_new_tokens": max_new_tokens, "use_cache": True}
    if seed is None:
        options |= {"do_sample": False, "top_k": None, "top_p": None, "temperature": None}
    else:
        torch.manual_seed(seed)
        options |= {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    pad = getattr(subject.tokenizer, "pad_token_id", None)
    pad = getattr(subject.tokenizer, "eos_token_id", None) if pad is None else pad
    output = subject.model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=pad, **options)
    return output[0, ids.shape[1] :]


@torch.inference_mode()
def next_token_kl(subject: SubjectModel, ids: torch.Tensor, prompt_length: int, clamps: list[Clamp], first_clamped: int) -> torch.Tensor:
    """Return KL(steered ‖ plain) [n] of the next-token distributions that chose tokens prompt_length.. of ``ids`` [1, P+n].

    Both forward passes read the same ids; the steered one runs with ``clamps``.
    """
    plain = subject.model(ids, use_cache=False).logits[0, prompt_length - 1 : -1].float().log_softmax(-1)
    with clamped(subject, clamps, first_clamped):
        steered = subject.model(ids, use_cache=False).logits[0, prompt_length - 1 : -1].float().log_softmax(-1)
    return (steered.exp() * (steered - plain)).sum(-1).clamp_min(0.0)


@torch.inference_mode()
def steer(
    subject: SubjectModel,
    prompt: str,
    clamps: list[Clamp],
    units: tuple[str, ...] = (),
    multiples: tuple[float | None, ...] = (),
    values: tuple[float, ...] = (),
    max_new_tokens: int = 24,
    positions: str = "all",
    seed: int | None = None,
    temperature: float = 1.0,
    plains: dict[tuple, torch.Tensor] | None = None,
) -> Steering:
    """Return the plain and steered continuations of ``prompt`` and the KL at each steered token.

    ``plains``: a dict the caller keeps across calls; the plain continuation, which depends on
    neither the clamps nor ``positions``, is generated once per (prompt, length, sampling) and
    reused from it (a unit steered at several strengths, several units on one prompt).
    ``units``, ``multiples`` and ``values`` label the record (what ``clamps`` hold, per unit).
    ``positions`` "all" clamps every position of the text (prompt included, BOS not), "new" only
    generated tokens. Generation stops at ``max_new_tokens`` or the end-of-sequence token.
    ``seed`` None is greedy decoding; otherwise both continuations sample with that seed.
    Raises MonoscopeError for an empty prompt, an unknown ``positions`` or a non-positive length.
    """
    if positions not in POSITIONS:
        raise MonoscopeError(f"unknown positions {positions!r}", f"choose one of {', '.join(POSITIONS)}")
    if max_new_tokens < 1:
        raise MonoscopeError(f"max_new_tokens is {max_new_tokens}", "generate at least one token")
    ids = prompt_ids(subject, prompt)
    length = ids.shape[1]
    # "all" starts after BOS: dictionaries never see it (harness.subject.model.collect_activations drops it)
    first_clamped = (0 if subject.bos_token_id is None else 1) if positions == "all" else length
    key = (subject.name, prompt, max_new_tokens, seed, temperature)
    plain = None if plains is None else plains.get(key)
    if plain is None:
        plain = _generate(subject, ids, max_new_tokens, seed, temperature)
        if plains is not None:
            plains[key] = plain
    with clamped(subject, clamps, first_clamped):
        steered = _generate(subject, ids, max_new_tokens, seed, temperature)
    kl = next_token_kl(subject, torch.cat([ids[0], steered]).unsqueeze(0), length, clamps, first_clamped)
    decode = subject.tokenizer.decode
    return Steering(
        model=subject.name,
        units=units,
        multiples=multiples,
        values=values,
        positions=positions,
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        sampling="greedy" if seed is None else f"sample seed={seed} temperature={temperature}",
        baseline=decode(plain.tolist()),
        steered=decode(steered.tolist()),
        kl=tuple(round(float(v), 6) for v in kl),
        mean_kl=round(float(kl.mean()), 6),
    )
