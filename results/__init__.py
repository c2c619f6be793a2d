"""results (built in later issues)."""
