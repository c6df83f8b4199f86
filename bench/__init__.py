"""torch-bench: checks a PyTorch install and benchmarks models (the textbook MNIST MLP by default) on every device."""

from bench.core.modelspec import ModelSpec

__version__ = "0.1.0"
__all__ = ["ModelSpec", "__version__"]
