"""Inference: tiles, the fold ensemble, label maps that close, whole stacks and shards."""
