"""What torch.compile makes of kernels/' Triton kernels, checked on any machine (`python -m kernels.traced`; no GPU:
Triton's front end is told the target is sm_90). Inductor embeds a user kernel in two steps that can go wrong
without an error:

- it reads which operands the kernel writes from its TTIR (torch._higher_order_ops.triton_kernel_wrap); where it
  cannot (inline asm not marked pure), it takes every operand as written, clones each one per call and copies the
  clones back one after another: an output also passed as a placeholder elsewhere comes back unwritten. On the
  H200 (2026-12-05) the compiled decode step with the PDL code returned garbage and the L2-prefetch trial faulted.
- it re-emits the kernel's source with the Triton functions it calls (torch._inductor.codegen.wrapper): a call
  through a module (`gemv.rope_rows(...)`) is not followed, and the compile fails with a NameError in Inductor's
  worker (layer_chain on the H200, 2026-12-05).

Prints one JSON line per launch an op makes (its kernel; the operands written per Inductor's analysis, every
tensor operand where it gives up; two written operands that are one tensor) and one per kernel whose emitted source
names something it does not define. Each op runs on CPU tensors with the PDL code and an L2 prefetch asked for; its
launches are recorded, not run (the process's kernels/ modules get a recording `launch`: run it on its own)."""

from __future__ import annotations

import argparse
import builtins
import dis
import importlib.util
import json
import os
import pkgutil
import sys
import tempfile
from collections.abc import Callable, Iterator

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.runtime import driver
from triton.runtime.autotuner import Autotuner

HOPPER = GPUTarget("cuda", 90, 32)


class _Target:
    """Triton's active driver where there is no GPU: only the target, which is all TTIR needs."""

    def get_current_target(self) -> GPUTarget:
        return HOPPER


def _jit(kernel: object) -> triton.JITFunction:
    """The JITFunction of a kernel or of the autotuner around one."""
    return kernel.fn if isinstance(kernel, Autotuner) else kernel


class _Recorder:
    """kernels/' `launch` stand-in: kernel[grid](*args, **kwargs) records the call instead of running it."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, dict]] = []

    def __call__(self, kernel: object, *tensors: object) -> _Recorder._Bound:
        return _Recorder._Bound(self, kernel)

    class _Bound:
        def __init__(self, rec: _Recorder, kernel: object) -> None:
            self.rec, self.kernel = rec, kernel

        def __getitem__(self, grid: object) -> Callable:
            def record(*args: object, **kwargs: object) -> None:
                named = dict(zip(_jit(self.kernel).arg_names, args, strict=False)) | kwargs  # the rest by keyword
                for option in ("num_warps", "num_stages", "launch_pdl", "num_ctas"):
                    named.pop(option, None)
                self.rec.calls.append((self.kernel, named))
            return record


def _ops(rec: _Recorder) -> Iterator[tuple[str, Callable[[], object]]]:
    """(name, call) of each op with the kernels that carry inline asm, on small bf16 CPU tensors."""
    from . import decode, gemv, layer_chain, mlp_chain

    for mod in (decode, gemv, layer_chain, mlp_chain):
        mod.launch = rec
        if hasattr(mod, "pdl_code"):
            mod.pdl_code = lambda t, asked: asked  # the PDL code as on an sm_90 card
            mod.pdl_launch = lambda t, asked: False
    bf = torch.bfloat16
    H, D, Hq, Hkv, S, N_I = 256, 64, 4, 2, 256, 512
    r = torch.randn
    x, w, w2, g = r(1, 1, H, dtype=bf), r(H, H, dtype=bf), r(H, H, dtype=bf), r(H, dtype=bf)
    ahead = r(1024, H, dtype=bf)  # a later launch's weight, prefetched
    pos, inv_freq = torch.tensor([5]), torch.rand(D // 2)
    w_qkv = r((Hq + 2 * Hkv) * D, H, dtype=bf)
    k_new, v_new = torch.zeros(1, Hkv, 1, D, dtype=bf), torch.zeros(1, Hkv, 1, D, dtype=bf)
    kc, vc = r(1, Hkv, S, D, dtype=bf), r(1, Hkv, S, D, dtype=bf)
    q = r(1, Hq, 1, D, dtype=bf)
    counters = torch.zeros(16, dtype=torch.int32)
    wg, wu, wd = r(N_I, H, dtype=bf), r(N_I, H, dtype=bf), r(H, N_I, dtype=bf)
    yield "gemv (norm, SwiGLU, residual)", lambda: gemv.gemv_op(x, w, w2, g, x, 1e-6, "silu", ahead, 1.0, True)
    yield "gemv_qkv (rope, zeroing the counters)", lambda: gemv.gemv_qkv(
        x, w_qkv, g, 1e-6, pos, inv_freq, k_new.view(1, -1)[:, :Hkv * D], v_new.view(1, -1)[:, :Hkv * D], ahead,
        1.0, counters, True)
    yield "decode_attention (two launches)", lambda: decode.decode_attention(q, kc, vc, k_new, v_new, pos, None,
                                                                            ahead, 1.0, None, True)
    yield "decode_attention (one launch)", lambda: decode.decode_attention(q, kc, vc, k_new, v_new, pos, None, ahead,
                                                                           1.0, counters, True)
    yield "mlp_chain", lambda: mlp_chain.mlp_chain(x, x, w, g, wg, wu, wd, 1e-6, counters)
    yield "layer_chain", lambda: layer_chain.layer_chain(x, w_qkv, g, 1e-6, pos, inv_freq, kc, vc, k_new, v_new, w, g,
                                                         wg, wu, wd, 1e-6, counters)


def writes() -> list[dict]:
    """Per recorded launch: the operands Inductor's analysis says the kernel writes."""
    from torch._higher_order_ops import triton_kernel_wrap

    rec = _Recorder()
    rows = []
    for op, call in _ops(rec):
        rec.calls.clear()
        call()
        for kernel, named in rec.calls:
            access = triton_kernel_wrap.identify_accessed_tensors(kernel, dict(named), {})
            written = sorted(d.name for d in access.read_writes.writes)
            tensors = {n: t for n, t in named.items() if isinstance(t, torch.Tensor)}
            shared = sorted({f"{a}={b}" for a in written for b in written
                             if a < b and tensors[a].untyped_storage().data_ptr()
                             == tensors[b].untyped_storage().data_ptr()})
            name = _jit(kernel).fn.__name__
            rows.append({"check": "writes", "op": op, "kernel": name, "written": written, "written_twice": shared,
                         "tensors": len(tensors)})
    return rows


def emitted() -> list[dict]:
    """Each @triton.jit kernel of kernels/ (Gluon's excepted: Inductor embeds none) as Inductor re-emits it: the
    names its functions load that the emitted source does not define."""
    from torch._inductor.codegen.triton import TritonKernel
    from torch._inductor.codegen.wrapper import user_defined_triton_kernel_transitive_closure_source_code

    import kernels

    header = TritonKernel.gen_common_triton_imports()
    header = header.getvalue() if hasattr(header, "getvalue") else str(header)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kpt-traced-") as tmp:
        for info in pkgutil.iter_modules(kernels.__path__):
            if info.name in ("attention_ws", "linear_ws", "_gluon", "bench", "cubin", "traced"):
                continue
            mod = importlib.import_module(f"kernels.{info.name}")
            for name, obj in vars(mod).items():
                if not (type(obj) is triton.JITFunction and obj.fn.__module__ == mod.__name__):
                    continue
                path = os.path.join(tmp, f"{info.name}_{name}.py")  # triton.jit reads its function's source file
                with open(path, "w") as f:
                    f.write(header + "\n" + user_defined_triton_kernel_transitive_closure_source_code(obj))
                missing = _undefined(path, f"kpt_traced_{info.name}_{name}")
                if missing:
                    rows.append({"check": "emitted", "kernel": f"{info.name}.{name}", "undefined": missing})
    return rows


def _undefined(path: str, module_name: str) -> list[str]:
    """The globals the functions of the module at path load that it does not define ("function: name")."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    emitted_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(emitted_mod)
    defined = vars(emitted_mod)
    missing = set()
    for fn_name, fn in defined.items():
        fn = getattr(fn, "fn", fn)  # a JITFunction's Python function
        if getattr(fn, "__module__", None) != module_name or not hasattr(fn, "__code__"):
            continue
        missing |= {f"{fn_name}: {i.argval}" for i in dis.Bytecode(fn.__code__) if i.opname == "LOAD_GLOBAL"
                    and i.argval not in defined and not hasattr(builtins, i.argval)}
    return sorted(missing)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("kernels.traced needs Triton's compiler: run it without TRITON_INTERPRET=1")
    try:
        driver.active.get_current_target()
    except RuntimeError:
        driver.set_active(_Target())
    for row in writes() + emitted():
        sys.stdout.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
