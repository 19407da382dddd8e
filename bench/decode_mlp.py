"""The 1B Llama's decode step (bf16, batch 1, 2048-entry cache, kernels/' decode attention) compiled as a build's
trial compiles it (kpt.gpu.compile.trial_options: freezing, coordinate-descent tuning), these ways:

  inductor      the MLP left to Inductor (its matrix-vector reductions, norms and residual adds fused in)
  down_gemv     the down projection through kernels/gemv.py (linear_act at one row), gate/up left to Inductor
  swiglu_gemv   gate/up (silu(gate) * up written once) and the down projection both through gemv.py
  fused_layers  every layer through kernels/decode_layer.py (six launches a layer: norms folded into the
                matrix-vector products, q/k/v in one, residuals added in their epilogues, decode attention's
                split and merge kernels)

A variant written NAME@P compiles with decode attention splitting its cache for about P programs
(kernels.decode.TARGET_PROGRAMS, 256 otherwise): fused_layers@128,fused_layers@256 weighs the split kernel's
parallelism against the merge kernel's work. fused_layers+pf has each launch ask the next launch's weight into
L2 (kernels.decode_layer.PREFETCH_PLAN); fused_layers+1 runs decode attention in one launch (each key/value head's
last chunk merges; kernels.decode_layer.ATTENTION_LAUNCHES, 2 by default: +2 says two); fused_layers+chain runs
the output projection, gate/up and down in one launch (kernels/mlp_chain.py: decode_layer.MLP_CHAIN),
fused_layers+layer each whole layer (kernels/layer_chain.py: decode_layer.LAYER_CHAIN); fused_layers+pf+1@128
three at once. +eager captures the step as it is, without torch.compile; +pdl does too, with kernels/' launches
programmatic dependent ones (kernels.modules.swap_decode_pdl: each may start while the one before finishes; only
Triton's own launcher sets that, not a compiled step's); +edges compiles that step (kernels/' PDL code) and makes
the captured graph's edges into those kernels programmatic (kpt.gpu.graph_edges: how the build's trial
kpt_decode_pdl and its AOTInductor package, whose launchers set no launch attribute, get PDL; needs
cuda-bindings). +eN (with +pdl or +edges) has gemv.py's PDL launches load N weight elements a program before
their wait (kernels.gemv.EARLY_ELEMS otherwise): fused_layers+pdl+e4096. +wN (+wNxW) has PDL launches of large
weights load whole rows, N elements a program, before their wait (kernels.gemv.WHOLE_ELEMS, in W warps: WHOLE_WARPS,
8 unless given): fused_layers+pdl+w8192, fused_layers+pdl+w16384x8. A compiled variant runs its module once
eagerly first, as the build's trials do (kernels.pinned): gemv.py's compiles are then offered the eager autotuner's
picks alone (kernels.gemv.PIN); +free compiles without that, Inductor tuning each call site itself.

each replayed as a CUDA graph, timed interleaved (kpt.gpu.bench.compare; and as 32 replays back to back, the host
waiting only at the end: loop_ms_per_step, a generation loop's time per token), with its kernels per call, the
kernels of one layer in launch order, and its logits' largest difference from the eager step's. Says whether the matrix-vector kernel helps inside a compiled step, where
it cannot fuse with its neighbours, before a build spends a trial on it. A variant named twice is compiled
twice (inductor,inductor: how far coordinate-descent tuning alone moves the step, with Inductor's caches off so
the second compile tunes again); --inductor adds options.

    PYTHONPATH=.:shared python3 bench/decode_mlp.py > decode_mlp.json        (needs a CUDA device)
    TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 ... --variants inductor,inductor --inductor coordinate_descent_search_radius=2
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from bench import card

log = logging.getLogger("bench.decode_mlp")
MEASURE_S = 60.0  # what the interleaved timing of the compiled variants takes at the end, with margin


class _MLP(torch.nn.Module):
    """A Llama MLP with the down projection (and, gated, gate/up) forced through kernels/' linear_act."""

    def __init__(self, mlp: torch.nn.Module, gated: bool) -> None:
        super().__init__()
        self.mlp, self.gated = mlp, gated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from kernels import linear_act

        g, u, d = self.mlp.gate_proj, self.mlp.up_proj, self.mlp.down_proj
        if self.gated:
            h = linear_act.linear_act_op(x, g.weight, None, u.weight, None, "silu")
        else:
            h = F.silu(g(x)) * u(x)
        return linear_act.linear_act_op(h, d.weight, None, None, None, "none")


def _graphed(fn: Callable, x: tuple[torch.Tensor, ...], waits: Callable[[str], bool] | None = None,
             ) -> tuple[Callable[[], object], torch.Tensor, int]:
    """(replay, the logits each replay writes, the edges made programmatic): with `waits`, the captured graph's
    edges into the kernels it names are made programmatic ones before it is instantiated (kpt.gpu.graph_edges)."""
    from kpt.gpu import bench, graph_edges

    graph, out = bench.captured(fn, x, keep=waits is not None)
    rewritten = 0
    if waits is not None:
        rewritten = graph_edges.make_programmatic(graph, waits)
        graph.instantiate()
    return graph.replay, out[0], rewritten


def _one_layer(replay: Callable[[], object], layers: int) -> list[list]:
    """[kernel name, us] of one call's second layer-worth of launches (past the embedding's), in launch order."""
    from kpt.gpu import bench

    ks = bench.launches(replay)
    per_layer = max(1, len(ks) // layers)
    return [[name[:120], round(us, 2)] for name, us in ks[per_layer:2 * per_layer]]


@contextlib.contextmanager
def _set(settings: dict[tuple[object, str], object]) -> Iterator[None]:
    """Each (module, name) set to its value (None: left as it is), then back."""
    before = {key: getattr(*key) for key, value in settings.items() if value is not None}
    try:
        for (module, name), value in settings.items():
            if value is not None:
                setattr(module, name, value)
        yield
    finally:
        for (module, name), value in before.items():
            setattr(module, name, value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="inductor,down_gemv,fused_layers")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--budget-s", type=float, default=None,
                    help="seconds for the whole run: variants not compiled by then minus the measuring's share are "
                         "skipped (listed under skipped) and the others measured")
    ap.add_argument("--inductor", nargs="*", default=[], metavar="OPTION=INT",
                    help="Inductor options added to the trial's (integers, e.g. coordinate_descent_search_radius=2)")
    args = card.gpu_args(ap, argv, "decode_mlp")
    if args is None:
        return 2
    started = time.monotonic()
    from kernels import decode, decode_layer, gemv, modules, pick_configs
    from kpt.gpu import bench, graph_edges, models
    from kpt.gpu.compile import trial_options
    from kpt.optimize import inputs as inp

    step, spec = models.MODELS["llama-1b-decode"]("cuda:0")
    step = modules.swap_decode_attention(step.to(torch.bfloat16))
    x = tuple(inp.generate(spec, seed=0, device="cuda:0"))
    layers = len(step.model.layers)
    opts = trial_options(step, x) | {k: int(v) for k, v in (o.split("=", 1) for o in args.inductor)}
    replays, out = {}, {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "options": opts,
                        "command": "python3 bench/decode_mlp.py " + " ".join(argv or sys.argv[1:]),
                        "environment": card.environment()}
    with torch.inference_mode():
        want = step(*x)[0].float()  # eager, the hook's decode attention: what every variant's logits are held to
    asked, kept = args.variants.split(","), []
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 2 * len(asked))
    for i, asked_as in enumerate(asked):
        name = asked_as if asked.count(asked_as) == 1 else f"{asked_as}#{asked[:i].count(asked_as) + 1}"
        if args.budget_s is not None and time.monotonic() - started > args.budget_s - MEASURE_S:
            out.setdefault("skipped", []).append(name)
            log.warning("%s skipped: %.0f s of the %.0f s budget spent", name, time.monotonic() - started, args.budget_s)
            continue
        kind, _, programs = asked_as.partition("@")
        kind, *extras = kind.split("+")
        for layer in step.model.layers:
            inner = getattr(layer.mlp, "mlp", layer.mlp)
            layer.mlp = _MLP(inner, gated=kind == "swiglu_gemv") if kind.endswith("_gemv") else inner
        # A module of its own per variant, and no Dynamo reset: every variant's compiled code (and the frozen
        # weights its captured graph reads) stays alive until the comparison.
        model = modules.swap_decode_layers(step) if kind == "fused_layers" else copy.deepcopy(step)
        model = modules.swap_decode_prefetch(model) if "pf" in extras else model
        model = modules.swap_decode_pdl(model) if "pdl" in extras or "edges" in extras else model
        eager = "eager" in extras or "pdl" in extras
        # +free: no FX graph cache either, which could hand back a pinned variant's compile of the same graph
        compiled = model if eager else torch.compile(
            model, dynamic=False, options=opts | ({"fx_graph_cache": False} if "free" in extras else {}))
        kept.append((model, compiled))
        # +wN or +wNxW: gemv.WHOLE_ELEMS N (and WHOLE_WARPS W, 8 otherwise)
        whole = next(([int(v) for v in (e[1:] + "x8").split("x")[:2]] for e in extras
                      if e[:1] == "w" and e[1:].replace("x", "").isdigit()), None)
        # The module settings the variant's ops and layers read when they are traced, for its compile only.
        settings = {(decode, "TARGET_PROGRAMS"): int(programs) if programs else None,
                    (decode_layer, "ATTENTION_LAUNCHES"): 2 if "2" in extras else 1 if "1" in extras else None,
                    (decode_layer, "MLP_CHAIN"): True if "chain" in extras else None,
                    (decode_layer, "LAYER_CHAIN"): True if "layer" in extras else None,
                    (gemv, "EARLY_ELEMS"): next((int(e[1:]) for e in extras if e[:1] == "e" and e[1:].isdigit()), None),
                    (gemv, "WHOLE_ELEMS"): whole[0] if whole else None, (gemv, "WHOLE_WARPS"): whole[1] if whole else None,
                    (gemv, "PIN"): False if "free" in extras else None}
        try:
            with _set(settings):
                if not eager and "free" not in extras:  # as the build's trials: the eager picks, then the compile
                    pick_configs(model, x)
                waits = graph_edges.named(graph_edges.kernels_of(model)) if "edges" in extras else None
                replays[name], logits, rewritten = _graphed(compiled, x, waits)
        except Exception as e:  # noqa: BLE001 - a variant that fails to compile or capture is this run's finding
            out.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:1000]
            log.exception("%s failed; the other variants are still measured", name)
            continue
        replays[name]()
        torch.cuda.synchronize()
        out.setdefault("max_abs_err", {})[name] = (logits.float() - want).abs().max().item()
        if "edges" in extras:
            out.setdefault("programmatic_edges", {})[name] = rewritten
        out.setdefault("kernels", {})[name] = bench.profile_kernels(lambda r=replays[name]: r(), (), top=8)
        out.setdefault("one_layer", {})[name] = _one_layer(replays[name], layers)
        log.info("%s compiled and captured", name)
    if not replays:  # every variant skipped or failed: what was found is still written
        log.error("no variant to time (skipped: %s; failed: %s)", out.get("skipped", []), list(out.get("errors", {})))
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
        return 1
    out["p50_ms"] = bench.compare(replays, reps=args.reps, warmup=10)
    # Replays enqueued back to back, the host waiting only at the end: a generation loop's time per token.
    out["loop_ms_per_step"] = bench.per_step_ms(replays, (), lambda inputs, outputs: inputs, steps=32,
                                                reps=max(3, args.reps // 20))
    sys.stdout.write(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
