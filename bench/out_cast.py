"""An LM head's fp32 logits on the GPU: a bf16 GEMM followed by a cast kernel against one GEMM that writes fp32
(torch.mm's out_dtype, what kpt.gpu.casts makes the compiled package call). Both timed interleaved with CUDA
events (kpt.gpu.bench.measure) over the same operands; prints one JSON line per shape.

    python3 bench/out_cast.py [--shape ROWSxKxN ...]

The default shapes: GPT-2's LM head at b8 s512 (50257 wide, as the model has it, and padded to 50264, as Inductor's
pad_mm pads a plain mm) and Llama-3.2-1B's at a 2048-token prefill.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import torch

from kpt.gpu import bench as gpu_bench
from kpt.optimize import bench

log = logging.getLogger("bench.out_cast")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", action="append", type=_shape, help="ROWSxKxN (repeatable)")
    p.add_argument("--iters", type=int, default=200)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not torch.cuda.is_available():
        log.error("needs a CUDA device")
        return 2
    for rows, k, n in args.shape or SHAPES:
        sys.stdout.write(json.dumps(_row(rows, k, n, args.iters)) + "\n")
    return 0


SHAPES = ((4096, 768, 50257), (4096, 768, 50264), (2048, 2048, 128256))


def _shape(text: str) -> tuple[int, int, int]:
    try:
        rows, k, n = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not ROWSxKxN") from e
    return rows, k, n


def _row(rows: int, k: int, n: int, iters: int) -> dict:
    a = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    cands = {"gemm_bf16_then_cast": lambda a, w: torch.mm(a, w.t()).float(),
             "gemm_writes_fp32": lambda a, w: torch.mm(a, w.t(), out_dtype=torch.float32)}
    err = (cands["gemm_writes_fp32"](a, w) - cands["gemm_bf16_then_cast"](a, w)).abs().max().item()
    settings = bench.Settings(warmup_iters=10, min_iters=iters, max_iters=iters, time_budget_s=20.0)
    times = gpu_bench.measure(cands, [(a, w)], settings)
    row = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows, "k": k, "n": n,
           "max_abs_diff": err}
    for name, ts in times.items():
        ts = sorted(ts)
        row[f"{name}_p50_ms"] = round(bench.percentile(ts, 0.5), 4)
        row[f"{name}_p99_ms"] = round(bench.percentile(ts, 0.99), 4)
    row["ratio_p50"] = round(row["gemm_bf16_then_cast_p50_ms"] / row["gemm_writes_fp32_p50_ms"], 3)
    return row


if __name__ == "__main__":
    sys.exit(main())
