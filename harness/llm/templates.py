"""Prompt templates and rubrics are data files; this module loads them by name and hashes them."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.errors import MonoscopeError

ROOT = Path(__file__).resolve().parents[2]  # the repository (or site-packages) root holding prompts/ and rubrics/
PROMPTS = ROOT / "prompts"
RUBRICS = ROOT / "rubrics"


@dataclass(frozen=True)
class Template:
    """A prompt template: its name, its text (str.format fields), and the hash of that text."""

    name: str
    text: str
    sha256: str

    def render(self, **fields: object) -> str:
        """Return the template with ``fields`` filled in."""
        return self.text.format(**fields)


@dataclass(frozen=True)
class Rubric:
    """A scoring rubric: levels with their descriptions, and the hash of the file."""

    name: str
    levels: dict[int, str]
    sha256: str

    def describe(self) -> str:
        """Return the levels as lines "N — description"."""
        return "\n".join(f"{level} — {text}" for level, text in sorted(self.levels.items()))


def load_template(name: str) -> Template:
    """Return the prompt template ``prompts/<name>.txt``."""
    path = PROMPTS / f"{name}.txt"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PROMPTS.glob("*.txt")))
        raise MonoscopeError(f"unknown prompt template {name!r}", f"choose one of {known}")
    text = path.read_text()
    return Template(name=name, text=text, sha256=hashlib.sha256(text.encode()).hexdigest()[:16])


def load_rubric(name: str = "specificity") -> Rubric:
    """Return the rubric ``rubrics/<name>.yaml``."""
    path = RUBRICS / f"{name}.yaml"
    if not path.exists():
        raise MonoscopeError(f"unknown rubric {name!r}", f"choose one of {', '.join(sorted(p.stem for p in RUBRICS.glob('*.yaml')))}")
    text = path.read_text()
    data = yaml.safe_load(text)
    return Rubric(
        name=name, levels={int(k): str(v) for k, v in data["levels"].items()}, sha256=hashlib.sha256(text.encode()).hexdigest()[:16]
    )
