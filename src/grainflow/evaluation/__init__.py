"""Scores: pixel, boundary and object metrics, ASTM metrology, the classical baseline, real stacks."""
