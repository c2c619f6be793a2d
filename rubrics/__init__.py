"""rubrics (built in later issues)."""
