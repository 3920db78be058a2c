"""Figures of the synthetic data, the training and the real stacks; each function returns a Figure."""
