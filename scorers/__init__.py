"""scorers (built in later issues)."""
