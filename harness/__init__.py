"""monoscope core: subject model, corpus, dictionaries, activation index, pipeline."""

__version__ = "0.1.0"
