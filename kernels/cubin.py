"""What a kernel compiles to on a GPU this machine may not have: Triton compiles for any target without a device
(ptxas and cuobjdump ship in its wheel), so shared memory, registers, stack (spills) and whether a loop's loads
were pipelined (cp.async into shared memory) can be checked in CI and before a GPU run.

    python -m kernels.cubin [--warps 16,32] [--stages 2,3]   # the persistent norm kernel at 32768 wide, sm_90: JSON lines
    python -m kernels.cubin --gemv                           # each autotuned config of kernels.gemv (SwiGLU, bf16)
    python -m kernels.cubin --decode                         # kernels.decode's split kernel, two launches and one
    python -m kernels.cubin --attention                      # kernels.attention's hd128 configs, TMA with and without WS
    python -m kernels.cubin --norm-cache                     # the norm op's kernel at 32768 wide, x past L1 and through it
    python -m kernels.cubin --mlp-chain                      # kernels.mlp_chain at the 1B Llama's widths
    python -m kernels.cubin --layer-chain                    # kernels.layer_chain at the 1B Llama's shapes
    python -m kernels.cubin --pdl                            # gemv and decode attention as PDL launches
    python -m kernels.cubin --attention-ws                   # kernels.attention_ws (Gluon) at hd 64/128, causal or not
    python -m kernels.cubin --attention-split                # kernels.attention_split (Gluon) at hd 64/128
    python -m kernels.cubin --linear-ws                      # kernels.linear_ws (Gluon): linear + GELU and SwiGLU
    python -m kernels.cubin --fp64-scalars                   # the kernels taking float scalars, typed fp64 (Inductor's)

Run it without TRITON_INTERPRET (under the interpreter triton.jit gives no compilable function).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.autotuner import Autotuner

HOPPER = GPUTarget("cuda", 90, 32)


# Instruction counts in the compiled code: field -> (the IR it is counted in, the text counted).
COUNTED = {
    "async_copies": ("ttgir", "async_copy_global_to_local"),  # cp.async copies into shared memory (pipelined loads)
    "l2_prefetches": ("ptx", "prefetch.global.L2"),  # _common.prefetch_l2
    "warp_specialized": ("ttgir", "ttg.warp_specialize("),  # the partitions Triton made
    "acq_rel_atomics": ("ptx", "atom.global.gpu.acq_rel"),  # decode's chunk counters
    "l1_bypassing_loads": ("ptx", "ld.global.cg"),  # loads of what other SMs wrote
    "evict_first_policies": ("ptx", "L2::evict_first"),  # _common.STREAM_POLICY loads
    "release_atomics": ("ptx", "atom.global.gpu.release"),  # a program's stores published (the chains' counters)
    "acquire_loads": ("ptx", "ld.global.gpu.acquire"),  # what Triton makes of an acquiring atomic add of 0
    "pdl_waits": ("ptx", "griddepcontrol.wait"),  # _common.pdl_wait
    "pdl_starts": ("ptx", "griddepcontrol.launch_dependents"),  # _common.pdl_start
    "wgmmas": ("ptx", "wgmma.mma_async"),  # Hopper's warpgroup MMA instructions
    "register_moves": ("ptx", "setmaxnreg"),  # a warp-specialized kernel's partitions giving and taking registers
}


@dataclasses.dataclass(frozen=True)
class Resources:
    shared_bytes: int  # static and dynamic shared memory of one program
    registers: int  # per thread
    stack_bytes: int  # per thread: spilled registers and local arrays (0 for a kernel that does not spill)
    async_copies: int = 0  # the rest: COUNTED
    l2_prefetches: int = 0
    warp_specialized: int = 0
    acq_rel_atomics: int = 0
    l1_bypassing_loads: int = 0
    evict_first_policies: int = 0
    release_atomics: int = 0
    acquire_loads: int = 0
    pdl_waits: int = 0
    pdl_starts: int = 0
    wgmmas: int = 0
    register_moves: int = 0
    loads_before_wait: int = 0  # global loads before the first pdl wait (gemv's early weight columns)
    memory_ops_before_wait: int = 0  # global stores, atomics and async copies before it
    ptx_instructions: int = 0  # the PTX's instructions (libdevice's functions inlined): how long a kernel's code is
    fp64_ops: int = 0  # TTIR operations on fp64 values but the truncation to fp32 (fp64_ops())


MEMORY_OPS = ("st.global", "atom.global", "red.global", "cp.async")


def before_wait(ptx: str, ops: tuple[str, ...] = MEMORY_OPS) -> int:
    """Global memory instructions (ops) ahead of the PTX's first griddepcontrol.wait (0 where it has none)."""
    head = ptx[:max(ptx.find("griddepcontrol.wait"), 0)]
    return sum(head.count(op) for op in ops)


def fp64_ops(ttir: str) -> int:
    """The operations in a kernel's Triton IR (a Gluon kernel's TTGIR) that take or make an fp64 value, other than its signature and the
    truncation of an fp64 argument to fp32: arithmetic an fp64 scalar argument promoted to fp64 (Triton's rule for a
    scalar meeting an fp32 tensor), so slow math and more registers."""
    return sum(1 for line in ttir.splitlines() if "f64" in line and "tt.func" not in line
               and "arith.truncf" not in line and not line.lstrip().startswith("#loc"))


def instructions(ptx: str) -> int:
    """The PTX's instruction lines (not directives, labels, comments or braces)."""
    lines = (line.strip() for line in ptx.splitlines())
    return sum(1 for line in lines if line.endswith(";") and not line.startswith((".", "//")))


def cuobjdump() -> str | None:
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return path if os.access(path, os.X_OK) else None


def signature(fn: triton.JITFunction, types: dict[str, str]) -> dict[str, str]:
    """fn's argument name -> Triton type, from its parameters: "constexpr" for those, types[name] where given,
    else "*bf16" for pointers (names ending in _ptr) and "i32" for scalars."""
    return {p.name: "constexpr" if p.is_constexpr else types.get(p.name, "*bf16" if p.name.endswith("_ptr") else "i32")
            for p in fn.params}


def resources(fn: triton.JITFunction, types: dict[str, str], constexprs: dict, num_warps: int,
              divisible: tuple[str, ...] = (), target: GPUTarget = HOPPER, num_stages: int = 3,
              source: type = ASTSource, float_type: str = "fp32") -> Resources:
    """Compiles fn (a JITFunction, or the autotuner around one) for target with num_warps and num_stages.
    types: the argument types signature() does not guess (fp32 scalars, pointers other than bf16); divisible: the
    arguments a launch would specialize as multiples of 16 (pointers and sizes that are), which decides vector
    widths as a launch does; source: GluonASTSource for a gluon.jit function; float_type: the type of the fp32
    scalars ("fp64": as Inductor passes a Python float to a user kernel, see fp64_rows)."""
    tool = cuobjdump()
    if tool is None:
        raise FileNotFoundError("cuobjdump is not in this triton wheel (backends/nvidia/bin)")
    if isinstance(fn, Autotuner):
        fn = fn.fn
    sig = {n: float_type if t == "fp32" else t for n, t in signature(fn, types).items()}
    names = list(sig)
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in divisible}
    compiled = triton.compile(source(fn, sig, constexprs, attrs), target=target,
                              options={"num_warps": num_warps, "num_stages": num_stages})
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True, check=True).stdout
    fields = dict(item.split(":", 1) for line in usage.splitlines() if "REG:" in line
                  for item in line.split("Resource usage:")[-1].split() if ":" in item)
    return Resources(compiled.metadata.shared, int(fields["REG"]), int(fields["STACK"]),
                     **{name: compiled.asm[ir].count(text) for name, (ir, text) in COUNTED.items()},
                     loads_before_wait=before_wait(compiled.asm["ptx"], ("ld.global",)),
                     memory_ops_before_wait=before_wait(compiled.asm["ptx"]),
                     fp64_ops=fp64_ops(compiled.asm["ttir" if "ttir" in compiled.asm else "ttgir"]),
                     ptx_instructions=instructions(compiled.asm["ptx"]))


NORM_TYPES = {"eps": "fp32"}
NORM_DIVISIBLE = ("x_ptr", "w_ptr", "b_ptr", "out_ptr", "N", "stride_x", "stride_o")
GEMV_TYPES = {"pos_ptr": "*i64", "f_ptr": "*fp32", "z_ptr": "*i32", "eps": "fp32"}
GEMV_DIVISIBLE = ("x_ptr", "w_ptr", "w2_ptr", "out_ptr", "N", "K", "stride_wn", "stride_w2n")
# decode attention's operands, also the layer chain's (which adds its own)
DECODE_TYPES = {"pos_ptr": "*i64", "m_ptr": "*fp32", "l_ptr": "*fp32", "acc_ptr": "*fp32", "cnt_ptr": "*i32",
                "qk_scale": "fp32"}
ATTENTION_TYPES = {"slope_ptr": "*fp32", "doc_ptr": "*i32", "qk_scale": "fp32", "cap_scale": "fp32", "cap_inv": "fp32"}
ATTENTION_DIVISIBLE = ("q_ptr", "k_ptr", "v_ptr", "o_ptr", "sqb", "sqh", "sqm", "skb", "skh", "skn", "svb", "svh", "svn",
                       "sob", "soh", "som", "Nq", "Nk")


def gemv_rows(pdl: bool = False, configs: list | None = None, float_type: str = "fp32") -> list[dict]:
    """kernels.gemv's autotuned configs (or `configs`) in bf16 compiled for sm_90: gated (SwiGLU) with the RMSNorm
    folded in, and the q/k/v projection's form (gemv_qkv: the norm folded in, the rotary embedding on 64-wide heads,
    a later weight prefetched into L2); pdl: as PDL launches (_common.pdl_code)."""
    from kernels import gemv
    from kernels._common import ACTS

    rows = []
    for c in configs if configs is not None else gemv._GPU:
        for op, gated, rope in (("gemv_swiglu", True, False), ("gemv_rope", False, True)):
            if rope and c.kwargs["BLOCK_N"] < 2:  # a rope block holds whole rotation pairs (gemv._fitting)
                continue
            consts = {"HAS_BIAS": False, "ACT": ACTS["silu" if gated else "none"], "GATED": gated, "NORM": True,
                      "RES": False, "ROPE": rope, "HEAD_DIM": 64 if rope else 2, "PREFETCH": rope, "ZERO": rope,
                      "PDL": pdl, "EARLY": gemv.EARLY_ELEMS if pdl else 0, "KP": 2048 if pdl else 0, **c.kwargs}
            r = resources(gemv._gemv_kernel, GEMV_TYPES, consts, c.num_warps, GEMV_DIVISIBLE, float_type=float_type)
            rows.append({"op": op, **c.kwargs, "warps": c.num_warps, "pdl": pdl} | dataclasses.asdict(r))
    return rows


def decode_rows(pdl: bool = False, float_type: str = "fp32") -> list[dict]:
    """kernels.decode's kernels in bf16 for sm_90 at the 1B Llama's decode shape (8 query heads a key/value head,
    head dim 64, 32 chunks of 64 keys): the split kernel without and with the merge in the same launch (also at
    16 chunks, whose merge loads every chunk at once), and the merge kernel; pdl: as PDL launches."""
    from kernels import decode

    rows = []
    for merge, chunks in ((False, 32), (True, 32), (True, 16)):
        consts = {"HEAD_DIM": 64, "BLOCK_G": 16, "BLOCK_N": 64, "PRECISION": "tf32", "PREFETCH": False, "MERGE": merge,
                  "BLOCK_GM": 8, "BLOCK_SC": decode.merge_chunks(chunks, 8, 64), "PDL": pdl,
                  "LINE": 64, "LINES": 1}
        r = resources(decode._split_kernel, DECODE_TYPES, consts, 4, float_type=float_type)
        op = ("decode_one_launch" if chunks == 32 else f"decode_one_launch_c{chunks}") if merge else "decode_split"
        rows.append({"op": op, "warps": 4, "pdl": pdl, "merge_rounds": -(-chunks // consts["BLOCK_SC"])}
                    | dataclasses.asdict(r))
    r = resources(decode._merge_kernel, DECODE_TYPES, {"HEAD_DIM": 64, "BLOCK_S": 32, "PDL": pdl}, 4, float_type=float_type)
    rows.append({"op": "decode_merge", "warps": 4, "pdl": pdl} | dataclasses.asdict(r))
    return rows


def pdl_rows() -> list[dict]:
    """gemv_rows() (one config without and one with pipelined loads) and decode_rows() as PDL launches, and
    whole_rows()."""
    from kernels import gemv

    picked = [next(c for c in gemv._GPU if c.kwargs["STAGES"] == st) for st in (1, 3)]
    return gemv_rows(pdl=True, configs=picked) + decode_rows(pdl=True) + whole_rows()


def whole_rows(elems: int = 8192) -> list[dict]:
    """kernels.gemv as PDL launches of gemv.whole_config's blocks at the 1B Llama's decode shapes (bf16, sm_90): each
    program's whole weight rows loaded before the wait (q/k/v with the norm and the rotary embedding, gate/up with
    the norm, down with the residual)."""
    from kernels import gemv
    from kernels._common import ACTS

    rows = []
    for op, n, k, gated, rope in (("gemv_whole_qkv", 2560, 2048, False, True), ("gemv_whole_gate_up", 5632, 2048, True, False),
                                  ("gemv_whole_down", 2048, 5632, False, False)):
        block = gemv.whole_config(n, k, gated, 64 if rope else None, elems)
        warps = block.pop("num_warps")
        consts = {"HAS_BIAS": False, "ACT": ACTS["silu" if gated else "none"], "GATED": gated, "NORM": op != "gemv_whole_down",
                  "RES": op == "gemv_whole_down", "ROPE": rope, "HEAD_DIM": 64 if rope else 2, "PREFETCH": False,
                  "ZERO": rope, "PDL": True, "KP": triton.next_power_of_2(k), **block}
        r = resources(gemv._gemv_kernel, GEMV_TYPES, consts, warps, GEMV_DIVISIBLE)
        rows.append({"op": op, **block, "warps": warps, "pdl": True} | dataclasses.asdict(r))
    return rows


def attention_rows(configs: list | None = None, float_type: str = "fp32", ws_forms: tuple[bool, ...] = (False, True),
                   ) -> list[dict]:
    """kernels.attention's head-dim-128 configs (bf16, causal, TMA loads) compiled for sm_90, with and without
    Triton's warp specialization of the key loop (or `configs`, in `ws_forms`); a config that fails to compile is a
    row with its error."""
    from kernels import attention

    rows = []
    for ws in ws_forms:
        for c in configs if configs is not None else attention._GPU[128]:
            consts = {"HEAD_DIM": 128, "HAS_ALIBI": False, "HAS_DOC": False, "SOFTCAP": False, "REVERSE": True,
                      "RAW": True, "TMA": True, "WS": ws, "PRECISION": "tf32", **c.kwargs}
            row = {"op": "attention_tma_ws" if ws else "attention_tma", **c.kwargs, "warps": c.num_warps,
                   "stages": c.num_stages,
                   "kept": c in attention._specializable(attention._GPU[128], {}, WS=ws)}
            try:
                r = resources(attention._attn_fwd, ATTENTION_TYPES, consts, c.num_warps, ATTENTION_DIVISIBLE,
                              num_stages=c.num_stages, float_type=float_type)
                rows.append(row | dataclasses.asdict(r))
            except Exception as e:  # noqa: BLE001 - a compiler failure is this row's result
                rows.append(row | {"error": str(e).strip().splitlines()[-1][:200]})
    return rows


def desc(rows: int, cols: int) -> str:
    """The signature type of a Gluon kernel's bf16 [rows, cols] TMA descriptor argument (_gluon.descriptor's layout)."""
    from triton.experimental.gluon import language as gl

    return f"tensordesc<bf16[{rows}, {cols}],{gl.NVMMASharedLayout.get_default_for([rows, cols], gl.bfloat16)!r}>"


def attention_ws_types(q_rows: int, d: int) -> dict[str, str]:
    """The argument types the Gluon attention launchers pass: bf16 TMA descriptors (q_rows query rows a box, 128 keys)
    and the fp32 scale."""
    from kernels import attention_ws as ws

    return {"q_desc": desc(q_rows, d), "k_desc": desc(ws.BLOCK_N, d), "v_desc": desc(ws.BLOCK_N, d),
            "o_desc": desc(q_rows, d), "qk_scale": "fp32"}


def attention_ws_rows() -> list[dict]:
    """kernels.attention_ws's kernel (Gluon) compiled for sm_90 with the descriptors its launcher builds: bf16, head
    dims 64 and 128, causal or not, its consumers in ping-pong (two partitions, at STAGES and DEEP_STAGES) or in step
    (one)."""
    from triton.experimental.gluon._runtime import GluonASTSource

    from kernels import attention_ws as ws

    rows = []
    for pp in (True, False):
        q_rows, warps = (ws.BLOCK_M // 2, 4) if pp else (ws.BLOCK_M, 8)
        for d in ws.HEAD_DIMS:
            types = attention_ws_types(q_rows, d)
            for causal in (False, True):
                for stages in (ws.STAGES, ws.DEEP_STAGES[d]) if pp else (ws.STAGES,):
                    consts = {"CAUSAL": causal, "STAGES": stages, "PINGPONG": pp, "num_warps": warps}
                    r = resources(ws._attn_ws_kernel, types, consts, warps, source=GluonASTSource)
                    rows.append({"op": "attention_ws", "pingpong": pp, "head_dim": d, "causal": causal,
                                 "stages": stages} | dataclasses.asdict(r))
    return rows


def attention_split_rows() -> list[dict]:
    """kernels.attention_split's kernel (Gluon) compiled for sm_90 with its launcher's descriptors and workspace:
    bf16, head dims 64 and 128 (non-causal, ping-pong), at attention_ws.STAGES and DEEP_STAGES, persistent or not
    (with the query buffers its launcher gives each)."""
    from triton.experimental.gluon._runtime import GluonASTSource

    from kernels import attention_split as sk
    from kernels import attention_ws as ws

    rows = []
    for d in ws.HEAD_DIMS:
        types = attention_ws_types(ws.BLOCK_M // 2, d) | {"acc_ptr": "*fp32", "m_ptr": "*fp32", "l_ptr": "*fp32"}
        for stages in (ws.STAGES, ws.DEEP_STAGES[d]):
            for persistent in (False, True):
                qbuf = sk.query_buffers(d, stages, persistent)
                consts = {"STAGES": stages, "QBUF": qbuf, "PERSISTENT": persistent, "num_warps": 4}
                r = resources(sk._attn_split_kernel, types, consts, 4, ("acc_ptr", "m_ptr", "l_ptr"),
                              source=GluonASTSource)
                rows.append({"op": "attention_split", "head_dim": d, "stages": stages, "persistent": persistent,
                             "query_buffers": qbuf} | dataclasses.asdict(r))
    return rows


def linear_ws_rows() -> list[dict]:
    """kernels.linear_ws's persistent kernel (Gluon) compiled for sm_90 with its launcher's descriptors: bf16,
    linear + bias + GELU (erf by libdevice and by FAST_GELU's form) and SwiGLU, at STAGES and DEEP_STAGES, in
    WIDE_TILE's tiles, and cooperative (COOP_STAGES)."""
    from triton.experimental.gluon._runtime import GluonASTSource

    from kernels import linear_ws as ws
    from kernels._common import ACTS

    rows = []
    for gated, fast, stages, wide, coop in (
            (False, False, ws.STAGES, False, False), (False, True, ws.STAGES, False, False),
            (True, False, ws.STAGES, False, False), (False, True, ws.DEEP_STAGES[False], False, False),
            (True, False, ws.DEEP_STAGES[True], False, False), (False, True, ws.STAGES, True, False),
            (True, False, ws.STAGES, True, False), (False, True, ws.COOP_STAGES[False], False, True),
            (True, False, ws.COOP_STAGES[True], False, True)):
        bm, bn = (ws.WIDE_TILE if wide else ws.TILE)[gated]
        types = {"x_desc": desc(bm, ws.BLOCK_K), "w_desc": desc(bn, ws.BLOCK_K), "w2_desc": desc(bn, ws.BLOCK_K),
                 "out_desc": desc(bm, bn)}
        consts = {"HAS_BIAS": True, "HAS_BIAS2": gated, "ACT": ACTS["silu" if gated else "gelu"], "FAST_GELU": fast,
                  "GATED": gated, "STAGES": stages, "GROUP": ws.GROUP_M, "COOP": coop, "num_warps": 4}
        r = resources(ws._linear_ws_kernel, types, consts, 4, ("b_ptr", "b2_ptr", "N", "K"), source=GluonASTSource)
        rows.append({"op": "swiglu_ws" if gated else "linear_gelu_ws", "block_m": bm, "block_n": bn, "fast": fast,
                     "stages": stages, "coop": coop}
                    | dataclasses.asdict(r))
    return rows


def norm_cache_rows(float_type: str = "fp32", caches: tuple[str, ...] = (".cg", "")) -> list[dict]:
    """kernels.norms._norm_kernel (the op's) on one 32768-wide bf16 row a program, LayerNorm and RMSNorm, with x
    loaded past L1 (X_CACHE ".cg") and through it ("") (or each of `caches`), at 32 warps: the scale and shift keep
    plain loads."""
    from kernels import norms

    rows = []
    for rms in (False, True):
        for cache in caches:
            consts = {"RMS": rms, "HAS_W": True, "HAS_B": not rms, "W_OFFSET": 0.0, "BLOCK": 32768, "ONE_PASS": True,
                      "ROWS": 1, "X_CACHE": cache}
            r = resources(norms._norm_kernel, NORM_TYPES, consts, 32, NORM_DIVISIBLE, float_type=float_type)
            rows.append({"op": "rms_norm" if rms else "layer_norm", "n": 32768, "warps": 32, "x_cache": cache}
                        | dataclasses.asdict(r))
    return rows


def _chain_row(op: str, fn: triton.JITFunction, types: dict, consts: dict, warps: int,
               sizes: tuple[str, ...], float_type: str = "fp32") -> list[dict]:
    """One chain kernel at the 1B Llama's widths (hidden 2048, intermediate 5632, KH and KI their powers of two);
    every pointer but the position's and the counters', and `sizes`, specialized as multiples of 16."""
    consts = {"KH": 2048, "KI": 8192, **consts}
    divisible = tuple(n for n in signature(fn, types) if n.endswith("_ptr") and n not in ("pos_ptr", "cnt_ptr"))
    divisible += sizes
    r = resources(fn, types, consts, warps, divisible, float_type=float_type)
    return [{"op": op, "hidden": 2048, "intermediate": 5632, **consts, "warps": warps} | dataclasses.asdict(r)]


def mlp_chain_rows(float_type: str = "fp32") -> list[dict]:
    """kernels.mlp_chain's kernel in bf16 for sm_90 at the 1B Llama's widths, with its launcher's tiles and warps."""
    from kernels import mlp_chain

    bn_h, bn_i, warps = mlp_chain.plan(2048, 5632)
    return _chain_row("mlp_chain", mlp_chain._mlp_chain_kernel, {"cnt_ptr": "*i32", "eps": "fp32"},
                      {"BN_O": bn_h, "BN_GU": bn_h, "BN_D": bn_i, "N_COUNTERS": mlp_chain.COUNTERS}, warps, ("H",),
                      float_type)


def layer_chain_rows(float_type: str = "fp32") -> list[dict]:
    """kernels.layer_chain's kernel in bf16 for sm_90 at the 1B Llama's shapes (32 query and 4 key/value heads of
    64, a 2048-entry cache in 32 chunks of 64), with its launcher's tiles and warps."""
    from kernels import layer_chain, mlp_chain

    bn_h, bn_i, warps = mlp_chain.plan(2048, 5632, min_rows=2)
    types = DECODE_TYPES | {"f_ptr": "*fp32", "eps_in": "fp32", "eps_post": "fp32"}
    return _chain_row("layer_chain", layer_chain._layer_kernel, types,
                      {"HEAD_DIM": 64, "BN_H": bn_h, "BN_I": bn_i, "BLOCK_G": 16, "BLOCK_N": 64, "BLOCK_S": 32,
                       "PRECISION": "tf32", "N_COUNTERS": layer_chain.COUNTERS}, warps, ("H", "N", "K_N"), float_type)


def persistent_norm_rows(warps: tuple[int, ...] = (16, 32), stages: tuple[int, ...] = (2, 3),
                         float_type: str = "fp32") -> list[dict]:
    """kernels.norms' persistent kernel on 32768-wide bf16 rows, RMSNorm and LayerNorm, at each warp and stage count."""
    from kernels import norms

    rows = []
    for rms in (True, False):
        for w in warps:
            for st in stages:
                consts = {"RMS": rms, "HAS_W": True, "HAS_B": not rms, "W_OFFSET": 0.0, "BLOCK": 32768, "STAGES": st}
                r = resources(norms._norm_persistent_kernel, NORM_TYPES, consts, w, NORM_DIVISIBLE, float_type=float_type)
                rows.append({"op": "rms_norm" if rms else "layer_norm", "n": 32768, "warps": w, "stages": st}
                            | dataclasses.asdict(r))
    return rows


def fp64_rows() -> list[dict]:
    """Each Triton kernel of kernels/ that takes a float scalar (a norm's eps, attention's scale), compiled for sm_90
    with those scalars typed fp64: how Inductor passes a Python float to a user kernel (its
    _use_fp64_for_unbacked_floats), where Triton's own launch passes fp32. A kernel that does not truncate them
    first computes in fp64 what meets them: the 1B Llama's compiled decode step ran its q/k/v kernel (the norm,
    the rotation) in fp64, 92 registers a thread against 80 uncompiled (bench/graph_gaps.py, H100, 2026-12-06)."""
    from kernels import attention, gemv

    one = [next(c for c in gemv._GPU if c.kwargs["BLOCK_N"] >= 2)]
    rows = [*gemv_rows(configs=one, float_type="fp64"), *decode_rows(float_type="fp64"),
            *norm_cache_rows(float_type="fp64", caches=(".cg",)), *persistent_norm_rows((16,), (2,), float_type="fp64"),
            *mlp_chain_rows(float_type="fp64"), *layer_chain_rows(float_type="fp64"),
            *attention_rows(attention._GPU[128][:1], float_type="fp64", ws_forms=(False,))]
    return [{"float_type": "fp64"} | r for r in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warps", default="16,32")
    ap.add_argument("--stages", default="2,3")
    ap.add_argument("--gemv", action="store_true", help="kernels.gemv's configs instead of the norm kernel")
    ap.add_argument("--decode", action="store_true", help="kernels.decode's split kernel instead of the norm kernel")
    ap.add_argument("--attention", action="store_true", help="kernels.attention's hd128 configs instead")
    ap.add_argument("--norm-cache", action="store_true", help="the norm op's kernel at 32768 wide, x past L1 or not")
    ap.add_argument("--mlp-chain", action="store_true", help="kernels.mlp_chain at the 1B Llama's widths")
    ap.add_argument("--layer-chain", action="store_true", help="kernels.layer_chain at the 1B Llama's shapes")
    ap.add_argument("--pdl", action="store_true", help="gemv and decode attention as PDL launches")
    ap.add_argument("--attention-ws", action="store_true", help="kernels.attention_ws (Gluon) at hd 64 and 128")
    ap.add_argument("--attention-split", action="store_true", help="kernels.attention_split (Gluon) at hd 64 and 128")
    ap.add_argument("--linear-ws", action="store_true", help="kernels.linear_ws (Gluon): linear + GELU, SwiGLU")
    ap.add_argument("--fp64-scalars", action="store_true", help="the kernels taking float scalars, those typed fp64")
    args = ap.parse_args(argv)
    picked = {"gemv": gemv_rows, "decode": decode_rows, "attention": attention_rows, "norm_cache": norm_cache_rows,
              "mlp_chain": mlp_chain_rows, "layer_chain": layer_chain_rows, "pdl": pdl_rows,
              "attention_ws": attention_ws_rows, "attention_split": attention_split_rows, "linear_ws": linear_ws_rows,
              "fp64_scalars": fp64_rows}
    chosen = [fn for name, fn in picked.items() if getattr(args, name)]
    if chosen:
        for row in chosen[0]():
            sys.stdout.write(json.dumps(row) + "\n")
        return 0
    for row in persistent_norm_rows(tuple(map(int, args.warps.split(","))), tuple(map(int, args.stages.split(",")))):
        sys.stdout.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
