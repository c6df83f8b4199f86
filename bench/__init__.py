"""torch-bench: checks a PyTorch install and benchmarks the textbook MNIST MLP on every device."""

__version__ = "0.1.0"
