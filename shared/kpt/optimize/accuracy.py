"""How far a candidate's outputs are from eager fp32, on fresh inputs (kpt.v1.Accuracy).

Outputs of any nesting (tensors, tuples, dicts, HF ModelOutput) are flattened in pytree order
and compared as one float64 vector. Metrics: max abs error, relative L2 (||d|| / ||ref||),
cosine similarity, SQNR in dB (20 log10 ||ref|| / ||d||). Samples use seeds that differ
from the compile example's (seed 0), and dynamic dims take random sizes in range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Callable

import torch
import torch.utils._pytree as pytree

from kpt.errors import AccuracyFailed, InvalidInput
from kpt.optimize import inputs as inputs_mod


@dataclass(frozen=True)
class Tolerances:
    atol: float = 0.0  # max abs error that passes where rel_l2 is not met (outputs near zero)
    max_rel_l2: float = 0.0
    min_cosine: float = 0.0
    min_sqnr_db: float = 0.0  # used for quantized outputs instead of rel_l2/atol

    def __post_init__(self) -> None:
        if min(self.atol, self.max_rel_l2, self.min_sqnr_db) < 0:
            raise ValueError(f"tolerances must be >= 0, got {self}")
        if not -1.0 <= self.min_cosine <= 1.0:
            raise ValueError(f"min_cosine must lie in [-1, 1], got {self.min_cosine}")


# Defaults per precision, as tight as the arithmetic allows. Measured (docs/benchmarks/cpu.md):
#  fp32: Inductor/onnxruntime reorder reductions: rel_l2 2.7e-7 (cnn), 1.5e-6 (MiniLM), 9.3e-7
#        (BERT-base), so 1e-5 leaves ~7x margin.
#  bf16: 8-bit mantissa (unit roundoff 2**-9 ~ 2e-3) compounded through the layers: rel_l2 2.8e-3
#        (cnn), 1.5e-2 (MiniLM), 1.1e-2 (BERT-base); 3e-2 is the ceiling.
#  int8: judged by SQNR (torchao's convention): 20 dB = 10% relative L2, cosine >= 0.99. MiniLM's real
#        weights give 20.2 dB (rel_l2 9.8e-2), BERT-base 32 dB, cnn 40 dB.
#  fp16: provisional (no CPU pass produces it): 10-bit mantissa, 8x finer than bf16, so ~1/6 of bf16's
#        bounds; the GPU services are to measure and replace it.
DEFAULTS: dict[str, Tolerances] = {
    "fp32": Tolerances(atol=1e-5, max_rel_l2=1e-5, min_cosine=0.99999),
    "bf16": Tolerances(atol=1e-2, max_rel_l2=3e-2, min_cosine=0.999),
    "fp16": Tolerances(atol=1e-3, max_rel_l2=5e-3, min_cosine=0.9999),
    "int8": Tolerances(min_sqnr_db=20.0, min_cosine=0.99),
}


def tolerances_for(precision: str, override: Tolerances | None = None) -> Tolerances:
    """The precision's defaults, with every non-zero field of `override` taking precedence."""
    base = DEFAULTS[precision]
    if override is None:
        return base
    return replace(base, **{f.name: getattr(override, f.name) for f in fields(override) if getattr(override, f.name)})


@dataclass(frozen=True)
class Metrics:
    max_abs_err: float
    rel_l2: float
    cosine: float
    sqnr_db: float

    def worst(self, other: "Metrics") -> "Metrics":
        return Metrics(max(self.max_abs_err, other.max_abs_err), max(self.rel_l2, other.rel_l2),
                       min(self.cosine, other.cosine), min(self.sqnr_db, other.sqnr_db))


def flatten(out: object) -> list[torch.Tensor]:
    leaves = pytree.tree_leaves(out)
    return [x for x in leaves if isinstance(x, torch.Tensor)]


def compare(candidate: object, reference: object) -> Metrics:
    """Metrics of candidate vs reference outputs. Non-finite values must match exactly."""
    cand, ref = flatten(candidate), flatten(reference)
    if len(cand) != len(ref):
        raise AccuracyFailed(f"the candidate returns {len(cand)} tensors, the reference {len(ref)}")
    for i, (c, r) in enumerate(zip(cand, ref, strict=True)):
        if c.shape != r.shape:
            raise AccuracyFailed(f"output {i}: shape {tuple(c.shape)} differs from the reference's {tuple(r.shape)}")
    if not ref:
        raise AccuracyFailed("the model returns no tensors to compare")
    # In float64, on the GPU when the reference is there. On the H100, the GPT-2 benchmark (logits 8 x 512 x 50257,
    # 21 comparisons) ran out of time inside these reductions when they ran on the host. Other devices (XLA's,
    # MPS) compare on the host.
    dev = ref[0].device if ref[0].device.type == "cuda" else torch.device("cpu")
    c = torch.cat([x.detach().reshape(-1).to(dev, torch.float64) for x in cand])
    r = torch.cat([x.detach().reshape(-1).to(dev, torch.float64) for x in ref])
    finite = torch.isfinite(r)
    same_nonfinite = (~finite) & ((c == r) | (torch.isnan(c) & torch.isnan(r)))
    if bool((~finite & ~same_nonfinite).any()) or not bool(torch.isfinite(c[finite]).all()):
        return Metrics(math.inf, math.inf, -1.0, -math.inf)
    c, r = c[finite], r[finite]
    # Norms, dot product and the difference on values scaled by a power of two into [-2, 2] (exact): squares of
    # float64 outputs past ~1e154 overflow to inf, and inf / inf gave NaN metrics, which compare false both ways.
    big = float(torch.maximum(c.abs().max(), r.abs().max())) if c.numel() else 0.0
    scale = math.ldexp(1.0, math.frexp(big)[1] - 1) if big > 0 else 1.0
    c, r = c / scale, r / scale
    diff = c - r
    dn, rn, cn = float(diff.norm()), float(r.norm()), float(c.norm())
    rel = dn / rn if rn > 0 else (0.0 if dn == 0 else math.inf)
    if rn > 0 and cn > 0:
        cos = float(torch.dot(c, r)) / (rn * cn)
    else:
        cos = 1.0 if rn == cn else 0.0
    sqnr = math.inf if dn == 0 else (20 * math.log10(rn / dn) if rn > 0 else -math.inf)
    return Metrics(float(diff.abs().max()) * scale if diff.numel() else 0.0, rel, cos, sqnr)


# Outputs the eager model itself returns in a low precision (a decode step's bf16 KV-cache entries) cannot be
# matched closer than their own rounding: an fp32 candidate that flips one bf16 ulp of a cache entry is as right
# as the reference. Those outputs are judged at least as loosely as their dtype's defaults, the rest by `tol`.
LOW_OUTPUTS = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def loosest(a: Tolerances, b: Tolerances) -> Tolerances:
    return Tolerances(max(a.atol, b.atol), max(a.max_rel_l2, b.max_rel_l2), min(a.min_cosine, b.min_cosine),
                      min(a.min_sqnr_db, b.min_sqnr_db))


def by_output_dtype(candidate: object, reference: object) -> dict[str, tuple[list, list]]:
    """The outputs grouped by the precision the reference gives them in ("bf16", "fp16", or "" for the rest)."""
    groups: dict[str, tuple[list, list]] = {}
    for c, r in zip(flatten(candidate), flatten(reference), strict=False):
        cs, rs = groups.setdefault(LOW_OUTPUTS.get(r.dtype, ""), ([], []))
        cs.append(c)
        rs.append(r)
    return groups


def passes(m: Metrics, tol: Tolerances, quantized: bool) -> bool:
    if quantized:
        return m.sqnr_db >= tol.min_sqnr_db and m.cosine >= tol.min_cosine
    return (m.rel_l2 <= tol.max_rel_l2 or m.max_abs_err <= tol.atol) and m.cosine >= tol.min_cosine


@dataclass(frozen=True)
class Report:
    metrics: Metrics
    passed: bool
    tolerances: Tolerances
    samples: int
    quantized: bool
    low_outputs: tuple[str, ...] = ()  # precisions of outputs the reference itself gives low (judged as such)

    def summary(self) -> str:
        m = self.metrics
        return (f"max_abs_err={m.max_abs_err:.3g} rel_l2={m.rel_l2:.3g} cosine={m.cosine:.6f} "
                f"sqnr={m.sqnr_db:.1f}dB ({'pass' if self.passed else 'FAIL'} vs "
                + (f"sqnr>={self.tolerances.min_sqnr_db}dB" if self.quantized
                   else f"rel_l2<={self.tolerances.max_rel_l2:g} or max_abs<={self.tolerances.atol:g}")
                + f", cosine>={self.tolerances.min_cosine:g}"
                + (f"; outputs the model returns in {'/'.join(self.low_outputs)} at that precision's tolerances"
                   if self.low_outputs else "") + ")")

    def to_dict(self) -> dict:
        m, t = self.metrics, self.tolerances
        return {"max_abs_err": json_number(m.max_abs_err), "rel_l2": json_number(m.rel_l2), "cosine": m.cosine,
                "sqnr_db": json_number(m.sqnr_db),
                "passed": self.passed, "samples": self.samples,
                "tolerances": {"atol": t.atol, "max_rel_l2": t.max_rel_l2, "min_cosine": t.min_cosine,
                               "min_sqnr_db": t.min_sqnr_db}}


def json_number(x: float) -> float | str:
    """Protobuf JSON spells non-finite doubles as the strings "Infinity", "-Infinity", "NaN"."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def reference_outputs(reference: Callable, spec: inputs_mod.InputSpec, samples: int, seed: int,
                      device: str = "cpu") -> list[tuple[tuple[torch.Tensor, ...], object]]:
    """(inputs, eager outputs) per sample; computed once and shared by every candidate."""
    out = []
    with torch.inference_mode():
        for i in range(samples):
            x = inputs_mod.generate(spec, seed + i, device, vary_dynamic=i > 0)
            try:
                y = reference(*x)
            except (RuntimeError, ValueError, IndexError, TypeError) as e:
                raise InvalidInput(f"the eager model rejects inputs generated from the spec "
                                   f"({spec.describe()}): {e}") from e
            out.append((x, y))
    return out


def check(candidate: Callable, refs: list[tuple[tuple[torch.Tensor, ...], object]], tol: Tolerances,
          quantized: bool = False) -> Report:
    """Worst-case metrics of `candidate` over the reference samples."""
    worst: Metrics | None = None
    # Worst metrics per output precision group, kept only where the reference returns low-precision outputs.
    split = bool(refs) and not quantized and any(t.dtype in LOW_OUTPUTS for t in flatten(refs[0][1]))
    groups: dict[str, Metrics] = {}
    with torch.inference_mode():
        for x, y in refs:
            try:
                got = candidate(*x)
            except (RuntimeError, ValueError, IndexError, TypeError) as e:
                raise AccuracyFailed(f"the candidate fails on inputs of shapes "
                                     f"{[tuple(t.shape) for t in x]}: {str(e).splitlines()[0] if str(e) else e!r}") from e
            m = compare(got, y)
            worst = m if worst is None else worst.worst(m)
            for prec, (cs, rs) in (by_output_dtype(got, y).items() if split else ()):
                gm = compare(cs, rs)
                groups[prec] = groups[prec].worst(gm) if prec in groups else gm
    if worst is None:
        raise ValueError("check needs at least one reference sample")
    if groups:
        ok = all(passes(gm, loosest(tol, DEFAULTS[prec]) if prec else tol, False) for prec, gm in groups.items())
        return Report(worst, ok, tol, len(refs), quantized, tuple(sorted(p for p in groups if p)))
    return Report(worst, passes(worst, tol, quantized), tol, len(refs), quantized)
