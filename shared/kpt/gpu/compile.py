"""AOTInductor for the GPU: the candidate becomes model.aoti.pt2 built for this device.

Compared with kpt.optimize.inductor.InductorAOT (the CPU pass) it adds what GPUs need:
  - the attention backend order SdpaBackend chose, active while exporting and compiling (the
    choice of fused kernel is made when scaled_dot_product_attention is decomposed, at compile);
  - max-autotune for GEMMs and convolutions within a compile-time budget (ATen/cuBLAS stays one of
    the candidates, so a tuned matmul is never slower than the library's by the autotuner's measure);
  - coordinate-descent tuning when the graph has matrix-vector products (M=1, decode): Inductor then
    turns them into reduction kernels that reach memory bandwidth (its mm decomposition needs it);
  - attention masks torch.export materializes where the eager model has none (all true, or causal) dropped or
    made is_causal (kpt.gpu.masks), so the fused attention backends can take the calls, and the fp32 cast of a
    bf16/fp16 output done by the GEMM that produces it (kpt.gpu.casts; both through kpt.gpu.exported);
  - the package cache of kpt.gpu.cache: an identical program compiled before is copied, not rebuilt;
  - on a GPU, a new package is loaded and run once in a fresh process before anything else loads it
    (kpt.gpu.runtime.check_in_fresh_process): one that crashes the loader fails this pass, and so its level,
    instead of the job's process. Only packages that passed are stored in the cache.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kpt import settings
from kpt.errors import cause
from kpt.gpu import cache, casts, epilogues, runtime
from kpt.gpu.exported import export_for_compile
from kpt.gpu.passes import attention_context, attention_order
from kpt.optimize.inductor import link_options
from kpt.optimize.passes import Artifact, Outcome, PassConfig, Work, register

log = logging.getLogger(__name__)
aten = torch.ops.aten

_GEMMS = {aten.mm.default, aten.mm.dtype, aten.addmm.default, aten.bmm.default, aten.baddbmm.default, aten.linear.default,
          aten.matmul.default, aten.convolution.default, aten.conv2d.default, aten._scaled_mm.default,
          aten._int_mm.default}
# Estimated autotuning cost per distinct GEMM/convolution problem: precompiling ~10-20 Triton configs
# on the host's cores and timing them. An estimate for the budget check only; every compile reports
# the time it really took (PassReport.seconds, docs/benchmarks/h100.md), which is what to tune it by.
AUTOTUNE_S_PER_PROBLEM = 6.0
# fp8 GEMMs (aten._scaled_mm) are another matter: torch 2.11 tries 106 configs for each. On the H200, beside
# four other builds, one such problem took 74-201 s to tune (median 144 s over six: the 1B Llama's prefill and
# ViT-B/16 at O3, docs/benchmarks/h100-runs/*2026-12-03*), and cuBLAS's _scaled_mm won four of the six.
AUTOTUNE_S_PER_SCALED_PROBLEM = 120.0
QUANTIZED = ("int8", "fp8", "int4")  # precisions whose packages may call torchao's operators


def _left_rows(target: object, shapes: list) -> int | None:
    """Rows of the left operand of a matmul-like op given its operands' shapes (None for convolutions and
    unknown shapes); a symbolic dim counts as "not 1"."""
    idx = 1 if target in (aten.addmm.default, aten.baddbmm.default) else 0
    if target in (aten.convolution.default, aten.conv2d.default) or len(shapes) <= idx or not shapes[idx]:
        return None
    rows = 1
    for d in shapes[idx][:-1]:
        rows *= d if isinstance(d, int) else 2
    return int(rows)


def _rows(node: torch.fx.Node) -> int | None:
    """Rows of the left operand of a matmul-like node."""
    return _left_rows(node.target, [getattr(getattr(a, "meta", {}).get("val"), "shape", None) for a in node.args])


class _GemvSeen(TorchDispatchMode):
    """Notes whether a run calls a matrix-vector product (a GEMM whose left operand has one row)."""

    seen = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _GEMMS and _left_rows(func, [getattr(a, "shape", None) for a in args]) == 1:
            self.seen = True
        return func(*args, **(kwargs or {}))


def trial_options(module: torch.nn.Module, x: tuple[torch.Tensor, ...]) -> dict:
    """torch.compile options for timing module as the build would compile it: freezing, and coordinate-descent
    tuning where one eager run of it calls a matrix-vector product (auto, as _decide; no max-autotune: a trial
    times a choice, not the GEMM tuning). Without them a decode step's int8 trial measured 23.5 ms against
    bf16's 2.6 ms, where the built int8 packages took 1.34-1.67 ms (H200, 2026-12-04): Inductor's
    matrix-vector path needs the tuning. With them it measured bf16 2.104 -> int8 1.987 ms and kept int8, whose
    package then ran slower than O3 without quantization (1.375 against 1.244 ms; its kernel trials had failed
    to compile, so kernels/' norms stayed): a trial ranks choices, it does not predict the package's time."""
    mode = _GemvSeen()
    with torch.inference_mode(), mode:
        module(*x)
    return {"freezing": True, "coordinate_descent_tuning": mode.seen}


class Problems(NamedTuple):
    """Distinct GEMM/conv problems in a program: how many, how many are matrix-vector products, how many are
    fp8 (aten._scaled_mm)."""

    count: int
    gemv: int = 0
    scaled: int = 0

    def tuning_s(self) -> float:
        return (self.count - self.scaled) * AUTOTUNE_S_PER_PROBLEM + self.scaled * AUTOTUNE_S_PER_SCALED_PROBLEM


def gemm_problems(ep: torch.export.ExportedProgram) -> Problems:
    """The distinct GEMM/conv problems in the program."""
    seen, gemv, scaled = set(), 0, 0
    for node in ep.graph.nodes:
        if node.op != "call_function" or node.target not in _GEMMS:
            continue
        # Shapes as strings: a dynamic dim is a SymInt, which is unhashable ("s31" names the same symbol each time).
        shapes = tuple(tuple(str(d) for d in getattr(a.meta.get("val"), "shape", ())) for a in node.args
                       if isinstance(a, torch.fx.Node))
        key = (str(node.target), shapes, str(getattr(node.meta.get("val"), "dtype", "")))
        if key in seen:
            continue
        seen.add(key)
        if _rows(node) == 1:
            gemv += 1
        scaled += node.target == aten._scaled_mm.default
    return Problems(len(seen), gemv, scaled)


@dataclass(frozen=True)
class GpuInductorAOT(PassConfig):
    name: ClassVar[str] = "inductor_aot"
    phase: ClassVar[str] = "compile"
    freezing: bool = True  # weights become constants: folded, laid out for their kernels
    max_autotune: str = "off"  # off | on | budget: on when the estimated tuning time fits autotune_budget_s
    autotune_budget_s: float = 300.0
    coordinate_descent: str = "auto"  # off | on | auto: on when the graph has matrix-vector products
    cache: bool = True
    check_load: bool = True  # GPU only: load and run the new package once in a fresh process first
    file: str = "model.aoti.pt2"
    persistent_tma: bool | None = None  # also tune persistent TMA templates (sm90+); None: KPT_GPU_PERSISTENT_TMA
    unfused_bias: bool | None = None  # a half-precision linear's bias may join its consumer; None: KPT_GPU_UNFUSED_BIAS
    realize_opcount: int | None = None  # Inductor's realize_opcount_threshold (None: its default, 30)

    def __post_init__(self) -> None:
        if self.max_autotune not in ("off", "on", "budget"):
            raise ValueError(f"max_autotune must be off, on or budget, not {self.max_autotune!r}")
        if self.coordinate_descent not in ("off", "on", "auto"):
            raise ValueError(f"coordinate_descent must be off, on or auto, not {self.coordinate_descent!r}")
        if self.autotune_budget_s <= 0:
            raise ValueError("autotune_budget_s must be > 0")
        if self.realize_opcount is not None and self.realize_opcount < 1:
            raise ValueError("realize_opcount must be >= 1")


def _decide(cfg: GpuInductorAOT, problems: Problems) -> tuple[bool, bool, str]:
    tune, why = cfg.max_autotune == "on", ""
    n, gemv = problems.count, problems.gemv
    fp8 = f" ({problems.scaled} fp8)" if problems.scaled else ""
    if cfg.max_autotune == "budget":
        estimate = problems.tuning_s()
        tune = 0 < estimate <= cfg.autotune_budget_s
        why = (f"max-autotune on {n} GEMM/conv problem(s){fp8} (estimated {estimate:.0f}s <= "
               f"{cfg.autotune_budget_s:.0f}s budget)" if tune else
               "no GEMM/conv problems to tune" if n == 0 else
               f"max-autotune skipped: {n} GEMM/conv problems{fp8}, estimated {estimate:.0f}s > "
               f"{cfg.autotune_budget_s:.0f}s budget")
    elif tune:
        why = f"max-autotune on {n} GEMM/conv problem(s){fp8}"
    cd = cfg.coordinate_descent == "on" or (cfg.coordinate_descent == "auto" and gemv > 0)
    if cd:
        why += ("; " if why else "") + (f"coordinate-descent tuning ({gemv} matrix-vector product(s))" if gemv
                                         else "coordinate-descent tuning")
    return tune, cd, why


def inductor_options(tune: bool, coordinate_descent: bool, freezing: bool, tma: bool = False,
                     unfused_bias: bool = False, realize_opcount: int | None = None) -> dict:
    """tma: max-autotune also times Inductor's persistent TMA matmul templates (Hopper and newer). A package is
    C++ (AOTInductor), so max-autotune lacks the 1-D-bias cuBLASLt choice torch.compile's Python wrapper times
    (bias_addmm: GPT-2's QKV GEMM 0.027 ms against the best classic Triton template's 0.034 ms on the H200).
    unfused_bias: Inductor may split a bf16/fp16 addmm whose users are all elementwise into a matmul and a bias
    add that joins them (torch keeps those fused by default, keep_addmm_fused_for_half_dtypes, for one rounding
    fewer), so max-autotune can pick cuBLAS's plain GEMM there; the accuracy check judges the extra rounding.
    realize_opcount: a pointwise result of more ops than this that reads two or more buffers is written once
    instead of being recomputed inside its consumer's loads (Inductor inlines a single-user pointwise whatever
    its cost). Under coordinate descent a decode step's down projection is a reduction over the intermediate
    size whose loads compute SiLU(gate)*up again for every output block: 13 us per layer for 23 MB (1.8 TB/s)
    against the gate/up projection's 46 MB in 13.2 us (H200, 2026-12-04). SiLU*mul counts 10 ops and an
    RMSNorm's output 12-14; the product each feeds a matrix-vector reduction with, 3. Measured at 8 on the 1B
    Llama's decode step: 1.216 against 1.244 ms (H200, one run), so it is an experiment, not a default."""
    opts = {"freezing": freezing, "max_autotune_gemm": tune, "max_autotune_pointwise": False,
            "coordinate_descent_tuning": coordinate_descent, "triton.cudagraphs": False, **link_options()}
    if tune and tma:
        opts["triton.enable_persistent_tma_matmul"] = True
    if unfused_bias and hasattr(torch._inductor.config, "keep_addmm_fused_for_half_dtypes"):  # torch < 2.10: unfused
        opts["keep_addmm_fused_for_half_dtypes"] = False
    if realize_opcount is not None:
        opts["realize_opcount_threshold"] = realize_opcount
    return opts


def _wanted(choice: bool | None, setting: str) -> bool:
    """A pass's own choice, else the named setting's."""
    return bool(settings.get(setting) if choice is None else choice)


def _tma(cfg: GpuInductorAOT) -> bool:
    """The pass's persistent_tma (else KPT_GPU_PERSISTENT_TMA), on an sm90+ CUDA device."""
    return (_wanted(cfg.persistent_tma, "KPT_GPU_PERSISTENT_TMA") and torch.cuda.is_available()
            and torch.version.hip is None and torch.cuda.get_device_capability() >= (9, 0))


@register(GpuInductorAOT)
def _compile(cfg: GpuInductorAOT, work: Work) -> Outcome:
    """Export (kpt.gpu.exported), decide the options, build and check the package, or copy it from the cache. A build
    whose fp32 output casts were rewritten into their GEMM (kpt.gpu.casts, judged supported from this torch's
    Inductor and C shim, not from a run) or whose GELUs were (kpt.gpu.epilogues) that fails to compile or to load
    is built once more without those rewrites; the reason says so. Any other failure, or a second one, is the pass's."""
    order = attention_order(work.module)
    path = os.path.join(work.workdir, cfg.file)
    os.makedirs(work.workdir, exist_ok=True)
    t0 = time.perf_counter()
    with attention_context(order):
        ep, rewrites = export_for_compile(work)
    try:
        return _build(cfg, work, ep, rewrites, order, path, t0)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever broke the build with the rewrite, the retry without it decides
        if casts.DONE not in rewrites and epilogues.DONE not in rewrites:
            raise
        first = cause(e, 200)
        log.warning("the build with GEMM-written output casts or GELU epilogues failed (%s); building without them",
                    first)
        work.say("building again without the GEMM-written output casts and GELU epilogues (that build failed)")
    with attention_context(order):
        ep, rewrites = export_for_compile(work, gemm_rewrites=False)
    out = _build(cfg, work, ep, rewrites, order, path, t0)
    return Outcome(out.applied, f"{out.detail}; output casts and GELUs left to their own kernels: the build with "
                                f"them done by the GEMM failed ({first})")


def _build(cfg: GpuInductorAOT, work: Work, ep: torch.export.ExportedProgram, rewrites: str, order: tuple,
           path: str, t0: float) -> Outcome:
    """_compile's package from ep: from the cache, or compiled, checked in a fresh process and stored."""
    tune, cd, why = _decide(cfg, gemm_problems(ep))
    if rewrites:
        why += ("; " if why else "") + rewrites
    options = inductor_options(tune, cd, cfg.freezing, _tma(cfg), _wanted(cfg.unfused_bias, "KPT_GPU_UNFUSED_BIAS"),
                               cfg.realize_opcount)
    if options.get("triton.enable_persistent_tma_matmul"):
        why += "; persistent TMA templates"
    if options.get("keep_addmm_fused_for_half_dtypes") is False:
        why += "; half-precision biases may join their elementwise users"
    if cfg.realize_opcount is not None:
        why += f"; pointwise results of more than {cfg.realize_opcount} ops written once"
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else work.device
    backend = f"aoti-triton:{name}"
    cache_dir = settings.get("KPT_CACHE_DIR")
    key = cache.package_key(ep, options, order, name) if cfg.cache else ""
    attn = f"; attention {' > '.join(b.removesuffix('_ATTENTION').lower() for b in order)}" if order else ""
    if key and cache.fetch(cache_dir, key, path):
        seconds = time.perf_counter() - t0
        work.compile_s += seconds
        work.artifact = Artifact(path, "ARTIFACT_FORMAT_AOTI_PACKAGE", backend)
        return Outcome(True, f"package reused from the cache ({key[:12]}, {seconds:.1f}s: export, digest, copy); "
                       f"built with {why or 'default options'}{attn}")
    work.say("compiling with AOTInductor" + (f" ({why})" if why else ""))
    with attention_context(order):
        torch._inductor.aoti_compile_and_package(ep, package_path=path, inductor_configs=options)
    seconds = time.perf_counter() - t0
    checked = ""
    if cfg.check_load and work.device.startswith("cuda"):
        work.say("loading the package once in a fresh process")
        check_s = runtime.check_in_fresh_process(path, work.example(), work.device,
                                                 quantized=work.precision in QUANTIZED)
        checked = f"; loaded and run in a fresh process ({check_s:.1f}s)"
    if key:
        cache.store(cache_dir, key, path)
    work.compile_s += seconds
    work.artifact = Artifact(path, "ARTIFACT_FORMAT_AOTI_PACKAGE", backend)
    return Outcome(True, f"AOTInductor package for {name} compiled in {seconds:.1f}s (freezing="
                   f"{'on' if cfg.freezing else 'off'}{'; ' + why if why else ''}{attn}){checked}")
