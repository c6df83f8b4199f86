"""Every figure derived from stored samples (ratios, verdicts, efficiency, energy, scaling) and the
comparison of two runs: computed here once, read by the summary, the CSV, compare and fleet alike.
Torch-free."""
