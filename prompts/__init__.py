"""Prompt templates (explainer, rubric judge, simulator) as text files, loaded by name through harness.llm.templates."""
