"""prompts (built in later issues)."""
