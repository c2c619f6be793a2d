"""One module per LLM backend; each registers itself with ``harness.llm.client.register_backend`` when imported."""
