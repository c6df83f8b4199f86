"""Runs the cases one at a time: the sweep and its failure policy, progress, the pytest driver that
lets pytest-benchmark time the rounds, and the ranks torchrun starts. Never renders."""
