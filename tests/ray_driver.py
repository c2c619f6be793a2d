"""A Ray driver for tests/test_ray.py to SIGKILL: builds the tiny run's foundation with the index pass on Ray.

Usage: ``python tests/ray_driver.py RUN_DIR SECONDS``. It starts a local Ray cluster of 2 CPUs, builds the
foundation of the tiny config of tests/test_batch.py (no residual store, tasks of 16 chunks, a checkpoint
after every task) and prints one line per log message. Its workers' tiny model sleeps SECONDS before each
forward pass, so the index pass lasts long enough to be interrupted.
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
from harness.run.directory import prepare_run_directory
from tests.test_batch import TINY_CONFIG, tiny_config
from tests.tiny_models import tiny_byte_gemma, tiny_byte_gemma_slow

DRIVER_CONFIG = {"model": {**TINY_CONFIG["model"], "store_residuals": False}, "cluster": {"ray": True, "chunks_per_task": 16}}


def main(run_dir: Path, seconds: float) -> None:
    subject = tiny_byte_gemma()
    foundation.load_subject_model = lambda *args, **kwargs: subject
    cluster.model_loader = lambda config: partial(tiny_byte_gemma_slow, seconds)
    config = tiny_config(**DRIVER_CONFIG)
    config = replace(config, foundation=replace(config.foundation, checkpoint_seconds=0.0))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    prepare_run_directory(run_dir)
    foundation.build_foundation(run_dir, config, log=lambda message: print(message, flush=True))
    print("done", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]))
