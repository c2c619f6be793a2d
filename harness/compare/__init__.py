"""The comparison module: feature–neuron correlation and feature splitting across dictionary sizes."""
