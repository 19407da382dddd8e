"""Whether a kernel trial whose CUDA graph capture failed leaves the process unable to capture the next trial.

The 1B Llama's O3 builds (H100, 2026-12-06 to 2026-12-07) timed the int8 quantize trial eagerly (its trial model
"cannot be captured": operation not permitted when stream is capturing), and then the first custom_kernels round's
*base*, the plain bf16 model that captures everywhere else, failed the same way and was timed eagerly too. This
reproduces that order on a small bf16 MLP with the build's own functions: kpt.gpu.passes.time_trial of the MLP
against its torchao int8 weight-only copy (the quantize pass's config), then of two fresh copies of the MLP, then
the same after torch.cuda.empty_cache(). Each step's "graphs" (1: both captured) goes to the JSON as it is done.
Since kpt.gpu.runtime.capturing tidies a failed capture's surroundings (cuBLAS workspaces dropped, the caller's
stream put back) and each GraphedRunner captures on its own stream, "plain after it" with graphs 1 says that is
enough; graphs 0 that something else is left behind.

    PYTHONPATH=.:shared:services/nvidia:/tmp/site python3 bench/capture_probe.py --out $OUT/capture-probe.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time

import torch

from bench import card

log = logging.getLogger("bench.capture_probe")


def mlp(width: int = 2048, layers: int = 4) -> torch.nn.Module:
    parts: list[torch.nn.Module] = []
    for _ in range(layers):
        parts += [torch.nn.Linear(width, width, bias=False), torch.nn.SiLU()]
    return torch.nn.Sequential(*parts).to("cuda", torch.bfloat16).eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON of each step's times")
    args = card.gpu_args(ap, argv, "capture_probe")
    if args is None:
        return 2
    from torchao.quantization import Int8WeightOnlyConfig, PerRow, quantize_

    from kpt.gpu import passes

    base = mlp()
    x = (torch.randn(1, 2048, device="cuda", dtype=torch.bfloat16),)
    int8 = copy.deepcopy(base)
    quantize_(int8, Int8WeightOnlyConfig(granularity=PerRow(), set_inductor_config=False))

    def plain(empty_cache: bool = False) -> dict:
        if empty_cache:
            torch.cuda.empty_cache()
        return passes.time_trial(copy.deepcopy(base), copy.deepcopy(base), x)

    steps = [("int8 trial", lambda: passes.time_trial(base, int8, x)), ("plain after it", plain),
             ("plain after empty_cache", lambda: plain(empty_cache=True))]
    out: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "steps": []}
    for name, step in steps:
        t0 = time.monotonic()
        try:
            times = step()
        except RuntimeError as e:  # a CUDA error (torch.AcceleratorError is one): recorded, and the next step runs
            times = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        out["steps"].append({"step": name, "times": times, "s": round(time.monotonic() - t0, 1)})
        log.info("%s: %s", name, json.dumps(out["steps"][-1]))
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
