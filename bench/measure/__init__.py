"""The timed work and what it needs: devices, data, the model, execution modes, workloads, memory,
energy and efficiency. Measures; never prints or formats."""
