"""Steering on a run directory: ``monoscope steer``, ``monoscope search`` and the run's steering stage.

Reads the run's manifest (model, device, dtype, loaded dictionaries), dictionaries, indexes and
explanations; writes ``Steering`` records to ``RUN/steering.jsonl``. The stage steers every
evaluated unit on the first few neutral prompts, skipping records already on disk with the same
settings (model, positions, tokens, greedy), so a rerun generates nothing.
"""

import math
from collections.abc import Callable
from pathlib import Path

import torch

from harness.config import SteeringConfig
from harness.errors import MonoscopeError
from harness.progress import Progress, progress_bar
from harness.records import EvaluatedUnit, Explanation
from harness.run.directory import cpu_threads, read_manifest, timed_stage
from harness.run.evaluate import EXPLANATIONS
from harness.steering.generate import STEERING, Steering, steer
from harness.steering.search import Found, marked_parts, search_units
from harness.steering.units import SteeredUnit, check_unit_name, resolve_unit, unit_clamps
from harness.subject.model import SubjectModel, load_subject_model
from results.store import append_records, latest_by_key, read_records
from scorers.intervention import neutral_prompts


def loaded_dictionaries(run_dir: Path) -> tuple[str, ...]:
    """Return the dictionary specs the run's config loads (``dictionaries.load``)."""
    return tuple(read_manifest(run_dir).get("config", {}).get("load_dictionaries") or ())


def run_subject(run_dir: Path) -> SubjectModel:
    """Return the subject model a run was built with, on the run's device and dtype."""
    manifest = read_manifest(run_dir)
    foundation = manifest.get("config", {}).get("foundation")
    if not foundation or "model" not in manifest:
        raise MonoscopeError(f"{str(run_dir)!r} holds no finished foundation", "run 'monoscope run CONFIG' (or 'monoscope demo') first")
    torch.set_num_threads(cpu_threads())
    return load_subject_model(foundation["model"], foundation["device"], foundation["dtype"])


def steer_command(
    run_dir: Path,
    units: list[str],
    prompts: list[str],
    multiples: list[float],
    positions: str = "all",
    max_new_tokens: int = 24,
    seed: int | None = None,
    temperature: float | None = None,
    subject: SubjectModel | None = None,
) -> list[Steering]:
    """Return (and record) one steering per prompt and multiple, every unit clamped at once.

    ``multiples`` scale each unit's maximum activation over the run's index; one value per
    steering (all units at that multiple). Bad units, prompts or settings are MonoscopeErrors
    raised before anything is generated.
    """
    if not units or not prompts or not multiples:
        raise MonoscopeError("steering needs at least one unit, one --prompt and one --value", "e.g. --prompt 'def f(x):' --value 5")
    if any(not prompt for prompt in prompts):
        raise MonoscopeError("a --prompt is empty", "give text to continue")
    check_steering_options(units, multiples, max_new_tokens, seed, temperature)
    subject = subject or run_subject(run_dir)
    resolved = [resolve_unit(run_dir, subject, name, loaded_dictionaries(run_dir)) for name in units]
    records, plains = [], {}
    for multiple in multiples:
        clamps = unit_clamps(resolved, [multiple])
        for prompt in prompts:
            record = steer(
                subject,
                prompt,
                clamps,
                units=tuple(units),
                multiples=(multiple,) * len(units),
                values=tuple(multiple * unit.max_activation for unit in resolved),
                max_new_tokens=max_new_tokens,
                positions=positions,
                seed=seed,
                temperature=1.0 if temperature is None else temperature,
                plains=plains,
            )
            append_records(run_dir / STEERING, [record])
            records.append(record)
    return records


def check_steering_options(
    units: list[str], multiples: list[float], max_new_tokens: int, seed: int | None, temperature: float | None
) -> None:
    """Raise MonoscopeError, before any model loads, for a malformed or repeated unit, a value that is not finite, a
    non-positive length, or a temperature without a seed (greedy decoding has none) or not positive."""
    for name in units:
        check_unit_name(name)
    repeated = sorted({name for name in units if units.count(name) > 1})
    if repeated:
        raise MonoscopeError(f"unit {', '.join(repeated)} is named twice", "name each unit once")
    bad = [value for value in multiples if not math.isfinite(value)]
    if bad:
        raise MonoscopeError(f"--value {bad[0]} is not a finite number", "give multiples of the maximum activation such as 5 or -2")
    if max_new_tokens < 1:
        raise MonoscopeError(f"--tokens is {max_new_tokens}", "generate at least one token")
    if temperature is not None and seed is None:
        raise MonoscopeError(
            "--temperature applies to sampling, and without --seed decoding is greedy", "add --seed N, or drop --temperature"
        )
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
        raise MonoscopeError(f"--temperature is {temperature}", "give a temperature above 0 (1: the model's own distribution)")


def steering_text(record: Steering) -> str:
    """Return a record as the CLI prints it: prompt, plain and steered continuation, KL."""
    labels = zip(record.units, record.multiples, record.values, strict=True)
    values = ", ".join(f"{unit} = {multiple:g} × max ({value:.3g})" for unit, multiple, value in labels)
    return "\n".join(
        [
            f"prompt:   {record.prompt!r}",
            f"clamped:  {values}, at {'every position' if record.positions == 'all' else 'generated tokens'}; {record.sampling}",
            f"plain:    {record.baseline!r}",
            f"steered:  {record.steered!r}",
            f"KL(steered ‖ plain) per token (nats): mean {record.mean_kl:.3f}, max {max(record.kl, default=0.0):.3f}",
        ]
    )


def search_command(
    run_dir: Path, positive: list[str], negative: list[str], limit: int = 20, subject: SubjectModel | None = None
) -> list[Found]:
    """Return the run's units that fire on every positive prompt and on no negative one, with their explanations.

    Raises MonoscopeError before any model loads for no positive prompt, a malformed mark or a ``limit`` below 1.
    """
    if not positive:
        raise MonoscopeError("feature search needs at least one --positive prompt", "e.g. --positive 'for x ⟦in⟧ items'")
    if limit < 1:
        raise MonoscopeError(f"--limit is {limit}", "list at least one unit")
    for text in positive:
        marked_parts(text)
    for text in negative:
        marked_parts(text, allow_mark=False)
    explanations = {
        unit: record.text
        for (unit, explainer), record in latest_by_key(read_records(run_dir / EXPLANATIONS, Explanation)).items()
        if explainer == "llm" and record.text
    }
    subject = subject or run_subject(run_dir)
    return search_units(run_dir, subject, positive, negative, limit, explanations, loaded_dictionaries(run_dir))


def greedy_key(model: str, unit: str, prompt: str, multiple: float, positions: str, tokens: int) -> tuple:
    """Return the ``Steering.key`` of one unit's greedy steering (what ``steering.jsonl`` is looked up by)."""
    return (model, (unit,), prompt, (multiple,), positions, tokens, "greedy")


def read_steerings(run_dir: Path) -> dict[tuple, Steering]:
    """Return the run's steering records by key (read once per stage, kept current by ``cached_steerings``)."""
    return latest_by_key(read_records(run_dir / STEERING, Steering))


def cached_steerings(
    run_dir: Path,
    subject: SubjectModel,
    unit: SteeredUnit,
    prompts: list[str],
    multiples: tuple[float, ...],
    tokens: int,
    positions: str,
    on_generated: Callable[[], None] | None = None,
    plains: dict | None = None,
    done: dict[tuple, Steering] | None = None,
) -> list[Steering]:
    """Return the unit's greedy steerings on ``prompts`` × ``multiples``, generating only those not yet in ``steering.jsonl``.

    ``plains`` keeps the plain continuations across calls (``harness.steering.generate.steer``); ``done``
    is ``read_steerings(run_dir)`` read once by the caller (read here when None) and gains what is generated.
    """
    plains = {} if plains is None else plains
    done = read_steerings(run_dir) if done is None else done
    steerings = []
    for multiple in multiples:
        for prompt in prompts:
            record = done.get(greedy_key(subject.name, unit.name, prompt, multiple, positions, tokens))
            if record is None:
                record = steer(
                    subject,
                    prompt,
                    unit_clamps([unit], [multiple]),
                    units=(unit.name,),
                    multiples=(multiple,),
                    values=(multiple * unit.max_activation,),
                    max_new_tokens=tokens,
                    positions=positions,
                    plains=plains,
                )
                append_records(run_dir / STEERING, [record])
                done[record.key] = record
                if on_generated is not None:
                    on_generated()
            steerings.append(record)
    return steerings


def steering_stage(run_dir: Path, config: SteeringConfig, subject: SubjectModel, units: list[EvaluatedUnit], log: Progress) -> None:
    """Steer each evaluated unit on the first ``config.prompts`` neutral prompts at each of ``config.multiples``."""
    if not config.enabled or not units:
        return
    prompts = neutral_prompts()[: config.prompts]
    done = read_steerings(run_dir)
    missing = [
        unit.unit
        for unit in units
        if any(
            greedy_key(subject.name, unit.unit, prompt, multiple, config.positions, config.tokens) not in done
            for multiple in config.multiples
            for prompt in prompts
        )
    ]
    if not missing:
        return
    log(f"steer: {len(missing)} units × {len(config.multiples)} strengths × {len(prompts)} prompts × {config.tokens} tokens")
    loaded = loaded_dictionaries(run_dir)
    total = len(missing) * len(config.multiples) * len(prompts)
    plains: dict = {}  # one plain continuation per prompt, shared by every unit
    with timed_stage(run_dir, "steer"), progress_bar(total, "steer", "generation") as bar:
        for name in missing:
            unit = resolve_unit(run_dir, subject, name, loaded)
            settings = (config.multiples, config.tokens, config.positions, lambda: bar.update(1), plains, done)
            cached_steerings(run_dir, subject, unit, prompts, *settings)
