"""KernelPyTorch Mesh TPU optimizer service: torch_xla on a TPU, or on XLA's CPU device."""
