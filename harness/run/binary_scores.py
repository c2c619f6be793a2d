"""The detection and fuzzing scorers in the score stage (``scorers.binary``): their record files, the items each shows a
judge for one unit, the setting their records are made in, and scoring one explanation of a unit with them.

A record is current (reused, never asked again) when it is parsed and was made for the same explanation, on the
same shown text (``text_sha256``), in the same setting, by the same judge backend, model, prompt and rendering.
"""

from collections.abc import Callable
from pathlib import Path

from harness.config import EvaluationConfig
from harness.llm.client import LLMClient
from harness.llm.render import RENDERING
from harness.llm.templates import load_template
from harness.records import UnitContexts
from results.store import append_records
from scorers import detection, fuzzing
from scorers.binary import BinaryJudgment, ClassifierItem, classify_unit, text_digest

DETECTIONS, FUZZINGS = "detection.jsonl", "fuzzing.jsonl"
BINARY_FILES = {"detection": DETECTIONS, "fuzzing": FUZZINGS}  # the binary-classification scorers' records (scorers.binary)


BINARY_TEMPLATES = {"detection": detection.TEMPLATE, "fuzzing": fuzzing.TEMPLATE}


def binary_setting(scorer: str, config: EvaluationConfig) -> str:
    """Return the setting a binary scorer's records are made in: "monoscope" for detection, "delphi-<variant>" for fuzzing."""
    return detection.SETTING if scorer == "detection" else f"delphi-{config.fuzzing_variant}"


def binary_items(scorer: str, contexts: UnitContexts, config: EvaluationConfig) -> list[ClassifierItem]:
    """Return the items the binary scorer ``scorer`` shows the judge for one unit (``scorers.detection``, ``scorers.fuzzing``)."""
    if scorer == "detection":
        return detection.detection_items(contexts)
    return fuzzing.fuzzing_items(contexts, config.fuzzing_variant, config.seed)[0]


def current_binary(
    record: BinaryJudgment | None, explanation: str, item: ClassifierItem, judge: LLMClient, config: EvaluationConfig
) -> bool:
    """Return True for a parsed binary judgment of ``explanation`` on ``item``'s text in this setting, by this judge and prompt."""
    if (
        record is None
        or record.p_yes is None
        or record.explanation != explanation
        or record.setting != binary_setting(record.scorer, config)
    ):
        return False
    template = BINARY_TEMPLATES[record.scorer]
    settings = (judge.backend.name, judge.backend.model, load_template(template).sha256, RENDERING, text_digest(item.text))
    return (record.backend, record.model, record.prompt_hash, record.rendering, record.text_sha256) == settings


def score_binary(
    run_dir: Path,
    contexts: UnitContexts,
    source: str,
    text: str,
    judge: LLMClient,
    config: EvaluationConfig,
    binary: dict[str, dict | None],
    prefix: Callable[[str], str],
) -> None:
    """Score one explanation of a unit with each binary scorer in ``binary`` ({scorer: its records on disk, None: not run})."""
    for name, done in binary.items():
        if done is None:
            continue
        items = binary_items(name, contexts, config)
        if not all(current_binary(done.get((name, contexts.unit, source, i.context_id, i.variant)), text, i, judge, config) for i in items):
            setting, template = binary_setting(name, config), BINARY_TEMPLATES[name]
            records = classify_unit(contexts.unit, items, text, source, judge, name, setting, template, prefix(name))
            append_records(run_dir / BINARY_FILES[name], records)
