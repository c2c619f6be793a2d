"""monoscope side by side with its peers: the same inputs, the same judge, their formats (each peer in its own environment).

    python benchmarks/peers/run.py --json            # one JSON object per peer; exit 1 when an equality fails
    python benchmarks/peers/run.py --work DIR        # where the runs and exports go (default ~/.cache/monoscope/peers/work)

What runs (the peers' versions pinned in ``envs.py``):

1. a monoscope run on the embedded Gemma 3 270M: one 2,048-feature dictionary trained on the residual stream,
   the SAEBench setting of detection (128-token sequences, 21-token windows) and fuzzing, and a second evaluation
   on a copy of the same foundation with monoscope's own detection; every LLM role is the hash judge on loopback
   (``hash_judge.py``), which the peers call too;
2. sae-bench: its own autointerp scoring (``saebench_scoring.py``) of the windows monoscope showed, against the same
   judge: per-latent predictions, correct sequences and scores must be equal; and SAEBench's reader
   (``check_saebench_output.py``) must accept every autointerp file the run wrote;
3. eai-delphi: its detection and fuzzing classifiers (``delphi_scoring.py``) on the texts monoscope showed, against
   the same judge: per-latent balanced accuracy and F1 must be equal;
4. sae-dashboard: ``monoscope export neuronpedia`` of the run, rebuilt by SAEDashboard's own records
   (``check_dashboard_records.py``) without a change.

A failed equality or validation is a failure of this script (exit 1), never a note.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))

from envs import PEERS, ensure_env, run_in  # noqa: E402
from hash_judge import canonical, start_hash_judge  # noqa: E402

FOUNDATION_FILES = ("activations", "corpus.json", "corpus.npy", "dictionaries", "dictionaries.json", "index")


def peers_config(base_url: str, tokens: int, detection_setting: str, scorers: list[str]) -> dict[str, Any]:
    """Return the monoscope config of the peers' run (every role the hash judge at ``base_url``)."""
    role = {"backend": "openai", "model": "hash-judge", "base_url": base_url}
    return {
        "name": "peers",
        "seed": 0,
        "model": {"name": "embedded", "device": "cpu", "dtype": "float32"},
        "corpus": {"tokens": tokens, "context_length": 128},
        "dictionaries": {"train": [2048]},
        "index": {"window_before": 10, "window_after": 10, "spaced_top": 12, "weighted": 24},
        "neurons": {"enabled": False},
        "correlation": {"enabled": False},
        "evaluation": {"units_per_dictionary": 8, "scorers": scorers, "detection_setting": detection_setting},
        "explainer": role,
        "judge": role,
        "simulator": role,
    }


def run_monoscope(work: Path, base_url: str, tokens: int) -> tuple[Path, Path, float]:
    """Return (SAEBench-setting run, monoscope-detection run, seconds): fresh evaluations on one cached foundation."""
    from harness.config import config_from_mapping
    from harness.run.runner import run_evaluation

    started = time.perf_counter()
    foundation = work / "foundation"
    saebench_run, detection_run = work / "saebench-setting", work / "monoscope-detection"
    for folder in (saebench_run, detection_run):
        shutil.rmtree(folder, ignore_errors=True)  # fresh records: the judge must see every text (no response cache)
    config = config_from_mapping(peers_config(base_url, tokens, "saebench", ["detection", "fuzzing"]))
    if not (foundation / "index").exists():
        shutil.rmtree(foundation, ignore_errors=True)
        run_evaluation(config, foundation, log=lambda _message: None)
    for folder, setting, scorers in ((saebench_run, "saebench", ["detection", "fuzzing"]), (detection_run, "monoscope", ["detection"])):
        folder.mkdir(parents=True)
        for name in FOUNDATION_FILES:
            source = foundation / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, folder / name)
        manifest = json.loads((foundation / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps({k: manifest[k] for k in ("config", "model", "seed", "versions", "timings")}))
        run_evaluation(config_from_mapping(peers_config(base_url, tokens, setting, scorers)), folder, log=lambda _message: None)
    return saebench_run, detection_run, time.perf_counter() - started


def saebench_request(run_dir: Path) -> dict[str, Any]:
    """Return saebench_scoring.py's input: each scored latent's windows (token ids, activations) in monoscope's order."""
    from harness.index.store import load_index, unit_samples
    from harness.run.steering import run_subject
    from harness.subject.corpus import load_chunks
    from results.store import latest_by_key, read_records
    from scorers.saebench import ACTIVE_FRACTION, BUFFER, N_TOP_EXPLAIN, N_TOP_SCORE, SaebenchJudgment

    chunks = load_chunks(run_dir / "corpus")
    tokenizer = run_subject(run_dir).tokenizer
    records = [r for r in latest_by_key(read_records(run_dir / "saebench.jsonl", SaebenchJudgment)).values() if r.source == "real"]
    states: dict[str, Any] = {}
    latents, vocab = [], {}
    for record in sorted(records, key=lambda r: r.unit):
        dictionary, index = record.unit.rsplit("/", 1)
        if dictionary not in states:
            states[dictionary] = load_index(run_dir / "index" / f"{dictionary}.safetensors")[0]
        samples = unit_samples(states[dictionary], int(index), record.unit)
        top = [s for s in samples if s.kind == "spaced_top"][: N_TOP_EXPLAIN + N_TOP_SCORE]
        acts = {(s.chunk, s.position): list(s.activations) for s in samples if s.kind in ("spaced_top", "weighted")}
        windows = []
        for window in record.windows:
            chunk, position = (int(part) for part in window.split(":"))
            ids = chunks[chunk, position - BUFFER : position + BUFFER + 1].tolist()
            vocab |= {token: tokenizer.decode([token], clean_up_tokenization_spaces=False) for token in ids}
            windows.append({"toks": ids, "acts": acts.get((chunk, position))})
        threshold = ACTIVE_FRACTION * max(max(s.activations) for s in top)
        latents.append({"unit": record.unit, "latent": int(index), "explanation": record.explanation, "act_threshold": threshold,
                        "windows": windows, "monoscope": {"predictions": list(record.predictions or []), "score": record.score,
                                                          "labels": list(record.labels)}})  # fmt: skip
    return {"vocab": {str(k): v for k, v in vocab.items()}, "latents": latents}


def saebench_peer(saebench_run: Path, base_url: str, work: Path) -> dict[str, Any]:
    """SAEBench's scoring of monoscope's windows against the same judge, and SAEBench's reader on the autointerp files."""
    request = saebench_request(saebench_run)
    path = work / "saebench-request.json"
    path.write_text(json.dumps(request))
    os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = base_url, "hash-judge"  # SAEBench's OpenAI() reads them
    started = time.perf_counter()
    theirs = {r["latent"]: r for r in run_in("sae-bench", HERE / "saebench_scoring.py", str(path))["latents"]}
    seconds = time.perf_counter() - started
    mismatches = []
    for latent in request["latents"]:
        mine, other = latent["monoscope"], theirs[latent["latent"]]
        correct = [i for i, label in enumerate(mine["labels"], start=1) if label]
        if (mine["predictions"], correct, mine["score"]) != (other["predictions"], other["correct seqs"], other["score"]):
            mismatches.append({"unit": latent["unit"], "monoscope": mine, "saebench": other})
    files = sorted(str(p) for p in (saebench_run / "results" / "saebench").glob("*_eval_results.json"))
    reader = run_in("sae-bench", HERE / "check_saebench_output.py", *files)
    return {
        "peer": "sae-bench",
        "version": PEERS["sae-bench"]["package"].split("==")[1],
        "same_judge_latents": len(request["latents"]),
        "same_judge_equal": len(request["latents"]) - len(mismatches),
        "same_judge_mismatches": mismatches,
        "same_judge_seconds": round(seconds, 2),
        "reader_files": reader["files"],
        "reader_valid": reader["valid"],
        "reader_errors": reader["errors"],
        "ok": not mismatches and request["latents"] != [] and reader["files"] > 0 and not reader["errors"],
    }


def delphi_request(runs: dict[str, Path], texts: dict[str, str]) -> dict[str, Any]:
    """Return delphi_scoring.py's input: per unit and scorer, the texts monoscope's judge saw (as delphi writes them)."""
    from results.store import latest_by_key, read_records
    from scorers.binary import BinaryJudgment, binary_summary

    latents = []
    for scorer, run_dir in runs.items():
        records = [r for r in latest_by_key(read_records(run_dir / f"{scorer}.jsonl", BinaryJudgment)).values() if r.source == "real"]
        for unit in sorted({r.unit for r in records}):
            mine = [r for r in records if r.unit == unit]
            summary = binary_summary(mine)
            samples = [{"text": canonical(texts[r.text_sha256]), "activating": r.label} for r in mine]
            latents.append({"unit": unit, "scorer": scorer, "explanation": mine[0].explanation, "samples": samples,
                            "monoscope": {"predictions": [r.p_yes > 0.5 for r in mine], "balanced_accuracy": summary["balanced_accuracy"],
                                          "f1": summary["f1"]}})  # fmt: skip
    return {"latents": latents}


def delphi_peer(runs: dict[str, Path], base_url: str, texts: dict[str, str], work: Path) -> dict[str, Any]:
    """delphi's detection and fuzzing classifiers on the texts monoscope showed, against the same judge."""
    request = delphi_request(runs, texts)
    path = work / "delphi-request.json"
    path.write_text(json.dumps(request))
    started = time.perf_counter()
    theirs = run_in("eai-delphi", HERE / "delphi_scoring.py", base_url, str(path))["latents"]
    seconds = time.perf_counter() - started
    mismatches = []
    for latent, other in zip(request["latents"], theirs, strict=True):
        mine = latent["monoscope"]
        same = mine["predictions"] == other["predictions"] and all(
            mine[key] is not None and abs(mine[key] - other[key]) < 1e-12 for key in ("balanced_accuracy", "f1")
        )
        if not same:
            mismatches.append({"unit": latent["unit"], "scorer": latent["scorer"], "monoscope": mine, "delphi": other})
    return {
        "peer": "eai-delphi",
        "version": PEERS["eai-delphi"]["package"].split("==")[1],
        "same_judge_latents": len(theirs),
        "same_judge_equal": len(theirs) - len(mismatches),
        "same_judge_mismatches": mismatches,
        "same_judge_seconds": round(seconds, 2),
        "ok": not mismatches and theirs != [],
    }


def dashboard_peer(run_dir: Path, work: Path) -> dict[str, Any]:
    """``monoscope export neuronpedia`` of the run, rebuilt by SAEDashboard's own records."""
    from harness.run.neuronpedia import export_neuronpedia

    out = work / "neuronpedia"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    export_neuronpedia(run_dir, out, log=lambda _message: None)
    seconds = time.perf_counter() - started
    check = run_in("sae-dashboard", HERE / "check_dashboard_records.py", str(out))
    return {
        "peer": "sae-dashboard",
        "version": PEERS["sae-dashboard"]["package"].split("==")[1],
        "export_seconds": round(seconds, 2),
        **check,
        "ok": check["sources"] > 0 and check["features"] > 0 and not check["mismatches"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object per peer")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "monoscope" / "peers" / "work")
    parser.add_argument("--tokens", type=int, default=65_536, help="corpus tokens of the peers' run (128-token sequences)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for peer in PEERS:
        ensure_env(peer)
    server, base_url = start_hash_judge()
    os.environ.setdefault("OPENAI_API_KEY", "hash-judge")  # monoscope's openai backend reads its key from the environment
    try:
        saebench_run, detection_run, seconds = run_monoscope(args.work, base_url, args.tokens)
        texts = dict(server.shown_texts)  # type: ignore[attr-defined]
        results = [
            saebench_peer(saebench_run, base_url, args.work),
            delphi_peer({"detection": detection_run, "fuzzing": saebench_run}, base_url, texts, args.work),
            dashboard_peer(saebench_run, args.work),
        ]
    finally:
        server.shutdown()
    for result in results:
        result["monoscope_run_seconds"] = round(seconds, 2)
        print(json.dumps(result) if args.json else f"{result['peer']} {result['version']}: {'ok' if result['ok'] else 'FAILED'}")
    if not all(result["ok"] for result in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
