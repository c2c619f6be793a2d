"""Where monoscope keeps caches that outlive a run directory."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """Return the cache root: $MONOSCOPE_CACHE, else ~/.cache/monoscope."""
    root = os.environ.get("MONOSCOPE_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "monoscope"
