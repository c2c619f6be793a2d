"""monoscope side by side with its peers: the same inputs, the same judge, their formats (each peer in its own environment).

    python benchmarks/peers/run.py --json            # one JSON object per peer; exit 1 when an equality fails
    python benchmarks/peers/run.py --work DIR        # where the runs and exports go (default ~/.cache/monoscope/peers/work)

What runs (the peers' versions pinned in ``envs.py``):

1. a monoscope run on the embedded Gemma 3 270M: one 2,048-feature dictionary trained on the residual stream,
   the SAEBench setting of detection (128-token sequences, 21-token windows) and fuzzing, and a second evaluation
   on a copy of the same foundation with monoscope's own detection; every LLM role is the hash judge on loopback
   (``hash_judge.py``), which the peers call too;
2. sae-lens: its own trainer (``saelens_train.py``) on the foundation's stored residual stream, the L1 coefficient
   tuned until its L0 on the held-out tokens is within 10% of monoscope's (recipe λ 2.0), variance explained of both
   by monoscope's ``dictionary_stats`` on the same held-out tokens, training tokens/s, and encode tokens/s of both
   encoders on the SAELens-trained dictionary;
3. eai-delphi's ``LatentCache`` (``delphi_cache.py``) with monoscope's encoder over the first T and 4T tokens of
   the same corpus, beside ``monoscope index`` over the same tokens: tokens/s and peak memory of each;
4. sae-bench: its own autointerp scoring (``saebench_scoring.py``) of the windows monoscope showed, against the same
   judge: per-latent predictions, correct sequences and scores must be equal; and SAEBench's reader
   (``check_saebench_output.py``) must accept every autointerp file the run wrote;
5. eai-delphi: its detection and fuzzing classifiers (``delphi_scoring.py``) on the texts monoscope showed, against
   the same judge: per-latent balanced accuracy and F1 must be equal;
6. sae-dashboard: ``monoscope export neuronpedia`` of the run, rebuilt by SAEDashboard's own records
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
from report import write_results  # noqa: E402

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
        "steering": {"enabled": False},  # the report's steering examples: no peer has them, and they take minutes
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


def call_cost(calls: list[tuple[int, int]], latents: int) -> dict[str, float]:
    """Return LLM calls and prompt/completion tokens (characters / 4) per latent of the judge's requests ``calls``."""
    return {
        "calls_per_latent": len(calls) / max(latents, 1),
        "prompt_tokens_per_latent": sum(p for p, _ in calls) / 4 / max(latents, 1),
        "completion_tokens_per_latent": sum(c for _, c in calls) / 4 / max(latents, 1),
    }


def monoscope_cost(run_dir: Path, stage: str, latents: int) -> dict[str, float]:
    """Return the judge's calls and tokens per latent in one of monoscope's stages (every explanation source: the real
    explanation and its controls), from the run manifest's usage ({role: {stage: counts}}, LLMClient's counts)."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    usage = manifest.get("usage_total") or manifest.get("usage", {})  # usage_total: every invocation of the run
    rows = [counts for name, counts in usage.get("judge", {}).items() if name == stage]
    return {
        "calls_per_latent": sum(row["calls"] for row in rows) / max(latents, 1),
        "prompt_tokens_per_latent": sum(row["prompt_tokens"] for row in rows) / max(latents, 1),
        "completion_tokens_per_latent": sum(row["completion_tokens"] for row in rows) / max(latents, 1),
    }


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


def saebench_peer(saebench_run: Path, base_url: str, work: Path, server: Any) -> dict[str, Any]:
    """SAEBench's scoring of monoscope's windows against the same judge, and SAEBench's reader on the autointerp files."""
    request = saebench_request(saebench_run)
    path = work / "saebench-request.json"
    path.write_text(json.dumps(request))
    os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = base_url, "hash-judge"  # SAEBench's OpenAI() reads them
    started, before = time.perf_counter(), len(server.calls)
    theirs = {r["latent"]: r for r in run_in("sae-bench", HERE / "saebench_scoring.py", str(path))["latents"]}
    seconds, calls = time.perf_counter() - started, server.calls[before:]
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
        "scoring_cost_saebench": call_cost(calls, len(request["latents"])),
        "scoring_cost_monoscope_saebench_setting": monoscope_cost(saebench_run, "saebench", len(request["latents"])),
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


def one_class_delphi_metrics(predictions: list[bool], labels: list[bool]) -> tuple[float, float]:
    """Return (balanced accuracy, F1) as delphi's ``compute_classification_metrics`` defines them when the texts hold
    one class only: the missing class's rate counts as 0, so balanced accuracy is TPR / 2 (or TNR / 2), and F1 is that
    of "yes" on the right texts (0 when there are none). monoscope gives no score there (``binary_summary``'s reason
    "no wrong text: the unit fires in every window"); this checks that delphi's number is its formula on the same
    answers, so the difference is the convention alone."""
    tp = sum(p and y for p, y in zip(predictions, labels, strict=True))
    fp = sum(p and not y for p, y in zip(predictions, labels, strict=True))
    positives, negatives = sum(labels), len(labels) - sum(labels)
    tn = negatives - fp
    balanced = ((tp / positives if positives else 0) + (tn / negatives if negatives else 0)) / 2
    precision = tp / (tp + fp) if tp + fp else 0
    recall = tp / positives if positives else 0
    return balanced, (2 * precision * recall / (precision + recall) if precision + recall else 0)


def delphi_peer(runs: dict[str, Path], base_url: str, texts: dict[str, str], work: Path, server: Any) -> dict[str, Any]:
    """delphi's detection and fuzzing classifiers on the texts monoscope showed, against the same judge (one delphi
    process per scorer, so that each scorer's calls and tokens per latent are counted apart)."""
    request = delphi_request(runs, texts)
    mismatches, declined, theirs, seconds, cost = [], [], [], 0.0, {}
    for scorer in runs:
        mine = [latent for latent in request["latents"] if latent["scorer"] == scorer]
        path = work / f"delphi-request-{scorer}.json"
        path.write_text(json.dumps({"latents": mine}))
        started, before = time.perf_counter(), len(server.calls)
        other = run_in("eai-delphi", HERE / "delphi_scoring.py", base_url, str(path))["latents"]
        seconds += time.perf_counter() - started
        cost[f"scoring_cost_delphi_{scorer}"] = call_cost(server.calls[before:], len(mine))
        cost[f"scoring_cost_monoscope_{scorer}"] = monoscope_cost(runs[scorer], scorer, len(mine))
        theirs += other
        for latent, result in zip(mine, other, strict=True):
            ours = latent["monoscope"]
            if ours["balanced_accuracy"] is None:  # one class only: monoscope gives no score, delphi its formula's number
                declined.append({"unit": latent["unit"], "scorer": scorer, "delphi": result})
                expected = one_class_delphi_metrics(ours["predictions"], [sample["activating"] for sample in latent["samples"]])
                found = (result["balanced_accuracy"], result["f1"])
                close = all(abs(a - b) < 1e-12 for a, b in zip(expected, found, strict=True))
                same = ours["predictions"] == result["predictions"] and close
            else:
                same = ours["predictions"] == result["predictions"] and all(
                    abs(ours[key] - result[key]) < 1e-12 for key in ("balanced_accuracy", "f1")
                )
            if not same:
                mismatches.append({"unit": latent["unit"], "scorer": scorer, "monoscope": ours, "delphi": result})
    return {
        "peer": "eai-delphi",
        "version": PEERS["eai-delphi"]["package"].split("==")[1],
        "same_judge_latents": len(theirs),
        "same_judge_equal": len(theirs) - len(mismatches),
        "same_judge_mismatches": mismatches,
        "same_judge_seconds": round(seconds, 2),
        "one_class_latents": len(declined),
        "one_class_latents_delphi_scores": declined,
        **cost,
        "ok": not mismatches and len(theirs) > len(declined),
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


def _rows(store: Any, chunk_ids: list[int]) -> Any:
    """Return the residual rows [len(chunk_ids) × T, d_in] float32 numpy array of a run's residual store."""
    import numpy as np

    return np.concatenate([store.read(chunk_ids[i : i + 64]).reshape(-1, store.width).numpy() for i in range(0, len(chunk_ids), 64)])


def saelens_peer(foundation: Path, work: Path, d_sae: int = 2048, sparsity: float = 2.0, tries: int = 6) -> dict[str, Any]:
    """SAELens' trainer against monoscope's on the same stored activations: matched L0 (±10%), variance explained on the
    same held-out tokens (monoscope's ``dictionary_stats`` for both), training tokens/s, and encode tokens/s of both
    encoders on the SAELens-trained dictionary."""
    import numpy as np
    import torch

    from harness.dictionaries.dictionary import encode
    from harness.dictionaries.formats import load_saelens_directory
    from harness.dictionaries.training import TrainingConfig, dictionary_stats, train_dictionary
    from harness.run.foundation import split_chunks
    from harness.subject.corpus import load_chunks
    from harness.subject.residual_store import STORE_SUFFIXES, open_residual_store

    manifest = json.loads((foundation / "manifest.json").read_text())
    hook, recipe = manifest["model"]["hook"], manifest["config"]["foundation"]
    chunks = load_chunks(foundation / "corpus")
    dtype = next(d for d, suffix in STORE_SUFFIXES.items() if (foundation / "activations" / f"{hook}.{suffix}").exists())
    store = open_residual_store(foundation / "activations", hook, chunks.shape[0], chunks.shape[1], manifest["model"]["d_model"], dtype)
    train_ids, held_ids = split_chunks(chunks.shape[0], recipe["held_out_fraction"])
    order = np.random.default_rng(0).permutation(len(train_ids) * chunks.shape[1])
    train, held_out = _rows(store, train_ids)[order], _rows(store, held_ids)
    np.save(work / "train.npy", train)
    np.save(work / "held_out.npy", held_out)
    held_tensor = torch.from_numpy(held_out)
    settings = {"lr": recipe["learning_rate"], "batch": recipe["training_batch_size"], "epochs": 1, "warmup_fraction": 0.05,
                "decay_fraction": 0.2, "seed": 0}  # fmt: skip

    config = TrainingConfig(d_sae, sparsity, settings["lr"], settings["batch"], 1, 0, 0.05, 0.2, None)
    started = time.perf_counter()
    mine = train_dictionary(torch.from_numpy(train), config, "monoscope", hook)
    mine_seconds = time.perf_counter() - started
    mine_stats = dictionary_stats(mine, held_tensor)
    target = mine_stats.l0

    low, high, coefficient, runs = None, None, sparsity, []
    for attempt in range(tries):
        out = work / f"saelens-{attempt}"
        shutil.rmtree(out, ignore_errors=True)
        request = work / "saelens-request.json"
        fields = {"train": str(work / "train.npy"), "held_out": str(work / "held_out.npy"), "d_sae": d_sae, "hook": hook}
        request.write_text(json.dumps({**fields, "l1_coefficient": coefficient, "out": str(out), **settings}))
        result = run_in("sae-lens", HERE / "saelens_train.py", str(request))
        theirs = load_saelens_directory(out, "saelens")
        stats = dictionary_stats(theirs, held_tensor)
        runs.append({"l1_coefficient": coefficient, "l0": stats.l0, "variance_explained": stats.variance_explained, **result})
        if abs(stats.l0 - target) <= 0.1 * target:
            break
        if stats.l0 > target:
            low = coefficient
            coefficient = coefficient * 4 if high is None else (coefficient * high) ** 0.5
        else:
            high = coefficient
            coefficient = coefficient / 4 if low is None else (coefficient * low) ** 0.5
    final = runs[-1]
    matched = abs(final["l0"] - target) <= 0.1 * target
    theirs = load_saelens_directory(Path(final["out"]), "saelens")
    with torch.no_grad():
        started = time.perf_counter()
        for start in range(0, held_tensor.shape[0], 4096):
            encode(theirs, held_tensor[start : start + 4096])
        mine_encode = held_tensor.shape[0] / (time.perf_counter() - started)
    return {
        "peer": "sae-lens",
        "version": PEERS["sae-lens"]["package"].split("==")[1],
        "d_sae": d_sae,
        "train_tokens": int(train.shape[0]),
        "held_out_tokens": int(held_out.shape[0]),
        "monoscope": {"sparsity_coefficient": sparsity, "l0": target, "variance_explained": mine_stats.variance_explained,
                      "train_tokens_per_s": train.shape[0] / mine_seconds, "encode_tokens_per_s": mine_encode},
        "saelens": {"l1_coefficient": final["l1_coefficient"], "l0": final["l0"], "variance_explained": final["variance_explained"],
                    "train_tokens_per_s": final["train_tokens_per_s"], "encode_tokens_per_s": final["encode_tokens_per_s"]},
        "l0_matched_within_10_percent": matched,
        "ratio_train_tokens_per_s": (train.shape[0] / mine_seconds) / final["train_tokens_per_s"],
        "ratio_encode_tokens_per_s": mine_encode / final["encode_tokens_per_s"],
        "difference_variance_explained": mine_stats.variance_explained - final["variance_explained"],
        "tuning_runs": runs,
        "ok": matched,
    }  # fmt: skip


def _peak_mib(command: list[str]) -> tuple[float, float, str]:
    """Return (wall seconds, peak resident MiB, stdout) of a whole command, read by /usr/bin/time; RuntimeError when
    it fails."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".txt") as report:
        started = time.perf_counter()
        result = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", report.name, *command], capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return seconds, int(Path(report.name).read_text().split()[-1]) / 1024, result.stdout


def delphi_cache_peer(foundation: Path, work: Path, tokens: int = 16_384, batch_size: int = 8) -> dict[str, Any]:
    """delphi's LatentCache beside ``monoscope index`` on the same tokens (T and 4T): tokens/s and peak memory.

    Both sides are whole processes timed alike (/usr/bin/time: wall seconds and peak resident memory, model loading
    included); the marginal tokens/s, 3T / (wall at 4T − wall at T), leaves out what does not grow with tokens
    (interpreter start, imports, loading the model and dictionary). delphi's own in-loop tokens/s (``cache.run`` only)
    is reported beside it.
    """
    import numpy as np

    from harness.subject.corpus import load_chunks
    from harness.subject.embedded import embedded_checkpoint_dir

    chunks = load_chunks(foundation / "corpus")
    context = chunks.shape[1]
    dictionary = foundation / "dictionaries" / "sae-2k"
    layer = int(json.loads((foundation / "manifest.json").read_text())["model"]["hook"].split(".")[1])
    python = ensure_env("eai-delphi")
    rows = []
    for n_tokens in (tokens, 4 * tokens):
        n_sequences = n_tokens // context
        np.save(work / "delphi-tokens.npy", np.asarray(chunks[:n_sequences]))
        request = work / "delphi-cache.json"
        request.write_text(json.dumps({"model": str(embedded_checkpoint_dir()), "dictionary": str(dictionary), "n_tokens": n_tokens,
                                       "tokens": str(work / "delphi-tokens.npy"), "batch_size": batch_size,
                                       "hookpoint": f"model.layers.{layer}"}))  # fmt: skip
        delphi_seconds, delphi_peak, stdout = _peak_mib([str(python), str(HERE / "delphi_cache.py"), str(request)])
        theirs = json.loads(stdout.strip().splitlines()[-1])
        index_dir = work / f"index-{n_tokens}"
        shutil.rmtree(index_dir, ignore_errors=True)
        command = [str(Path(sys.executable).with_name("monoscope")), "index", "--run-dir", str(index_dir), "--dictionary", str(dictionary),
                   "--tokens", str(n_tokens), "--context-length", str(context)]  # fmt: skip
        seconds, peak, _stdout = _peak_mib(command)
        same = np.array_equal(load_chunks(index_dir / "corpus"), np.asarray(chunks[:n_sequences]))
        rows.append({"n_tokens": n_tokens, "same_tokens": bool(same), "delphi_wall_s": delphi_seconds, "delphi_peak_rss_mib": delphi_peak,
                     "delphi_in_loop_tokens_per_s": theirs["tokens_per_s"], "delphi_nonzeros_kept": theirs["nonzeros_kept"],
                     "monoscope_wall_s": seconds, "monoscope_peak_rss_mib": peak})  # fmt: skip
    low, high = rows
    delphi_marginal = 3 * tokens / (high["delphi_wall_s"] - low["delphi_wall_s"])
    monoscope_marginal = 3 * tokens / (high["monoscope_wall_s"] - low["monoscope_wall_s"])
    return {
        "peer": "eai-delphi (LatentCache)",
        "version": PEERS["eai-delphi"]["package"].split("==")[1],
        "rows": rows,
        "delphi_marginal_tokens_per_s": delphi_marginal,
        "monoscope_marginal_tokens_per_s": monoscope_marginal,
        "ratio_marginal_tokens_per_s": monoscope_marginal / delphi_marginal,
        "delphi_memory_growth_4T_over_T": high["delphi_peak_rss_mib"] / low["delphi_peak_rss_mib"],
        "monoscope_memory_growth_4T_over_T": high["monoscope_peak_rss_mib"] / low["monoscope_peak_rss_mib"],
        "ok": all(row["same_tokens"] for row in rows),
    }


def _attempt(peer: str, version: str, measure: Any, *arguments: Any) -> dict[str, Any]:
    """Return ``measure(*arguments)``, or a failed row naming the peer, its version and the exact error."""
    try:
        return measure(*arguments)
    except Exception as error:  # one peer's failure is reported with its error; the others still run
        return {"peer": peer, "version": version, "ok": False, "error": f"{type(error).__name__}: {error}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object per peer")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "monoscope" / "peers" / "work")
    parser.add_argument("--tokens", type=int, default=65_536, help="corpus tokens of the peers' run (128-token sequences)")
    choices = ("sae-lens", "delphi-cache", "sae-bench", "delphi-scoring", "sae-dashboard")
    parser.add_argument("--write-results", action="store_true", help="regenerate RESULTS.md's Peers table and measured.json")
    parser.add_argument("--only", nargs="+", choices=choices, default=list(choices), help="measure these peers only")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for peer in PEERS:
        ensure_env(peer)
    server, base_url = start_hash_judge()
    os.environ.setdefault("OPENAI_API_KEY", "hash-judge")  # monoscope's openai backend reads its key from the environment
    version = {name: spec["package"].split("==")[1] for name, spec in PEERS.items()}
    foundation = args.work / "foundation"
    try:
        saebench_run, detection_run, seconds = run_monoscope(args.work, base_url, args.tokens)
        texts = dict(server.shown_texts)  # type: ignore[attr-defined]
        plan = {
            "sae-lens": ("sae-lens", version["sae-lens"], saelens_peer, foundation, args.work),
            "delphi-cache": ("eai-delphi (LatentCache)", version["eai-delphi"], delphi_cache_peer, foundation, args.work),
            "sae-bench": ("sae-bench", version["sae-bench"], saebench_peer, saebench_run, base_url, args.work, server),
            "delphi-scoring": ("eai-delphi", version["eai-delphi"], delphi_peer,
                               {"detection": detection_run, "fuzzing": saebench_run}, base_url, texts, args.work, server),
            "sae-dashboard": ("sae-dashboard", version["sae-dashboard"], dashboard_peer, saebench_run, args.work),
        }  # fmt: skip
        results = [_attempt(*plan[name]) for name in choices if name in args.only]
    finally:
        server.shutdown()
    for result in results:
        result["monoscope_run_seconds"] = round(seconds, 2)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{result['peer']} {result['version']}: {'ok' if result['ok'] else 'FAILED ' + result.get('error', '')}")
    if args.write_results:
        write_results(results)
    if not all(result["ok"] for result in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
