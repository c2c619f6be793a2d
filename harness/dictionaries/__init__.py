"""Sparse dictionaries: the dictionary record and encode/decode, on-disk formats (SAELens), training, the neuron pool."""
