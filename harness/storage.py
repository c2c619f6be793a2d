"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

import json
import os
import secrets
from pathlib import Path
from typing import Any


def temporary_file(directory: Path, prefix: str, suffix: str = "") -> tuple[int, str]:
    """Create a new, empty file in ``directory`` to be renamed over its target; return (open write descriptor, path).

    Unlike ``tempfile.mkstemp``, whose files are 0600, the file gets the mode an ordinary ``open`` gives (0666 less
    the process's umask), so that every file of a run has the same permissions whichever way it was written.
    """
    for _attempt in range(100):
        name = os.path.join(directory, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = temporary_file(path.parent, f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    """Return the JSON value stored at ``path``."""
    return json.loads(path.read_text())
