"""Gluon (`triton.experimental.gluon`, Triton's lower-level language: triton >= 3.5; the H100 image has 3.6) and
the Hopper pieces the warp-specialized kernels use (attention_ws.py, linear_ws.py). With an older Triton every name
is None and the kernels' supports() say no."""

from __future__ import annotations

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

__all__ = ["TensorDescriptor", "constexpr_function", "fence_async_shared", "gl", "gluon", "mbarrier", "tma",
           "warpgroup_mma", "warpgroup_mma_wait"]
