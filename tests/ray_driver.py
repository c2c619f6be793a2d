"""A Ray driver for tests/test_ray.py to SIGKILL: the tiny run of tests/test_batch.py with its passes on Ray.

Usage: ``python tests/ray_driver.py RUN_DIR SECONDS [evaluate]``. It starts a local Ray cluster of 2 CPUs and
builds the tiny config's foundation (no residual store, tasks of 16 chunks, a checkpoint after every task),
printing one line per log message; its workers' tiny model sleeps SECONDS before each forward pass, so the
index pass lasts long enough to be interrupted. With ``evaluate`` it runs the whole evaluation instead, every
LLM role on the "fake-slow" backend of tests/slow_backend.py (its sleep and call log come from the environment).
"""

import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the repository root

import ray

import harness.run.cluster as cluster
import harness.run.foundation as foundation
import harness.run.ray_stages as ray_stages
import harness.run.runner as runner
from harness.run.directory import prepare_run_directory
from tests import slow_backend
from tests.test_batch import TINY_CONFIG, tiny_config
from tests.tiny_models import tiny_byte_gemma, tiny_byte_gemma_slow

DRIVER_CONFIG = {"model": {**TINY_CONFIG["model"], "store_residuals": False}, "cluster": {"ray": True, "chunks_per_task": 16}}
SLOW_ROLE = {"backend": "fake-slow", "model": "fake-model"}
EVALUATE_CONFIG = {**DRIVER_CONFIG, "explainer": SLOW_ROLE, "judge": SLOW_ROLE, "simulator": SLOW_ROLE, "llm": {"max_concurrency": 2}}


def main(run_dir: Path, seconds: float, evaluate: bool) -> None:
    subject = tiny_byte_gemma()
    foundation.load_subject_model = lambda *args, **kwargs: subject
    runner.model_shape = lambda name: (4, 32, 64)
    cluster.model_loader = lambda config: partial(tiny_byte_gemma_slow, seconds)
    ray_stages.worker_setup = slow_backend.register
    log = lambda message: print(message, flush=True)  # noqa: E731
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    if evaluate:
        runner.run_evaluation(tiny_config(**EVALUATE_CONFIG), run_dir, log=log)
    else:
        config = tiny_config(**DRIVER_CONFIG)
        config = replace(config, foundation=replace(config.foundation, checkpoint_seconds=0.0))
        prepare_run_directory(run_dir)
        foundation.build_foundation(run_dir, config, log=log)
    print("done", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3:] == ["evaluate"])
