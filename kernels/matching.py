"""What a model's modules are, for the swaps (modules.py) and the decode layer path (decode_layer.py): plain
weights, which activation a module applies, whether a norm is an RMSNorm of the one form the kernels compute."""

from __future__ import annotations

import torch

ACT_MODULES = {torch.nn.GELU: None, torch.nn.SiLU: "silu", torch.nn.ReLU: "relu"}


def plain(*tensors: torch.Tensor | None) -> bool:
    """Plain tensors: not torchao's quantized subclasses (O3 quantizes before it tries kernels), whose data the
    kernels cannot read."""
    return all(t is None or type(t) in (torch.Tensor, torch.nn.Parameter) for t in tensors)


def act_of(m: torch.nn.Module | None) -> str | None:
    if isinstance(m, torch.nn.GELU):
        return "gelu_tanh" if m.approximate == "tanh" else "gelu"
    if type(m).__name__ == "SiLUActivation":  # what transformers 5's ACT2FN["silu"] gives Llama's MLP
        return "silu"
    return ACT_MODULES.get(type(m))


def is_rmsnorm(m: torch.nn.Module | None) -> bool:
    name = type(m).__name__
    # Llama/Mistral/Qwen2-style RMSNorms share one forward; Gemma's scales by (1 + weight): not this one.
    return isinstance(m, torch.nn.RMSNorm) or (name.endswith("RMSNorm") and "Gemma" not in name and isinstance(
        getattr(m, "weight", None), torch.Tensor) and hasattr(m, "variance_epsilon"))
