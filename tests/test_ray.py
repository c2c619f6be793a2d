"""Ray (``harness.run.cluster``): the index pass split over actors writes the indexes a single process writes.

A local Ray cluster of 2 CPUs (started once for the module) and the tiny random Gemma: the workers build
it from ``tests.tiny_models`` (the same weights in every process), as a real run's workers load the model.
"""

import json
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import harness.run.cluster as cluster
from harness.index.store import read_header
from harness.run.directory import prepare_run_directory
from harness.run.foundation import build_foundation
from harness.run.runner import run_evaluation
from tests.test_batch import EXPLANATIONS, JUDGMENTS, SIMULATIONS, TINY_CONFIG, record_lines, tiny_config, tiny_subject  # noqa: F401
from tests.tiny_models import tiny_byte_gemma, tiny_byte_gemma_dying_once

ray = pytest.importorskip("ray", reason="Ray comes with the test extra: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def local_cluster():
    ray.shutdown()  # a cluster an earlier test started in this process (of another size) is not this module's
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def register_fake_backend() -> None:
    """Run in each Ray StageWorker: importing tests.test_batch registers its deterministic "fake-test" backend there."""
    import tests.test_batch  # noqa: F401


@pytest.fixture
def tiny_workers(monkeypatch: pytest.MonkeyPatch, local_cluster: None) -> None:
    """Workers build the tiny model and know the fake LLM backend (module-level functions: they pickle by reference)."""
    import harness.run.ray_stages as ray_stages

    monkeypatch.setattr(cluster, "model_loader", lambda config: tiny_byte_gemma)
    monkeypatch.setattr(ray_stages, "worker_setup", register_fake_backend)


def assert_same_index(first: Path, second: Path) -> None:
    """The two index files hold equal tensors and headers; ``activation_sum`` within 1e-12 relative (float order)."""
    assert read_header(first) == read_header(second)
    a, b = load_file(str(first)), load_file(str(second))
    assert sorted(a) == sorted(b)
    for key in a:
        if key == "stats.activation_sum":
            assert torch.allclose(a[key], b[key], rtol=1e-12, atol=0.0), key
        else:
            assert torch.equal(a[key], b[key]), key


@pytest.mark.usefixtures("tiny_subject", "tiny_workers")
def test_a_run_on_ray_writes_the_indexes_records_and_tables_of_a_single_process_run(tmp_path: Path) -> None:
    # Under Ray the residual stream is not stored, so the like-for-like single-process run keeps none either: training
    # and the held-out statistics then read residuals in the same batches (with a store the statistics' float sums
    # run in other batches and differ in the 7th digit).
    model = {**TINY_CONFIG["model"], "store_residuals": False}
    single, on_ray = tmp_path / "single", tmp_path / "ray"
    run_evaluation(tiny_config(model=model), single, log=lambda _message: None)
    lines: list[str] = []
    run_evaluation(tiny_config(model=model, cluster={"ray": True, "chunks_per_task": 40}), on_ray, log=lines.append)
    assert any(line.startswith("ray: ") and "tasks on 2 workers" in line for line in lines), lines
    assert any(line.startswith("ray: correlation over") for line in lines), "the correlation pass ran on Ray too"
    indexes = sorted(p.name for p in (single / "index").glob("*.safetensors"))
    assert indexes == sorted(p.name for p in (on_ray / "index").glob("*.safetensors")) and len(indexes) == 3
    for name in indexes:
        assert_same_index(single / "index" / name, on_ray / "index" / name)
    for name in (EXPLANATIONS, JUDGMENTS, SIMULATIONS, "units.jsonl", "contexts.jsonl"):
        assert record_lines(on_ray, name) == record_lines(single, name), name
    # the correlation sums merge in another order: equal up to float rounding
    ray_records, single_records = ([json.loads(line) for line in record_lines(d, "correlations.jsonl")] for d in (on_ray, single))
    assert len(ray_records) == len(single_records) > 0
    for ours, theirs in zip(ray_records, single_records, strict=True):
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            if isinstance(value, float):
                assert ours[key] == pytest.approx(value, rel=1e-12, abs=1e-15), (key, ours, theirs)
            else:
                assert ours[key] == value, (key, ours, theirs)
    for table in sorted((single / "results" / "tables").glob("*.csv")):
        ours, theirs = pd.read_csv(on_ray / "results" / "tables" / table.name), pd.read_csv(table)
        pd.testing.assert_frame_equal(ours, theirs, check_exact=False, rtol=1e-12, atol=1e-15, obj=table.name)
    assert not (on_ray / "activations").exists(), "no residual store under Ray"
    timings = json.loads((on_ray / "manifest.json").read_text())["timings"]
    assert "index" in timings


def test_task_chunks_start_where_the_single_process_batches_start() -> None:
    todo = list(range(3, 100))
    tasks = cluster.task_chunks(todo, batch_chunks=16, chunks_per_task=40)
    assert [len(t) for t in tasks] == [48, 48, 1] and sum(tasks, []) == todo
    assert cluster.task_chunks([], 16, 40) == []


@pytest.mark.usefixtures("tiny_subject", "local_cluster")
def test_a_worker_that_dies_mid_task_is_restarted_and_the_indexes_are_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "killed"
    monkeypatch.setattr(cluster, "model_loader", lambda config: partial(tiny_byte_gemma_dying_once, str(marker)))
    model = {**TINY_CONFIG["model"], "store_residuals": False}
    built = {}
    for name, extra in (("single", {}), ("ray", {"cluster": {"ray": True, "chunks_per_task": 40}})):
        run_dir = tmp_path / name
        prepare_run_directory(run_dir)
        build_foundation(run_dir, tiny_config(model=model, **extra), log=lambda _message: None)
        built[name] = sorted((run_dir / "index").glob("*.safetensors"))
    assert marker.exists(), "a worker died in its first task"
    assert [p.name for p in built["single"]] == [p.name for p in built["ray"]] and built["ray"]
    for single, on_ray in zip(built["single"], built["ray"], strict=True):
        assert_same_index(single, on_ray)


def test_a_killed_driver_resumes_without_redoing_merged_chunks_and_the_indexes_are_unchanged(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.ray_driver import DRIVER_CONFIG

    repository = Path(__file__).resolve().parent.parent
    run_dir = tmp_path / "ray"
    log = tmp_path / "driver.log"

    def driver(seconds: float) -> subprocess.Popen:
        command = [sys.executable, str(repository / "tests" / "ray_driver.py"), str(run_dir), str(seconds)]
        with log.open("a") as out:
            return subprocess.Popen(command, cwd=repository, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    first = driver(0.5)
    pool_index = run_dir / "index" / "neurons.safetensors"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        if pool_index.exists() and read_header(pool_index)["chunk_ranges"]:
            break  # some tasks merged and checkpointed: kill the driver and its local cluster mid-pass
        time.sleep(0.2)
    assert first.poll() is None, log.read_text()
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    # the kill can fall between two pools' saves: the resume redoes whatever chunk any pool lacks
    held = [
        {chunk for start, end in read_header(index)["chunk_ranges"] for chunk in range(start, end)} if index.exists() else set()
        for index in (run_dir / "index" / f"{name}.safetensors" for name in ("neurons", "sae-16", "sae-32"))
    ]
    merged = len(set.intersection(*held))
    assert 0 < sum(end - start for start, end in read_header(pool_index)["chunk_ranges"]) < 192

    second = driver(0.0)
    assert second.wait(timeout=600) == 0, log.read_text()
    resumed = [line for line in log.read_text().splitlines() if line.startswith("ray: ") and "tasks on" in line]
    assert len(resumed) == 2 and resumed[1].startswith(f"ray: {192 - merged} chunks"), resumed

    single = tmp_path / "single"
    prepare_run_directory(single)
    subject = tiny_byte_gemma()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("harness.run.foundation.load_subject_model", lambda *args, **kwargs: subject)
        build_foundation(single, tiny_config(model=DRIVER_CONFIG["model"]), log=lambda _message: None)
    for index in sorted((single / "index").glob("*.safetensors")):
        assert_same_index(index, run_dir / "index" / index.name)


@pytest.mark.usefixtures("tiny_subject", "tiny_workers")
def test_explain_and_score_on_ray_write_the_records_of_a_single_process_run_and_a_rerun_asks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.run.evaluate import INTERVENTIONS
    from harness.steering.generate import STEERING

    model = {**TINY_CONFIG["model"], "store_residuals": False}
    # every scorer, the intervention scorer included: it steers in the driver and judges on the actors
    evaluation = {**TINY_CONFIG["evaluation"], "scorers": ["rubric", "simulation", "intervention"], "intervention_multiples": [5.0]}
    settings = dict(model=model, evaluation=evaluation, steering={"prompts": 2, "multiples": [5.0], "tokens": 4})
    single, on_ray = tmp_path / "single", tmp_path / "ray"
    run_evaluation(tiny_config(**settings), single, log=lambda _message: None)
    lines: list[str] = []
    run_evaluation(tiny_config(**settings, cluster={"ray": True}), on_ray, log=lines.append)
    assert any(line.startswith("ray: explaining and scoring") for line in lines), lines
    assert (on_ray / INTERVENTIONS).stat().st_size > 0
    for name in (EXPLANATIONS, JUDGMENTS, SIMULATIONS, INTERVENTIONS, STEERING):
        assert (on_ray / name).read_text() == (single / name).read_text(), name
    ray_units = pd.read_csv(on_ray / "results" / "tables" / "units.csv")
    assert ray_units.equals(pd.read_csv(single / "results" / "tables" / "units.csv"))
    assert ray_units["intervention_real"].notna().any()
    manifest = json.loads((on_ray / "manifest.json").read_text())
    calls = sum(counts["calls"] for stages in manifest["usage"].values() for counts in stages.values())
    assert calls > 0 and manifest["usage_total"] == manifest["usage"]
    assert manifest["usage"]["judge"]["judge"]["prompt_tokens"] > 0, "tokens counted in the actors reach the manifest"
    before = {name: (on_ray / name).read_bytes() for name in (EXPLANATIONS, JUDGMENTS, SIMULATIONS, INTERVENTIONS, STEERING)}
    run_evaluation(tiny_config(**settings, cluster={"ray": True}), on_ray, log=lambda _message: None)
    rerun = json.loads((on_ray / "manifest.json").read_text())
    assert sum(counts["calls"] for stages in rerun["usage"].values() for counts in stages.values()) == 0, "a rerun asks nothing"

    # what was paid is kept; a rerun re-reads undecided intervention judgments from the cache (cached_calls grows)
    def paid(usage: dict) -> dict:
        return {role: {stage: {k: v for k, v in c.items() if k != "cached_calls"} for stage, c in st.items()} for role, st in usage.items()}

    assert paid(rerun["usage_total"]) == paid(manifest["usage_total"]), "the run's total usage is kept"
    assert before == {name: (on_ray / name).read_bytes() for name in before}


def test_the_single_process_path_does_not_import_ray() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import harness.cli, harness.api, harness.run.runner, harness.run.foundation, harness.run.comparisons; "
        "sys.exit(1 if 'ray' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent).returncode == 0


def test_without_ray_installed_a_ray_run_stops_with_one_line_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from harness.errors import MonoscopeError

    real_import = builtins.__import__

    def no_ray(name: str, *args: object, **kwargs: object) -> object:
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(MonoscopeError, match=r"Ray is not installed.*pip install 'monoscope\[ray\]'"):
        run_evaluation(tiny_config(cluster={"ray": True}), tmp_path / "run", log=lambda _message: None)
    assert not (tmp_path / "run").exists()


def test_a_driver_killed_while_explaining_and_scoring_on_ray_resumes_without_repaying_and_the_records_are_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests import slow_backend  # noqa: F401 (registers "fake-slow" for the reference run)
    from tests.ray_driver import EVALUATE_CONFIG

    repository = Path(__file__).resolve().parent.parent
    run_dir, calls, log = tmp_path / "ray", tmp_path / "calls.log", tmp_path / "driver.log"

    def driver(seconds: float) -> subprocess.Popen:
        environment = os.environ | {"MONOSCOPE_TEST_SLOW_SECONDS": str(seconds), "MONOSCOPE_TEST_CALL_LOG": str(calls)}
        environment["MONOSCOPE_PROGRESS"] = "0"
        command = [sys.executable, str(repository / "tests" / "ray_driver.py"), str(run_dir), "0", "evaluate"]
        with log.open("a") as out:
            return subprocess.Popen(command, cwd=repository, env=environment, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    first = driver(0.05)
    judgments = run_dir / JUDGMENTS
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        if judgments.exists() and judgments.read_text().count("\n") >= 10:
            break  # at least one scoring task's records are written: kill the driver and its cluster mid-stage
        time.sleep(0.1)
    assert first.poll() is None, log.read_text()
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    asked_before = calls.read_text().splitlines()
    assert asked_before

    second = driver(0.0)
    assert second.wait(timeout=600) == 0, log.read_text()
    asked = calls.read_text().splitlines()
    assert len(asked) > len(asked_before), "the kill landed before the LLM work was done"
    # every request the killed driver's workers finished is answered from the cache; at most the calls in flight
    # at the kill (2 at a time) are asked again
    assert len(asked) - len(set(asked)) <= 2, "the rerun re-paid finished calls"

    monkeypatch.setenv("MONOSCOPE_PROGRESS", "0")
    reference = tmp_path / "single"
    with pytest.MonkeyPatch.context() as patch:
        subject = tiny_byte_gemma()
        patch.setattr("harness.run.foundation.load_subject_model", lambda *args, **kwargs: subject)
        patch.setattr("harness.run.runner.model_shape", lambda name: (4, 32, 64))
        single = {key: value for key, value in EVALUATE_CONFIG.items() if key != "cluster"}
        run_evaluation(tiny_config(**single), reference, log=lambda _message: None)
    for name in (EXPLANATIONS, JUDGMENTS, SIMULATIONS):
        assert (run_dir / name).read_text() == (reference / name).read_text(), name


@pytest.mark.usefixtures("tiny_subject", "local_cluster")
def test_a_worker_that_cannot_load_the_model_stops_the_run_with_its_own_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.errors import MonoscopeError
    from tests.tiny_models import missing_model

    monkeypatch.setattr(cluster, "model_loader", lambda config: missing_model)
    model = {**TINY_CONFIG["model"], "store_residuals": False}
    with pytest.raises(MonoscopeError, match="not installed on this node"):
        run_evaluation(tiny_config(model=model, cluster={"ray": True}), tmp_path / "run", log=lambda _message: None)


def test_a_bad_or_unreachable_address_is_one_line_before_any_work() -> None:
    import subprocess
    import sys

    code = (
        "from harness.config import ClusterConfig; from harness.errors import MonoscopeError; "
        "from harness.run.cluster import start_ray\n"
        "try:\n    start_ray(ClusterConfig(ray=True, address='notanaddress'))\n"
        "except MonoscopeError as error:\n    print('ERROR', error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert "ERROR cannot connect to the Ray cluster at 'notanaddress'" in result.stdout, result.stdout + result.stderr
    assert "check the address" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.usefixtures("local_cluster")
def test_workers_the_cluster_can_never_place_are_refused_instead_of_waited_for() -> None:
    from harness.errors import MonoscopeError

    cluster.check_placement(ray, 2, 1, 0)  # the 2 CPUs of the test cluster
    with pytest.raises(MonoscopeError, match="threads_per_worker"):
        cluster.check_placement(ray, 1, 4, 0)
    with pytest.raises(MonoscopeError, match="3 Ray workers of 1 CPUs each"):
        cluster.check_placement(ray, 3, 1, 0)
    with pytest.raises(MonoscopeError, match="GPU"):
        cluster.check_placement(ray, 1, 0, 1)


@pytest.mark.usefixtures("tiny_subject")
def test_a_dry_run_on_ray_does_not_start_ray_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_ray(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a dry run started Ray")

    monkeypatch.setattr(cluster, "start_ray", no_ray)
    plan = run_evaluation(tiny_config(cluster={"ray": True, "address": "notanaddress"}), tmp_path, dry_run=True, log=lambda _m: None)
    assert any("Ray was not started" in note for note in plan["notes"])
