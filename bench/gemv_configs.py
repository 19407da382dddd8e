"""Each autotune config of kernels/gemv.py at the 1B Llama's four decode shapes (q/k/v with the input norm, the
output projection with the residual, gate/up with the post-attention norm, down with the residual), as the step
meets them: one launch a layer, each on weights of its own (no launch finds its bytes in L2), graph-replayed.
Beside each shape: the autotuner's own pick (timed one launch at a time after an L2 flush) and the same bytes read
by a kernel that only sums (bench/read_skeleton.py's); the autotuned launches with EARLY weight elements a program
loaded before its loop, and on sm_90+ as programmatic dependent launches waiting first (early0) or after those
loads (gemv.EARLY_ELEMS: what PDL launches load by default); gemv.whole_config's blocks (a program's whole rows
loaded before its loop), plain and as PDL launches (what gemv.WHOLE_ELEMS switches on). Says how far each matrix-vector launch is from a pure
read of its bytes, whether another config, or the autotuner's pick, streams faster inside the step, and what
overlapping the launches gains at what cost in registers.

    PYTHONPATH=.:shared python3 bench/gemv_configs.py > gemv_configs.json        (needs a CUDA device)
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from collections.abc import Callable

import torch

from bench import card

log = logging.getLogger("bench.gemv_configs")
EARLY = (2048, 4096, 8192)  # weight elements a program loads before its loop (before its wait, with PDL)
WHOLE = (8192, 16384)  # gemv.whole_config's elements a program


def shapes(step: torch.nn.Module) -> dict[str, tuple[int, int, bool]]:
    """launch -> (N, K, gated) of kernels/decode_layer.py's matrix-vector launches for a LlamaDecodeStep."""
    a, m = step.model.layers[0].self_attn, step.model.layers[0].mlp
    qkv = sum(p.weight.shape[0] for p in (a.q_proj, a.k_proj, a.v_proj))
    return {"qkv": (qkv, a.q_proj.weight.shape[1], False), "o": tuple(a.o_proj.weight.shape) + (False,),
            "gate_up": tuple(m.gate_proj.weight.shape) + (True,), "down": tuple(m.down_proj.weight.shape) + (False,)}


def forced(kernel: object, cfg: object) -> Callable[[object], object]:
    """A `launch` for kernels.gemv.run that launches the unautotuned kernel with cfg's meta-parameters."""
    class _Launch:
        def __getitem__(self, grid: Callable) -> Callable:
            return lambda *a, **kw: kernel[grid](*a, **kw, **cfg.all_kwargs())

    return lambda _autotuner: _Launch()


def one_shape(name: str, n: int, k: int, gated: bool, layers: int, eps: float, reps: int) -> dict:
    """The shape's row of the output: each config's launches (and the autotuner's, and the pure read) timed."""
    import triton

    from bench.read_skeleton import graphed, read_kernel
    from kernels import gemv
    from kernels._common import ACTS
    from kpt.gpu import bench

    dev, bf = "cuda", torch.bfloat16
    ws = [(torch.randn(n, k, device=dev, dtype=bf) / k ** 0.5,
           torch.randn(n, k, device=dev, dtype=bf) / k ** 0.5 if gated else None) for _ in range(layers)]
    x, g = torch.randn(1, k, device=dev, dtype=bf), torch.ones(k, device=dev, dtype=bf)
    res, outs = torch.randn(1, n, device=dev, dtype=bf), torch.empty(1, n, device=dev, dtype=bf)
    norm = name in ("qkv", "gate_up")
    blobs = [torch.empty(n * k * (2 if gated else 1), device=dev, dtype=bf).normal_() for _ in range(layers)]
    sink = torch.empty(blobs[0].numel() // 8192 + 1, dtype=torch.float32, device=dev)

    def chain(how: Callable[[object], object], pdl: bool = False, early: int | None = None,
              whole: int | None = None) -> Callable[[], None]:
        def run() -> None:
            for w, w2 in ws:
                gemv.run(how, x, w, w2 if gated else w, w, w, outs, False, ACTS["silu" if gated else "none"], gated,
                         g if norm else None, None if norm else res, eps, pdl=pdl, early=early, whole=whole)
        return run

    read = read_kernel()

    def reads() -> None:  # a launch's bytes (both weights gated) in one launch
        for t in blobs:
            read[(triton.cdiv(t.numel(), 8192),)](t, sink, t.numel(), BLOCK=8192, num_warps=8)

    gemv._gemv.cache.clear()  # the shape's pick is found alone, timed here (not an earlier run's from disk)
    gemv._gemv.cache_results = False
    gemv.PICKS.clear()
    fns = {"autotuned": graphed(chain(lambda kernel: kernel))}  # the autotuner itself (no wrap_triton outside a trace)
    picked = [str(c) for c in gemv._gemv.cache.values()]
    # the same launches with their first weight elements loaded early (gemv.EARLY_ELEMS): before the loop, and as
    # programmatic dependent launches before their wait, at each count
    fns |= {f"autotuned_early{e}": graphed(chain(lambda kernel: kernel, early=e)) for e in EARLY}
    if torch.cuda.get_device_capability()[0] >= 9:
        fns |= {f"autotuned_pdl_early{e}": graphed(chain(lambda kernel: kernel, pdl=True, early=e)) for e in (0, *EARLY)}
    # gemv.whole_config's blocks (each program's whole rows loaded before its loop), and as PDL launches
    for e in WHOLE:
        if gemv.whole_config(n, k, gated, None, e) is not None:
            fns[f"whole{e}"] = graphed(chain(lambda kernel: kernel, whole=e))
            if torch.cuda.get_device_capability()[0] >= 9:
                fns[f"pdl_whole{e}"] = graphed(chain(lambda kernel: kernel, pdl=True, whole=e))
    for cfg in gemv.fits(gemv._GPU, n, k):  # every config that fits, not only the autotuner's
        label = f"n{cfg.kwargs['BLOCK_N']}_k{cfg.kwargs['BLOCK_K']}_w{cfg.num_warps}_s{cfg.kwargs['STAGES']}"
        try:
            fns[label] = graphed(chain(forced(gemv._gemv_kernel, cfg)))
        except Exception as e:  # noqa: BLE001 - a config that fails to compile is this run's finding
            log.warning("%s %s: %s", name, label, e)
    fns["read_b8192"] = graphed(reads)
    ms = bench.compare(fns, reps=reps, warmup=5)
    nbytes = blobs[0].numel() * blobs[0].element_size()
    return {"N": n, "K": k, "gated": gated, "bytes_a_launch": nbytes, "autotuned_pick": picked,
            "graph_us_a_launch": {lb: round(v * 1e3 / layers, 2) for lb, v in ms.items()},
            "device_us_a_launch": {lb: round(statistics.median(t for _, t in bench.launches(fn)), 2)
                                   for lb, fn in fns.items()},
            "tbs_graph": {lb: round(nbytes * layers / (v * 1e-3) / 1e12, 3) for lb, v in ms.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=0, help="launches a shape (0: the model's layer count)")
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--only", default="", help="comma-separated launches (qkv, o, gate_up, down); all by default")
    args = card.gpu_args(ap, argv, "gemv_configs")
    if args is None:
        return 2
    import triton

    from kpt.gpu import models

    step, _ = models.MODELS["llama-1b-decode"]("meta")  # shapes only
    layers = args.layers or len(step.model.layers)
    eps = step.model.layers[0].input_layernorm.variance_epsilon
    out: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                 "command": "python3 bench/gemv_configs.py " + " ".join(argv or sys.argv[1:]), "layers": layers,
                 "shapes": {}, "environment": card.environment()}
    for name, (n, k, gated) in shapes(step).items():
        if args.only and name not in args.only.split(","):
            continue
        out["shapes"][name] = one_shape(name, n, k, gated, layers, eps, args.reps)
        log.info("%s: %s", name, json.dumps(out["shapes"][name]["tbs_graph"]))
        torch.cuda.empty_cache()
    sys.stdout.write(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
