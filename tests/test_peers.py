"""benchmarks/peers without the peers: the main package never imports a peer on its default path, and the pieces
of the side-by-side script that decide an equality (the loopback judge, delphi's one-class convention, the generated
table) behave as documented. The peers themselves run only in ``python benchmarks/peers/run.py``."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benchmarks" / "peers"
sys.path.insert(0, str(PEERS))

import hash_judge  # noqa: E402
import report  # noqa: E402
import run as peers_run  # noqa: E402

PEER_PACKAGES = {"sae_lens", "delphi", "sae_bench", "sae_dashboard", "transformer_lens", "sparsify", "vllm"}
MAIN_PACKAGES = ("harness", "explainers", "scorers", "results", "rubrics", "prompts")


def _module_level_imports(path: Path) -> set[str]:
    """Return the top-level package names a file imports outside any function or class body."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        for inner in ast.walk(node) if isinstance(node, (ast.If, ast.Try, ast.With)) else [node]:
            if isinstance(inner, ast.Import):
                names |= {alias.name.split(".")[0] for alias in inner.names}
            elif isinstance(inner, ast.ImportFrom) and inner.module and inner.level == 0:
                names.add(inner.module.split(".")[0])
    return names


def test_no_module_of_the_main_package_imports_a_peer_at_module_level() -> None:
    files = [path for package in MAIN_PACKAGES for path in (ROOT / package).rglob("*.py")]
    assert len(files) > 50
    offenders = {str(path.relative_to(ROOT)): sorted(_module_level_imports(path) & PEER_PACKAGES) for path in files}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_cli_and_the_default_path_load_no_peer_package() -> None:
    code = (
        "import sys, importlib\n"
        "for name in ('harness.cli', 'harness.api', 'harness.run.runner', 'harness.run.neuronpedia', 'results.saebench',\n"
        "             'results.saebench_autointerp', 'scorers.saebench', 'scorers.binary', 'harness.dictionaries.formats'):\n"
        "    importlib.import_module(name)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(PEER_PACKAGES)!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_the_hash_judge_answers_on_the_text_alone_and_is_right_only_by_chance() -> None:
    text = "def f(x):\n    return <<x>> + 1"
    assert hash_judge.verdict(text) == hash_judge.verdict("  def f(x):⏎    return ⟦x⟧ + 1\ufffd ")
    verdicts = [hash_judge.verdict(f"window {i}") for i in range(300)]
    assert 0.5 < sum(verdicts) / len(verdicts) < 0.8  # two thirds "yes": neither always right nor always wrong


def test_the_hash_judge_gives_each_prompt_shape_the_answer_its_reader_parses() -> None:
    texts = [f"window number {i}" for i in range(6)]
    numbered = "\n".join(f"{i}. {text}" for i, text in enumerate(texts, start=1))
    reply, top = hash_judge.answer([{"role": "user", "content": f"Here is an explanation: this fires on x.\n\n{numbered}"}])
    expected = [str(i) for i, text in enumerate(texts, start=1) if hash_judge.verdict(text)]
    assert reply == (", ".join(expected) if expected else "None") and top is None
    examples = "\n".join(f"Example {i}: {text}" for i, text in enumerate(texts))
    reply, _ = hash_judge.answer([{"role": "user", "content": f"Latent explanation: x\n\nText examples:\n\n{examples}\n"}])
    assert json.loads(reply) == [int(hash_judge.verdict(text)) for text in texts]
    shown = "a ⟦marked⟧ token⏎next line"
    question = f"Explanation: x\nLine breaks are shown as ⏎.\n{shown}\n\nDoes the explanation fit? Answer Yes or No."
    reply, top = hash_judge.answer([{"role": "user", "content": question}])
    assert reply == ("Yes" if hash_judge.verdict(shown) else "No")
    assert dict(top)[reply] == 0.0 and min(dict(top).values()) == -30.0


def test_the_loopback_judge_serves_openai_chat_completions_and_counts_calls() -> None:
    from openai import OpenAI

    server, base_url = hash_judge.start_hash_judge()
    try:
        client = OpenAI(base_url=base_url, api_key="unused")
        question = "Line breaks are shown as ⏎.\nsome text\n\nDoes it? Answer Yes or No."
        reply = client.chat.completions.create(model="hash-judge", messages=[{"role": "user", "content": question}], logprobs=True)
        assert reply.choices[0].message.content == ("Yes" if hash_judge.verdict("some text") else "No")
        assert reply.choices[0].logprobs.content[0].token == reply.choices[0].message.content
        assert len(server.calls) == 1 and list(server.shown_texts.values()) == ["some text"]
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("predictions", "labels", "expected"),
    [
        ([True, True, False], [True, True, True], (1 / 3, 0.8)),  # no wrong text: TPR 2/3, halved; precision 1
        ([False, False], [True, True], (0.0, 0.0)),
        ([True, False, False, False], [False, False, False, False], (3 / 8, 0.0)),  # no right text: TNR 3/4, halved
    ],
)
def test_delphis_one_class_convention(predictions: list[bool], labels: list[bool], expected: tuple[float, float]) -> None:
    assert peers_run.one_class_delphi_metrics(predictions, labels) == pytest.approx(expected)


def test_the_generated_table_shows_each_check_and_each_failed_peer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = [
        {"peer": "sae-dashboard", "version": "0.8.0", "features": 12, "activations": 340, "mismatches": [], "ok": True},
        {"peer": "sae-bench", "version": "0.6.0", "ok": False, "error": "RuntimeError: the reader refused a file"},
    ]
    table = report.peers_markdown(results, "2026-12-03, x86_64, 2 CPU cores")
    assert "| sae-dashboard | Neuronpedia export rebuilt" in table and "| 12 / 340 |  | unchanged |" in table
    assert "sae-bench 0.6.0 failed:** `RuntimeError: the reader refused a file`" in table
    results_md, measured = tmp_path / "RESULTS.md", tmp_path / "measured.json"
    results_md.write_text(f"# kept\n\n{report.BEGIN}\nold\n{report.END}\n\nkept after\n", encoding="utf-8")
    monkeypatch.setattr(report, "RESULTS", results_md)
    monkeypatch.setattr(report, "MEASURED", measured)
    report.write_results(results)
    written = results_md.read_text(encoding="utf-8")
    assert written.startswith("# kept\n") and written.endswith("kept after\n") and "old" not in written
    assert json.loads(measured.read_text())["results"] == results
    results_md.write_text("# no markers\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="lacks the Peers markers"):
        report.write_results(results)
