"""One self-contained HTML page per run: the answers, the controls, manifest, tables, plots and a card per evaluated unit.

The page opens with the answers to the three questions a run is made for (``results.answers``),
each a sentence written from the measured numbers with its 95% interval and its plot; then the
controls that say how far the judge can be trusted, with how every score is made
(``results.notes``); then the run's manifest, the tables, the other plots and the unit cards
(``results.cards``).

The page needs nothing outside itself: CSS is inline, plots are inlined as
base64 data URIs, and there is no JavaScript. Every string that comes from a
record, a CSV or the manifest (corpus tokens, explanations, raw replies) goes
through ``html.escape`` before it reaches the page, so a context holding
``<script>`` shows as text.
"""

import csv
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.storage import atomic_write_bytes
from results.answers import answers_section, controls_section, read_answer_tables
from results.cards import tokens_html as _tokens_html  # noqa: F401  (tests/test_rendering reads it from here)
from results.cards import unit_groups, units_section
from results.notes import TABLE_NOTES, scoring_notes
from results.page import anchor as _anchor
from results.page import escape as _e
from results.page import figure as _figure
from results.page import number as _number
from results.page import unit_html_id as unit_html_id
from results.page import unit_plot_name as unit_plot_name
from results.run_records import RunRecords, load_run, read_manifest_file
from results.summary import unit_scores

TABLES_DIR, PLOTS_DIR = Path("results") / "tables", Path("results") / "plots"
REPORT = Path("results") / "report.html"

TABLE_ORDER = ("sets", "compare", "sizes", "controls", "set_means", "correlation_summary")
LONG_TABLES = ("units", "specificity_units", "correlations")
LONG_TABLE_ROWS = 30
GLOBAL_PLOTS = {
    "features_vs_neurons": "Features versus neurons: distributions of per-unit rubric and simulation scores.",
    "max_correlation": "Each feature's largest correlation with any neuron (and residual direction).",
    "metrics_vs_size": "Scores against dictionary size.",
}
NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
INTEGER = re.compile(r"^[+-]?\d+$")


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
        parts.append("<p>No other plots in <code>results/plots</code> (the answers above show theirs).</p>")
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


def _contents(tables: list[Path], groups: dict[str, list[str]]) -> str:
    table_links = "".join(f"<li><a href='#table-{_e(path.stem)}'>{_e(path.stem)}</a></li>" for path in tables)
    set_items = []
    for name, units in groups.items():
        links = " ".join(f"<a href='#{_e(unit_html_id(unit))}'>{_e(unit)}</a>" for unit in units)
        anchor = _anchor("set-", name)
        set_items.append(f"<li><a href='#{_e(anchor)}'>{_e(name)}</a> ({len(units)}): <span class='unit-links'>{links}</span></li>")
    return (
        "<nav id='contents'><h2>Contents</h2><ul>"
        "<li><a href='#answers'>Answers</a></li>"
        "<li><a href='#controls'>Controls</a> (<a href='#score-notes'>how the scores are made</a>)</li>"
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
p.answer { font-size: 1.05rem; background: #eef3fb; border-left: 4px solid #1a5fb4; padding: .4rem .7rem; }
ul.answer-details li { margin: .3rem 0; } .notes { background: white; border: 1px solid #ddd; padding: .2rem 1rem; }
.used { color: #1a5fb4; font-weight: bold; }
"""


def _shade_css() -> str:
    """Return the CSS of the token shades p1..p10 (orange, positive) and n1..n10 (blue, negative)."""
    rules = [
        f".p{k} {{ background: rgba(255,140,0,{k / 10:.1f}); }} .n{k} {{ background: rgba(70,130,255,{k / 10:.1f}); }}"
        for k in range(1, 11)
    ]
    return "\n".join(rules)


def _formats(records: RunRecords) -> tuple[set[str], set[str]]:
    """Return the judge formats and the simulator formats this run's records were scored with."""
    return {j.judge_format for j in records.judgments.values()}, {m.simulator_format for m in records.simulations.values()}


def _output_section(run_dir: Path) -> str:
    """Return the section comparing explanations from contexts and from outputs (a 2×2 table per set), or "" when not made."""
    from results.tables import load_table, table_path

    if not table_path(run_dir, "output_centric").exists():
        return ""
    table = load_table(run_dir, "output_centric")
    names = {"detection": "detection (balanced accuracy)", "detection_auc": "detection AUC", "intervention": "intervention"}

    def cell(mean: Any, low: Any, high: Any) -> str:
        bounds = f" [{_number(low, 2)}, {_number(high, 2)}]" if isinstance(low, float) and low == low else ""
        return f"<td class='num'>{_number(mean, 2)}{bounds}</td>"

    parts = [
        "<section id='outputs'><h2>Explanations from contexts and from outputs</h2><p class='muted'>Each unit explained twice: "
        "from the contexts where it fires (the run's explanation) and from what it writes to the output (the tokens it "
        "promotes and suppresses through the unembedding, and those clamping it raises). Means over units with 95% bootstrap "
        "intervals; the last row is outputs − contexts, paired over the units with both.</p>"
    ]
    for unit_set, rows in table.groupby("unit_set", sort=False):
        metrics = list(rows["metric"])
        head = "".join(f"<th>{_e(names.get(m, m))}</th>" for m in metrics)
        body = []
        for label, prefix in (("from activating contexts", "contexts_"), ("from outputs", "outputs_")):
            cells = "".join(cell(r[f"{prefix}mean"], r[f"{prefix}ci_low"], r[f"{prefix}ci_high"]) for r in rows.to_dict("records"))
            body.append(f"<tr><th>{label}</th>{cells}</tr>")
        cells = "".join(cell(r["difference"], r["ci_low"], r["ci_high"]) for r in rows.to_dict("records"))
        body.append(f"<tr><th>outputs − contexts (n={int(rows['n_units'].max())})</th>{cells}</tr>")
        parts.append(f"<h3>{_e(unit_set)}</h3><table><tr><th>explanation</th>{head}</tr>{''.join(body)}</table>")
    return "".join(parts) + "</section>"


def _agreement_section(run_dir: Path) -> str:
    """Return the Judge agreement section: the figures and whether each conclusion holds under every judge, or why none."""
    from results.agreement import run_judges
    from results.tables import load_table, table_path

    judges = run_judges(run_dir)
    head = "<section id='agreement'><h2>Judge agreement</h2>"
    if len(judges) < 2 or not table_path(run_dir, "agreement").exists():
        return head + (
            "<p class='answer'>Not computed: this run has one judge. List two or more under <code>evaluation.judges</code> "
            "to see whether the scores and conclusions depend on the judge.</p></section>"
        )
    figures = []
    for row in load_table(run_dir, "agreement").to_dict("records"):
        what = f"{row['unit_set']}, {row['metric']}, {row['statistic']} ({row['judge_a']} vs {row['judge_b']})"
        if isinstance(row["reason"], str) and row["reason"]:
            figures.append(f"{what}: not computed, {row['reason']}.")
        else:
            figures.append(
                f"{what}: {_number(row['value'], 2)} (95% CI [{_number(row['ci_low'], 2)}, {_number(row['ci_high'], 2)}], "
                f"{int(row['n_units'])} units)."
            )
    verdicts = []
    conclusions = load_table(run_dir, "judge_conclusions")
    for (comparison, metric), group in conclusions.groupby(["comparison", "metric"], sort=False):
        holds = bool(group["holds_under_every_judge"].astype(str).str.lower().eq("true").all())
        each = "; ".join(f"{judge}: {direction}" for judge, direction in zip(group["judge"], group["direction"], strict=True))
        verdicts.append(f"{comparison}, {metric}: {'holds' if holds else 'does not hold'} under every judge ({each}).")
    items = "".join(f"<li>{_e(text)}</li>" for text in figures)
    held = "".join(f"<li>{_e(text)}</li>" for text in verdicts) or "<li>No comparison to make (one unit set).</li>"
    return (
        f"{head}<p class='muted'>{len(judges)} judges: {_e(', '.join(label for label, _ in judges))} (the first is the primary, "
        "whose scores fill the other tables). Spearman correlation of unit scores between judges, Krippendorff's alpha (interval) "
        "of their rubric ratings of the same contexts; 95% bootstrap intervals over units; none below 10 units.</p>"
        f"<ul class='answer-details'>{items}</ul><h3>Do the conclusions hold under every judge?</h3>"
        f"<ul class='answer-details'>{held}</ul></section>"
    )


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the run's self-contained HTML report (default <run>/results/report.html) and return its path.

    Order: the answers, the controls (with how every score is made), contents, the run's
    manifest, the summary tables, the plots the answers did not show, and the unit cards.
    """
    run_dir = Path(run_dir)
    out = run_dir / REPORT if out is None else Path(out)
    manifest = read_manifest_file(run_dir)
    records = load_run(run_dir)
    scores = unit_scores(list(records.judgments.values()), list(records.simulations.values()))
    groups = unit_groups(records)
    tables = _ordered_tables(run_dir / TABLES_DIR)
    plots_dir = run_dir / PLOTS_DIR
    plots = sorted(plots_dir.glob("*.png")) if plots_dir.is_dir() else []
    unit_plots = {unit_plot_name(unit) for units in groups.values() for unit in units}
    in_cards = {path.name: path for path in plots if path.name in unit_plots}
    answer_tables = read_answer_tables(run_dir)
    answers, in_answers = answers_section(answer_tables, {path.name: path for path in plots if path.name not in in_cards})

    run_name = manifest.get("name", run_dir.resolve().name)
    page = "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>monoscope report: {_e(run_name)}</title><style>{STYLE}{_shade_css()}</style></head><body><main>",
            f"<h1>monoscope report: {_e(run_name)}</h1>",
            answers,
            controls_section(answer_tables, scoring_notes(*_formats(records), manifest)),
            _agreement_section(run_dir),
            _output_section(run_dir),
            _contents(tables, groups),
            _header_section(run_dir, manifest),
            _tables_section(tables),
            _plots_section([path for path in plots if path.name not in in_cards and path.name not in in_answers], list(groups)),
            units_section(records, scores, in_cards),
            "</main></body></html>\n",
        ]
    )
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
