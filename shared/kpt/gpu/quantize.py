"""Quantized linear layers on GPUs (torchao), one config per scheme, and the O3 chooser.

  Int8WeightOnly   int8 weights per output channel, activations stay bf16: halves the bytes a
                   memory-bound matmul reads (decode); compiled with coordinate-descent tuning, the
                   M=1 matmul becomes one reduction kernel that dequantizes as it loads.
  Int4WeightOnly   int4 weights in groups of 128, tinygemm tile-packed layout (aten._weight_int4pack_mm,
                   bf16 only): a quarter of the bytes; least accurate.
  Fp8Dynamic       fp8 weights and per-token fp8 activations with per-row scales (torch._scaled_mm; one
                   scale per tensor when the model stays fp32): doubles tensor-core throughput of
                   compute-bound matmuls (sm89+, MI300+).
  Int8Dynamic      int8 weights and per-token int8 activations (torch._int_mm): the compute-bound
                   scheme where fp8 is absent or not allowed.
  QuantizeForDevice  picks one of them from how many tokens each linear layer sees per call, and keeps it only
                   where the quantized model measures faster.

torchao's own inductor-config side effects are switched off (set_inductor_config=False): they would
change every later compile in the process; the compile pass sets what it needs per package.
"""

from __future__ import annotations

import copy
import logging
import statistics
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.fx as fx

from kpt.optimize.passes import REGISTRY, Outcome, PassConfig, Work, register
from kpt.optimize.quantize import lift_linears

log = logging.getLogger(__name__)

MIN_FEATURES = 128  # smaller layers gain nothing from quantization and some kernels reject them
# int8 dynamic quantization multiplies through torch._int_mm, which takes more than 16 rows: run eagerly (the
# exported program the attention pass runs) a layer called with fewer fails (BERT's pooler on its [CLS] rows,
# H100, 2026-12-06). Such a layer is memory-bound anyway and stays as it is.
INT_MM_MIN_ROWS = 16


def _hf_conv1d_to_linear(module: torch.nn.Module) -> int:
    """transformers' Conv1D (GPT-2's projections) is a transposed linear layer; torchao quantizes only
    nn.Linear, so swap them (same math, weight transposed)."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:
        return 0
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                nx, nf = child.weight.shape
                lin = torch.nn.Linear(nx, nf, bias=child.bias is not None, device=child.weight.device,
                                      dtype=child.weight.dtype)
                lin.weight = torch.nn.Parameter(child.weight.detach().t().contiguous(), requires_grad=False)
                if child.bias is not None:
                    lin.bias = torch.nn.Parameter(child.bias.detach(), requires_grad=False)
                setattr(parent, name, lin)
                count += 1
    return count


def linears(module: torch.nn.Module) -> list[torch.nn.Linear]:
    """The linear layers quantization may take, after lifting graph linears and Conv1D into nn.Linear."""
    for m in list(module.modules()):
        if isinstance(m, fx.GraphModule):
            lift_linears(m)
    _hf_conv1d_to_linear(module)
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear) and _fits(m)]


def _fits(m: torch.nn.Linear) -> bool:
    return m.in_features >= MIN_FEATURES and m.in_features % 16 == 0 and m.out_features % 16 == 0


def _apply(work: Work, config: object, what: str, precision: str,
           keep: Callable[[torch.nn.Linear], str] | None = None) -> Outcome:
    """Quantize the linears that fit; keep(m) returns why a layer must stay as it is ("" = quantize it)."""
    from torchao.quantization import quantize_

    layers = linears(work.module)
    kept = [why for why in map(keep, layers) if why] if keep else []
    if keep:
        layers = [m for m in layers if not keep(m)]
    if not layers:
        return Outcome(False, f"no linear layers with >= {MIN_FEATURES} features (multiples of 16) to quantize"
                       + (f" ({len(kept)} kept: {kept[0]})" if kept else ""))
    chosen = set(map(id, layers))
    quantize_(work.module, config, filter_fn=lambda m, fqn: id(m) in chosen)
    work.precision = precision
    return Outcome(True, f"{len(layers)} linear layer(s) to {what}; other ops stay {_float_dtype(work)}"
                   + (f"; {len(kept)} kept ({kept[0]})" if kept else ""))


def _tensorwise_fp8_misread(m: torch.nn.Linear) -> str:
    """torchao (0.18) reads one scale for a whole 128x128 weight as a 128x128 block scale and then refuses
    the per-tensor-scaled activation ("input_tensor must be 1x128 scaled", seen on the H100): such layers
    stay unquantized."""
    return "a 128x128 weight with one fp8 scale is taken for block scaling" if tuple(m.weight.shape) == (128, 128) else ""


def _float_dtype(work: Work) -> str:
    p = next((t for t in work.module.parameters() if t.is_floating_point()), None)
    return str(p.dtype).removeprefix("torch.") if p is not None else "as they were"


def _needs(work: Work, precision: str) -> str | None:
    if precision not in work.allowed:
        return f"the job's precision excludes {precision}"
    if not work.device.startswith("cuda"):
        return "GPU quantization schemes run on GPUs only"
    return None


@dataclass(frozen=True)
class Int8WeightOnly(PassConfig):
    name: ClassVar[str] = "int8_weight_only"


@register(Int8WeightOnly)
def _int8_wo(cfg: Int8WeightOnly, work: Work) -> Outcome:
    why = _needs(work, "int8")
    if why:
        return Outcome(False, why)
    from torchao.quantization import Int8WeightOnlyConfig, PerRow

    return _apply(work, Int8WeightOnlyConfig(granularity=PerRow(), set_inductor_config=False),
                  "int8 weights (per output channel)", "int8")


@dataclass(frozen=True)
class Int4WeightOnly(PassConfig):
    name: ClassVar[str] = "int4_weight_only"
    group_size: int = 128
    ntile: int = 8  # tinygemm tile width: 8 on CUDA, 16 on ROCm (torchao's defaults per platform)

    def __post_init__(self) -> None:
        if self.group_size not in (32, 64, 128, 256) or self.ntile not in (8, 16):
            raise ValueError("group_size must be 32, 64, 128 or 256 and ntile 8 or 16")


@register(Int4WeightOnly)
def _int4_wo(cfg: Int4WeightOnly, work: Work) -> Outcome:
    why = _needs(work, "int4")
    if why:
        return Outcome(False, why)
    if _float_dtype(work) != "bfloat16":
        return Outcome(False, "int4 tinygemm kernels take bf16 activations only; the model is not bf16 here")
    from torchao.quantization import Int4WeightOnlyConfig

    return _apply(work, Int4WeightOnlyConfig(group_size=cfg.group_size, int4_packing_format="tile_packed_to_4d",
                                             int4_tile_packed_ntile=cfg.ntile, set_inductor_config=False),
                  f"int4 weights (groups of {cfg.group_size}, tinygemm layout)", "int4")


@dataclass(frozen=True)
class Fp8Dynamic(PassConfig):
    name: ClassVar[str] = "fp8_dynamic"
    dtype: str = "float8_e4m3fn"  # float8_e4m3fnuz on MI300

    def __post_init__(self) -> None:
        if self.dtype not in ("float8_e4m3fn", "float8_e4m3fnuz"):
            raise ValueError(f"dtype must be float8_e4m3fn or float8_e4m3fnuz, not {self.dtype!r}")


@register(Fp8Dynamic)
def _fp8(cfg: Fp8Dynamic, work: Work) -> Outcome:
    why = _needs(work, "fp8")
    if why:
        return Outcome(False, why)
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor

    dt = getattr(torch, cfg.dtype)
    # torch._scaled_mm's per-row scaling returns bf16 only: a model left in fp32 (a job allowing fp8 but not
    # bf16) gets one scale per tensor, which returns fp32.
    rowwise = _float_dtype(work) == "bfloat16"
    config = Float8DynamicActivationFloat8WeightConfig(activation_dtype=dt, weight_dtype=dt,
                                                       granularity=PerRow() if rowwise else PerTensor(),
                                                       set_inductor_config=False)
    scales = "per-token activations, per-row weight scales" if rowwise else "activations and weights, one scale per tensor"
    return _apply(work, config, f"{cfg.dtype.removeprefix('float8_')} ({scales})", "fp8",
                  keep=None if rowwise else _tensorwise_fp8_misread)


@dataclass(frozen=True)
class Int8Dynamic(PassConfig):
    name: ClassVar[str] = "int8_dynamic"


@register(Int8Dynamic)
def _int8_dyn(cfg: Int8Dynamic, work: Work) -> Outcome:
    why = _needs(work, "int8")
    if why:
        return Outcome(False, why)
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    rows = rows_per_linear(work.module, work.example())

    def few_rows(m: torch.nn.Linear) -> str:
        n = min(rows.get(id(m), [INT_MM_MIN_ROWS + 1]))
        return f"called with {n} rows (torch._int_mm takes more than {INT_MM_MIN_ROWS})" if n <= INT_MM_MIN_ROWS else ""

    return _apply(work, Int8DynamicActivationInt8WeightConfig(set_inductor_config=False),
                  "int8 weights and per-token int8 activations", "int8", keep=few_rows)


def rows_per_linear(module: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> dict[int, list[int]]:
    """The rows (tokens) each linear layer (by id) multiplies in each of its calls on the example."""
    rows: dict[int, list[int]] = {}
    layers = linears(module)
    hooks = [m.register_forward_pre_hook(
        lambda m, args: rows.setdefault(id(m), []).append(args[0].numel() // args[0].shape[-1])) for m in layers]
    try:
        with torch.inference_mode():
            module(*example)
    finally:
        for h in hooks:
            h.remove()
    return rows


def tokens_per_linear(module: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> int:
    """Median rows (tokens) a linear layer multiplies per call on the example: a matmul with few rows
    reads its weights once for little arithmetic (memory-bound), with many it is compute-bound."""
    rows = [n for calls in rows_per_linear(module, example).values() for n in calls]
    return int(statistics.median(rows)) if rows else 0


def choose(tokens: int, allowed: frozenset[str], fp8: str, int4: bool, memory_bound_tokens: int) -> PassConfig | str:
    """The scheme for a model whose linear layers see `tokens` rows per call, or why none applies."""
    if tokens <= memory_bound_tokens:
        if int4 and "int4" in allowed:
            return Int4WeightOnly()
        if "int8" in allowed:
            return Int8WeightOnly()
        return f"memory-bound linears ({tokens} rows per call) and the job allows neither int8 nor int4"
    if fp8 and "fp8" in allowed:
        return Fp8Dynamic(dtype=fp8)
    if "int8" in allowed:
        return Int8Dynamic()
    return f"compute-bound linears ({tokens} rows per call) and the job allows neither fp8 nor int8"


@dataclass(frozen=True)
class QuantizeForDevice(PassConfig):
    """O3's quantization: weight-only (int4 if the job asks for it, else int8) where the linear layers are
    memory-bound, fp8 (else int8) dynamic quantization where they are compute-bound; kept only where the
    quantized model measures faster than the one it replaces (both compiled by Inductor and replayed as CUDA
    graphs, kpt.gpu.passes.time_trial)."""

    name: ClassVar[str] = "quantize"
    fp8: str = ""  # the device's float8 dtype name ("" = none)
    int4: bool = False  # the device runs the int4 tinygemm kernels
    int4_ntile: int = 8
    # Rows per call up to which a linear layer is memory-bound: below ~64 rows a bf16 GEMM on H100/MI300
    # does fewer than 2*64 flops per weight byte read, under the ~300 flop/byte ridge of either GPU.
    memory_bound_tokens: int = 64
    # Measure the quantized model against the unquantized one. Fewer bytes need not mean less time: on the H200
    # the 1B Llama's decode step took 1.671 ms with int8 weights and 1.387 ms with bf16 ones (same O3 kernels
    # otherwise), and GPT-2's fp8 O3 2.939 ms against O2's 2.836 ms (2026-12-04).
    measure: bool = True
    min_speedup: float = 1.02  # as CustomKernels': below it, run-to-run noise


@register(QuantizeForDevice)
def _choose(cfg: QuantizeForDevice, work: Work) -> Outcome:
    tokens = tokens_per_linear(work.module, work.example())
    picked = choose(tokens, work.allowed, cfg.fp8, cfg.int4, cfg.memory_bound_tokens)
    if isinstance(picked, str):
        return Outcome(False, picked)
    if isinstance(picked, Int4WeightOnly):
        picked = Int4WeightOnly(ntile=cfg.int4_ntile)
    fn: Callable[[PassConfig, Work], Outcome] = REGISTRY[type(picked)]
    bound = "memory" if tokens <= cfg.memory_bound_tokens else "compute"
    head = f"{picked.name} ({tokens} rows per linear call: {bound}-bound)"
    why_not = _unmeasured(work) if cfg.measure else "not measured (measure=False)"
    precision, dtype = work.precision, _float_dtype(work)
    base = None if why_not else copy.deepcopy(work.module)  # what stays if the quantized model is no faster
    out = fn(picked, work)
    if not out.applied:
        return Outcome(False, f"{head}: {out.detail}")
    if base is None:
        return Outcome(True, f"{head}: {out.detail}; {why_not}")
    rival, timed_base = (None, base) if bound == "compute" else _forgone_kernel(base, work)
    times, reused = _timed(picked, timed_base, work, rival)
    verdict = (f"{dtype}{f' with {rival}' if rival else ''} {times['base_ms']:.3f} -> {picked.name} "
               f"{times['trial_ms']:.3f} ms" + (" (measured by an earlier job)" if reused else ""))
    if times["base_ms"] / times["trial_ms"] >= cfg.min_speedup:
        return Outcome(True, f"{head}: {out.detail}; {verdict}")
    work.module, work.precision = base, precision
    return Outcome(False, f"{head}: measured no faster than {dtype}, left unquantized: {verdict}")


def _unmeasured(work: Work) -> str:
    """Why the quantized model cannot be timed against a copy of the unquantized one ("" = it can)."""
    if not work.device.startswith("cuda") or not torch.cuda.is_available():
        return "not measured: no GPU"
    weights = _bytes(work.module)
    if 2 * weights > _free(work.device):  # the copy, and the quantized model beside it
        return f"not measured: a copy of the {weights / 2**30:.1f} GiB model does not fit beside it"
    return ""


def _bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def _free(device: str) -> int:
    return torch.cuda.mem_get_info(torch.device(device))[0]


def _forgone_kernel(base: torch.nn.Module, work: Work) -> tuple[str | None, torch.nn.Module]:
    """(name, base with it) for the first kernels/ swap the unquantized model takes and the quantized work.module
    does not (kernels/' whole decode layers read plain weights), else (None, base). Quantization is then timed
    against that: the custom_kernels pass after it would have applied the swap to the unquantized model only (the
    1B Llama's decode step: int8 1.375 ms where bf16 with the layer kernels took 1.095, H200, 2026-12-04)."""
    from kpt.gpu.passes import kernel_candidates

    candidates = kernel_candidates()
    if isinstance(candidates, str):
        return None, base
    x = work.example()
    taken = {name for name, _ in candidates(work.module, work.device, x)}
    for name, apply in candidates(base, work.device, x):
        if name not in taken:
            if _bytes(base) > _free(work.device):  # the swap copies base, beside it and the quantized model
                log.info("quantize: timed without kernels/' %s: a third copy of the model does not fit", name)
                return None, base
            return name, apply(base)
    return None, base


def _timed(picked: PassConfig, base: torch.nn.Module, work: Work, rival: str | None = None) -> tuple[dict, bool]:
    """base and the quantized work.module timed side by side, the decision stored (kpt.gpu.passes.decided_trial);
    rival: the kernels/ swap base has."""
    from kpt.gpu.passes import decided_trial

    what = repr(picked) + (f" against {rival}" if rival else "")
    return decided_trial("quantize", what, base, work.module, work.example(), work.device)
