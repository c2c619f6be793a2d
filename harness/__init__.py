"""monoscope core, by stage of the data flow: subject model → dictionaries → index → LLM and comparison → run (see README, Layout)."""

__version__ = "0.1.0"
