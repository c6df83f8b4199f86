"""The torch-free vocabulary every layer shares: the workload table, a case's identity, the options
and plan of a run, the results records and their file format, statistics, and the run folder.

Nothing here imports torch, so `bench report`, `bench compare` and `--help` start in a fraction of
a second.
"""
