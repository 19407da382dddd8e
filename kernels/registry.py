"""Which implementation runs each op, per device and shape class: measured once, cached, ours only where it
is both faster and correct.

For one (op, shape class, dtype, device) the registry runs every provider on the same inputs
(ours = "kpt"; attention: each SDPA backend and FlexAttention; linear: cuBLAS + a separate activation;
norms: PyTorch's fused kernel), times them as CUDA-graph replays (_common.gpu_ms), and measures each one's max error
against an fp32 reference. Ours is chosen only when it is the fastest *and* its error is at most
ERROR_RATIO x the error of the best vendor provider (flash-attention's rule). The decision is stored with
kpt.gpu.cache.choice_key/save_choice under KPT_CACHE_DIR (choices/), so later jobs and processes decide
the same way without re-timing. Without kpt (bench.py on a bare machine) decisions stay in memory.

Under tracing (torch.compile / torch.export: fake tensors) nothing is measured: a decision made by an
earlier eager run is used, and without one the vendor path is traced.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable

import torch

from ._common import eager_call, gpu_ms, reason

log = logging.getLogger(__name__)

OURS = "kpt"
ERROR_RATIO = 2.0  # ours may be at most this many times less accurate than the vendor's own run
DECISION_VERSION = 2  # 2: timed as CUDA-graph replays (_common.gpu_ms); 1 was host-timed
_MEMORY: dict[str, dict] = {}


def shape_class(**dims: int) -> dict[str, int]:
    """Dimensions that scale with the workload (tokens, rows) go to the next power of two; the caller passes
    model dimensions (head dim, hidden size) unbucketed as they decide the kernel."""
    return {k: (1 << max(int(v) - 1, 0).bit_length()) if k.startswith("n_") else int(v) for k, v in dims.items()}


def decide(timings: dict[str, float | str], errors: dict[str, float], floor: float = 0.0) -> str:
    """The provider to use: ours when usable, fastest, and within ERROR_RATIO of the best vendor error (floor:
    the dtype's resolution, so a vendor that happens to be exact does not forbid every other result);
    otherwise the fastest usable vendor provider. Raises ValueError when nothing ran."""
    usable = {p: t for p, t in timings.items() if isinstance(t, float) and p in errors}
    vendors = {p: t for p, t in usable.items() if p != OURS}
    if not usable:
        raise ValueError(f"no provider ran: {timings}")
    if OURS in usable and vendors:
        best_vendor_err = min(errors[p] for p in vendors)
        correct = errors[OURS] <= ERROR_RATIO * max(best_vendor_err, floor)
        if correct and usable[OURS] < min(vendors.values()):
            return OURS
    if vendors:
        return min(vendors, key=vendors.get)
    return OURS  # only ours ran: nothing to compare with (the caller's reference check still applies)


def _kpt_cache():  # noqa: ANN202
    """(kpt.gpu.cache, KPT_CACHE_DIR), or (None, None) without kpt (bench.py on a bare machine): decisions
    then stay in this process."""
    try:
        from kpt import settings
        from kpt.gpu import cache
    except ImportError:
        return None, None
    return cache, settings.get("KPT_CACHE_DIR")


_KEYS: dict[str, str] = {}


def _key(op: str, parts: dict) -> str:
    """The decision's key; computed once per process for each (op, parts): every call of a swapped module asks
    for it in eager mode, so it must cost a dict lookup, not a digest of the toolchain."""
    local = repr((op, sorted((k, str(v)) for k, v in parts.items())))
    key = _KEYS.get(local)
    if key is None:
        cache, _ = _kpt_cache()
        key = cache.choice_key(f"kernels.{op}", dict(parts, version=DECISION_VERSION)) if cache else local
        _KEYS[local] = key
    return key


def _load(key: str) -> dict | None:
    if key not in _MEMORY:
        cache, folder = _kpt_cache()
        found = cache.load_choice(folder, key) if cache and folder else None
        if found is None:
            return None
        _MEMORY[key] = found
    return _MEMORY[key]


def _decided(key: str, run: Callable[[], dict]) -> dict:
    """The stored decision, or run()'s, stored. With kpt, under kpt.gpu.cache's lock: processes deciding the
    same shape class at once (parallel builds, a worker per GPU) measure once and agree."""
    cache, folder = _kpt_cache()
    value = cache.decided(folder, key, run)[0] if cache and folder else run()
    _MEMORY[key] = value
    return value


def tracing(*tensors: torch.Tensor) -> bool:
    """Under torch.compile/export, or fake or wrapper tensors (_common.eager_call)."""
    return not eager_call(*tensors)


ROUNDS = 5  # timing rounds per decision: each provider timed once per round, the order rotating


def measure(providers: dict[str, Callable[[], torch.Tensor]], reference: Callable[[], torch.Tensor],
            timer: Callable[[Callable[[], object]], float] | None = None) -> tuple[dict, dict]:
    """Runs every provider once (a failure is recorded as its reason), then times those that ran: ROUNDS rounds,
    one timer() of each provider per round with the order rotating, so clock changes and other work on the
    device weigh on every provider alike; a provider's time is the median of its rounds. Returns
    (timings ms | reason, max abs error vs reference)."""
    if timer is None:
        timer = gpu_ms
    ref = reference().float()
    timings: dict[str, float | str] = {}
    errors: dict[str, float] = {}
    for name, fn in providers.items():
        try:
            out = fn()
        except (RuntimeError, ValueError, NotImplementedError) as e:  # a backend that refuses these inputs
            timings[name] = f"not usable ({reason(e)})"
            continue
        err = (out.float() - ref).abs().max().item()
        if err != err:  # NaN: wrong, never chosen
            timings[name] = "produced NaN"
            continue
        errors[name] = err
    ran = [n for n in providers if n in errors]
    samples: dict[str, list[float]] = {n: [] for n in ran}
    for r in range(ROUNDS if ran else 0):
        for name in ran[r % len(ran):] + ran[:r % len(ran)]:
            if name in timings:  # its timing failed in an earlier round
                continue
            try:
                samples[name].append(timer(providers[name]))
            except (RuntimeError, ValueError, NotImplementedError) as e:  # e.g. out of memory while timed
                timings[name] = f"not usable (timing failed: {reason(e)})"
                errors.pop(name, None)
    return {n: timings[n] if n in timings else statistics.median(samples[n]) for n in providers}, errors


def choose(op: str, parts: dict, providers: Callable[[], dict[str, Callable[[], torch.Tensor]]],
           reference: Callable[[], torch.Tensor], floor: float, device: torch.device) -> str:
    """The provider for one shape class (parts: shape class, dtype, features). providers/reference are
    called only when the decision has to be measured."""
    parts = dict(parts, device=torch.cuda.get_device_name(device) if device.type == "cuda" else str(device))
    key = _key(op, parts)
    found = _load(key)
    if found is not None:
        return found["provider"]

    def run() -> dict:
        timings, errors = measure(providers(), reference)
        pick = decide(timings, errors, floor)
        log.info("kernels registry: %s %s -> %s (timings %s, errors %s)", op, parts, pick, timings, errors)
        return {"version": DECISION_VERSION, "provider": pick, "timings": timings, "errors": errors,
                "parts": {k: str(v) for k, v in parts.items()}}

    value = _decided(key, run)
    return value["provider"]


def cached(op: str, parts: dict, device: torch.device) -> str | None:
    """A decision made earlier (this process or KPT_CACHE_DIR), without measuring."""
    parts = dict(parts, device=torch.cuda.get_device_name(device) if device.type == "cuda" else str(device))
    found = _load(_key(op, parts))
    return found["provider"] if found else None


@torch.compiler.assume_constant_result
def traced_pick(op: str, parts: dict, device: str) -> str:
    """cached()'s provider, else "vendor", for a model being traced: Dynamo calls it once and bakes the answer
    into the graph. Traced, the lookup runs json, hashlib, file reads and package-metadata lookups under Dynamo:
    a fullgraph compile of it fails on the CPU (InternalTorchDynamoError), and an int8-quantized Llama decode
    step's kernel trials failed to compile with Dynamo inside it (H200, 2026-12-04), so they were timed eagerly.
    Non-strict export (FakeTensors) calls it as plain Python."""
    return cached(op, parts, torch.device(device)) or "vendor"


def clear_memory() -> None:
    _MEMORY.clear()


# ---------------------------------------------------------------- providers per op (also bench.py's axis)


def _eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def linear_providers(x, weight, bias, act, weight2=None, bias2=None, eager: bool = False) -> dict:  # noqa: ANN001
    """Ours and cuBLAS + a separate activation. Ours is what a compiled model runs (linear_act.COMPILED_MODE: the
    registry's choices are for compiled models); eager: the op as shipped instead (linear_act.MODE, which may take
    an eager-only kernel), as the kernel benchmark reports it."""
    from . import linear_act

    mode = linear_act.MODE if eager else linear_act.COMPILED_MODE
    return {
        OURS: lambda: linear_act._run(x, weight, bias, weight2, bias2, act, mode),
        "cublas+act": lambda: linear_act.reference(x, weight, bias, act, weight2, bias2),
    }


def norm_providers(x, weight, bias, eps, rms) -> dict:  # noqa: ANN001
    from . import norms

    n = (x.shape[-1],)
    vendor = (lambda: torch.nn.functional.rms_norm(x, n, weight, eps)) if rms else (
        lambda: torch.nn.functional.layer_norm(x, n, weight, bias, eps))
    return {OURS: lambda: norms.norm_op(x, weight, bias, eps, rms, 0.0, 0), "torch": vendor}


def attention_providers(q, k, v, causal, scale=None, window=(-1, -1), alibi=None, softcap=0.0,  # noqa: ANN001
                        document_id=None, flex: bool = True, eager: bool = False) -> dict:
    """Ours, each SDPA backend (with an explicit mask/bias where the features need one) and FlexAttention. Ours is
    what a compiled model runs (attention.COMPILED_MODE: the registry's choices are for compiled models); eager: the
    op as shipped instead (attention.MODE, which may take an eager-only kernel), as the kernel benchmark reports it."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from . import attention

    F = torch.nn.functional
    gqa = q.shape[1] != k.shape[1]
    plain = window == (-1, -1) and alibi is None and softcap == 0 and document_id is None
    out: dict[str, Callable[[], torch.Tensor]] = {
        OURS: lambda: attention._run(q, k, v, causal, scale, window[0], window[1], alibi, softcap, document_id,
                                     attention.MODE if eager else attention.COMPILED_MODE)}
    if softcap == 0 and (plain or q.shape[2] * k.shape[2] <= (1 << 26)):  # a dense mask beyond 64M entries: no
        if plain:
            mask = None
        else:
            ok = attention.visible(q.shape[2], k.shape[2], causal, window, document_id, q.device)
            mask = torch.zeros(ok.shape, dtype=q.dtype, device=q.device).masked_fill(~ok, float("-inf"))
            if alibi is not None:
                Nq, Nk = q.shape[2], k.shape[2]
                d = torch.arange(Nk, device=q.device)[None, :] - (torch.arange(Nq, device=q.device)[:, None] + Nk - Nq)
                mask = mask - (alibi.to(q.device)[None, :, None, None] * d.abs()).to(q.dtype)
        for name, backend in (("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION), ("sdpa_flash", SDPBackend.FLASH_ATTENTION),
                              ("sdpa_efficient", SDPBackend.EFFICIENT_ATTENTION)):
            def run(b=backend, m=mask):  # noqa: ANN001, ANN202
                with sdpa_kernel([b]):
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=causal and m is None,
                                                          scale=scale, enable_gqa=gqa)
            out[name] = run
    if flex:
        out["flex"] = _flex_provider(q, k, v, causal, scale, window, alibi, softcap, document_id)
    return out


_FLEX = None
# Compiled FlexAttention variants one process may hold (each mask and score function is a recompile): past dynamo's
# default of 8 it ran flex's dense eager path instead, the benchmark's ninth case at 16 GB (H100, 2026-12-05). Past
# this many, the call fails (a provider that failed) instead of running eagerly.
FLEX_RECOMPILES = 64


def _flex_call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
    from torch._dynamo.exc import FailOnRecompileLimitHit

    try:  # suppress_errors pinned off: dynamo refuses it together with fail_on_recompile_limit_hit
        with torch._dynamo.config.patch(recompile_limit=FLEX_RECOMPILES, fail_on_recompile_limit_hit=True,
                                        suppress_errors=False):
            return _FLEX(*args, **kwargs)
    except FailOnRecompileLimitHit as e:  # an Exception, not a RuntimeError: the callers' failed-provider case
        raise RuntimeError(f"FlexAttention not compiled: {e}") from e


def _flex_provider(q, k, v, causal, scale, window, alibi, softcap, document_id):  # noqa: ANN001, ANN202
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    global _FLEX
    if _FLEX is None:
        _FLEX = torch.compile(flex_attention, dynamic=False)
    B, Hq, Nq, _ = q.shape
    Nk = k.shape[2]
    off = Nk - Nq

    def mask_mod(b, h, qi, kj):  # noqa: ANN001, ANN202
        d = kj - (qi + off)
        ok = d == d
        if causal:
            ok = ok & (d <= 0)
        if window[0] >= 0:
            ok = ok & (d >= -window[0])
        if window[1] >= 0:
            ok = ok & (d <= window[1])
        if document_id is not None:
            ok = ok & (document_id[b, qi + off] == document_id[b, kj])
        return ok

    def score_mod(s, b, h, qi, kj):  # noqa: ANN001, ANN202
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if alibi is not None:
            s = s - alibi[h] * (kj - (qi + off)).abs()
        return s

    block = create_block_mask(mask_mod, B if document_id is not None else None, None, Nq, Nk, device=q.device)
    gqa = Hq != k.shape[1]
    return lambda: _flex_call(q, k, v, score_mod=score_mod, block_mask=block, scale=scale, enable_gqa=gqa)


# ---------------------------------------------------------------- the decisions the swapped modules ask for


def pick_attention(q, k, v, causal, scale) -> str:  # noqa: ANN001
    from . import attention

    parts = {"class": shape_class(n_q=q.shape[2], n_k=k.shape[2], heads=q.shape[1], kv_heads=k.shape[1],
                                  head_dim=q.shape[3], n_batch=q.shape[0]),
             "dtype": str(q.dtype), "causal": causal}
    if tracing(q, k, v):
        return traced_pick("attention", parts, str(q.device))
    return choose("attention", parts, lambda: attention_providers(q, k, v, causal, scale),
                  lambda: attention.reference(q, k, v, causal, scale), _eps(q.dtype), q.device)


def pick_linear(x, weight, bias, act, weight2=None, bias2=None) -> str:  # noqa: ANN001
    from . import linear_act

    parts = {"class": shape_class(n_rows=x.numel() // x.shape[-1], k=weight.shape[1], n=weight.shape[0]),
             "dtype": str(x.dtype), "act": act, "gated": weight2 is not None, "bias": bias is not None}
    if tracing(x):
        return traced_pick("linear_act", parts, str(x.device))
    f32 = [t.float() if t is not None else None for t in (x, weight, bias, weight2, bias2)]
    return choose("linear_act", parts, lambda: linear_providers(x, weight, bias, act, weight2, bias2),
                  lambda: linear_act.reference(f32[0], f32[1], f32[2], act, f32[3], f32[4]), _eps(x.dtype), x.device)


def pick_norm(x, weight, bias, eps, rms) -> str:  # noqa: ANN001
    from . import norms

    parts = {"class": shape_class(n_rows=x.numel() // x.shape[-1], n=x.shape[-1]), "dtype": str(x.dtype),
             "rms": rms, "bias": bias is not None}
    if tracing(x):
        return traced_pick("norm", parts, str(x.device))

    def reference():  # noqa: ANN202
        w = weight.float() if weight is not None else None
        if rms:
            return norms.rms_norm_reference(x.float(), w, eps)
        return norms.layer_norm_reference(x.float(), w, bias.float() if bias is not None else None, eps)

    return choose("norm", parts, lambda: norm_providers(x, weight, bias, eps, rms), reference, _eps(x.dtype),
                  x.device)
