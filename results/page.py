"""HTML pieces shared by the report's sections: escaping, numbers, anchors and inlined figures."""

import base64
import html
import math
import re
from pathlib import Path
from typing import Any


def anchor(prefix: str, name: str) -> str:
    """Return an HTML id: ``prefix`` and ``name`` with letters, digits and '-' kept, any other character as _<hex>_."""
    return prefix + re.sub(r"[^A-Za-z0-9-]", lambda match: f"_{ord(match.group()):x}_", name)


def unit_html_id(unit: str) -> str:
    """Return the HTML id of a unit's card: letters, digits and '-' kept, any other character as _<hex>_ (injective)."""
    return anchor("unit-", unit)


def unit_plot_name(unit: str) -> str:
    """Return the file name of a unit's specificity plot ('/' and '.' replaced by '_')."""
    return "specificity_unit_" + unit.replace("/", "_").replace(".", "_") + ".png"


def escape(value: Any) -> str:
    """Return ``str(value)`` escaped for HTML text and attributes."""
    return html.escape(str(value), quote=True)


def number(value: float | int | None, digits: int = 3) -> str:
    """Return a number as text with ``digits`` decimals (integers as they are), "—" for None or a non-finite value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def image(path: Path, alt: str) -> str:
    """Return an <img> holding the PNG file at ``path`` as a base64 data URI."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def figure(path: Path, caption: str) -> str:
    """Return a <figure> of the PNG at ``path`` with its caption and file name."""
    return f"<figure>{image(path, caption)}<figcaption>{escape(caption)} <code>{escape(path.name)}</code></figcaption></figure>"
