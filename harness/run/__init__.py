"""A run directory and its stages: foundation, units, explain/score, comparisons, planning, reporting, the runner, Ray."""
