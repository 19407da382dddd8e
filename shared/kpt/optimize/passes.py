"""The pass registry: a pass is a frozen config dataclass plus the function registered for its type.

    @dataclass(frozen=True)
    class FoldConvBatchNorm(PassConfig):
        name: ClassVar[str] = "fold_conv_bn"

    @register(FoldConvBatchNorm)
    def _fold(cfg: FoldConvBatchNorm, work: Work) -> Outcome: ...

A level is a list of configs (each service defines its own). `apply` runs one pass on a Work
and returns its kpt.v1.PassReport row: applied or skipped with the reason, and its seconds.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Callable, ClassVar

import torch

from kpt.errors import InvalidInput, KptError, Unsupported
from kpt.optimize import inputs as inputs_mod

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "int8")


@dataclass(frozen=True)
class PassConfig:
    name: ClassVar[str] = "pass"
    phase: ClassVar[str] = "pass"  # the progress phase reported while it runs
    version: ClassVar[int] = 1  # bump when a field's meaning changes; stored in config_json

    def to_json(self) -> str:
        return json.dumps({"pass": self.name, "version": self.version, **asdict(self)}, sort_keys=True)


@dataclass(frozen=True)
class Outcome:
    applied: bool
    detail: str  # what it changed, or why it was skipped


@dataclass(frozen=True)
class Artifact:
    path: str
    format: str  # ArtifactFormat enum name, e.g. "ARTIFACT_FORMAT_AOTI_PACKAGE"
    backend: str  # what runs it, e.g. "aoti-cpp", "torch.export eager"


@dataclass
class Work:
    """One candidate on its way to an artifact; passes read and replace its fields."""

    module: torch.nn.Module  # eval mode; fp32 eager at the start
    spec: inputs_mod.InputSpec
    device: str
    workdir: str
    allowed: frozenset[str] = frozenset(PRECISIONS)  # precisions the job allows
    precision: str = "fp32"  # what the candidate computes in (decides its tolerances)
    artifact: Artifact | None = None
    compile_s: float = 0.0
    say: Callable[[str], None] = lambda message: None  # progress lines for the user (the pipeline sets it)

    def example(self) -> tuple[torch.Tensor, ...]:
        return inputs_mod.generate(self.spec, seed=0, device=self.device, for_export=True)

    def export(self) -> torch.export.ExportedProgram:
        return export_module(self.module, self.spec, self.device)


def export_module(module: torch.nn.Module, spec: inputs_mod.InputSpec, device: str = "cpu") -> torch.export.ExportedProgram:
    """torch.export with the spec's example (seed 0) and dynamic dims."""
    example = inputs_mod.generate(spec, seed=0, device=device, for_export=True)
    dynamic = inputs_mod.dynamic_shapes(spec)
    params = list(inspect.signature(module.forward).parameters.values())
    if dynamic is not None and params and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        dynamic = (dynamic,)  # forward(*args): all inputs sit in one tuple argument
    try:
        with torch.no_grad():
            return torch.export.export(module, example, dynamic_shapes=dynamic)
    except torch._dynamo.exc.UserError as e:  # constraint violations: the spec's dims do not fit the model
        raise InvalidInput(f"torch.export rejects the input spec ({spec.describe()}): {str(e).splitlines()[0]}") from e


PassFn = Callable[[PassConfig, Work], Outcome]
REGISTRY: dict[type[PassConfig], PassFn] = {}


def register(config_type: type[PassConfig]) -> Callable[[PassFn], PassFn]:
    def deco(fn: PassFn) -> PassFn:
        if config_type in REGISTRY:
            raise ValueError(f"a pass is already registered for {config_type.__name__}")
        REGISTRY[config_type] = fn
        return fn

    return deco


def apply(cfg: PassConfig, work: Work, level: str) -> dict:
    """Run one pass; return its PassReport dict.

    A typed KptError from a pass propagates as is. Any other exception is a torch/library
    failure on this model: it becomes Unsupported naming the pass, with the cause chained and
    logged, so the level ladder can fall back and the report says why.
    """
    fn = REGISTRY.get(type(cfg))
    if fn is None:
        raise Unsupported(f"no function registered for pass config {type(cfg).__name__}")
    t0 = time.perf_counter()
    try:
        outcome = fn(cfg, work)
    except KptError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - translated to a typed error with its cause, never swallowed
        log.exception("pass %s failed at %s", cfg.name, level)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise Unsupported(f"pass {cfg.name} failed on this model: {type(e).__name__}: {first[:500]}") from e
    seconds = time.perf_counter() - t0
    log.info("%s %s: %s (%s, %.2fs)", level, cfg.name, outcome.detail, "applied" if outcome.applied else "skipped",
             seconds)
    return {"name": cfg.name, "level": level, "applied": outcome.applied, "reason": outcome.detail,
            "seconds": seconds, "config_json": cfg.to_json()}
