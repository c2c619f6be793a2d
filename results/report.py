"""One self-contained HTML page per run: manifest, tables, plots and a card per evaluated unit.

The page needs nothing outside itself: CSS is inline, plots are inlined as
base64 data URIs, and there is no JavaScript. Every string that comes from a
record, a CSV or the manifest (corpus tokens, explanations, raw replies) goes
through ``html.escape`` before it reaches the page, so a context holding
``<script>`` shows as text.
"""

import base64
import csv
import html
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.llm.render import display_units, shown, unit_text
from harness.records import EvaluatedUnit, Explanation, Judgment, Simulation, TokenContext
from harness.storage import atomic_write_bytes
from results.store import latest_by_key, read_records
from results.summary import unit_scores

UNITS, CONTEXTS = "units.jsonl", "contexts.jsonl"
EXPLANATIONS, JUDGMENTS, SIMULATIONS = "explanations.jsonl", "judgments.jsonl", "simulations.jsonl"
TABLES_DIR, PLOTS_DIR = Path("results") / "tables", Path("results") / "plots"
REPORT = Path("results") / "report.html"

SOURCES = ("real", "shuffled", "token_stats")
TABLE_ORDER = ("sets", "compare", "controls", "correlation_summary")
LONG_TABLES = ("units", "specificity_units", "correlations")
TABLE_NOTES = {
    "controls": (
        "Real versus control explanations, paired over units. In the simulation metrics a constant prediction "
        "(the same value on every token: it predicts nothing) scores 0 on either side; n_constant_real and "
        "n_constant_control count those units. Parse failures are not scored: a unit without a parsed simulation "
        "on both sides is left out of n_units."
    ),
}
LONG_TABLE_ROWS = 30
GLOBAL_PLOTS = {
    "features_vs_neurons": "Features versus neurons: distributions of per-unit rubric and simulation scores.",
    "max_correlation": "Each feature's largest correlation with any neuron (and residual direction).",
    "metrics_vs_size": "Scores against dictionary size.",
}
NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
INTEGER = re.compile(r"^[+-]?\d+$")


@dataclass
class RunRecords:
    """The last record per key of every record file of a run (missing files read as empty)."""

    units: dict[str, EvaluatedUnit] = field(default_factory=dict)
    contexts: dict[tuple[str, str], TokenContext] = field(default_factory=dict)
    explanations: dict[tuple[str, str], Explanation] = field(default_factory=dict)
    judgments: dict[tuple[str, str, str], Judgment] = field(default_factory=dict)
    simulations: dict[tuple[str, str, str], Simulation] = field(default_factory=dict)


def load_run(run_dir: Path) -> RunRecords:
    """Return the run's records, the last one per key (reruns append)."""
    return RunRecords(
        units=latest_by_key(read_records(run_dir / UNITS, EvaluatedUnit)),
        contexts=latest_by_key(read_records(run_dir / CONTEXTS, TokenContext)),
        explanations=latest_by_key(read_records(run_dir / EXPLANATIONS, Explanation)),
        judgments=latest_by_key(read_records(run_dir / JUDGMENTS, Judgment)),
        simulations=latest_by_key(read_records(run_dir / SIMULATIONS, Simulation)),
    )


def read_manifest_file(run_dir: Path) -> dict[str, Any]:
    """Return the run's manifest.json, or an empty dict when it is missing or not a JSON object."""
    path = run_dir / "manifest.json"
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _anchor(prefix: str, name: str) -> str:
    return prefix + re.sub(r"[^A-Za-z0-9-]", lambda match: f"_{ord(match.group()):x}_", name)


def unit_html_id(unit: str) -> str:
    """Return the HTML id of a unit's card: letters, digits and '-' kept, any other character as _<hex>_ (injective)."""
    return _anchor("unit-", unit)


def unit_plot_name(unit: str) -> str:
    """Return the file name of a unit's specificity plot ('/' and '.' replaced by '_')."""
    return "specificity_unit_" + unit.replace("/", "_").replace(".", "_") + ".png"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float | int | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _format_cell(text: str) -> tuple[str, bool]:
    """Return (escaped display text, is numeric) of one CSV cell."""
    stripped = text.strip()
    if stripped == "" or stripped.lower() in ("nan", "none"):
        return "—", True
    if INTEGER.match(stripped):
        return _e(stripped), True
    if NUMBER.match(stripped):
        return _number(float(stripped)), True
    return _e(text), False


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _figure(path: Path, caption: str) -> str:
    return f"<figure>{_image(path, caption)}<figcaption>{_e(caption)} <code>{_e(path.name)}</code></figcaption></figure>"


def _csv_table(path: Path) -> tuple[str, int]:
    """Return (HTML table, number of data rows) of a CSV file."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return "<p>(empty table)</p>", 0
    header, body = rows[0], rows[1:]
    parts = ["<div class='scroll'><table><thead><tr>", "".join(f"<th>{_e(name)}</th>" for name in header), "</tr></thead><tbody>"]
    for row in body:
        cells = []
        for text in row:
            shown, numeric = _format_cell(text)
            cells.append(f"<td class='num'>{shown}</td>" if numeric else f"<td>{shown}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts), len(body)


def _ordered_tables(tables_dir: Path) -> list[Path]:
    paths = sorted(tables_dir.glob("*.csv")) if tables_dir.is_dir() else []
    first = [path for name in TABLE_ORDER for path in paths if path.stem == name]
    return first + [path for path in paths if path not in first]


def _tables_section(tables: list[Path]) -> str:
    parts = ["<section id='tables'><h2>Summary tables</h2>"]
    if not tables:
        parts.append("<p>No tables in <code>results/tables</code>.</p>")
    for path in tables:
        table, n_rows = _csv_table(path)
        anchor = f"table-{_e(path.stem)}"
        title = f"<code>{_e(path.name)}</code> ({n_rows} rows)"
        if path.stem in LONG_TABLES or n_rows > LONG_TABLE_ROWS:
            parts.append(f"<details id='{anchor}'><summary>{title}</summary>{table}</details>")
        else:
            parts.append(f"<h3 id='{anchor}'>{title}</h3>{table}")
        if path.stem in TABLE_NOTES:
            parts.append(f"<p class='note'>{_e(TABLE_NOTES[path.stem])}</p>")
    parts.append("</section>")
    return "".join(parts)


def _plot_caption(stem: str) -> str:
    if stem in GLOBAL_PLOTS:
        return GLOBAL_PLOTS[stem]
    if stem.startswith("specificity_unit_"):
        return "Specificity of one unit: rubric score against activation level."
    if stem.startswith("specificity_"):
        return f"Specificity of unit set {stem.removeprefix('specificity_')}: rubric score against activation level."
    return stem.replace("_", " ")


def _plots_section(plots: list[Path], set_order: list[str]) -> str:
    def rank(path: Path) -> tuple[int, int, str]:
        stem = path.stem
        if stem in GLOBAL_PLOTS:
            return (0, list(GLOBAL_PLOTS).index(stem), stem)
        if stem.startswith("specificity_unit_"):
            return (3, 0, stem)
        if stem.startswith("specificity_"):
            name = stem.removeprefix("specificity_")
            return (2, set_order.index(name) if name in set_order else len(set_order), stem)
        return (1, 0, stem)

    parts = ["<section id='plots'><h2>Plots</h2>"]
    if not plots:
        parts.append("<p>No plots in <code>results/plots</code>.</p>")
    for path in sorted(plots, key=rank):
        parts.append(_figure(path, _plot_caption(path.stem)))
    parts.append("</section>")
    return "".join(parts)


def _value_html(value: Any) -> str:
    if isinstance(value, dict):
        items = "".join(f"<tr><th>{_e(key)}</th><td>{_value_html(item)}</td></tr>" for key, item in value.items())
        return f"<table class='kv'>{items}</table>"
    if isinstance(value, float):
        return _e(_number(value))
    if isinstance(value, list):
        return _e(json.dumps(value, ensure_ascii=False))
    return _e("—" if value is None else value)


def _header_section(run_dir: Path, manifest: dict[str, Any]) -> str:
    rows: list[tuple[str, Any]] = []
    rows.append(("run", manifest.get("name", run_dir.resolve().name)))
    if "model" in manifest:
        rows.append(("model", manifest["model"]))
    roles = manifest.get("roles")
    if isinstance(roles, dict):
        for role in ("explainer", "judge", "simulator"):
            value = roles.get(role)
            if isinstance(value, dict):
                described = f"{value.get('backend', '?')} / {value.get('model', '?')}"
                if value.get("base_url"):
                    described += f" ({value['base_url']})"
                rows.append((role, described))
        for key, value in roles.items():
            if key not in ("explainer", "judge", "simulator"):
                rows.append((key.replace("_", " "), value))
    for key in ("seed", "versions", "timings", "wall_seconds", "date", "created", "started", "finished"):
        if key in manifest:
            rows.append((key, manifest[key]))
    contexts = manifest.get("contexts")
    if isinstance(contexts, dict) and "held_out_duplicates_dropped" in contexts:
        rows.append(("held-out windows dropped as repeats of explanation windows", contexts["held_out_duplicates_dropped"]))
    rows.append(("report written", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")))
    body = "".join(f"<tr><th>{_e(key)}</th><td>{_value_html(value)}</td></tr>" for key, value in rows)
    full = _e(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False))
    return (
        f"<section id='run'><h2>Run</h2><table class='kv'>{body}</table>"
        f"<details><summary>Full manifest.json</summary><pre>{full}</pre></details></section>"
    )


def _tokens_html(context: TokenContext, scale: float) -> str:
    """Return the context as spans, one per display unit, its text as the prompts show it (``harness.llm.render``).

    A character the tokenizer split into byte tokens is one span (``display_units``); the span's
    class p<k> / n<k> shades its activation of largest magnitude, positive / negative, by tenths
    of ``scale``; the span holding the target token has class ``tg``; the title lists the
    activations of its tokens.
    """
    spans = []
    for unit in display_units(context.tokens):
        values = [context.activations[index] for index in unit if index < len(context.activations)] or [0.0]
        activation = max(values, key=lambda value: abs(value) if math.isfinite(value) else -1.0)
        level = round(10 * min(1.0, abs(activation) / scale)) if scale > 0 and math.isfinite(activation) else 0
        shade = f"{'p' if activation >= 0 else 'n'}{level}"
        classes = f"{shade} tg" if context.target in unit else shade
        title = " / ".join(f"{value:.3f}" for value in values)
        spans.append(f"<span class='{classes}' title='{title}'>{_e(shown(unit_text(context.tokens, unit)))}</span>")
    return "".join(spans)


def _explanation_html(record: Explanation | None, label: str) -> str:
    if record is None:
        return f"<p><b>{_e(label)}:</b> <span class='muted'>none recorded</span></p>"
    if record.text is not None:
        source = f"<span class='muted'>({_e(record.backend)} / {_e(record.model)})</span>"
        return f"<p><b>{_e(label)}:</b> <span class='explanation'>{_e(record.text)}</span> {source}</p>"
    raw = f"<details><summary>raw reply</summary><pre>{_e(record.raw)}</pre></details>" if record.raw is not None else ""
    return f"<p><b>{_e(label)}:</b> <span class='failure'>failed: {_e(record.failure or 'no text')}</span></p>{raw}"


def _by_unit(records: dict[Any, Any]) -> dict[str, list[Any]]:
    """Return {unit: records} of a dict keyed by tuples starting with the unit."""
    grouped: dict[str, list[Any]] = {}
    for key, record in records.items():
        grouped.setdefault(key[0], []).append(record)
    return grouped


def _scores_table(
    unit: str, judgments: list[Judgment], simulations: list[Simulation], scores: dict[tuple[str, str], dict[str, float | None]]
) -> str:
    rows = []
    for source in SOURCES:
        judged = [j for j in judgments if j.source == source]
        simulated = [m for m in simulations if m.source == source]
        if not judged and not simulated:
            continue
        score = scores.get((unit, source), {})
        parsed = sum(1 for j in judged if j.score is not None)
        parsed_simulations = sum(1 for m in simulated if m.predicted is not None)
        explanation = judged[0].explanation if judged else simulated[0].explanation
        rows.append(
            f"<tr><th>{_e(source)}</th><td class='num'>{_number(score.get('rubric'))}</td><td class='num'>{parsed}/{len(judged)}</td>"
            f"<td class='num'>{_number(score.get('pearson'))}</td><td class='num'>{_number(score.get('spearman'))}</td>"
            f"<td class='num'>{parsed_simulations}/{len(simulated)}</td><td>{_e(explanation)}</td></tr>"
        )
    if not rows:
        return "<p class='muted'>Not scored.</p>"
    header = (
        "<tr><th>source</th><th>rubric (0–3)</th><th>judged</th><th>sim. Pearson</th><th>sim. Spearman</th>"
        "<th>simulated</th><th>explanation scored</th></tr>"
    )
    return f"<div class='scroll'><table>{header}{''.join(rows)}</table></div>"


def _contexts_html(contexts: list[TokenContext], scale: float, judgments: dict[tuple[str, str, str], Judgment] | None) -> str:
    if not contexts:
        return "<p class='muted'>none recorded</p>"
    items = []
    for context in contexts:
        meta = f"{_e(context.kind)} · act {_number(context.target_activation)}"
        if judgments is not None:
            judgment = judgments.get((context.unit, "real", context.context_id))
            if judgment is None:
                verdict = "<span class='score muted'>not judged</span>"
            elif judgment.score is None:
                verdict = f"<span class='score failure' title='{_e(judgment.failure or '')}'>judge failed</span>"
            else:
                verdict = f"<span class='score'>judge {_number(judgment.score, 2)}</span>"
            meta = f"{verdict} {meta}"
        anchor = _anchor("ctx-", context.context_id)
        items.append(f"<li class='context' id='{_e(anchor)}'><div class='meta'>{meta}</div>{_tokens_html(context, scale)}</li>")
    return f"<ol class='contexts'>{''.join(items)}</ol>"


def _unit_card(
    unit: str,
    evaluated: EvaluatedUnit | None,
    records: RunRecords,
    grouped: dict[str, dict[str, list[Any]]],
    scores: dict[tuple[str, str], dict[str, float | None]],
    plot: Path | None,
) -> str:
    contexts: list[TokenContext] = grouped["contexts"].get(unit, [])
    explain = [c for c in contexts if c.split == "explain"]
    score = [c for c in contexts if c.split != "explain"]
    observed = max((abs(a) for c in contexts for a in c.activations), default=0.0)
    scale = evaluated.max_activation if evaluated is not None and evaluated.max_activation > 0 else observed
    if evaluated is not None:
        facts = (
            f"set <b>{_e(evaluated.unit_set)}</b> · {_e(evaluated.kind)} · layer {evaluated.layer} · index {evaluated.index} · "
            f"density {_number(evaluated.density, 5)} · max activation {_number(evaluated.max_activation)}"
        )
    else:
        facts = "<span class='muted'>not in units.jsonl</span>"
    parts = [
        f"<article class='unit-card' id='{_e(unit_html_id(unit))}'>",
        f"<h3>{_e(unit)}</h3><p class='facts'>{facts}</p>",
        _explanation_html(records.explanations.get((unit, "llm")), "LLM explanation"),
        _explanation_html(records.explanations.get((unit, "token_stats")), "Token statistics"),
        _scores_table(unit, grouped["judgments"].get(unit, []), grouped["simulations"].get(unit, []), scores),
    ]
    if plot is not None:
        parts.append(_figure(plot, f"Specificity of {unit}: rubric score against activation level."))
    parts.append(f"<h4>Explanation contexts ({len(explain)})</h4>{_contexts_html(explain, scale, None)}")
    parts.append(f"<h4>Held-out scoring contexts ({len(score)})</h4>{_contexts_html(score, scale, records.judgments)}")
    parts.append("<p class='top'><a href='#contents'>↑ contents</a></p></article>")
    return "".join(parts)


def _unit_groups(records: RunRecords) -> dict[str, list[str]]:
    """Return {unit set: units} in the order of units.jsonl; units only seen in other records come last."""
    groups: dict[str, list[str]] = {}
    for unit, evaluated in records.units.items():
        groups.setdefault(evaluated.unit_set, []).append(unit)
    seen = set(records.units)
    others = {key[0] for key in [*records.explanations, *records.contexts, *records.judgments]} - seen
    if others:
        groups.setdefault("(not in units.jsonl)", []).extend(sorted(others))
    return groups


def _contents(tables: list[Path], groups: dict[str, list[str]]) -> str:
    table_links = "".join(f"<li><a href='#table-{_e(path.stem)}'>{_e(path.stem)}</a></li>" for path in tables)
    set_items = []
    for name, units in groups.items():
        links = " ".join(f"<a href='#{_e(unit_html_id(unit))}'>{_e(unit)}</a>" for unit in units)
        anchor = _anchor("set-", name)
        set_items.append(f"<li><a href='#{_e(anchor)}'>{_e(name)}</a> ({len(units)}): <span class='unit-links'>{links}</span></li>")
    return (
        "<nav id='contents'><h2>Contents</h2><ul>"
        "<li><a href='#run'>Run</a></li>"
        f"<li><a href='#tables'>Summary tables</a><ul>{table_links}</ul></li>"
        "<li><a href='#plots'>Plots</a></li>"
        f"<li><a href='#units'>Units</a><ul>{''.join(set_items)}</ul></li>"
        "</ul></nav>"
    )


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; background: #fafafa; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 1rem 1.5rem 4rem; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2rem; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
thead th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { background: #f5f5f5; white-space: nowrap; } table.kv table.kv { margin: 0; }
.scroll { overflow-x: auto; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #ddd; background: white; }
figcaption { font-size: .85rem; color: #555; }
pre { white-space: pre-wrap; word-break: break-word; background: #f3f3f3; padding: .5rem; font-size: .8rem; }
nav ul { padding-left: 1.2rem; } .unit-links a { margin-right: .4rem; }
.unit-card { background: white; border: 1px solid #ddd; border-radius: 6px; padding: .5rem 1rem 1rem; margin: 1rem 0; }
.unit-card h3 { margin-bottom: .2rem; font-family: ui-monospace, monospace; }
.facts, .muted, .meta { color: #666; font-size: .85rem; } .failure { color: #b00020; }
.explanation { background: #eef6ee; padding: 0 .2rem; }
ol.contexts { padding-left: 1.6rem; } li.context { margin: .4rem 0; line-height: 1.7; }
li.context span[title] { font-family: ui-monospace, monospace; font-size: .85rem; white-space: pre-wrap; border-radius: 2px; }
li.context span.tg { outline: 2px solid #c0392b; font-weight: bold; }
.score { font-weight: bold; color: #1a5fb4; } .top { text-align: right; font-size: .8rem; }
"""


def _shade_css() -> str:
    """Return the CSS of the token shades p1..p10 (orange, positive) and n1..n10 (blue, negative)."""
    rules = [
        f".p{k} {{ background: rgba(255,140,0,{k / 10:.1f}); }} .n{k} {{ background: rgba(70,130,255,{k / 10:.1f}); }}"
        for k in range(1, 11)
    ]
    return "\n".join(rules)


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the run's self-contained HTML report (default <run>/results/report.html) and return its path."""
    run_dir = Path(run_dir)
    out = run_dir / REPORT if out is None else Path(out)
    manifest = read_manifest_file(run_dir)
    records = load_run(run_dir)
    scores = unit_scores(list(records.judgments.values()), list(records.simulations.values()))
    groups = _unit_groups(records)
    grouped = {
        "contexts": _by_unit(records.contexts),
        "judgments": _by_unit(records.judgments),
        "simulations": _by_unit(records.simulations),
    }
    tables = _ordered_tables(run_dir / TABLES_DIR)
    plots_dir = run_dir / PLOTS_DIR
    plots = sorted(plots_dir.glob("*.png")) if plots_dir.is_dir() else []
    unit_plots = {unit_plot_name(unit): unit for units in groups.values() for unit in units}
    in_cards = {path.name: path for path in plots if path.name in unit_plots}

    run_name = manifest.get("name", run_dir.resolve().name)
    cards = [
        "<section id='units'><h2>Units</h2><p class='muted'>Token background: activation / the unit's max activation "
        "(orange positive, blue negative); hover a token for its activation; the outlined token is the target. "
        "Judge scores (0–3) are the real explanation's, per held-out context.</p>"
    ]
    if not groups:
        cards.append("<p>No evaluated units (no units.jsonl).</p>")
    for name, units in groups.items():
        anchor = _anchor("set-", name)
        cards.append(f"<h3 id='{_e(anchor)}' class='set'>{_e(name)} ({len(units)} unit{'' if len(units) == 1 else 's'})</h3>")
        for unit in units:
            cards.append(_unit_card(unit, records.units.get(unit), records, grouped, scores, in_cards.get(unit_plot_name(unit))))
    cards.append("</section>")

    page = "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>monoscope report: {_e(run_name)}</title><style>{STYLE}{_shade_css()}</style></head><body><main>",
            f"<h1>monoscope report: {_e(run_name)}</h1>",
            _contents(tables, groups),
            _header_section(run_dir, manifest),
            _tables_section(tables),
            _plots_section([path for path in plots if path.name not in in_cards], list(groups)),
            "".join(cards),
            "</main></body></html>\n",
        ]
    )
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
