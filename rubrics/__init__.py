"""Rubric definitions as YAML files (the 0–3 specificity rubric), loaded by name through harness.llm.templates."""
