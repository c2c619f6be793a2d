"""A run directory and its stages: foundation, units, explain/score, comparisons, planning, shards, reporting, the runner."""
