"""The run's output-centric stage (``evaluation.output_explanations``): each evaluated unit's output profile and its
explanation from it (``harness.steering.outputs``, ``explainers.output_explainer``).

Reads the units' contexts, the run's dictionaries and indexes (each unit's maximum activation) and the
corpus (which tokens occur); writes ``outputs.jsonl`` (one ``OutputProfile`` per unit) and the
"output" explanations in ``explanations.jsonl``. A unit not explained for lack of evidence gets
neither. A profile made with the same model, prompts and strength, and an explanation made from the
same profile by the same explainer and prompt, are reused: a rerun asks nothing. The score stage then
scores the output explanation (source "output") with detection and the intervention scorer.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from explainers.llm_explainer import TOO_FEW_CONTEXTS
from explainers.output_explainer import EXPLAINER_NAME, TEMPLATE, explain_outputs, profile_digest
from harness.llm.client import BackendError, LLMClient, failure_reason
from harness.llm.templates import load_template
from harness.records import Explanation, UnitContexts
from harness.run.evaluate import EXPLANATIONS
from harness.run.steering import loaded_dictionaries
from harness.steering.outputs import DEFAULT_MULTIPLE, OutputProfile, corpus_tokens, output_profile, output_prompts, prompts_digest
from harness.steering.units import resolve_unit
from harness.subject.model import SubjectModel
from results.store import append_records, latest_by_key, read_records

OUTPUTS = "outputs.jsonl"


def output_stage(
    run_dir: Path,
    units: list[UnitContexts],
    subject: SubjectModel,
    explainer: LLMClient,
    chunks: np.ndarray,
    on_unit_done: Callable[[], None] | None = None,
) -> None:
    """Write each unit's output profile and output-centric explanation (see the module docstring)."""
    profiles = latest_by_key(read_records(run_dir / OUTPUTS, OutputProfile))
    explanations = latest_by_key(read_records(run_dir / EXPLANATIONS, Explanation))
    prompts = output_prompts()
    digest = prompts_digest(prompts)
    settings = (explainer.backend.name, explainer.backend.model, load_template(TEMPLATE).sha256)
    allowed = None
    loaded = loaded_dictionaries(run_dir)
    plains: dict = {}
    for contexts in units:
        own = explanations.get((contexts.unit, "llm"))
        if own is None or (own.failure is not None and own.failure.startswith(TOO_FEW_CONTEXTS)):
            if on_unit_done is not None:
                on_unit_done()
            continue
        profile = profiles.get(contexts.unit)
        if profile is None or (profile.model, profile.prompts_sha256, profile.multiple) != (subject.name, digest, DEFAULT_MULTIPLE):
            if allowed is None:
                allowed = corpus_tokens(chunks, subject.model.get_output_embeddings().weight.shape[0])
            unit = resolve_unit(run_dir, subject, contexts.unit, loaded)
            profile = output_profile(subject, unit, allowed, prompts, DEFAULT_MULTIPLE, plains=plains)
            append_records(run_dir / OUTPUTS, [profile])
        record = explanations.get((contexts.unit, EXPLAINER_NAME))
        current = (
            record is not None
            and record.text is not None
            and record.contexts_sha256 == profile_digest(profile)
            and (record.backend, record.model, record.prompt_hash) == settings
        )
        if not current:
            try:
                explanation = explain_outputs(profile, explainer)
            except BackendError as error:
                base = dict(unit=contexts.unit, explainer=EXPLAINER_NAME, backend=settings[0], model=settings[1], prompt_hash=settings[2])
                explanation = Explanation(**base, text=None, n_contexts=0, failure=failure_reason(error))
            append_records(run_dir / EXPLANATIONS, [explanation])
        if on_unit_done is not None:
            on_unit_done()
