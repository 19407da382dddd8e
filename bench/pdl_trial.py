"""The 1B Llama decode step's PDL trial alone, as its O3 build runs it, without the build's other trials.

The build (bench/h100.py warm --variants kpt_O3) reaches this trial after about 700 s (the quantize trial, then
custom_kernels' first round, which keeps kernels/' decode layers, then the prefetch trial); this runs the same steps
directly: O3's passes before quantize (reduced precision), kernels/ loaded by file path as the build loads it
(kpt.gpu.passes.kernel_candidates), its decode-layer swap applied without a trial, then kpt_decode_pdl timed against
it by kpt.gpu.passes.time_trial, the build's trial (both compiled with its options, replayed as CUDA graphs, the
trial's edges into its waiting kernels made programmatic: kpt.gpu.graph_edges logs the graph's kernel names where
none is).

    PYTHONPATH=.:shared:services/nvidia python3 bench/pdl_trial.py --out $OUT/pdl-trial.json   (needs a CUDA device)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time

import torch

from bench import card

log = logging.getLogger("bench.pdl_trial")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON of the trial's times and edges")
    ap.add_argument("--repeat", type=int, default=1,
                    help="time the trial this many times in this process, each after the first over the compile "
                         "caches (Inductor's, Triton's) the first wrote, as a build's later trials find them")
    args = card.gpu_args(ap, argv, "pdl_trial")
    if args is None:
        return 2
    from bench import h100
    from kpt.gpu import passes
    from kpt.optimize import passes as opt_passes

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kpt-pdl-") as workdir:
        work, configs = h100.o3_work("llama-1b-decode", workdir)
        for cfg in configs[:[c.name for c in configs].index("quantize")]:
            opt_passes.apply(cfg, work, "LEVEL_O3")
        candidates = passes.kernel_candidates()
        if isinstance(candidates, str):
            log.error("no kernels/: %s", candidates)
            return 2
        x = work.example()
        swapped, module = {}, work.module
        for name in ("kpt_decode_layers", "kpt_decode_pdl"):  # the swap the build keeps first, then the trial's
            offered = dict(candidates(module, work.device, x))
            if name not in offered:
                log.error("kernels/ offers no %s here (offered: %s)", name, sorted(offered))
                return 1
            module = swapped[name] = offered[name](module)
        base, trial = swapped["kpt_decode_layers"], swapped["kpt_decode_pdl"]
        log.info("prepared in %.0f s; timing the trial", time.monotonic() - started)
        runs = []
        for _ in range(max(1, args.repeat)):
            t0 = time.monotonic()
            times = passes.time_trial(base, trial, x)
            runs.append({"times": times, "trial_s": round(time.monotonic() - t0, 1)})
            log.info("trial %d: %s", len(runs), json.dumps(runs[-1]))
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, **runs[0],
           "repeats": runs[1:], "wall_s": round(time.monotonic() - started, 1),
           "command": "python3 bench/pdl_trial.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    log.info("%s", json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
