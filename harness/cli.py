"""The ``monoscope`` command line (click): options in, a call of the matching function in ``harness.api``."""

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from harness.errors import MonoscopeError
from harness.subject.embedded import EMBEDDED_JUDGE_NAME

# EvaluationConfig's defaults, written out so that `--help` needs no torch import (tests/test_cli_errors.py checks they agree)
DEFAULT_JUDGE_FORMAT, DEFAULT_SIMULATOR_FORMAT = "yes_no", "yes_no_all"


def _log(message: str) -> None:
    click.echo(message, err=True)


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a MonoscopeError into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MonoscopeError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)

    return wrapper


def parse_chunks(text: str | None, tokens: int, context_length: int) -> tuple[int, int] | None:
    """Return (start, end) for a chunk range "START:END" of a corpus of ``tokens // context_length`` chunks, or None."""
    if text is None:
        return None
    try:
        start, end = (int(part) for part in text.split(":"))
    except ValueError:
        raise MonoscopeError(f"bad chunk range {text!r}", "write --chunks START:END, e.g. --chunks 0:1024") from None
    n_chunks = tokens // context_length if context_length > 0 else 0
    if not 0 <= start < end <= n_chunks:
        raise MonoscopeError(
            f"chunk range {text!r} is out of range", f"the corpus has {n_chunks} chunks: give 0 <= START < END <= {n_chunks}"
        )
    return start, end


@click.group()
@click.version_option(package_name="monoscope")
def main() -> None:
    """monoscope: automated-interpretability evaluation of sparse dictionaries."""


@main.command()
@click.option("--run-dir", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True)
@click.option("--tokens", type=int, default=None, help="Token budget (default: the bundled config's 98,304).")
@user_errors
def demo(run_dir: Path, tokens: int | None) -> None:
    """Run the bundled default config (embedded model and corpus, three dictionaries, neurons) and write the report."""
    from harness.api import run_demo

    run_demo(run_dir, tokens=tokens, log=_log)


def _config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=Path)),
            click.option("--run-dir", type=click.Path(path_type=Path), default=None, help="Default: runs/<config name>."),
        ]
    ):
        command = option(command)
    return command


@main.command()
@_config_options
@click.option("--dry-run", is_flag=True, help="Print estimated time, memory, disk, LLM calls and cost; spends nothing, needs no key.")
@click.option("--max-cost", type=float, default=None, help="Stop cleanly (resumable) before spending more than this many USD.")
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ADDRESS]",
    help="Run on Ray: the index and correlation passes, explaining and scoring split over workers; a new local cluster, "
    "or the cluster at ADDRESS (e.g. auto, HOST:6379, ray://HOST:10001 with ray[client]).",
)
@user_errors
def run(config_path: Path, run_dir: Path | None, dry_run: bool, max_cost: float | None, ray_address: str | None) -> None:
    """Run (or resume) the whole evaluation a YAML/TOML config describes, ending with the HTML report."""
    from harness.api import load_config, on_ray, run_evaluation

    config = load_config(config_path)
    if ray_address is not None:
        config = on_ray(config, ray_address or None)
    run_evaluation(config, run_dir, dry_run=dry_run, max_cost=max_cost, log=_log)


@main.command()
@_config_options
@click.option("--dictionary", default=None, help="Dictionary whose features are compared (default: every dictionary).")
@click.option("--units", type=int, default=None, help="Features and neurons each (default: the config's units_per_dictionary).")
@click.option("--match-density", is_flag=True, help="Choose neurons whose firing density matches the features'.")
@user_errors
def compare(config_path: Path, run_dir: Path | None, dictionary: str | None, units: int | None, match_density: bool) -> None:
    """Features vs neurons: the same explain/score pipeline on N features and N neurons, with a rank test and intervals."""
    from harness.api import compare_features_and_neurons, load_config

    compare_features_and_neurons(load_config(config_path), run_dir, dictionary, units, match_density, log=_log)


@main.command()
@_config_options
@click.option("--features", type=int, default=None, help="Random alive features per dictionary (default: the config's).")
@click.option("--all", "all_features", is_flag=True, help="Every feature of every dictionary.")
@click.option("--tokens", type=int, default=None, help="Tokens streamed (default: the config's).")
@user_errors
def correlate(config_path: Path, run_dir: Path | None, features: int | None, all_features: bool, tokens: int | None) -> None:
    """Each sampled feature's maximum Pearson correlation with any MLP neuron of blocks 0..L (streaming, float64)."""
    from harness.api import correlate as correlate_function
    from harness.api import load_config

    if all_features and features is not None:
        raise MonoscopeError("--all and --features conflict", "give --all for every feature or --features N for a sample, not both")
    chosen = None if all_features else (features if features is not None else -1)
    correlate_function(load_config(config_path), run_dir, chosen, tokens if tokens is not None else -1, log=_log)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@user_errors
def report(run_dir: Path) -> None:
    """Rewrite a run's tables (CSV), plots (PNG), HTML report and SAEBench summary from its records."""
    from harness.api import report as report_function

    report_function(run_dir, log=_log)


@main.group()
def export() -> None:
    """Write a run in another tool's format."""


@export.command("neuronpedia")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--model-id", default=None, help="Neuronpedia model id (default: from the run's model, e.g. gemma-3-270m).")
@user_errors
def export_neuronpedia(run_dir: Path, out: Path, model_id: str | None) -> None:
    """Write RUN_DIR's dictionaries, features and explanations in SAEDashboard's Neuronpedia layout under OUT.

    One folder per dictionary (OUT/<layer>-<set>/): batch-N.json feature files, skipped_indexes.json,
    run_settings.json, explanations.json (Neuronpedia explanation records) and explanation_scores.json.
    """
    from harness.run.neuronpedia import export_neuronpedia as export_function

    for folder in export_function(run_dir, out, model_id, log=_log):
        click.echo(str(folder))


@main.command()
@click.option("--run-dir", type=click.Path(path_type=Path), required=True, help="Where the corpus and activations are kept.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for the SAELens-format dictionary.")
@click.option("--model", default="embedded", show_default=True)
@click.option("--layer", type=int, default=None, help="Block whose residual stream is encoded (default: middle).")
@click.option("--corpus", default="python-stdlib", show_default=True)
@click.option("--tokens", type=int, default=262_144, show_default=True)
@click.option("--d-sae", type=int, required=True, help="Number of features.")
@click.option("--sparsity", "sparsity_coefficient", type=float, default=2.0, show_default=True, help="λ of the recipe.")
@click.option("--epochs", type=int, default=1, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", default="float32", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@user_errors
def train(run_dir: Path, out: Path, **options: Any) -> None:
    """Train one dictionary with the Scaling Monosemanticity recipe and report L0, FVE and dead fraction."""
    from harness.api import train_command

    train_command(run_dir, out, log=_log, **options)


@main.command()
@click.option("--run-dir", type=click.Path(path_type=Path), required=True)
@click.option(
    "--dictionary",
    "dictionaries",
    multiple=True,
    required=True,
    help="SAELens dir, .safetensors, neurons:L or residual-basis:L (repeatable).",
)
@click.option("--hook", default=None, help="Hook of a plain .safetensors dictionary.")
@click.option("--model", default="embedded", show_default=True)
@click.option("--corpus", default="python-stdlib", show_default=True)
@click.option("--tokens", type=int, default=262_144, show_default=True)
@click.option("--context-length", type=int, default=64, show_default=True)
@click.option("--batch-size", type=int, default=None, help="Chunks per forward pass [default: 2,048 tokens on a CPU, 32,768 on a GPU].")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", default="float32", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--chunks",
    default=None,
    metavar="START:END",
    help="Index only corpus chunks START..END-1 (a partial index); merge with 'monoscope merge-index'.",
)
@user_errors
def index(run_dir: Path, dictionaries: tuple[str, ...], chunks: str | None, **options: Any) -> None:
    """Build the activation index of one or more dictionaries in one streaming pass (resumable)."""
    from harness.api import index_command

    chunk_range = parse_chunks(chunks, options["tokens"], options["context_length"])
    index_command(run_dir, list(dictionaries), chunk_range, log=_log, **options)


@main.command("merge-index")
@click.argument("out", type=click.Path(path_type=Path))
@click.argument("shards", nargs=-1, required=True, type=click.Path(path_type=Path))
@user_errors
def merge_index(out: Path, shards: tuple[Path, ...]) -> None:
    """Merge partial indexes over disjoint chunks (monoscope index --chunks) into OUT (exact, order-free)."""
    from harness.api import merge_command

    merge_command(out, list(shards), log=_log)


@main.command("show-unit")
@click.argument("index_path", type=click.Path(path_type=Path))
@click.argument("unit", type=int)
@click.option("--corpus-file", type=click.Path(path_type=Path), default=None, help="corpus.npy of the run (default: next to the index).")
@click.option("--model", default="embedded", show_default=True, help="Model whose tokenizer decodes the tokens.")
@click.option("--limit", type=int, default=10, show_default=True)
@user_errors
def show_unit(index_path: Path, unit: int, corpus_file: Path | None, model: str, limit: int) -> None:
    """Print a unit's statistics and its top contexts with the target token marked."""
    from harness.api import show_unit_command

    click.echo(show_unit_command(index_path, unit, corpus_file, model, limit))


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("units", nargs=-1, required=True)
@click.option("--prompt", "prompts", multiple=True, required=True, help="Text to continue (repeat for several prompts).")
@click.option(
    "--value",
    "multiples",
    type=float,
    multiple=True,
    default=(5.0,),
    show_default=True,
    help="Clamp value as a multiple of each unit's maximum activation over the run's index (repeat; negative allowed).",
)
@click.option(
    "--positions",
    type=click.Choice(["all", "new"]),
    default="all",
    show_default=True,
    help="Clamp every position or only generated tokens.",
)
@click.option("--tokens", "max_new_tokens", type=int, default=24, show_default=True, help="Tokens generated per continuation.")
@click.option("--seed", type=int, default=None, help="Sample with this seed (default: greedy).")
@click.option("--temperature", type=float, default=None, help="Sampling temperature (with --seed; default 1).")
@user_errors
def steer(run_dir: Path, units: tuple[str, ...], prompts: tuple[str, ...], multiples: tuple[float, ...], **options: Any) -> None:
    """Continue prompts with the run's model, plain and with UNITS clamped (e.g. sae-2k/790 mlp.7/1513).

    Prints both continuations and KL(steered ‖ plain) of the next-token distributions at each
    steered token; records go to RUN_DIR/steering.jsonl.
    """
    from harness.run.steering import steer_command, steering_text

    records = steer_command(run_dir, list(units), list(prompts), list(multiples), **options)
    click.echo("\n\n".join(steering_text(record) for record in records))


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--positive", "positive", multiple=True, required=True, help="A prompt the unit must fire on; mark one span ⟦like this⟧ to say where."
)
@click.option("--negative", "negative", multiple=True, help="A prompt the unit must not fire on anywhere.")
@click.option("--limit", type=int, default=20, show_default=True)
@user_errors
def search(run_dir: Path, positive: tuple[str, ...], negative: tuple[str, ...], limit: int) -> None:
    """List the units of RUN_DIR that fire on every positive prompt (at its marked span) and on no negative one."""
    from harness.run.steering import search_command

    found = search_command(run_dir, list(positive), list(negative), limit)
    if not found:
        click.echo("no unit fires on every positive prompt and on no negative one")
    for item in found:
        values = ", ".join(f"{value:.3g}" for value in item.positive)
        click.echo(f"{item.unit}\tscore {item.score:.3f}\tpositives [{values}] of max {item.max_activation:.3g}\t{item.explanation or ''}")


def _evaluation_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option(
                "--units", "units_per_dictionary", type=int, default=4, show_default=True, help="Random alive units per dictionary."
            ),
            click.option("--dictionary", "dictionaries", multiple=True, help="Index names to evaluate (default: all)."),
            click.option("--seed", type=int, default=0, show_default=True),
            click.option("--base-url", default=None, help="Base URL for openai/anthropic roles (e.g. a local vLLM or Ollama server)."),
        ]
    ):
        command = option(command)
    return command


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@_evaluation_options
@click.option("--explainer-backend", default="local", show_default=True, help="local, openai or anthropic.")
@click.option("--explainer-model", default=EMBEDDED_JUDGE_NAME, show_default=True)
@click.option(
    "--chat/--completion", default=True, show_default=True, help="Chat prompt (instruction models) or completion prompt (base models)."
)
@user_errors
def explain(
    run_dir: Path,
    units_per_dictionary: int,
    dictionaries: tuple[str, ...],
    seed: int,
    base_url: str | None,
    explainer_backend: str,
    explainer_model: str,
    chat: bool,
) -> None:
    """Explain random alive units of a run's indexes (writes explanations.jsonl; resumable)."""
    from harness.api import EvaluationConfig, SamplingConfig, explain_command

    config = EvaluationConfig(
        dictionaries=dictionaries,
        units_per_dictionary=units_per_dictionary,
        explainer_chat=chat,
        seed=seed,
        sampling=SamplingConfig(seed=seed),
    )
    explain_command(run_dir, config, _role(explainer_backend, explainer_model, base_url), log=_log)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@_evaluation_options
@click.option("--judge-backend", default="local", show_default=True)
@click.option("--judge-model", default=EMBEDDED_JUDGE_NAME, show_default=True)
@click.option(
    "--judge-format",
    default=DEFAULT_JUDGE_FORMAT,
    show_default=True,
    help="yes_no, expected_value, rating, rating_batch or likelihood.",
)
@click.option("--simulator-backend", default="local", show_default=True)
@click.option("--simulator-model", default=EMBEDDED_JUDGE_NAME, show_default=True)
@click.option(
    "--simulator-format",
    default=DEFAULT_SIMULATOR_FORMAT,
    show_default=True,
    help="yes_no_all (needs a local simulator), yes_no, expected_value, structured or likelihood.",
)
@click.option(
    "--per-level", type=int, default=2, show_default=True, help="Held-out contexts per activation level (index capacity permitting)."
)
@user_errors
def score(
    run_dir: Path, units_per_dictionary: int, dictionaries: tuple[str, ...], seed: int, base_url: str | None, per_level: int, **roles: str
) -> None:
    """Score the explanations with the specificity rubric and held-out simulation, beside controls."""
    from harness.api import EvaluationConfig, SamplingConfig, score_command

    config = EvaluationConfig(
        dictionaries=dictionaries,
        units_per_dictionary=units_per_dictionary,
        seed=seed,
        sampling=SamplingConfig(score_per_level=per_level, seed=seed),
        judge_format=roles["judge_format"],
        simulator_format=roles["simulator_format"],
    )
    score_command(
        run_dir,
        config,
        _role(roles["judge_backend"], roles["judge_model"], base_url),
        _role(roles["simulator_backend"], roles["simulator_model"], base_url),
        log=_log,
    )


def _role(backend: str, model: str, base_url: str | None) -> Any:
    """Return the Role of one LLM role; a base URL applies to hosted backends only."""
    from harness.api import Role

    return Role(backend, model, base_url if backend != "local" else None)
