"""Tools around the models that are not part of training or inference (benchmarking)."""
