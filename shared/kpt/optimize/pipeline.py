"""The guarded level ladder and the optimize job built on it.

Try the requested level: run its passes on a fresh copy of the model, load the artifact back
through the public loader and check it against eager fp32 on fresh inputs. A level whose pass
fails or whose artifact is outside tolerance is recorded (LevelAttempt, PassReport rows) and
the next lower level is tried, down to O0. A result outside tolerance is never returned.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from kpt.errors import AccuracyFailed, InvalidModel, Unsupported
from kpt.optimize import accuracy, artifacts, bench, env
from kpt.optimize import inputs as inp
from kpt.optimize import variants as var
from kpt.optimize.passes import PassConfig, Work, apply
from kpt.optimize.source import Source

log = logging.getLogger(__name__)

LEVELS = ("LEVEL_O0", "LEVEL_O1", "LEVEL_O2", "LEVEL_O3")
Emit = Callable[[str, str, float], None]


def short(level: str) -> str:
    return level.removeprefix("LEVEL_")


@dataclass
class Candidate:
    level: str
    work: Work
    loaded: artifacts.Loaded
    report: accuracy.Report


@dataclass
class Ladder:
    chosen: Candidate
    attempts: list[dict] = field(default_factory=list)
    passes: list[dict] = field(default_factory=list)
    fallback_reason: str = ""


def _build(level: str, configs: Sequence[PassConfig], work: Work, rows: list[dict], emit: Emit,
           progress: tuple[float, float]) -> None:
    for i, cfg in enumerate(configs):
        at = progress[0] + (progress[1] - progress[0]) * i / len(configs)
        emit(cfg.phase, f"{short(level)}: {cfg.name}", at)
        work.say = lambda msg, cfg=cfg, at=at: emit(cfg.phase, f"{short(level)}: {cfg.name}: {msg}", at)
        try:
            rows.append(apply(cfg, work, level))
        except Unsupported as e:
            rows.append({"name": cfg.name, "level": level, "applied": False, "reason": f"failed: {e.message}",
                         "config_json": cfg.to_json()})
            raise
    if work.artifact is None:
        raise Unsupported(f"level {level} wrote no artifact: its last pass must produce one")


def ladder(src: Source, levels: Mapping[str, Sequence[PassConfig]], requested: str, refs: list,
           tol_override: accuracy.Tolerances | None, workdir: str, device: str, allowed: frozenset[str],
           emit: Emit, progress: tuple[float, float] = (0.1, 0.7)) -> Ladder:
    tried = [lv for lv in reversed(LEVELS[: LEVELS.index(requested) + 1]) if lv in levels]
    span = (progress[1] - progress[0]) / len(tried)
    attempts: list[dict] = []
    rows: list[dict] = []
    reasons: list[str] = []
    for n, level in enumerate(tried):
        lo = progress[0] + span * n
        work = Work(copy.deepcopy(src.module), src.spec, device, os.path.join(workdir, short(level)), allowed)
        try:
            _build(level, levels[level], work, rows, emit, (lo, lo + span * 0.8))
            emit("validate", f"{short(level)}: checking the loaded-back artifact against eager fp32", lo + span * 0.8)
            loaded = artifacts.load(work.artifact.path, work.artifact.format)
            tol = accuracy.tolerances_for(work.precision, tol_override)
            report = accuracy.check(loaded, refs, tol, quantized=work.precision == "int8")
        except (Unsupported, AccuracyFailed, InvalidModel) as e:  # InvalidModel: our artifact did not load
            attempts.append({"level": level, "passed": False, "note": e.message})
            reasons.append(f"{short(level)}: {e.message}")
            log.warning("%s failed: %s", level, e.message)
            continue
        attempts.append({"level": level, "accuracy": report.to_dict(), "passed": report.passed,
                         "note": f"precision {work.precision}: {report.summary()}"})
        if report.passed:
            return Ladder(Candidate(level, work, loaded, report), attempts, rows,
                          "; ".join(reasons) + (f"; fell back to {short(level)}" if reasons else ""))
        reasons.append(f"{short(level)} outside tolerance ({report.summary()})")
        log.warning("%s outside tolerance: %s", level, report.summary())
    raise AccuracyFailed("no level produced an artifact within tolerance: " + "; ".join(reasons))


def _metadata(src: Source, target: str, device: str, lad: Ladder, rows: list[dict], environment: dict) -> dict:
    cand = lad.chosen
    m = cand.report.metrics
    chosen_row = next(r for r in rows if r["variant"] == "kpt_" + short(cand.level))
    applied = [p["name"] for p in lad.passes if p["level"] == cand.level and p["applied"]]
    meta = {"source_digest": src.digest, "source_name": src.name, "target": target, "device": device,
            "device_name": environment["device_name"], "level": cand.level, "passes": ",".join(applied),
            "precision": cand.work.precision, "backend": cand.work.artifact.backend,
            "max_abs_err": f"{m.max_abs_err:.6g}", "rel_l2": f"{m.rel_l2:.6g}", "cosine": f"{m.cosine:.8f}",
            "sqnr_db": f"{m.sqnr_db:.2f}", "input_spec": inp.to_json(src.spec),
            "env_fingerprint": environment["fingerprint"]}
    if "latency" in chosen_row:
        meta["p50_ms"] = f"{chosen_row['latency']['p50_ms']:.4f}"
        meta["p99_ms"] = f"{chosen_row['latency']['p99_ms']:.4f}"
    meta.update({k: v for k, v in environment.items() if k.startswith("toolchain.")})
    return meta


def speedup_of(rows: list[dict], level: str) -> float:
    """The baseline's p50 over the delivered level's (rows: kpt_O0's, then the level's; one row at O0, 1.0).
    0 = not measured: a missing row, a p50 of zero (below the clock's resolution) or NaN gives no ratio."""
    if level == "LEVEL_O0":
        return 1.0
    if len(rows) < 2:
        return 0.0
    base, opt = (r["latency"]["p50_ms"] if "latency" in r else 0.0 for r in rows[:2])
    speedup = base / opt if base > 0 and opt > 0 and math.isfinite(base / opt) else 0.0
    if not speedup:
        log.warning("no speedup: baseline p50 %s ms, %s p50 %s ms", base, short(level), opt)
    return speedup


def optimize(src: Source, levels: Mapping[str, Sequence[PassConfig]], requested: str, target: str, device: str,
             allowed: frozenset[str], tol_override: accuracy.Tolerances | None, settings: bench.Settings,
             workdir: str, emit: Emit, samples: int = 3, timing: Callable | None = None) -> dict:
    """An optimize job: ladder, then baseline (O0, the exported program run eagerly) and the chosen
    level measured interleaved in one run. Returns the kpt.v1.Result dict."""
    environment = env.environment(device)
    emit("validate", f"eager fp32 reference outputs on {samples} fresh input samples", 0.08)
    refs = accuracy.reference_outputs(src.module, src.spec, samples, seed=1, device=device)
    lad = ladder(src, levels, requested, refs, tol_override, workdir, device, allowed, emit)
    cand = lad.chosen
    final = os.path.join(workdir, os.path.basename(cand.work.artifact.path))
    os.replace(cand.work.artifact.path, final)
    for level in LEVELS:
        shutil.rmtree(os.path.join(workdir, short(level)), ignore_errors=True)
    emit("benchmark", "measuring kpt_O0" + (f" and kpt_{short(cand.level)} interleaved" if cand.level != "LEVEL_O0"
                                            else ""), 0.75)
    chosen = var.Variant("kpt_" + short(cand.level), cand.loaded, cand.work.compile_s, cand.work.precision,
                         accuracy=cand.report)
    measured = [chosen]
    if cand.level != "LEVEL_O0":
        measured.insert(0, var.Variant("kpt_O0", src.exported().module(), precision="fp32"))
    rows = var.measure(measured, src.spec, settings, device, refs, tol_override,
                       **({"timing": timing} if timing else {}))  # a device's own timing (XLA: sync + wait)
    speedup = speedup_of(rows, cand.level)
    emit("export", f"artifact {os.path.basename(final)} ready", 0.97)
    meta = _metadata(src, target, device, lad, rows, environment)
    meta["speedup"] = f"{speedup:.4f}"
    return {"kind": "JOB_KIND_OPTIMIZE",
            "artifacts": [{"name": os.path.basename(final), "format": cand.work.artifact.format, "metadata": meta}],
            "variants": rows, "passes": lad.passes, "accuracy": cand.report.to_dict(), "requested_level": requested,
            "achieved_level": cand.level, "attempts": lad.attempts, "fallback_reason": lad.fallback_reason,
            "speedup": speedup, "device": environment["device_name"], "backend": cand.work.artifact.backend,
            "environment": environment}


def level_variant(src: Source, level: str, configs: Sequence[PassConfig], workdir: str, device: str,
                  allowed: frozenset[str], emit: Emit, progress: tuple[float, float]) -> var.Variant:
    """One level built without the ladder (benchmarks): kpt_O<n>, or a variant whose error says why not."""
    work = Work(copy.deepcopy(src.module), src.spec, device, os.path.join(workdir, short(level)), allowed)
    try:
        _build(level, configs, work, [], emit, progress)
        loaded = artifacts.load(work.artifact.path, work.artifact.format)
    except (Unsupported, InvalidModel) as e:
        return var.failed("kpt_" + short(level), e.message)
    return var.Variant("kpt_" + short(level), loaded, work.compile_s, work.precision)


def level_variants(src: Source, levels: Mapping[str, Sequence[PassConfig]], wanted: Sequence[str], workdir: str,
                   device: str, allowed: frozenset[str], emit: Emit,
                   progress: tuple[float, float] = (0.4, 0.7)) -> list:
    """level_variant for each wanted level, sharing the progress range between them (benchmark jobs)."""
    out = []
    span = (progress[1] - progress[0]) / max(len(wanted), 1)
    for i, level in enumerate(wanted):
        lo = progress[0] + span * i
        out.append(level_variant(src, level, levels[level], workdir, device, allowed, emit, (lo, lo + span)))
    return out
