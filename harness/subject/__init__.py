"""The subject model and what it reads: model loading and hooks, the embedded Gemma 3 270M, the corpus, streamed activations."""
