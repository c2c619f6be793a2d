"""Atomic writes: the file appears whole or not at all, leaves no temporary behind, and has the permissions an
ordinary ``open`` gives (a run's files must not differ in mode by the way they were written)."""

import os
import stat
from pathlib import Path

import pytest

from harness.storage import atomic_write_bytes, atomic_write_json, read_json, temporary_file


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_of_an_ordinary_open(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        plain = tmp_path / "plain.json"
        plain.write_text("{}")
        atomic_write_json(tmp_path / "atomic.json", {"a": 1})
        handle, name = temporary_file(tmp_path, ".staging-")
        os.close(handle)
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "atomic.json") == _mode(plain) == _mode(Path(name)) == 0o666 & ~umask
    assert read_json(tmp_path / "atomic.json") == {"a": 1}


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "records.json"
    atomic_write_bytes(target, b"old")

    def disk_full(_descriptor: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records.json"]
