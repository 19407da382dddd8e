"""Gluon (`triton.experimental.gluon`, Triton's lower-level language: triton >= 3.5; the H100 image has 3.6) and
the Hopper pieces the warp-specialized kernels use (attention_ws.py, linear_ws.py). With an older Triton every name
is None and the kernels' supports() say no."""

from __future__ import annotations

import torch

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    from triton.runtime.jit import constexpr_function
except ImportError:  # pragma: no cover - an older Triton
    gluon = gl = fence_async_shared = mbarrier = tma = warpgroup_mma = warpgroup_mma_wait = None
    TensorDescriptor = constexpr_function = None


SHARED_BYTES = 232448  # the most shared memory one program may take on sm_90 (H100, H200): 227 KB


def hopper(t: torch.Tensor) -> bool:
    """Whether a Gluon Hopper kernel can run on t's device: Gluon here, and t on an sm_90 GPU."""
    return gluon is not None and t.is_cuda and torch.cuda.get_device_capability(t.device)[0] == 9


def descriptor(t, block: list[int]):  # noqa: ANN001, ANN201 - a 2-D fp16/bf16 tensor in, a host-side TMA descriptor out
    """A host-side TMA descriptor over the 2-D tensor t, one block_shape box, in the default NVMMA shared layout for
    its dtype (how the warp-specialized kernels' launchers pass their operands)."""
    layout = gl.NVMMASharedLayout.get_default_for(block, gl.bfloat16 if t.dtype == torch.bfloat16 else gl.float16)
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block, layout)


__all__ = ["SHARED_BYTES", "TensorDescriptor", "constexpr_function", "descriptor", "hopper", "fence_async_shared", "gl", "gluon", "mbarrier",
           "tma", "warpgroup_mma", "warpgroup_mma_wait"]
