"""explainers (built in later issues)."""
