"""Which judge and simulator formats separate real from shuffled explanations, on units outside the signal check's set?

    python benchmarks/signal_levers.py RUN_DIR [--per-set 2] [--judge-formats yes_no,expected_value]
        [--simulator-formats yes_no_all,yes_no] [--fillers " No"," ?"] [--explain-contexts 16]

RUN_DIR holds a finished foundation of the bundled configs (corpus, index), e.g. a copy of
``runs/demo``. The units are drawn with another seed (12345) and every unit that
``harness/configs/signal.yaml`` evaluates (seed 0, 10 per set) is skipped, so a choice made here
is not tuned on the units the signal check reports. Per unit: the explainer of signal.yaml
explains it (through the run's cache: a rerun asks nothing), the shuffled control is another
dev unit's explanation, and each format scores the real, shuffled and token-statistics
explanations on the unit's held-out contexts. Printed per format: the mean over units of
real − shuffled (rubric score, and Pearson r of the simulation, a missing r counting 0), the
units where real is above shuffled, and the seconds it took. ``--fillers`` runs ``yes_no_all``
once per placeholder answer (``scorers.simulation.SLOT_FILLER``). ``--explain-contexts`` shows the
explainer that many firing contexts (default: signal.yaml's, i.e. the explainer's 24).

The README's "Choosing the formats" figures come from this script (2 units per set, 7 with an
explanation) on the demo's foundation.
"""

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import scorers.simulation as simulation  # noqa: E402
from explainers.token_stats import token_statistics_explanation  # noqa: E402
from harness.config import load_config  # noqa: E402
from harness.index.store import load_index  # noqa: E402
from harness.records import UnitContexts  # noqa: E402
from harness.run.evaluate import (  # noqa: E402
    explain_stage,
    load_unit_contexts,
    make_client,
    run_tokenizer,
    select_units,
    shuffled_sources,
    simulation_subset,
)
from scorers.answers import answer_spellings  # noqa: E402
from scorers.rubric import judge_unit  # noqa: E402

SIGNAL_CONFIG = Path(__file__).resolve().parent.parent / "harness" / "configs" / "signal.yaml"
DEV_SEED = 12345
SIGNAL_UNITS_PER_SET = 10


def dev_units(run_dir: Path, per_set: int) -> tuple[list[UnitContexts], object]:
    """Return up to ``per_set`` units per set that signal.yaml does not evaluate, and the signal config's evaluation."""
    evaluation = load_config(SIGNAL_CONFIG).evaluation
    drawn = replace(evaluation, seed=DEV_SEED, units_per_dictionary=per_set + 12, sampling=replace(evaluation.sampling, seed=DEV_SEED))
    units = load_unit_contexts(run_dir, drawn, run_tokenizer(run_dir))
    signal = set()
    for path in (run_dir / "index").glob("*.safetensors"):
        state, about = load_index(path)
        names = about.get("unit_names")
        for unit in select_units(state.fire_count.numpy(), SIGNAL_UNITS_PER_SET, 0):
            signal.add(names[unit] if names else f"{about.get('dictionary', path.stem)}/{unit}")
    kept: list[UnitContexts] = []
    count: dict[str, int] = {}
    for contexts in units:
        unit_set = "neurons" if contexts.unit.startswith("mlp.") else contexts.unit.split("/")[0]
        if contexts.unit not in signal and count.get(unit_set, 0) < per_set:
            count[unit_set] = count.get(unit_set, 0) + 1
            kept.append(contexts)
    return kept, replace(evaluation, seed=DEV_SEED)


def summary(name: str, rows: dict[str, dict[str, float | None]], seconds: float) -> None:
    """Print real − shuffled over units for one format, then each unit's scores."""
    differences = [(row["real"] or 0.0) - (row["shuffled"] or 0.0) for row in rows.values()]
    above = sum(difference > 0 for difference in differences)
    mean, spread = np.mean(differences), np.std(differences)
    print(f"{name}: real − shuffled {mean:+.3f} (sd {spread:.3f}), real above in {above}/{len(rows)}; {seconds:.0f} s")
    for unit, row in rows.items():
        cells = [f"{source} {value:.3f}" if value is not None else f"{source} none" for source, value in row.items()]
        print(f"    {unit}: " + ", ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--per-set", type=int, default=2)
    parser.add_argument("--judge-formats", default="yes_no,expected_value")
    parser.add_argument("--simulator-formats", default="yes_no_all")
    parser.add_argument("--fillers", default=" No")
    parser.add_argument("--explain-contexts", type=int, default=None)
    args = parser.parse_args()
    units, evaluation = dev_units(args.run_dir, args.per_set)
    if args.explain_contexts is not None:
        evaluation = replace(evaluation, explain_contexts=args.explain_contexts)
    config = load_config(SIGNAL_CONFIG)
    client = make_client(config.explainer, args.run_dir)
    started = time.perf_counter()
    asked = {contexts.unit for contexts in units}  # the run directory may hold other units' explanations: leave them out
    explained = explain_stage(args.run_dir, units, client, evaluation)
    explanations = {unit: record.text for unit, record in explained.items() if record.text and unit in asked}
    print(f"{len(explanations)} dev units explained in {time.perf_counter() - started:.0f} s")
    for unit, text in explanations.items():
        print(f"    {unit}: {text}")
    shuffle = shuffled_sources(sorted(explanations), DEV_SEED)
    scored = [contexts for contexts in units if contexts.unit in explanations]

    def sources(contexts: UnitContexts) -> dict[str, str | None]:
        own = explanations[contexts.unit]
        return {"real": own, "shuffled": explanations[shuffle[contexts.unit]], "token_stats": token_statistics_explanation(contexts).text}

    for judge_format in filter(None, args.judge_formats.split(",")):
        prefix = answer_spellings(client, judge_format, client, "structured").get("judge")
        started, rows = time.perf_counter(), {}
        for contexts in scored:
            rows[contexts.unit] = {}
            for source, text in sources(contexts).items():
                scores = [
                    j.score
                    for j in judge_unit(contexts, text, source, client, judge_format, answer_prefix=prefix.prefix if prefix else " ")
                ]
                parsed = [score for score in scores if score is not None]
                rows[contexts.unit][source] = float(np.mean(parsed)) if parsed else None
        summary(f"judge {judge_format}", rows, time.perf_counter() - started)
    for simulator_format in filter(None, args.simulator_formats.split(",")):
        spelling = answer_spellings(client, "rating", client, simulator_format).get("simulator")
        for filler in args.fillers.split(",") if simulator_format == "yes_no_all" else [simulation.SLOT_FILLER]:
            simulation.SLOT_FILLER = filler
            started, rows = time.perf_counter(), {}
            for contexts in scored:
                subset = simulation_subset(contexts, evaluation.simulation_contexts)
                rows[contexts.unit] = {
                    source: simulation.correlation_scores(
                        simulation.simulate_unit(subset, text, source, client, simulator_format, spelling.prefix if spelling else " ")
                    )["pearson"]
                    for source, text in sources(contexts).items()
                }
            label = f"simulator {simulator_format}" + (f" (placeholder {filler!r})" if simulator_format == "yes_no_all" else "")
            summary(label, rows, time.perf_counter() - started)


if __name__ == "__main__":
    main()
