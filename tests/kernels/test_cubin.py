"""kernels/ compiled for sm_90 on this machine (no GPU needed to compile, `python -m kernels.cubin`): shared memory,
registers, spills, pipelined loads, and the instructions the memory orderings and cache policies must become."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kernels._gluon import SHARED_BYTES as H100_SHARED_BYTES  # 227 KB: the most one program may take on sm_90


def _cubin(*args: str, timeout: int) -> subprocess.CompletedProcess:
    """`python -m kernels.cubin ARGS` in a process without TRITON_INTERPRET (the interpreter has nothing to
    compile); skips where triton or its cuobjdump is missing."""
    pytest.importorskip("triton")
    from kernels import cubin

    if cubin.cuobjdump() is None:
        pytest.skip("this triton wheel ships no cuobjdump")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "kernels.cubin", *args], env=env, text=True, capture_output=True,
                         timeout=timeout, cwd=os.path.dirname(os.path.dirname(cubin.__file__)))
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_persistent_norm_is_pipelined_fits_and_does_not_spill():
    out = _cubin("--warps", "32", "--stages", "2", timeout=300)
    rows = {r["op"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert set(rows) == {"rms_norm", "layer_norm"}
    for op, r in rows.items():
        loads = 2 if op == "rms_norm" else 3  # x and the scale, plus the shift for LayerNorm
        assert r["async_copies"] >= loads, r  # each staged load appears in the prologue and the loop
        assert r["stack_bytes"] == 0, r
        assert 32768 * 2 * loads <= r["shared_bytes"] <= H100_SHARED_BYTES, r


def test_gemv_configs_compile_for_sm90_without_spills_and_staged_ones_pipeline():
    """Every autotuned config of kernels/gemv.py, gated (SwiGLU: two weights) with the RMSNorm folded in (its
    weight a third staged load), in bf16, compiled for sm_90."""
    out = _cubin("--gemv", timeout=600)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) >= 20 and {r["op"] for r in rows} == {"gemv_swiglu", "gemv_rope"}
    for r in rows:
        # gemv_qkv's cos and sin (libdevice's, as torch's) keep a 32-byte frame for their large-argument reduction
        assert r["stack_bytes"] <= (32 if r["op"] == "gemv_rope" else 0), r
        assert r["shared_bytes"] <= H100_SHARED_BYTES, r
        copies = 4 if r["op"] == "gemv_swiglu" else 3  # x, the weight(s) and the norm's, prologue and loop
        assert (r["async_copies"] >= copies) is (r["STAGES"] > 1), r
        assert (r["l2_prefetches"] > 0) is (r["op"] == "gemv_rope"), r  # the q/k/v form asks for the next weight
        # and streams its own weight past it; Triton's cp.async copies (STAGES > 1) carry no cache hint
        assert (r["evict_first_policies"] > 0) is (r["op"] == "gemv_rope" and r["STAGES"] == 1), r
        assert r["pdl_waits"] == r["pdl_starts"] == 0, r  # plain launches unless asked


def test_one_launch_decode_attention_orders_its_counter_for_sm90():
    """kernels/decode.py's split kernel with the merge in the same launch, compiled for sm_90: one acq_rel atomic
    on the chunk counter (the two-launch form has none), the other programs' chunks loaded past L1, no spill."""
    out = _cubin("--decode", timeout=300)
    rows = {r["op"]: r for r in map(json.loads, out.stdout.splitlines())}
    split = rows["decode_split"]
    assert split["acq_rel_atomics"] == 0 and split["l1_bypassing_loads"] == 0, split
    for one in (rows["decode_one_launch"], rows["decode_one_launch_c16"]):  # 32 chunks merged in 2 rounds, 16 in 1
        assert one["acq_rel_atomics"] == 1 and one["l1_bypassing_loads"] >= 3, one  # maxima, sums, outputs
        assert one["stack_bytes"] == 0 and one["shared_bytes"] <= H100_SHARED_BYTES, one
    assert rows["decode_one_launch"]["merge_rounds"] == 2 and rows["decode_one_launch_c16"]["merge_rounds"] == 1
    assert all(r["pdl_waits"] == r["pdl_starts"] == 0 for r in rows.values()), rows


def test_pdl_launches_load_only_what_no_earlier_launch_writes_before_the_wait_for_sm90():
    """gemv (SwiGLU with the norm folded in; the q/k/v form) and decode attention (split, one launch, merge) as
    programmatic dependent launches, compiled for sm_90: each lets the next launch start and waits once; before the
    wait gemv loads its weights' first columns (gemv.EARLY_ELEMS; whole_config's blocks: all of them) and decode attention asks its cache chunk's keys
    and values into L2, and no store, atomic or async copy comes before it (nor any other load: the early loads
    are masked by the step that lets the next launch start, and x and the cache are loaded in the `go == 0` branch
    after the wait)."""
    out = _cubin("--pdl", timeout=300)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["op"] for r in rows} == {"gemv_swiglu", "gemv_rope", "decode_split", "decode_one_launch",
                                       "decode_one_launch_c16", "decode_merge", "gemv_whole_qkv", "gemv_whole_gate_up",
                                       "gemv_whole_down"}
    for r in rows:
        gemv, whole = r["op"].startswith("gemv"), r["op"].startswith("gemv_whole")
        assert r["pdl"] and r["pdl_waits"] == 1 and r["pdl_starts"] == 1, r
        assert r["memory_ops_before_wait"] == 0 and (r["loads_before_wait"] > 0) is gemv, r
        # the q/k/v form's one prefetch asks for the next weight (after the wait); the split's are the chunk's
        prefetches = {"gemv_swiglu": 0, "gemv_rope": 1, "decode_merge": 0}.get(r["op"], 0 if whole else 2)
        assert r["l2_prefetches"] == prefetches, r
        assert r["stack_bytes"] <= (32 if r["op"] in ("gemv_rope", "gemv_whole_qkv") else 0), r
        # whole_config's blocks: a thread's 32 elements (8192 over 8 warps) in 16-byte loads, no loop's async copies
        assert not whole or (r["loads_before_wait"] == 4 and r["async_copies"] == 0), r
        # the early columns held as loaded until after the wait, not also as fp32 copies (gemv._held): 116-124
        # registers a thread with those, 96 without (triton 3.7.1)
        assert not gemv or whole or r["registers"] <= 104, r


def test_attention_warp_specialization_keeps_only_configs_that_compile_for_sm90():
    """kernels/attention.py's head-dim-128 configs with TMA loads compiled for sm_90: all compile without warp
    specialization; with it, every config the autotuner keeps compiles (the 4-warp ones fail in Triton's
    warp-specialization pass and are pruned)."""
    out = _cubin("--attention", timeout=600)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    plain = [r for r in rows if r["op"] == "attention_tma"]
    kept = [r for r in rows if r["op"] == "attention_tma_ws" and r["kept"]]
    assert plain and all("error" not in r and r["shared_bytes"] <= H100_SHARED_BYTES for r in plain), plain
    assert kept and all("error" not in r for r in kept), kept


def test_norm_op_loads_x_past_l1_for_sm90():
    """The norm op's kernel at 32768 wide (bf16, 32 warps) loads x with ld.global.cg (L2 only), leaving L1 to the
    scale and shift, and only where X_CACHE says so; no spill either way."""
    out = _cubin("--norm-cache", timeout=300)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {(r["op"], r["x_cache"]) for r in rows} == {(op, c) for op in ("rms_norm", "layer_norm") for c in (".cg", "")}
    for r in rows:
        assert (r["l1_bypassing_loads"] > 0) is (r["x_cache"] == ".cg"), r
        assert r["stack_bytes"] == 0, r


def test_mlp_chain_publishes_and_acquires_for_sm90():
    """kernels.mlp_chain's one launch at the 1B Llama's widths, compiled for sm_90: each group's stores published by
    a release atomic (three groups), each wait's looks acquire loads, the workspace read past L1; no spill."""
    out = _cubin("--mlp-chain", timeout=300)
    (r,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert r["release_atomics"] == 3 and r["acquire_loads"] == 4, r  # each of two waits: a first look, then its loop
    assert r["l1_bypassing_loads"] > 0 and r["stack_bytes"] == 0 and r["shared_bytes"] <= H100_SHARED_BYTES, r


def test_layer_chain_publishes_every_group_for_sm90():
    """kernels.layer_chain's one launch at the 1B Llama's shapes, compiled for sm_90: six groups each publishing with
    a release atomic, five waits with their acquire loads; no spill beyond the cos/sin frame gemv_qkv has too."""
    out = _cubin("--layer-chain", timeout=300)
    (r,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert r["release_atomics"] == 6 and r["acquire_loads"] == 10, r
    assert r["stack_bytes"] <= 32 and r["shared_bytes"] <= H100_SHARED_BYTES, r


def test_float_scalars_passed_as_fp64_stay_fp32_math_for_sm90():
    """Inductor passes a user kernel's Python float (eps, a scale) as fp64: each kernel of kernels/ taking one,
    compiled for sm_90 so, truncates it first and does no fp64 arithmetic (the compiled decode step's q/k/v kernel
    did its norm and rotation in fp64: 92 registers against 80 uncompiled, H100, 2026-12-06)."""
    out = _cubin("--fp64-scalars", timeout=600)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    ops = {r["op"] for r in rows}
    assert {"gemv_rope", "gemv_swiglu", "decode_split", "decode_merge", "rms_norm", "layer_norm", "mlp_chain",
            "layer_chain", "attention_tma"} <= ops, ops
    assert [r for r in rows if "error" in r] == []
    assert [(r["op"], r["fp64_ops"]) for r in rows if r["fp64_ops"]] == []


def test_gluon_attention_is_warp_specialized_without_spills_for_sm90():
    """kernels.attention_ws (Gluon) compiled for sm_90 at head dims 64 and 128, causal or not, its consumers in
    ping-pong (at STAGES and DEEP_STAGES) or in step: one warp-specialized region whose partitions move registers
    (setmaxnreg: the loader gives, the consumers take), wgmmas for the scores twice (prologue, loop: D/16 k-steps each) and P V twice (loop, last
    block: 128 keys / 16) in each consumer's code, no spill, within the program's shared memory."""
    from kernels import attention_ws as ws

    out = _cubin("--attention-ws", timeout=300)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {(r["pingpong"], r["head_dim"], r["causal"], r["stages"]) for r in rows} == {
        (p, d, c, st) for p in (False, True) for d in (64, 128) for c in (False, True)
        for st in ((ws.STAGES, ws.DEEP_STAGES[d]) if p else (ws.STAGES,))}
    for r in rows:
        assert r["warp_specialized"] == 1 and r["register_moves"] > 0, r
        consumers = 2 if r["pingpong"] else 1
        assert r["wgmmas"] == consumers * (2 * (r["head_dim"] // 16) + 2 * (128 // 16)), r
        assert r["stack_bytes"] == 0 and r["shared_bytes"] <= H100_SHARED_BYTES, r


def test_gluon_split_attention_is_warp_specialized_without_spills_for_sm90():
    """kernels.attention_split (the last wave split, persistent or not) compiled for sm_90 at head dims 64 and 128,
    at attention_ws.STAGES and DEEP_STAGES: as attention_ws's ping-pong form (one warp-specialized region moving
    registers, the same wgmmas in each consumer's code), its shared memory the query buffers its launcher gives it and
    the ring, plus barriers. At most one value in local memory (at hd128 ptxas keeps one of the piece loop's live-ins
    there: one load a partition, before its loop), none at hd64."""
    from kernels import attention_ws as ws

    out = _cubin("--attention-split", timeout=300)
    rows = {(r["head_dim"], r["stages"], r["persistent"]): r for r in map(json.loads, out.stdout.splitlines())}
    assert set(rows) == {(d, st, p) for d in ws.HEAD_DIMS for st in (ws.STAGES, ws.DEEP_STAGES[d]) for p in (False, True)}
    for (d, stages, persistent), r in rows.items():
        assert r["warp_specialized"] == 1 and r["register_moves"] > 0, r
        assert r["wgmmas"] == 2 * (2 * (d // 16) + 2 * (128 // 16)), r
        assert r["stack_bytes"] <= (8 if d == 128 else 0) and r["shared_bytes"] <= H100_SHARED_BYTES, r
        buffers = (r["query_buffers"] * 2 * 64 + 2 * stages * 128) * d * 2  # query rows of both consumers, the ring
        assert buffers < r["shared_bytes"] <= buffers + 1024, r
        assert r["query_buffers"] == (2 if persistent and (d, stages) != (128, 3) else 1), r


def test_gluon_linear_is_warp_specialized_without_spills_for_sm90():
    """kernels.linear_ws (Gluon) compiled for sm_90, linear + bias + GELU and SwiGLU (GELU with libdevice's
    erf and FAST_GELU's), at STAGES and at DEEP_STAGES: one warp-specialized region moving registers, each consumer
    warpgroup's main loop issuing 128 rows x BLOCK_K 64 of wgmma a k-step (two m64 halves, four k16 steps; twice
    for SwiGLU's two weights), no spill, within the program's shared memory (the deep rings too)."""
    from kernels import linear_ws as ws

    out = _cubin("--linear-ws", timeout=300)
    every = list(map(json.loads, out.stdout.splitlines()))
    wide = {r["op"]: r for r in every if r["block_m"] == 64}
    coop = {r["op"]: r for r in every if r["coop"]}
    rows = {(r["op"], r["fast"], r["stages"]): r for r in every if r["block_m"] == 128 and not r["coop"]}
    assert set(rows) == {("linear_gelu_ws", False, ws.STAGES), ("linear_gelu_ws", True, ws.STAGES),
                         ("swiglu_ws", False, ws.STAGES), ("linear_gelu_ws", True, ws.DEEP_STAGES[False]),
                         ("swiglu_ws", False, ws.DEEP_STAGES[True])}
    for (op, *_), r in rows.items():
        assert r["warp_specialized"] == 1 and r["register_moves"] > 0, r
        assert r["wgmmas"] == 2 * 8 * (2 if op == "swiglu_ws" else 1), r  # two consumers' code
        assert r["stack_bytes"] == 0 and r["shared_bytes"] <= H100_SHARED_BYTES, r
    # WIDE_TILE: 64 rows a warpgroup, one wgmma of N 256 (two of N 128 for SwiGLU) a k16 step, as many registers
    assert {(op, r["block_n"]) for op, r in wide.items()} == {("linear_gelu_ws", 256), ("swiglu_ws", 128)}
    for op, r in wide.items():
        assert r["wgmmas"] == 2 * 4 * (2 if op == "swiglu_ws" else 1), r
        assert r["registers"] == rows[op, op == "linear_gelu_ws", ws.STAGES]["registers"], r
        assert r["stack_bytes"] == 0 and r["shared_bytes"] <= H100_SHARED_BYTES, r
    # COOP: both warpgroups on one tile of 2 x 128 rows, each issuing its 128 rows' wgmmas as in the square tile (two
    # main loops: the shared tiles', then the half tiles'), at COOP_STAGES buffers of 48 KB (x's two halves and the
    # weight blocks), as many registers, no spill
    assert set(coop) == {"linear_gelu_ws", "swiglu_ws"}
    for op, r in coop.items():
        gated = op == "swiglu_ws"
        assert (r["block_m"], r["block_n"], r["stages"]) == (*ws.TILE[gated], ws.COOP_STAGES[gated]), r
        assert r["wgmmas"] == 2 * 2 * 8 * (2 if gated else 1) and r["warp_specialized"] == 1, r
        assert r["registers"] == rows[op, not gated, ws.STAGES]["registers"], r
        assert r["stack_bytes"] == 0 and r["shared_bytes"] <= H100_SHARED_BYTES, r
        ring = ws.COOP_STAGES[gated] * 49152
        assert ring < r["shared_bytes"] <= ring + 2 * 128 * ws.TILE[gated][1] * 2 + 1024, r  # + the output tiles
    # linear_ws.FAST_GELU: GELU's epilogue in fewer instructions than with libdevice's erff
    fast, exact = rows["linear_gelu_ws", True, ws.STAGES], rows["linear_gelu_ws", False, ws.STAGES]
    assert fast["ptx_instructions"] < 0.7 * exact["ptx_instructions"]
    # each buffer more is one more stage of x and weight blocks (32 KB either way) and its two barriers
    for gated, op in ((False, "linear_gelu_ws"), (True, "swiglu_ws")):
        deep, base = rows[op, not gated, ws.DEEP_STAGES[gated]], rows[op, not gated, ws.STAGES]
        more = ws.DEEP_STAGES[gated] - ws.STAGES
        assert more * 32768 <= deep["shared_bytes"] - base["shared_bytes"] <= more * (32768 + 64), (deep, base)
