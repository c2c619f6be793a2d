"""The HTML report (checked in headless Chromium) and the SAEBench summary, on a small synthetic run."""

import json
import os
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure

from harness.records import EvaluatedUnit, Explanation, Judgment, Simulation, TokenContext
from harness.storage import atomic_write_json
from results.report import unit_html_id, unit_plot_name, write_report
from results.saebench import write_saebench_summary
from results.store import append_records

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
HOSTILE = ("Hello", " <script>window.__pwned = 1</script>", " and", " <b>bold</b>", " end")
FAILED_RAW = '<img src="x" onerror="window.__pwned = 2">'
UNITS = ("sae-512/3", "sae-512/7", "mlp.9/12")


def _context(unit: str, chunk: int, tokens: tuple[str, ...], activations: tuple[float, ...], target: int, split: str) -> TokenContext:
    return TokenContext(
        unit=unit,
        context_id=f"{unit}@{chunk}:{target}",
        kind="top",
        chunk=chunk,
        tokens=tokens,
        activations=activations,
        target=target,
        split=split,
    )


def _judgment(unit: str, context_id: str, source: str, score: float | None) -> Judgment:
    return Judgment(
        unit=unit,
        context_id=context_id,
        context_kind="top",
        activation=1.0,
        level=9,
        source=source,
        explanation=f"{source} explanation of {unit}",
        score=score,
        judge_format="rating",
        backend="local",
        model="embedded",
        prompt_hash="p",
        rubric_hash="r",
        failure=None if score is not None else "unparseable reply",
        raw=None if score is not None else "<i>no number</i>",
    )


def _simulation(unit: str, context_id: str, source: str, predicted: tuple[float, ...] | None, actual: tuple[float, ...]) -> Simulation:
    return Simulation(
        unit=unit,
        context_id=context_id,
        source=source,
        explanation="e",
        predicted=predicted,
        actual=actual,
        simulator_format="structured",
        backend="local",
        model="embedded",
        prompt_hash="p",
    )


def _explanation(unit: str, explainer: str, text: str | None) -> Explanation:
    return Explanation(
        unit=unit,
        explainer=explainer,
        text=text,
        backend="local",
        model="embedded",
        prompt_hash="p",
        n_contexts=2,
        failure=None if text is not None else "unparseable reply after 3 attempts",
        raw=None if text is not None else FAILED_RAW,
    )


def _png(path: Path, title: str) -> None:
    figure = Figure(figsize=(4, 2.5), dpi=60)
    axes = figure.subplots()
    axes.bar([0, 1, 2, 3], [1, 3, 2, 4])
    axes.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def build_run(run_dir: Path) -> Path:
    """Write a small synthetic run: three units in two sets, contexts with HTML in them, scores, two plots, one CSV."""
    a, b, c = UNITS
    append_records(
        run_dir / "units.jsonl",
        [
            EvaluatedUnit(a, "sae-512", "feature", 9, 3, 512, 0.01, 4.0),
            EvaluatedUnit(b, "sae-512", "feature", 9, 7, 512, 0.002, 2.0),
            EvaluatedUnit(c, "neurons", "neuron", 9, 12, 2048, 0.5, 1.5),
        ],
    )
    contexts = [
        _context(a, 1, HOSTILE, (0.0, 4.0, 0.5, 2.0, 0.0), 1, "explain"),
        _context(a, 2, ("x", " y", " z"), (0.0, 3.0, 0.0), 1, "score"),
        _context(a, 3, ("p", " q", " r"), (0.0, 1.0, 2.0), 2, "score"),
        _context(b, 4, ("line\n", " two"), (2.0, 0.0), 0, "explain"),
        _context(b, 5, ("m", " n"), (1.0, 0.0), 0, "score"),
        _context(c, 6, ("u", " v"), (1.5, -0.7), 0, "score"),
    ]
    append_records(run_dir / "contexts.jsonl", contexts)
    append_records(
        run_dir / "explanations.jsonl",
        [
            _explanation(a, "llm", "tokens <em>inside</em> HTML tags"),
            _explanation(a, "token_stats", "most frequent: ' y'"),
            _explanation(b, "llm", None),
            _explanation(b, "token_stats", "most frequent: 'line'"),
            _explanation(c, "llm", "the letter u"),
        ],
    )
    ids = {(ctx.unit, ctx.chunk): ctx.context_id for ctx in contexts}
    append_records(
        run_dir / "judgments.jsonl",
        [
            _judgment(a, ids[(a, 2)], "real", 0.0),  # replaced by the rerun below: the last record wins
            _judgment(a, ids[(a, 2)], "real", 3.0),
            _judgment(a, ids[(a, 3)], "real", 2.0),
            _judgment(a, ids[(a, 2)], "shuffled", 1.0),
            _judgment(a, ids[(a, 3)], "token_stats", 0.0),
            _judgment(b, ids[(b, 5)], "real", 1.0),
            _judgment(b, "sae-512/7@8:0", "real", 0.0),
            _judgment(b, "sae-512/7@9:0", "real", None),
            _judgment(c, ids[(c, 6)], "real", 1.0),
        ],
    )
    append_records(
        run_dir / "simulations.jsonl",
        [
            _simulation(a, ids[(a, 2)], "real", (0.0, 10.0, 1.0), (0.0, 3.0, 0.0)),
            _simulation(a, ids[(a, 3)], "real", (0.0, 2.0, 6.0), (0.0, 1.0, 2.0)),
            _simulation(b, ids[(b, 5)], "real", (5.0, 5.0), (1.0, 0.0)),  # constant prediction: no correlation
            _simulation(c, ids[(c, 6)], "real", (8.0, 1.0), (1.5, -0.7)),
        ],
    )
    atomic_write_json(
        run_dir / "manifest.json",
        {
            "seed": 7,
            "model": {"name": "gemma-3-270m", "n_layers": 18, "d_model": 640, "hook": "blocks.9.hook_resid_post"},
            "roles": {
                "explainer": {"backend": "local", "model": "embedded", "base_url": None},
                "judge": {"backend": "openai", "model": "gpt-4.1-mini", "base_url": None},
                "simulator": {"backend": "openai", "model": "gpt-4.1-mini", "base_url": None},
                "judge_format": "rating",
            },
            "versions": {"python": "3.11.9", "monoscope": "0.1.0"},
            "timings": {"explain": 10.5, "score": 320.25},
        },
    )
    _png(run_dir / "results" / "plots" / "features_vs_neurons.png", "features vs neurons")
    _png(run_dir / "results" / "plots" / unit_plot_name(a), f"specificity {a}")
    tables = run_dir / "results" / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    (tables / "sets.csv").write_text("set,n_units,rubric_mean,note\nsae-512,2,1.5,<i>italic</i>\nneurons,1,1.0,\n", encoding="utf-8")
    return run_dir


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return build_run(tmp_path / "run")


class _Elements(HTMLParser):
    """Collect the tag names and the ids of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.ids.extend(value for name, value in attrs if name == "id" and value)


def test_report_is_self_contained_and_escaped(run_dir: Path) -> None:
    path = write_report(run_dir)
    assert path == run_dir / "results" / "report.html"
    page = path.read_text(encoding="utf-8")
    parser = _Elements()
    parser.feed(page)
    assert "script" not in parser.tags and "i" not in parser.tags and "em" not in parser.tags
    assert parser.tags.count("img") == 2  # the two plots; the failed reply's <img> is text
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    assert "http://" not in page and "https://" not in page  # no external resource
    assert len(parser.ids) == len(set(parser.ids))
    for unit in UNITS:
        assert unit_html_id(unit) in parser.ids
    assert page.count("class='unit-card'") == len(UNITS)
    assert "1.500" in page  # CSV numbers to 3 decimals


def _chrome(tmp_path: Path) -> Any:
    """Return a headless Chromium driven through the system chromedriver, or skip (fail under CI) without one."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        message = f"headless Chromium test needs {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run it: .ci/run installs chromium and chromium-driver)")
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def test_report_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    report = write_report(run_dir)
    driver = _chrome(tmp_path)
    try:
        driver.get(report.as_uri())
        assert driver.title == "monoscope report: run"
        assert driver.execute_script("return document.body.innerText.trim().length") > 100
        images = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert len(images) == 2
        assert all(complete and width > 0 for complete, width in images), images
        assert driver.execute_script("return document.querySelectorAll('.unit-card').length") == len(UNITS)
        for unit in UNITS:
            card = driver.execute_script("return document.getElementById(arguments[0])", unit_html_id(unit))
            assert card is not None and "unit-card" in card.get_attribute("class")
            assert unit in card.text
        assert driver.execute_script("return typeof window.__pwned") == "undefined"
        assert driver.execute_script("return document.scripts.length") == 0
        card = driver.execute_script("return document.getElementById(arguments[0])", unit_html_id(UNITS[0]))
        context_text = driver.execute_script("return arguments[0].querySelector('li.context').innerText", card)
        assert "<script>window.__pwned = 1</script>" in context_text
        assert "<b>bold</b>" in context_text
        target = driver.execute_script("return arguments[0].querySelector('li.context span.tg')", card)
        assert target.get_attribute("title") == "4.000" and "<script>" in target.text  # the target token, with its activation
        assert driver.execute_script("return arguments[0].querySelectorAll('.context b, .context script').length", card) == 0
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(int(height) + 100, 6000))
        screenshot = tmp_path / "report.png"
        assert driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 0
        keep = os.environ.get("MONOSCOPE_SCREENSHOT_DIR")
        if keep:
            shutil.copy(screenshot, Path(keep) / "report.png")
    finally:
        driver.quit()


def test_saebench_summary(run_dir: Path) -> None:
    path = write_saebench_summary(run_dir)
    assert path == run_dir / "results" / "saebench.json"
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    summary = json.loads(text)
    assert set(summary) == {"sae-512", "neurons"}
    keys = {
        "eval_type_id",
        "eval_config",
        "eval_id",
        "datetime_epoch_millis",
        "eval_result_metrics",
        "eval_result_details",
        "eval_result_unstructured",
        "sae_bench_commit_hash",
        "sae_lens_id",
        "sae_lens_release_id",
        "sae_lens_version",
        "sae_cfg_dict",
    }
    for envelope in summary.values():
        assert keys <= set(envelope)
        assert isinstance(envelope["datetime_epoch_millis"], int) and envelope["datetime_epoch_millis"] > 0
        for category in envelope["eval_result_metrics"].values():
            assert not any(isinstance(value, dict | list) for value in category.values())  # SAEBench: flat categories

    features = summary["sae-512"]["eval_result_metrics"]
    # sae-512/3: real rubric (3 + 2) / 2 = 2.5 (the 0 was rerun); sae-512/7: (1 + 0) / 2 = 0.5, the failed judgment left out
    assert features["autointerp"]["rubric_score"] == pytest.approx(1.5)
    assert features["autointerp"]["rubric_std_dev"] == pytest.approx(np.std([2.5, 0.5], ddof=1))
    assert features["autointerp"]["rubric_n_units"] == 2
    expected = np.corrcoef([0, 10, 1, 0, 2, 6], [0, 3, 0, 0, 1, 2])[0, 1]
    assert features["autointerp"]["simulation_pearson"] == pytest.approx(expected)
    assert features["autointerp"]["simulation_pearson_std_dev"] is None  # one unit has a correlation
    assert features["autointerp"]["simulation_n_units"] == 1
    assert features["controls"]["rubric_shuffled_score"] == pytest.approx(1.0)
    assert features["controls"]["rubric_token_stats_score"] == pytest.approx(0.0)
    details = {row["unit"]: row for row in summary["sae-512"]["eval_result_details"]}
    assert details["sae-512/7"]["rubric_n_failed"] == 1 and details["sae-512/7"]["simulation_pearson"] is None
    assert details["sae-512/7"]["explanation"] is None and details["sae-512/7"]["explanation_failure"]
    assert summary["neurons"]["eval_result_metrics"]["autointerp"]["rubric_score"] == pytest.approx(1.0)
    assert summary["neurons"]["eval_result_metrics"]["autointerp"]["simulation_pearson"] == pytest.approx(1.0)

    again = json.loads(write_saebench_summary(run_dir, run_dir / "again.json").read_text())
    assert again == summary  # deterministic for the same run directory
