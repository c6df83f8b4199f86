"""Facts about the machine and its PyTorch install, and the install check that turns them into
verdicts. torch is imported lazily, inside the probes that need it."""
