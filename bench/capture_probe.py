"""Whether a kernel trial whose CUDA graph capture failed leaves the process unable to capture the next trial.

The 1B Llama's O3 builds (H100, 2026-12-06 to 2026-12-07) timed the int8 quantize trial eagerly (its trial model
"cannot be captured": operation not permitted when stream is capturing), and then the first custom_kernels round's
*base*, the plain bf16 decode step, failed the same way and was timed eagerly too; the bf16-only build, with no
failed capture before it, had captured that plain step (H100, 2026-12-05). This reproduces that order with the
build's own functions (kpt.gpu.passes.time_trial): on a small Llama decode step (kpt.gpu.models.LlamaDecodeStep),
the plain step against a copy (nothing failed yet), then against its torchao int8 weight-only copy (the quantize
pass's config), then the plain step again; then the same order on a bf16 MLP, and the plain MLP once more after
torch.cuda.empty_cache(). Each step's "graphs" (1: both captured) goes to the JSON as it is done.

Answered (H100, 2026-12-08): nothing was left behind; the 1B step's trials were compiled a third time inside the
capture (GraphedRunner's copies were inference tensors beside the caller's bound ordinary ones, and a compiled
model's guards include that), and Inductor's constant folding read a value to the host there. The copies now keep
the caller's kind (kpt.gpu.runtime.copy_like); over that fix `--llama-1b` captured every trial.

kpt.gpu.runtime.capturing also tidies what a failed capture leaves (cuBLAS workspaces, the caller's stream, the
allocator's routing into the graph's pool, the CUDA generator's capture mode) and each GraphedRunner captures on its
own stream: a plain step after a failed one with graphs 1 says that is enough; graphs 0 that something else is left
behind.

    PYTHONPATH=.:shared:services/nvidia:/tmp/site python3 bench/capture_probe.py --out $OUT/capture-probe.json
    ... bench/capture_probe.py --llama-1b --out $OUT/capture-probe-1b.json   (the 1B decode build's own passes)
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tempfile
import time
from typing import Callable

import torch

from bench import card

log = logging.getLogger("bench.capture_probe")


def mlp(width: int = 2048, layers: int = 4) -> torch.nn.Module:
    parts: list[torch.nn.Module] = []
    for _ in range(layers):
        parts += [torch.nn.Linear(width, width, bias=False), torch.nn.SiLU()]
    return torch.nn.Sequential(*parts).to("cuda", torch.bfloat16).eval()


def decode_step() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """A small Llama decode step in bf16 on the GPU (its rotary frequencies kept in fp32, as the build casts it)
    and its inputs (a 256-entry bf16 cache)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from kpt.gpu.models import LlamaDecodeStep, decode_spec
    from kpt.optimize import inputs as inp
    from kpt.optimize.graph_passes import cast_down

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=2, vocab_size=4096, attn_implementation="sdpa", use_cache=False)
    step = cast_down(LlamaDecodeStep(LlamaForCausalLM(cfg).eval()).eval().to("cuda"), torch.bfloat16)
    return step, tuple(inp.generate(decode_spec(cfg, context=256), seed=1, device="cuda"))


def int8(module: torch.nn.Module) -> torch.nn.Module:
    from torchao.quantization import Int8WeightOnlyConfig, PerRow, quantize_

    q = copy.deepcopy(module)
    quantize_(q, Int8WeightOnlyConfig(granularity=PerRow(), set_inductor_config=False))
    return q


def steps() -> list[tuple[str, Callable[[], dict]]]:
    from kpt.gpu import passes

    step, sx = decode_step()
    base = mlp()
    mx = (torch.randn(1, 2048, device="cuda", dtype=torch.bfloat16),)

    def plain(m: torch.nn.Module, x: tuple, empty_cache: bool = False) -> dict:
        if empty_cache:
            torch.cuda.empty_cache()
        return passes.time_trial(copy.deepcopy(m), copy.deepcopy(m), x)

    return [("decode plain, nothing failed yet", lambda: plain(step, sx)),
            ("decode int8 trial", lambda: passes.time_trial(step, int8(step), sx)),
            ("decode plain after it", lambda: plain(step, sx)),
            ("mlp int8 trial", lambda: passes.time_trial(base, int8(base), mx)),
            ("mlp plain after it", lambda: plain(base, mx)),
            ("mlp plain after empty_cache", lambda: plain(base, mx, empty_cache=True))]


def llama_1b_steps() -> list[tuple[str, Callable[[], dict]]]:
    """The 1B Llama decode build's own order, with its own passes: O3's passes up to and including quantize (its int8
    trial against the bf16 step with kernels/' decode layers, kpt.gpu.quantize), then the step it leaves timed
    against a copy of itself, as custom_kernels' first round times its base. Where a capture fails,
    kpt.gpu.passes logs the frames that raised first."""
    from bench import h100
    from kpt.gpu import passes
    from kpt.optimize import passes as opt_passes

    work, configs = h100.o3_work("llama-1b-decode", tempfile.mkdtemp(prefix="kpt-capture-probe-"))
    upto = [c.name for c in configs].index("quantize")

    def quantize() -> dict:
        for cfg in configs[:upto + 1]:
            outcome = opt_passes.apply(cfg, work, "LEVEL_O3")
            log.info("%s: %s", cfg.name, outcome)
        return {"quantize": str(outcome)[:400]}

    def plain() -> dict:
        return passes.time_trial(work.module, copy.deepcopy(work.module), work.example())

    return [("llama-1b O3 passes up to quantize", quantize), ("llama-1b plain after it", plain)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON of each step's times")
    ap.add_argument("--llama-1b", action="store_true",
                    help="the 1B Llama decode build's passes up to quantize, then its step (llama_1b_steps), instead "
                         "of the small models")
    args = card.gpu_args(ap, argv, "capture_probe")
    if args is None:
        return 2
    out: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "steps": []}
    for name, step in (llama_1b_steps() if args.llama_1b else steps()):
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
