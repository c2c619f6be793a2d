"""The Peers section of benchmarks/RESULTS.md, generated from ``run.py``'s results, and their raw figures.

``write_results`` replaces the part of RESULTS.md between the Peers markers (the hand-written text around them —
what each stub and no-deps choice is, what the figures leave out — is kept) and writes ``measured.json``, which
``benchmarks/bench_scorer_cost.py`` reads for the peers' measured calls and tokens per latent.
"""

import json
import os
import platform
from datetime import date
from pathlib import Path
from typing import Any

from envs import PEERS

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "RESULTS.md"
MEASURED = HERE / "measured.json"
BEGIN, END = "<!-- begin generated: python benchmarks/peers/run.py --write-results -->", "<!-- end generated: peers -->"


def _n(value: float, digits: int = 3) -> str:
    """Return ``value`` to ``digits`` significant digits with thousands separators."""
    return f"{float(f'{value:.{digits}g}'):,}".removesuffix(".0")


def _pair(cost: dict[str, float]) -> str:
    """Return "calls / prompt tokens" per latent of a cost row (``run.call_cost`` or ``run.monoscope_cost``)."""
    return f"{_n(cost['calls_per_latent'])} / {_n(cost['prompt_tokens_per_latent'])}"


def _saelens(r: dict[str, Any]) -> list[tuple[str, ...]]:
    mine, theirs = r["monoscope"], r["saelens"]
    matched = "matched within 10%" if r["l0_matched_within_10_percent"] else "NOT matched"
    coefficients = f"sparsity coefficient {_n(mine['sparsity_coefficient'])} vs L1 coefficient {_n(theirs['l1_coefficient'])}"
    return [
        ("training tokens/s, one epoch of the same rows", _n(mine["train_tokens_per_s"]), _n(theirs["train_tokens_per_s"]),
         f"{r['ratio_train_tokens_per_s']:.2f}×"),
        (f"L0 on {r['held_out_tokens']:,} held-out tokens ({coefficients})", _n(mine["l0"]), _n(theirs["l0"]), matched),
        ("variance explained, same held-out tokens, one function", f"{mine['variance_explained']:.3f}",
         f"{theirs['variance_explained']:.3f}", f"{r['difference_variance_explained']:+.3f}"),
        ("encode tokens/s, the SAELens-trained dictionary", _n(mine["encode_tokens_per_s"]), _n(theirs["encode_tokens_per_s"]),
         f"{r['ratio_encode_tokens_per_s']:.2f}×"),
    ]  # fmt: skip


def _latent_cache(r: dict[str, Any]) -> list[tuple[str, ...]]:
    low, high = r["rows"]
    rows = [
        (f"`monoscope index` vs `LatentCache`: marginal tokens/s, T = {low['n_tokens']:,} → 4T",
         _n(r["monoscope_marginal_tokens_per_s"]), _n(r["delphi_marginal_tokens_per_s"]), f"{r['ratio_marginal_tokens_per_s']:.2f}×"),
    ]  # fmt: skip
    for row in (low, high):
        mine, theirs = row["monoscope_peak_rss_mib"], row["delphi_peak_rss_mib"]
        rows.append((f"peak resident MiB at {row['n_tokens']:,} tokens", _n(mine), _n(theirs), f"{mine / theirs:.2f}×"))
    same = "same tokens" if r["ok"] else "NOT the same tokens"
    growth = (r["monoscope_memory_growth_4T_over_T"], r["delphi_memory_growth_4T_over_T"])
    return rows + [("peak memory, 4T ÷ T", f"{growth[0]:.2f}×", f"{growth[1]:.2f}×", same)]


def _saebench(r: dict[str, Any]) -> list[tuple[str, ...]]:
    equal = "equal" if not r["same_judge_mismatches"] else "NOT equal"
    valid = "valid" if not r["reader_errors"] else "INVALID"
    return [
        ("same judge: latents with equal predictions, correct sequences and score", f"{r['same_judge_equal']} of {r['same_judge_latents']}",
         "", equal),
        ("scoring calls / prompt tokens per latent (monoscope: real and shuffled explanations)",
         _pair(r["scoring_cost_monoscope_saebench_setting"]), _pair(r["scoring_cost_saebench"]), ""),
        ("autointerp files SAEBench's reader accepts (TypeAdapter, JSON schema)", f"{r['reader_valid']} of {r['reader_files']}", "", valid),
    ]  # fmt: skip


def _delphi(r: dict[str, Any]) -> list[tuple[str, ...]]:
    equal = "equal" if not r["same_judge_mismatches"] else "NOT equal"
    one_class = f"{r['one_class_latents']} one-class: monoscope gives no score, delphi its formula's number (checked)"
    rows = [("same judge: latent × scorer with equal answers, balanced accuracy and F1",
             f"{r['same_judge_equal']} of {r['same_judge_latents']}", "", f"{equal}; {one_class}")]  # fmt: skip
    for scorer in ("detection", "fuzzing"):
        mine, theirs = r[f"scoring_cost_monoscope_{scorer}"], r[f"scoring_cost_delphi_{scorer}"]
        ratio = f"{mine['calls_per_latent'] / theirs['calls_per_latent']:.2f}× calls"
        figure = f"{scorer}: calls / prompt tokens per latent (monoscope: three explanation sources)"
        rows.append((figure, _pair(mine), _pair(theirs), ratio))
    return rows


def _dashboard(r: dict[str, Any]) -> list[tuple[str, ...]]:
    check = "unchanged" if not r["mismatches"] else "CHANGED"
    shown = f"{r['features']:,} / {r['activations']:,}"
    return [("Neuronpedia export rebuilt by SAEDashboard's own records (features / activation records)", shown, "", check)]


ROWS = {"sae-lens": _saelens, "eai-delphi (LatentCache)": _latent_cache, "sae-bench": _saebench, "eai-delphi": _delphi,
        "sae-dashboard": _dashboard}  # fmt: skip


def peers_markdown(results: list[dict[str, Any]], stamp: str) -> str:
    """Return the generated part of the Peers section: the table (one row per figure) and any failed peer's error."""
    lines = [f"Measured with `python benchmarks/peers/run.py --write-results` ({stamp}); peers: "
             + ", ".join(f"{name} {spec['package'].split('==')[1]}" for name, spec in PEERS.items()) + ".", "",
             "| peer | figure | monoscope | peer | ratio or check |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for result in results:
        if "error" not in result:
            lines += [f"| {result['peer']} | {' | '.join(row)} |" for row in ROWS[result["peer"]](result)]
    failed = [f"- **{r['peer']} {r['version']} failed:** `{r['error']}`" for r in results if "error" in r]
    return "\n".join(lines + ([""] + failed if failed else [])) + "\n"


def write_results(results: list[dict[str, Any]]) -> None:
    """Replace the generated part of RESULTS.md's Peers section and write the raw figures to ``measured.json``."""
    stamp = f"{date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} CPU cores"
    text = RESULTS.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{RESULTS} lacks the Peers markers {BEGIN!r} … {END!r}")
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    RESULTS.write_text(before + BEGIN + "\n" + peers_markdown(results, stamp) + END + after, encoding="utf-8")
    MEASURED.write_text(json.dumps({"measured": stamp, "results": results}, indent=1) + "\n", encoding="utf-8")
