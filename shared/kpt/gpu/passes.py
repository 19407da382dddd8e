"""GPU passes shared by the NVIDIA and AMD services: memory layout, reduced precision, the attention
backend that measures fastest, and the hook for the Triton kernels of kernels/.

Choices a later compile must honour (the attention backend order) travel on the candidate module
itself, as the attribute ATTENTION_ATTR, so they follow the candidate through the pipeline's Work.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from kpt import settings
from kpt.errors import DeviceFault, cause, chain, first_cause, first_frames
from kpt.gpu import bench as gpu_bench
from kpt.gpu import cache, graph_edges, runtime
from kpt.gpu.exported import export_for_compile
from kpt.optimize.graph_passes import cast_module
from kpt.optimize.passes import Outcome, PassConfig, Work, register

log = logging.getLogger(__name__)

ATTENTION_ATTR = "_kpt_attention_order"
# The fused backends, and the unfused math one: where a fused kernel's fixed cost outweighs the work (one query
# row per head against a masked 2048-entry cache: the 1B Llama's decode step spent 0.96 of its 2.1 ms in 22 cuDNN
# attention calls on the H200), plain matmuls and a softmax, which Inductor fuses, can be faster. Measured like
# the others; it is also what runs any call the chosen backends cannot take.
BACKENDS = ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")
REPO = Path(__file__).resolve().parents[3]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def on_gpu(work: Work) -> bool:
    return work.device.startswith("cuda") and torch.cuda.is_available()


# ---------------------------------------------------------------- memory layout


class ChannelsLastInputs(torch.nn.Module):
    """Hands 4-D float inputs to `inner` in channels_last (NHWC) memory order; values are unchanged."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.training = False  # not .eval(): unlifted exported programs refuse train()/eval() calls

    def forward(self, *args: torch.Tensor) -> object:
        return self.inner(*(a.contiguous(memory_format=torch.channels_last)
                            if a.dim() == 4 and a.is_floating_point() else a for a in args))


_CONV_OPS = (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)


def _conv2d_count(module: torch.nn.Module) -> int:
    n = sum(1 for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    for m in module.modules():  # exported graphs (uploads, folded batchnorm) keep convolutions as aten calls
        if isinstance(m, torch.fx.GraphModule):
            n += sum(1 for node in m.graph.nodes if node.op == "call_function" and node.target in _CONV_OPS
                     and len(getattr(node.args[0].meta.get("val"), "shape", (0,) * 4)) == 4)
    return n


@dataclass(frozen=True)
class ChannelsLast(PassConfig):
    """NHWC weights and inputs for 2-D convolutions: the layout cuDNN/MIOpen tensor-core kernels take
    without transposing."""

    name: ClassVar[str] = "channels_last"


@register(ChannelsLast)
def _channels_last(cfg: ChannelsLast, work: Work) -> Outcome:
    convs = _conv2d_count(work.module)
    if not convs:
        return Outcome(False, "no 2-D convolutions: memory layout left as is")
    if not on_gpu(work):
        return Outcome(False, "channels_last is applied on GPUs only")
    four_d = [t for t in list(work.module.parameters()) + list(work.module.buffers()) if t.dim() == 4]
    work.module = ChannelsLastInputs(work.module.to(memory_format=torch.channels_last))
    return Outcome(True, f"{convs} 2-D convolution(s): {len(four_d)} 4-D weight(s) and the 4-D inputs in "
                   "channels_last order")


# ---------------------------------------------------------------- reduced precision


@dataclass(frozen=True)
class ReducedPrecision(PassConfig):
    """Weights and compute in bf16 (or fp16 where the device lacks bf16) behind an fp32 interface."""

    name: ClassVar[str] = "reduced_precision"
    dtype: str = "bf16"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {self.dtype!r}")


@register(ReducedPrecision)
def _reduced(cfg: ReducedPrecision, work: Work) -> Outcome:
    if cfg.dtype not in work.allowed:
        return Outcome(False, f"the job's precision excludes {cfg.dtype}")
    traced = any(isinstance(m, torch.fx.GraphModule) for m in work.module.modules())
    if not traced:
        n = cast_module(work, DTYPES[cfg.dtype], cfg.dtype)
        return Outcome(True, f"{n} weight/buffer tensors cast to {cfg.dtype}; inputs and outputs stay fp32")
    # An exported graph (an upload) keeps the dtype conversions it was traced with: cast a copy and run it
    # once, so a graph that hard-codes fp32 keeps the level going in fp32 instead of failing it.
    trial = Work(copy.deepcopy(work.module), work.spec, work.device, work.workdir, work.allowed)
    n = cast_module(trial, DTYPES[cfg.dtype], cfg.dtype)
    try:
        with torch.inference_mode():
            trial.module(*work.example())
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return Outcome(False, f"the exported graph hard-codes fp32 operations and fails in {cfg.dtype} ({first[:200]}); "
                       f"it stays fp32 (export the model in {cfg.dtype}, or send it as a zoo model)")
    work.module, work.precision = trial.module, trial.precision
    return Outcome(True, f"{n} weight/buffer tensors of the exported graph cast to {cfg.dtype}; inputs and outputs "
                   "stay fp32")


# ---------------------------------------------------------------- attention backend


class _RecordAttention(TorchFunctionMode):
    """Records every scaled_dot_product_attention call of one forward (eager or exported graph)."""

    FUNCS = (F.scaled_dot_product_attention, torch.ops.aten.scaled_dot_product_attention.default)

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, tuple[object, tuple, dict, int]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        kwargs = kwargs or {}
        if func in self.FUNCS:
            sig = repr([(tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else a for a in args]) + repr(
                sorted((k, (tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()))
            seen = self.calls.get(sig)
            self.calls[sig] = (func, args, kwargs, (seen[3] if seen else 0) + 1)
        return func(*args, **kwargs)


def attention_order(module: torch.nn.Module) -> tuple[str, ...]:
    """The backend priority a pass chose for this candidate (empty: torch's default order)."""
    for m in [module, *module.modules()]:
        order = getattr(m, ATTENTION_ATTR, None)
        if order:
            return tuple(order)
    return ()


def attention_backends(order: tuple[str, ...]) -> list[SDPBackend]:
    """A chosen order as sdpa_kernel's priority list: math last unless chosen earlier (it takes any call the
    fused kernels cannot)."""
    return [getattr(SDPBackend, b) for b in order] + ([] if "MATH" in order else [SDPBackend.MATH])


def attention_context(order: tuple[str, ...]):
    """sdpa_kernel for a chosen order (attention_backends); a no-op context for ()."""
    if not order:
        return contextlib.nullcontext()
    return sdpa_kernel(attention_backends(order), set_priority=True)


@dataclass(frozen=True)
class SdpaBackend(PassConfig):
    """Times every scaled_dot_product_attention call of the model's exported graph under each backend (BACKENDS)
    and makes the fastest the first choice of the compile that follows (the choice is baked into the compiled
    graph)."""

    name: ClassVar[str] = "sdpa_backend"
    candidates: tuple[str, ...] = BACKENDS
    reps: int = 20

    def __post_init__(self) -> None:
        bad = [b for b in self.candidates if b not in BACKENDS]
        if bad:
            raise ValueError(f"unknown attention backends {bad}; choose from {BACKENDS}")


def _alone(backend: str):  # noqa: ANN202 - sdpa_kernel's context manager
    """sdpa_kernel with only this backend enabled."""
    return sdpa_kernel([getattr(SDPBackend, backend)])


def _unusable(backend: str, calls: list[tuple[object, tuple, dict, int]]) -> str | None:
    """Why the backend cannot run one of the calls, or None when it runs them all."""
    with _alone(backend), torch.inference_mode():
        for func, args, kwargs, _ in calls:
            try:
                func(*args, **kwargs)
            except RuntimeError as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                return f"not usable for {[tuple(a.shape) for a in args[:3]]} ({first[:160]})"
    return None


# How time_backends times the backends: part of a stored decision's key, so no decision timed otherwise (eager
# calls, before 2026-12-07) is reused.
TIMED = "graph replays, additive masks"


def additive_mask(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A call's boolean mask (attn_mask, by keyword or fourth positionally) made additive in the query's dtype: 0
    where attended, -inf elsewhere, what the compiled graph hands the fused kernels (computed once a forward and
    shared by the layers, where an eager call converts a boolean mask every time). Other calls unchanged."""
    positional = len(args) > 3
    mask = args[3] if positional else kwargs.get("attn_mask")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        return args, kwargs
    add = torch.zeros(mask.shape, dtype=args[0].dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
    return ((*args[:3], add, *args[4:]), kwargs) if positional else (args, {**kwargs, "attn_mask": add})


def _timed_forms(backends: list[str], call: Callable[[], object], on_gpu: bool) -> tuple[dict, dict]:
    """(fns, contexts) for gpu_bench.compare: on a GPU (on_gpu) each backend's call captured as a CUDA graph with
    only that backend enabled and replayed, so what is timed is the device's work, as in the compiled graph's
    replay, not the host's dispatch of one eager call. BERT-base at b8 s384 on the H100 (2026-12-07), timed
    eagerly: efficient 1.880 ms a forward against cuDNN's 2.117, yet in the compiled graphs the efficient kernel
    took 0.74 ms and cuDNN's 0.33. Elsewhere, or where a capture fails, the eager call timed under its backend's
    context."""
    contexts = {b: functools.partial(_alone, b) for b in backends}
    if not on_gpu:
        return dict.fromkeys(backends, call), contexts
    graphs = {}
    try:
        for b in backends:
            with contexts[b]():
                graphs[b] = gpu_bench.captured(call, ())[0]
    except RuntimeError as e:
        log.info("attention backends timed as eager calls: a capture failed (%s)", cause(e, 200))
        return dict.fromkeys(backends, call), contexts
    return {b: g.replay for b, g in graphs.items()}, {}


def time_backends(backends: tuple[str, ...], calls: list[tuple[object, tuple, dict, int]], reps: int,
                  timer: Callable[[Callable[[], object]], float] = gpu_bench.event_ms) -> dict:
    """Per backend: the summed median ms of all calls (weighted by how often each occurs), each call's backends
    timed interleaved (gpu_bench.compare) in the form the compiled graph runs it (additive_mask; on a GPU a graph
    replay: _timed_forms), or why the backend cannot run them."""
    calls = [(func, *additive_mask(args, kwargs), count) for func, args, kwargs, count in calls]
    results: dict[str, float | str] = {b: why for b in backends if (why := _unusable(b, calls))}
    usable = [b for b in backends if b not in results]
    totals = dict.fromkeys(usable, 0.0)
    for func, args, kwargs, count in calls if usable else []:
        on_gpu = isinstance(args[0], torch.Tensor) and args[0].is_cuda
        call = functools.partial(func, *args, **kwargs)
        fns, contexts = _timed_forms(usable, call, on_gpu)
        ms = gpu_bench.compare(fns, reps=reps, contexts=contexts, timer=timer)
        for b in usable:
            totals[b] += count * ms[b]
    return {b: results.get(b, totals.get(b)) for b in backends}


def attention_calls(work: Work) -> dict[str, tuple[object, tuple, dict, int]]:
    """The scaled_dot_product_attention calls of one forward of the model's exported graph, the one the compile
    pass lowers: an eager transformers model asks for is_causal=True, but traced by torch.export it passes a
    materialized boolean mask, which the flash backend cannot take (GPT-2 on the H200: flash timed fastest on the
    eager calls, and the package then ran the efficient kernel, at 2.6x the time of cuDNN's). Masks that depend on no
    input are rewritten first, as the compile pass rewrites them (kpt.gpu.exported: GPT-2's becomes is_causal again)."""
    rec = _RecordAttention()
    graph = export_for_compile(work)[0].module()
    with rec, torch.inference_mode():
        graph(*work.example())
    return rec.calls


@register(SdpaBackend)
def _sdpa(cfg: SdpaBackend, work: Work) -> Outcome:
    calls_by_sig = attention_calls(work)
    if not calls_by_sig:
        return Outcome(False, "the model calls no scaled_dot_product_attention (written-out attention is left to "
                       "Inductor's attention-fusion patterns)")
    if not on_gpu(work):
        return Outcome(False, f"{len(calls_by_sig)} attention call shape(s); backends are chosen on GPUs only")
    calls = list(calls_by_sig.values())
    n_calls = sum(c[3] for c in calls)
    # A measured choice is kept under KPT_CACHE_DIR like an autotuning result: re-optimizing the same model
    # decides the same way (and so reuses its compiled package) instead of re-timing within noise.
    cache_dir = settings.get("KPT_CACHE_DIR")
    key = cache.choice_key("sdpa", {"calls": sorted(calls_by_sig), "candidates": cfg.candidates,
                                    "device": torch.cuda.get_device_name(), "timed": TIMED})
    results, reused = cache.decided(cache_dir, key, lambda: time_backends(cfg.candidates, calls, cfg.reps))
    usable = {b: t for b, t in results.items() if isinstance(t, float)}
    if not usable:
        return Outcome(False, f"no candidate backend runs all {n_calls} attention call(s): "
                       + "; ".join(f"{b}: {r}" for b, r in results.items()) + "; the math backend stays")
    order = tuple(sorted(usable, key=usable.get))
    setattr(work.module, ATTENTION_ATTR, order)
    timing = ", ".join(f"{b.removesuffix('_ATTENTION').lower()} {t:.3f} ms" for b, t in sorted(usable.items(), key=lambda x: x[1]))
    skipped = "; ".join(f"{b.removesuffix('_ATTENTION').lower()} {r}" for b, r in results.items() if isinstance(r, str))
    return Outcome(True, f"{n_calls} attention call(s) in {len(calls)} shape(s), timed per forward"
                   f"{' (measured by an earlier job)' if reused else ''}: {timing}; "
                   f"{order[0].removesuffix('_ATTENTION').lower()} first" + (f" ({skipped})" if skipped else ""))


# ---------------------------------------------------------------- kernels/ hook


@dataclass(frozen=True)
class CustomKernels(PassConfig):
    """Kernels from the repository's kernels/ package, kept where they measure faster on this device.

    The package, when it exists, exposes candidates(module, device, example) -> [(name, apply)] where apply(module)
    returns the module with the kernel's custom op swapped in (ops registered with torch.library, so
    export and AOTInductor trace them)."""

    name: ClassVar[str] = "custom_kernels"
    folder: str = "kernels"
    min_speedup: float = 1.02  # below this the difference is within run-to-run noise of gpu_bench.compare


def kernel_candidates(folder: str = "kernels") -> Callable | str:
    """The repository's kernels/ entry point, candidates(module, device, example) -> [(name, apply)] (loaded by
    file path: the package is not installed), or why there is none."""
    init = REPO / folder / "__init__.py"
    if not init.is_file():
        return f"{folder}/ does not exist yet in this build: no custom kernels to try"
    spec = importlib.util.spec_from_file_location("kpt_repo_kernels", init,
                                                  submodule_search_locations=[str(init.parent)])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    candidates = getattr(mod, "candidates", None)
    return candidates if candidates is not None else f"{folder}/ has no candidates(module, device, example) entry point"


@register(CustomKernels)
def _kernels(cfg: CustomKernels, work: Work) -> Outcome:
    if not (REPO / cfg.folder / "__init__.py").is_file():
        return Outcome(False, f"{cfg.folder}/ does not exist yet in this build: no custom kernels to try")
    if not on_gpu(work):
        return Outcome(False, "custom kernels are tried on GPUs only")
    candidates = kernel_candidates(cfg.folder)
    if isinstance(candidates, str):
        return Outcome(False, candidates)
    x = work.example()
    kept, measured, tried = [], [], set()
    while True:
        # Asked again after each trial: a kept swap can leave nothing for a later one to change (kernels/' whole
        # decode layers bypass the norms and MLPs its other swaps would replace).
        todo = [(n, a) for n, a in candidates(work.module, work.device, x) if n not in tried]
        if not todo:
            break
        name, apply = todo[0]
        tried.add(name)
        try:
            trial = apply(work.module)  # a new module: the current one stays as it is
            times, reused = decided_trial("custom_kernels", name, work.module, trial, x, work.device)
        except Exception as e:  # noqa: BLE001 - any failure of a candidate rejects it, not the build
            log.warning("kernel candidate %s failed its trial", name, exc_info=True)
            if gpu_fault(e):  # the process's CUDA context is gone: the job's next attempt goes on without it
                if settings.get("KPT_CACHE_DIR"):  # (without a cache, each attempt faults the same way)
                    # decided_trial's key (the device's name, read before the trial, is cached by torch)
                    key = trial_key("custom_kernels", name, work.module, x, work.device)
                    cache.save_choice(settings.get("KPT_CACHE_DIR"), key, {"faulted": cause(e, 200)})
                raise DeviceFault(f"kernel candidate {name} faulted the GPU in its trial ({cause(e, 200)}); the "
                                  "job's next attempt, in a fresh process, goes on without it", candidate=name) from e
            measured.append(f"{name} failed: {cause(e, 200)}")
            continue
        if "faulted" in times:
            measured.append(f"{name} not tried: it faulted the GPU in an earlier trial ({times['faulted']})")
            continue
        base, t = times["base_ms"], times["trial_ms"]
        measured.append(f"{name} {base:.3f} -> {t:.3f} ms{timed_how(times)}"
                        + (" (measured by an earlier job)" if reused else ""))
        if base / t >= cfg.min_speedup:
            work.module = trial
            kept.append(name)
    if kept:
        return Outcome(True, f"kept {', '.join(kept)}: " + "; ".join(measured))
    return Outcome(False, "no kernel from kernels/ measured faster" + (f": {'; '.join(measured)}" if measured else ""))


def timed_how(times: dict) -> str:
    """How a trial was timed where it differs from its package's run: uncompiled, eagerly, or with kernels that
    wait (PDL code) whose graph got no programmatic edge into them (time_trial's "trial_edges")."""
    return ("" if times.get("compiled") else " uncompiled") + ("" if times.get("graphs") else " eager") + (
        " (no programmatic graph edge into its waiting kernels: their PDL code ran as plain launches)"
        if times.get("trial_edges") == 0 else
        " (timed twice: the first graph got no programmatic edge)" if times.get("retimed") else "")


def trial_key(kind: str, candidate: str, base: torch.nn.Module, x: tuple[torch.Tensor, ...], device: str) -> str:
    """The decision cache's key of a candidate's trial on this model, inputs and device."""
    return cache.choice_key(kind, {"candidate": candidate, "model": structure(base),
                                   # "edges counted": decisions since trials record their programmatic edges
                                   # (and re-time a PDL trial without any), so none timed before is reused
                                   "timed": "compiled graphs, build options, edges counted",
                                   "inputs": [(tuple(t.shape), str(t.dtype)) for t in x],
                                   "device": _device_name(torch.device(device))})


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def decided_trial(kind: str, candidate: str, base: torch.nn.Module, trial: torch.nn.Module,
                  x: tuple[torch.Tensor, ...], device: str) -> tuple[dict, bool]:
    """time_trial(base, trial, x), kept under KPT_CACHE_DIR (trial_key) like the attention order: the same model on
    the same device decides the same way (and so finds its compiled package) instead of re-timing within noise.
    Returns (times, reused); times is {"faulted": why} where the trial faulted the GPU before (_kernels)."""
    key = trial_key(kind, candidate, base, x, device)
    return cache.decided(settings.get("KPT_CACHE_DIR"), key, lambda: _timed_once_more_without_edges(base, trial, x))


def _timed_once_more_without_edges(base: torch.nn.Module, trial: torch.nn.Module,
                                   x: tuple[torch.Tensor, ...]) -> dict:
    """time_trial, once more (compiled and captured afresh) where the trial's graph got no programmatic edge into
    its waiting kernels: that timing measures PDL code as plain launches, not the package's route. The 1B Llama's
    O3 build got 0 of 136 edges once (H100, 2026-12-07) where the same code had made 133 the day before; the
    second timing is kept either way, and "retimed" says it was needed."""
    times = time_trial(base, trial, x)
    if times.get("trial_edges") != 0:
        return times
    log.warning("the kernel trial's graph got no programmatic edge into its waiting kernels: timed once more")
    return {**time_trial(base, trial, x), "retimed": 1}


# What CUDA reports when a kernel faults: the context is lost (every later call fails), unlike an error of one call.
_FAULTS = ("illegal memory access", "illegal instruction", "misaligned address", "unspecified launch failure",
           "device-side assert", "hardware stack error")


def gpu_fault(e: BaseException) -> bool:
    """Whether e (or what caused it) is a GPU fault that ends the process's use of its GPU."""
    return any(f in str(x) for x in chain(e) for f in _FAULTS)


def time_trial(base: torch.nn.Module, trial: torch.nn.Module, x: tuple[torch.Tensor, ...],
               compiled: bool = True) -> dict[str, float]:
    """Median ms of base and trial on x, each compiled by Inductor with the build's options for it (freezing;
    coordinate descent where it calls a matrix-vector product: kpt.gpu.compile.trial_options; "compiled": 1) and
    replayed as a CUDA graph where both can be captured ("graphs": 1).

    The package is Inductor's code replayed as graphs (kpt.gpu.graphs), so that is the time the swap changes.
    Uncompiled, a norm counts as the six kernels eager PyTorch runs, where Inductor fuses it into its neighbours:
    the 1B Llama's decode step kept kpt_norms (3.222 -> 2.783 ms, eager replayed) and its package then spent
    0.108 ms in 45 norm launches that Inductor's build had fused into the next matrix-vector product (H200,
    2026-12-04). Timed eagerly, a launch-bound model measures the host's dispatch instead of its kernels (the
    decode attention lost an eager trial, 35.8 -> 40.3 ms, while taking less device time than what it replaces).
    A model Inductor cannot compile is timed uncompiled ("compiled": 0), one that cannot be captured eagerly
    ("graphs": 0)."""
    runners: dict[str, Callable] = {"base_ms": base, "trial_ms": trial}
    done = 0
    if compiled:
        from torch._dynamo.exc import TorchDynamoException

        from kpt.gpu.compile import trial_options

        # Each trial's module is a new instance of the same classes: without a reset, the earlier trials' entries
        # count against Dynamo's recompile limit (8 per code object), past which it runs the model eagerly.
        torch._dynamo.reset()
        try:
            # Each side with its own options, as its own build would compile it: a base whose matrix-vector
            # products are kernels/' (the decode layers and head) calls no aten GEMM of one row, so its options had
            # no coordinate-descent tuning, and the int8 trial compiled with them measured 17.473 ms against
            # 1.233 (the 1B Llama's decode step, H100, 2026-12-08; its build tunes them).
            candidates = {n: torch.compile(m, dynamic=False, options=trial_options(m, x)) for n, m in runners.items()}
            with torch.inference_mode():
                for c in candidates.values():
                    c(*x)  # compiles
            runners, done = candidates, 1
        except (RuntimeError, TorchDynamoException) as e:
            log.info("kernel trial timed uncompiled: Inductor could not compile it (%s)", cause(e, 200))
    waiting = {n: graph_edges.kernels_of(m) for n, m in (("base_ms", base), ("trial_ms", trial))}
    try:
        return _timed_runners(runners, x, waiting) | {"compiled": done}
    finally:
        if compiled:
            torch._dynamo.reset()  # the compiled code of both, and what it holds


def _timed_runners(runners: dict[str, Callable], x: tuple[torch.Tensor, ...],
                   waiting: dict[str, tuple[str, ...]] | None = None) -> dict[str, float]:
    """runners timed on x as CUDA graphs (kpt.gpu.runtime.GraphedRunner), eagerly where they cannot be captured.
    waiting: per runner, the kernels of its that wait for the launch before (kpt.gpu.graph_edges; as its package
    would run)."""
    waiting = waiting or {}

    def eagerly(r: Callable) -> object:
        with torch.inference_mode():  # as compiled and captured: a compiled model's guards include grad mode
            return r(*x)

    eager = {n: functools.partial(eagerly, r) for n, r in runners.items()}
    graphed = {n: runtime.GraphedRunner(r, waits=graph_edges.named(waiting[n]) if waiting.get(n) else None)
               for n, r in runners.items()}
    for n, g in graphed.items():
        try:
            with torch.inference_mode():
                g(*x)  # captures
        except RuntimeError as e:  # a host sync, a CPU op or an allocation the graph cannot hold
            log.info("kernel trial timed eagerly: its %s model cannot be captured as a CUDA graph (%s; raised at %s)",
                     n.removesuffix("_ms"), first_cause(e, 200), first_frames(e) or "?")
            torch.cuda.synchronize()
            return {**gpu_bench.compare(eager), "graphs": 0}
    times = gpu_bench.compare({n: (lambda g=g: g(*x)) for n, g in graphed.items()})
    # Per runner with kernels that wait, the edges its graph got into them ("trial_edges": 0 times PDL code as plain
    # launches: kpt.gpu.graph_edges logs the graph's kernel names then).
    edges = {f"{n.removesuffix('_ms')}_edges": g.programmatic_edges for n, g in graphed.items() if waiting.get(n)}
    del graphed  # the graphs' private pools go with them
    torch.cuda.empty_cache()
    return {**times, **edges, "graphs": 1}


def structure(module: torch.nn.Module) -> str:
    """Digest of what a module's speed depends on: its layers and its parameters' shapes and dtypes."""
    h = hashlib.sha256(str(module).encode())
    for n, p in module.named_parameters():
        h.update(f"{n}:{tuple(p.shape)}:{p.dtype}".encode())
    return h.hexdigest()[:24]
