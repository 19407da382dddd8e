"""The ceiling of the 1B Llama's decode step as kernels/decode_layer.py launches it: the bytes each of its launches
reads (q/k/v with the input norm, decode attention's split over the cache up to the position and its merge over
the workspace, the output projection, gate/up with the post-attention norm, down, the head with the final norm),
read by a kernel that does nothing else (a sum a program), one launch each, graph-replayed. Beside it the same
bytes in one launch, and the card's copy (read + write, eager as bench/h100.py's probe) that the decode goal is
stated against. What it says: how much of the step's distance from the copy rate is the launch structure itself
(many launches of 0.3-46 MB, each starting empty and ending in a tail) and how much is the kernels'.

    PYTHONPATH=.:shared python3 bench/read_skeleton.py > read_skeleton.json        (needs a CUDA device)
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable

import torch

from bench import card

log = logging.getLogger("bench.read_skeleton")
BLOCKS = (4096, 8192, 16384)  # elements a program reads (bf16): each a skeleton of its own, the fastest counted


def plan(step: torch.nn.Module, pos: int, chunks: int) -> list[tuple[str, int]]:
    """(launch, bytes it reads) in kernels/decode_layer.py's order for a kpt.gpu.models.LlamaDecodeStep at batch 1,
    the cache of 2 x [Hkv, S, D] a layer read up to pos (the new entry included) and the merge's workspace of
    [Hq, chunks, D + 2] fp32 (chunks: kernels.decode.splits's, which main() asks; kernels/ is not imported here,
    so that tests of this plan leave Triton's interpreter setting to the kernel tests). The weights' launches read
    roofline.step_bytes's bytes."""
    size = next(step.parameters()).element_size()
    hkv, hq, d = step.kv_heads, step.heads, step.head_dim

    def nbytes(*mods: torch.nn.Module) -> int:
        return sum(p.numel() * p.element_size() for m in mods for p in m.parameters())

    out: list[tuple[str, int]] = []
    for layer in step.model.layers:
        a, m = layer.self_attn, layer.mlp
        out += [("qkv", nbytes(layer.input_layernorm, a.q_proj, a.k_proj, a.v_proj)),
                ("split", 2 * hkv * (pos + 1) * d * size),
                ("merge", hq * chunks * (d + 2) * 4),
                ("o", nbytes(a.o_proj)),
                ("gate_up", nbytes(layer.post_attention_layernorm, m.gate_proj, m.up_proj)),
                ("down", nbytes(m.down_proj))]
    return out + [("head", nbytes(step.model.norm, step.lm_head))]


@functools.cache
def read_kernel():  # noqa: ANN201 - a Triton kernel (Triton is imported here: tests of plan() leave it alone)
    """The kernel that only reads: a program sums BLOCK elements of src into out[program]. PDL (launched with
    launch_pdl; kernels/_common.py's steps): 1 waits for the launch before, then reads (what overlapping launches
    hide of the boundary alone); 2 reads, then waits before its store (a weight read before the wait, as no
    weight depends on an earlier launch: the reads overlap the launch before)."""
    import triton
    import triton.language as tl

    from kernels._common import pdl_start, pdl_wait, pdl_wait_for

    @triton.jit
    def _read(src, out, n, BLOCK: tl.constexpr, PDL: tl.constexpr = 0):
        go = 0
        if PDL == 1:
            go = pdl_wait(pdl_start())
        elif PDL == 2:
            go = pdl_start()
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK) + go
        total = tl.sum(tl.load(src + offs, mask=offs < n, other=0.0).to(tl.float32))
        if PDL == 2:  # the wait takes the sum: it comes after the reads are in
            go = pdl_wait_for(total, go)
        tl.store(out + tl.program_id(0) + go, total)

    return _read


def graphed(fn: Callable[[], object]) -> Callable[[], None]:
    """fn captured as a CUDA graph (kpt.gpu.bench.captured: warmed up outside the capture): its replay."""
    from kpt.gpu import bench

    return bench.captured(fn, ())[0].replay


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pos", type=int, default=1024, help="the new token's position (the cache read up to it)")
    ap.add_argument("--reps", type=int, default=200)
    args = card.gpu_args(ap, argv, "read_skeleton")
    if args is None:
        return 2
    import triton

    from kernels import decode
    from kpt.gpu import bench, models

    _read = read_kernel()

    step, _ = models.MODELS["llama-1b-decode"]("meta")  # shapes only: no 1B weights initialized on the CPU
    chunks = decode.splits(1, step.kv_heads, models.DECODE_CONTEXT, 64)[0]  # 64-key blocks: the split kernel's
    launches = plan(step.to(torch.bfloat16), args.pos, chunks)
    del step
    # A buffer of its own per launch (no launch finds another's bytes in L2), and one holding them all
    bufs = [torch.empty(n // 2, dtype=torch.bfloat16, device="cuda").normal_() for _, n in launches]
    whole = torch.empty(sum(b.numel() for b in bufs), dtype=torch.bfloat16, device="cuda").normal_()
    sink = torch.empty(whole.numel() // min(BLOCKS) + 1, dtype=torch.float32, device="cuda")

    def reads(tensors: list[torch.Tensor], block: int, pdl: int = 0) -> Callable[[], None]:
        def run() -> None:
            for t in tensors:
                _read[(triton.cdiv(t.numel(), block),)](t, sink, t.numel(), BLOCK=block, PDL=pdl, num_warps=8,
                                                        **({"launch_pdl": True} if pdl else {}))
        return run

    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    fns = {f"skeleton_b{b}": graphed(reads(bufs, b)) for b in BLOCKS}
    fns |= {f"one_launch_b{b}": graphed(reads([whole], b)) for b in BLOCKS}
    # The launches as programmatic dependent ones (sm_90+): waiting first, then reading before the wait
    if torch.cuda.get_device_capability()[0] >= 9:
        fns |= {f"skeleton_pdl_wait_first_b{b}": graphed(reads(bufs, b, 1)) for b in BLOCKS}
        fns |= {f"skeleton_pdl_read_first_b{b}": graphed(reads(bufs, b, 2)) for b in BLOCKS}
    # Eager, as bench/h100.py's roofline probe: captured, the copy is a graph memcpy node, 2.44 TB/s against the
    # probe's 2.99 on the H100 (2026-12-06)
    fns["copy_1GiB"] = lambda: dst.copy_(src)
    ms = bench.compare(fns, reps=args.reps, warmup=10)
    step_bytes = sum(n for _, n in launches)
    weights = sum(n for name, n in launches if name not in ("split", "merge"))
    copy_tbs = 2 * src.numel() / (ms["copy_1GiB"] * 1e-3) / 1e12
    rates = {k: step_bytes / (v * 1e-3) / 1e12 for k, v in ms.items() if k != "copy_1GiB"}
    best = min((k for k in ms if k.startswith("skeleton_b")), key=ms.get)
    # The second layer's launches of the fastest skeleton, each beside what bench/decode_mlp.py's one_layer shows
    layer = [(name, round(us, 2)) for (name, _), (_, us) in zip(launches[6:12], bench.launches(fns[best])[6:12],
                                                                 strict=True)]
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "command": "python3 bench/read_skeleton.py " + " ".join(argv or sys.argv[1:]),
           "environment": card.environment(),
           "launches": len(launches), "step_bytes": step_bytes, "weight_bytes": weights,
           "bytes_by_launch": dict(launches[:6]) | dict(launches[-1:]),
           "p50_ms": {k: round(v, 4) for k, v in ms.items()}, "tbs": {k: round(v, 3) for k, v in rates.items()},
           "copy_tbs": round(copy_tbs, 3),
           "fraction_of_copy": {k: round(v / copy_tbs, 4) for k, v in rates.items()},
           "best_skeleton": best, "one_layer_us": layer,
           # the goal counts the weights alone (kpt.gpu.roofline.step_bytes), not the cache or the workspace
           "goal_70pct_ms": round(weights / (0.7 * copy_tbs * 1e12) * 1e3, 4)}
    sys.stdout.write(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
