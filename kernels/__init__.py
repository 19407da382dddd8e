"""Triton kernels for the GPU services at O3: fused linear + activation (linear_act), RMSNorm/LayerNorm
(norms), attention forward (attention), decode attention against a static cache (decode); registry.py decides
per device and shape class which provider runs (decode attention: the whole-model trial decides).

This file stays importable without a GPU and without triton: the op modules are imported by candidates()
only when they can run. Entry point of kpt.gpu.passes.CustomKernels:

    candidates(module, device, example=None) -> [(name, apply)]
        apply(module) returns a new module with our ops swapped in; example, the model's inputs, lets the
        candidates that only a run can find (attention: the SDPA calls it could route) be left out when absent
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


def unavailable(device: str) -> str | None:
    """Why our kernels cannot run on device, or None when they can."""
    if not str(device).startswith("cuda"):
        return f"custom kernels run on CUDA devices only, not {device!r}"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return "TRITON_INTERPRET=1 is set: kernels would run in the CPU interpreter"
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return f"triton is not installed ({e})"
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    if major < 8:
        return f"compute capability {major}.x: the kernels need sm_80 or newer (bf16 tensor cores)"
    return None


# The trials kpt_decode_pdl and kpt_decode_prefetch (offered once the whole layers are kept; each kept only where
# its trial measures the step faster). On the H200 (2026-12-05) the compiled step with the PDL kernels returned
# wrong values and the prefetch trial hit an illegal memory access: Inductor's mutation analysis had given up on
# the kernels' inline asm and taken every operand as written (kernels.traced; fixed). On the H100 (2026-12-05,
# h100-runs/tests-{programmatic,prefetch-plan}-h100-2026-12-05e.xml) their GPU tests passed: the compiled step
# with programmatic graph edges, and the step with the prefetch plan uncompiled and compiled, each against the
# step without. A trial that still faults the card is recorded and skipped by the job's next attempt (DeviceFault).
DECODE_PDL = True
DECODE_PREFETCH = True


def pick_configs(module: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> None:
    """module run once eagerly on example: kernels.gemv's autotuners pick their configs by their own timing, and
    every later compile of the module (a trial's, a package's) is offered those picks alone (gemv.PIN)."""
    with torch.inference_mode():
        module(*example)


def pinned(swap: Callable[[torch.nn.Module], torch.nn.Module], example: tuple[torch.Tensor, ...] | None,
           ) -> Callable[[torch.nn.Module], torch.nn.Module]:
    """swap, then pick_configs on the swapped module (where an example is given)."""
    def apply(module: torch.nn.Module) -> torch.nn.Module:
        out = swap(module)
        if example is not None:
            pick_configs(out, example)
        return out

    return apply


def candidates(module: torch.nn.Module, device: str, example: tuple[torch.Tensor, ...] | None = None,
               ) -> list[tuple[str, Callable[[torch.nn.Module], torch.nn.Module]]]:
    """One candidate per kind of swap the model has room for. Each swapped module asks the registry, per
    shape class, whether ours is faster and correct there, and runs the vendor path otherwise. Without
    example, the attention swap is always offered (its SDPA calls are only seen when the model runs)."""
    why = unavailable(device)
    if why:
        log.info("kernels/: no candidates: %s", why)
        return []
    if __name__ not in sys.modules:
        # Loaded by file path (kpt.gpu.passes): register the package so its relative imports resolve; the
        # submodules then load once per process however often this file is executed.
        spec = importlib.util.spec_from_file_location(__name__, __file__,
                                                      submodule_search_locations=[os.path.dirname(__file__)])
        pkg = importlib.util.module_from_spec(spec)
        sys.modules[__name__] = pkg
        spec.loader.exec_module(pkg)
    modules = importlib.import_module(f"{__name__}.modules")  # imports triton, registers the kpt:: ops

    found = []
    # Whole decode layers first: kept, they set the step's decode attention and bypass its norms and MLPs, so the
    # swaps below find nothing there and a trial that would time the same code twice is not run
    # (kpt.gpu.passes asks again after each kept candidate).
    if modules.find_decode_layer_steps(module):
        found.append(("kpt_decode_layers", pinned(modules.swap_decode_layers, example)))
    if DECODE_PREFETCH and modules.find_decode_prefetch_steps(module):  # once the layers are kept: L2 prefetches
        found.append(("kpt_decode_prefetch", pinned(modules.swap_decode_prefetch, example)))
    if DECODE_PDL and modules.find_decode_pdl_steps(module):  # and as programmatic dependent launches (sm_90+)
        found.append(("kpt_decode_pdl", pinned(modules.swap_decode_pdl, example)))
    if modules.find_decode_steps(module):
        found.append(("kpt_decode_attention", modules.swap_decode_attention))
    if modules.find_norms(module):
        found.append(("kpt_norms", modules.swap_norms))
    if modules.find_linear_act(module) or modules.find_swiglu(module):
        found.append(("kpt_linear_act", modules.swap_linear_act))
    if example is None or modules.routable_attention_calls(module, example):
        found.append(("kpt_attention", modules.swap_attention))
    log.info("kernels/: candidates %s", [n for n, _ in found])
    return found
