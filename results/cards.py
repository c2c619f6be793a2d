"""The report's unit cards: per unit its facts, explanations, scores per source, plot and marked contexts.

Every string from a record goes through ``html.escape`` (``results.page.escape``) before it
reaches the page.
"""

import math
from pathlib import Path
from typing import Any

from harness.llm.render import display_units, shown, unit_text
from harness.records import EvaluatedUnit, Explanation, Judgment, Simulation, TokenContext
from harness.steering.generate import Steering
from results.page import anchor as _anchor
from results.page import escape as _e
from results.page import figure as _figure
from results.page import number as _number
from results.page import unit_html_id, unit_plot_name
from results.run_records import RunRecords

SOURCES = ("real", "shuffled", "token_stats")


def tokens_html(context: TokenContext, scale: float) -> str:
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
        items.append(f"<li class='context' id='{_e(anchor)}'><div class='meta'>{meta}</div>{tokens_html(context, scale)}</li>")
    return f"<ol class='contexts'>{''.join(items)}</ol>"


def example_for_unit(records: list[Steering], unit: str, kl_threshold: float) -> tuple[Steering, bool] | None:
    """Return (the steering to show for ``unit``, whether its multiple reached the threshold), or None without records.

    The smallest positive multiple whose mean KL over its prompts reaches ``kl_threshold``, its
    first prompt; when none does, the largest multiple tried (the flag says so).
    """
    by_multiple: dict[float, list[Steering]] = {}
    for record in records:
        if record.units == (unit,):
            by_multiple.setdefault(record.multiples[0], []).append(record)
    if not by_multiple:
        return None
    tried = sorted(m for m in by_multiple if m > 0) or sorted(by_multiple)
    for multiple in tried:
        group = by_multiple[multiple]
        if sum(r.mean_kl for r in group) / len(group) >= kl_threshold:
            return group[0], True
    return by_multiple[tried[-1]][0], False


def _steering_html(records: RunRecords, unit: str) -> str:
    """Return the card's steering example: the smallest multiple whose mean KL reaches the run's threshold."""
    found = example_for_unit(records.steerings, unit, records.steering_kl_threshold)
    if found is None:
        return ""
    example, reached = found
    where = "every position" if example.positions == "all" else "generated tokens only"
    kl = sum(r.mean_kl for r in records.steerings if r.units == example.units and r.multiples == example.multiples)
    count = sum(1 for r in records.steerings if r.units == example.units and r.multiples == example.multiples)
    note = (
        f"the smallest multiple tried whose mean KL reaches {records.steering_kl_threshold:g} nats"
        if reached
        else f"no multiple tried reached {records.steering_kl_threshold:g} nats; the largest is shown"
    )
    rows = (("prompt", example.prompt), ("plain", example.baseline), ("steered", example.steered))
    table = "".join(f"<tr><th>{name}</th><td class='steer'>{_e(shown(text))}</td></tr>" for name, text in rows)
    return (
        f"<h4>Steering</h4><p>Clamped to {example.multiples[0]:g}× its maximum activation ({example.values[0]:.4g}) "
        f"at {where}, {example.sampling}, {example.max_new_tokens} tokens: {note}. Mean KL(steered ‖ plain) per token "
        f"{_number(kl / count, 3)} nats over {count} prompt{'s' if count != 1 else ''} (this prompt {_number(example.mean_kl, 3)}).</p>"
        f"<table class='steering'>{table}</table>"
    )


def _intervention_html(records: RunRecords, unit: str) -> str:
    """Return the card's intervention-scorer line per source (fraction right, Wilson 95% interval), or "" when not scored."""
    from scorers.intervention import intervention_summary

    cells = []
    for source in (*SOURCES, "output"):
        judged = [j for j in records.interventions.values() if j.unit == unit and j.source == source]
        if judged:
            summary = intervention_summary(judged)
            failures = f", {summary['failures']} undecided or failed" if summary["failures"] else ""
            cells.append(
                f"{_e(source)} {_number(summary['fraction'], 2)} [{_number(summary['low'], 2)}, {_number(summary['high'], 2)}] "
                f"(n={summary['n']}{failures})"
            )
    if not cells:
        return ""
    kl = intervention_summary([j for j in records.interventions.values() if j.unit == unit and j.source == "real"])["mean_kl"]
    return (
        "<p class='intervention'><b>Intervention scorer</b> (fraction of steering pairs where the judge picks the steered "
        f"continuation, Wilson 95% interval): {'; '.join(cells)}; mean KL of the steerings {_number(kl, 3)} nats per token.</p>"
    )


def _binary_html(records: RunRecords, unit: str) -> str:
    """Return the card's detection and fuzzing line per source (balanced accuracy, AUC, texts judged), or "" when not scored."""
    from scorers.binary import binary_summary

    lines = []
    for scorer in ("detection", "fuzzing"):
        cells = []
        for source in (*SOURCES, "output"):
            judged = [j for j in records.classifications.values() if j.scorer == scorer and j.unit == unit and j.source == source]
            if judged:
                summary = binary_summary(judged)
                failures = f", {summary['failures']} failed" if summary["failures"] else ""
                cells.append(
                    f"{_e(source)} {_number(summary['balanced_accuracy'], 2)} / AUC {_number(summary['auc'], 2)} "
                    f"(right texts {summary['n_positive']}, wrong {summary['n_negative']}{failures})"
                )
        if cells:
            lines.append(f"<b>{scorer.capitalize()}</b> (balanced accuracy / AUC of P(yes)): {'; '.join(cells)}.")
    return f"<p class='binary'>{'<br>'.join(lines)}</p>" if lines else ""


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
        _explanation_html(records.explanations.get((unit, "output")), "From its outputs")
        if (unit, "output") in records.explanations
        else "",
        _scores_table(unit, grouped["judgments"].get(unit, []), grouped["simulations"].get(unit, []), scores),
    ]
    parts.append(_steering_html(records, unit))
    parts.append(_intervention_html(records, unit))
    parts.append(_binary_html(records, unit))
    if plot is not None:
        parts.append(_figure(plot, f"Specificity of {unit}: rubric score against activation level."))
    parts.append(f"<h4>Explanation contexts ({len(explain)})</h4>{_contexts_html(explain, scale, None)}")
    parts.append(f"<h4>Held-out scoring contexts ({len(score)})</h4>{_contexts_html(score, scale, records.judgments)}")
    parts.append("<p class='top'><a href='#contents'>↑ contents</a></p></article>")
    return "".join(parts)


def unit_groups(records: RunRecords) -> dict[str, list[str]]:
    """Return {unit set: units} in the order of units.jsonl; units only seen in other records come last."""
    groups: dict[str, list[str]] = {}
    for unit, evaluated in records.units.items():
        groups.setdefault(evaluated.unit_set, []).append(unit)
    seen = set(records.units)
    others = {key[0] for key in [*records.explanations, *records.contexts, *records.judgments]} - seen
    if others:
        groups.setdefault("(not in units.jsonl)", []).extend(sorted(others))
    return groups


def units_section(records: RunRecords, scores: dict[tuple[str, str], dict[str, Any]], plots: dict[str, Path]) -> str:
    """Return the Units section: a heading per unit set and a card per unit (with its plot from ``plots``, by file name)."""
    groups = unit_groups(records)
    grouped = {
        "contexts": _by_unit(records.contexts),
        "judgments": _by_unit(records.judgments),
        "simulations": _by_unit(records.simulations),
    }
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
            cards.append(_unit_card(unit, records.units.get(unit), records, grouped, scores, plots.get(unit_plot_name(unit))))
    cards.append("</section>")
    return "".join(cards)
