"""Feature search: the units of a run that fire where every positive prompt says and nowhere in the negatives.

Scaling Monosemanticity found features by running sets of prompts through the model and
keeping those active where wanted. A positive prompt either marks one span with the
project's marks (``⟦…⟧``, ``harness.llm.render``) — the unit must fire on a token of that
span — or has no mark, and the unit must fire on some token of it. A unit qualifies when it
fires (activation > 0) as each positive prompt asks and on no token of any negative prompt.
Qualifying units are ranked by their weakest positive activation divided by their maximum
over the run's index (1.0: every positive reaches the unit's largest activation on the corpus).

Token boundaries: a marked span is tokenized on its own, between the text before and after it
(each tokenized alone too), so a mark always covers whole tokens. Units are every index of the
run: each dictionary's features and the indexed neuron pool.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from harness.dictionaries.dictionary import dictionary_to, encode
from harness.dictionaries.neurons import POOL_NAME
from harness.errors import MonoscopeError
from harness.index.store import unit_maxima
from harness.llm.render import CLOSE, OPEN
from harness.steering.units import run_dictionary
from harness.subject.model import SubjectModel, collect_activations, parse_hook


@dataclass(frozen=True)
class SearchPrompt:
    """A prompt's token ids and the positions a unit must fire on (None: any position)."""

    text: str
    ids: tuple[int, ...]
    marked: tuple[int, ...] | None


@dataclass(frozen=True)
class Found:
    """A unit that fires as asked: its score, its activation on each positive prompt, its explanation."""

    unit: str
    score: float  # weakest positive activation / the unit's maximum over the index
    positive: tuple[float, ...]
    max_activation: float
    explanation: str | None


def marked_parts(text: str, allow_mark: bool = True) -> tuple[str, str, str] | None:
    """Return (before, marked span, after) of a prompt with one ⟦marked⟧ span, None without a mark (text only: no model needed).

    Raises MonoscopeError for an empty prompt, more than one mark, an unclosed or empty mark, or a
    mark where none is allowed (negative prompts).
    """
    if not text:
        raise MonoscopeError("a search prompt is empty", "give text, with one span marked ⟦like this⟧ if it matters where")
    if OPEN not in text and CLOSE not in text:
        return None
    if not allow_mark:
        raise MonoscopeError(f"negative prompt {text!r} has a mark", "a unit must fire nowhere in a negative prompt: remove ⟦ ⟧")
    before, opened, rest = text.partition(OPEN)
    span, closed, after = rest.partition(CLOSE)
    if not opened or not closed or OPEN in rest or CLOSE in after or CLOSE in before:
        raise MonoscopeError(f"prompt {text!r} must mark exactly one span as {OPEN}text{CLOSE}", "mark one span, or none")
    if not span:
        raise MonoscopeError(f"prompt {text!r} marks an empty span", "put the token between the marks")
    return before, span, after


def parse_prompt(subject: SubjectModel, text: str, allow_mark: bool = True) -> SearchPrompt:
    """Return the tokens of ``text`` and the positions of its ⟦marked⟧ span (None without a mark).

    Raises MonoscopeError for an empty prompt, more than one mark, an unclosed or empty mark, or a
    mark where none is allowed (negative prompts).
    """
    parts = marked_parts(text, allow_mark)
    if parts is None:
        return SearchPrompt(text, _tokens(subject, text), None)
    before, span, after = parts
    head, middle, tail = _tokens(subject, before), _tokens(subject, span), _tokens(subject, after)
    if not middle:
        raise MonoscopeError(f"the marked span of {text!r} has no tokens", "mark text")
    return SearchPrompt(text, head + middle + tail, tuple(range(len(head), len(head) + len(middle))))


def _tokens(subject: SubjectModel, text: str) -> tuple[int, ...]:
    return tuple(subject.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else ()


def _run_sets(run_dir: Path, subject: SubjectModel, loaded: tuple[str, ...]) -> list[tuple[str, list[str], torch.Tensor, object]]:
    """Return (set name, unit names, maxima [n_units], what to read) for every index of the run.

    What to read is a dictionary, or for the neuron pool the list of (layer, neuron).
    """
    sets = []
    for path in sorted((run_dir / "index").glob("*.safetensors")):
        maxima, about = unit_maxima(path)
        if path.stem == POOL_NAME:
            names = list(about.get("unit_names") or [])
            pool = [(int(name.split("/")[0].removeprefix("mlp.")), int(name.split("/")[1])) for name in names]
            sets.append((POOL_NAME, names, maxima, pool))
        else:
            dictionary = dictionary_to(run_dictionary(run_dir, path.stem, loaded), subject.device)
            sets.append((path.stem, [dictionary.unit_name(i) for i in range(dictionary.d_sae)], maxima, dictionary))
    if not sets:
        raise MonoscopeError(f"run {str(run_dir)!r} has no index", "build the foundation first ('monoscope run' or 'monoscope demo')")
    return sets


def _activations(subject: SubjectModel, prompt: SearchPrompt, reader: object) -> torch.Tensor:
    """Return the units' activations [T, n_units] on one prompt."""
    ids = torch.tensor([prompt.ids], device=subject.device)
    if isinstance(reader, list):  # the neuron pool
        hooks = sorted({f"blocks.{layer}.mlp.hook_post" for layer, _ in reader}, key=lambda h: parse_hook(h).layer)
        acts = collect_activations(subject, ids, hooks)
        return torch.stack([acts[f"blocks.{layer}.mlp.hook_post"][0, :, neuron] for layer, neuron in reader], dim=-1)
    acts = collect_activations(subject, ids, [reader.hook_name])[reader.hook_name][0]
    return encode(reader, acts)


def search_units(
    run_dir: Path,
    subject: SubjectModel,
    positive: list[str],
    negative: list[str] = (),
    limit: int = 20,
    explanations: dict[str, str] | None = None,
    loaded: tuple[str, ...] = (),
) -> list[Found]:
    """Return up to ``limit`` units of the run that fire as ``positive`` asks and never in ``negative``, best first.

    ``explanations`` ({unit: text}) label the units found; ``loaded`` are the run's loaded
    dictionary specs. Ties in score are broken by unit name. Raises MonoscopeError for no positive
    prompt or a bad prompt.
    """
    if not positive:
        raise MonoscopeError("feature search needs at least one --positive prompt", "e.g. --positive 'for x ⟦in⟧ items'")
    positives = [parse_prompt(subject, text) for text in positive]
    negatives = [parse_prompt(subject, text, allow_mark=False) for text in negative]
    explanations = explanations or {}
    found: list[Found] = []
    with torch.inference_mode():
        for _name, names, maxima, reader in _run_sets(run_dir, subject, loaded):
            strongest = []
            for prompt in positives:
                acts = _activations(subject, prompt, reader)
                where = acts if prompt.marked is None else acts[list(prompt.marked)]
                strongest.append(where.max(dim=0).values)
            positive_acts = torch.stack(strongest)  # [prompts, units]
            ok = (positive_acts > 0).all(dim=0) & (maxima.to(positive_acts.device) > 0)
            for prompt in negatives:
                ok &= ~(_activations(subject, prompt, reader) > 0).any(dim=0)
            for unit in torch.nonzero(ok).flatten().tolist():
                top = float(maxima[unit])
                values = tuple(round(float(v), 6) for v in positive_acts[:, unit])
                found.append(Found(names[unit], round(min(values) / top, 6), values, top, explanations.get(names[unit])))
    return sorted(found, key=lambda f: (-f.score, f.unit))[:limit]
