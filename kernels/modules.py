"""The modules candidates() swaps in. Each one asks the registry, per input shape class, whether ours or
the vendor path runs, and runs that (the vendor path is exactly the module it replaced)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from . import attention, decode, decode_layer, linear_act, norms, registry
from ._common import WAITING_KERNELS
from .matching import act_of, is_rmsnorm, plain


class FusedLinearAct(torch.nn.Module):
    """nn.Linear followed by an activation (the activation module it replaced becomes nn.Identity)."""

    def __init__(self, linear: torch.nn.Linear, act: str) -> None:
        super().__init__()
        self.linear, self.act = linear, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.linear.weight, self.linear.bias
        if x.dtype in (torch.float16, torch.bfloat16) and x.dtype == w.dtype and plain(w, b) and \
                registry.pick_linear(x, w, b, self.act) == registry.OURS:
            return linear_act.linear_act_op(x, w, b, None, None, self.act)
        return linear_act.reference(x, w, b, self.act)


class FusedSwiGLU(torch.nn.Module):
    """A gated MLP (gate_proj, up_proj, down_proj, SiLU act_fn: Llama/Mistral/Qwen): the first two GEMMs and
    silu(gate) * up in one kernel; down_proj through linear_act too where the registry picks ours for its shape
    class (at one row, a decode step, that is gemv.py's kernel against cuBLAS's)."""

    def __init__(self, mlp: torch.nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, u, d = self.mlp.gate_proj, self.mlp.up_proj, self.mlp.down_proj
        half = x.dtype in (torch.float16, torch.bfloat16) and x.dtype == g.weight.dtype
        if half and plain(g.weight, g.bias, u.weight, u.bias) and \
                registry.pick_linear(x, g.weight, g.bias, "silu", u.weight, u.bias) == registry.OURS:
            h = linear_act.linear_act_op(x, g.weight, g.bias, u.weight, u.bias, "silu")
        else:
            h = F.silu(g(x)) * u(x)
        if half and h.dtype == d.weight.dtype and plain(d.weight, d.bias) and \
                registry.pick_linear(h, d.weight, d.bias, "none") == registry.OURS:
            return linear_act.linear_act_op(h, d.weight, d.bias, None, None, "none")
        return d(h)


class FusedNorm(torch.nn.Module):
    """nn.LayerNorm, nn.RMSNorm, or a Llama-style RMSNorm (weight * x * rsqrt(mean(x^2) + eps) in fp32)."""

    def __init__(self, inner: torch.nn.Module, rms: bool, eps: float) -> None:
        super().__init__()
        self.inner, self.rms, self.eps = inner, rms, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = getattr(self.inner, "weight", None)
        b = getattr(self.inner, "bias", None) if not self.rms else None
        if x.dtype in (torch.float16, torch.bfloat16) and (w is None or w.dtype == x.dtype) and \
                registry.pick_norm(x, w, b, self.eps, self.rms) == registry.OURS:
            return norms.norm_op(x, w, b, self.eps, self.rms, 0.0, 0)
        return self.inner(x)


class _RouteSDPA(TorchFunctionMode):
    """Sends scaled_dot_product_attention calls ours can take (no mask, no dropout, fp16/bf16, head dim
    16..128, Nq == Nk when causal) to kpt::attention where the registry picked it."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            routed = _route(*args, **kwargs)
            if routed is not None:
                return routed
        return func(*args, **kwargs)


def _routable(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) -> bool:  # noqa: ANN001
    """An SDPA call kpt::attention can take: no mask, no dropout, 4-D fp16/bf16, a head dim it has, Nq == Nk
    when causal, and grouped heads only where the caller allows them."""
    if attn_mask is not None or dropout_p != 0.0 or q.dim() != 4 or q.dtype not in (torch.float16, torch.bfloat16):
        return False
    if q.shape[-1] not in attention.HEAD_DIMS or (is_causal and q.shape[2] != k.shape[2]):
        return False
    return q.shape[1] == k.shape[1] or enable_gqa


def _route(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):  # noqa: ANN001, ANN202
    if not _routable(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa):
        return None
    if registry.pick_attention(q, k, v, is_causal, scale) != registry.OURS:
        return None
    return attention.attention_op(q, k, v, is_causal, scale, -1, -1, None, 0.0, None)


class _CountRoutable(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and _routable(*args, **kwargs):
            self.calls += 1
        return func(*args, **kwargs)


def routable_attention_calls(module: torch.nn.Module, x: tuple[torch.Tensor, ...]) -> int:
    """SDPA calls of one run of module(*x) that the attention swap could route (the registry not asked): with
    none, its trial would compile the model twice to time the same code (the 1B Llama's decode step passes a
    cache mask to every call: one of the four trials that took 637 s of its O3 build, H200, 2026-12-04)."""
    mode = _CountRoutable()
    with torch.inference_mode(), mode:
        module(*x)
    return mode.calls


class RoutedAttention(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: object, **kwargs: object) -> object:
        with _RouteSDPA():
            return self.inner(*args, **kwargs)


def _bypassed(module: torch.nn.Module) -> set[int]:
    """ids of the modules a decode step's hooks compute without calling them: every submodule of its layers
    where decode_layer is set, its final norm and LM head where decode_head is (decode_layer.py reads their
    weights). A swap there would change nothing the step runs, and its trial would time the same code twice."""
    skip = set()
    for m in module.modules():
        if vars(m).get("decode_layer") is not None:
            skip.update(id(x) for x in m.model.layers.modules())
        if vars(m).get("decode_head") is not None:
            skip.update(id(x) for part in (m.model.norm, m.lm_head) for x in part.modules())
    return skip


def _named(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    skip = _bypassed(module)
    return [(n, m) for n, m in module.named_modules() if id(m) not in skip]


def find_norms(module: torch.nn.Module) -> list[str]:
    return [n for n, m in _named(module)
            if (isinstance(m, torch.nn.LayerNorm) and len(m.normalized_shape) == 1) or is_rmsnorm(m)]


def find_linear_act(module: torch.nn.Module) -> list[tuple[str, int]]:
    """(Sequential's name, index of the Linear) for every Linear directly followed by a known activation."""
    found = []
    for name, m in _named(module):
        if isinstance(m, torch.nn.Sequential):
            kids = list(m)
            for i in range(len(kids) - 1):
                if isinstance(kids[i], torch.nn.Linear) and act_of(kids[i + 1]) and plain(kids[i].weight):
                    found.append((name, i))
    return found


def find_swiglu(module: torch.nn.Module) -> list[str]:
    return [n for n, m in _named(module)
            if all(isinstance(getattr(m, a, None), torch.nn.Linear) for a in ("gate_proj", "up_proj", "down_proj"))
            and act_of(getattr(m, "act_fn", None)) == "silu" and plain(m.gate_proj.weight, m.up_proj.weight)]


def _replace(root: torch.nn.Module, name: str, new: torch.nn.Module) -> torch.nn.Module:
    if not name:
        return new
    parent, _, leaf = name.rpartition(".")
    root.get_submodule(parent).register_module(leaf, new) if parent else root.register_module(leaf, new)
    return root


def swap_norms(module: torch.nn.Module) -> torch.nn.Module:
    out = copy.deepcopy(module)
    for name in find_norms(out):
        m = out.get_submodule(name)
        rms = not isinstance(m, torch.nn.LayerNorm)
        eps = getattr(m, "eps", None) if isinstance(m, (torch.nn.LayerNorm, torch.nn.RMSNorm)) else m.variance_epsilon
        if eps is None:  # nn.RMSNorm(eps=None): torch uses the dtype's eps
            eps = torch.finfo(m.weight.dtype if m.weight is not None else torch.float32).eps
        out = _replace(out, name, FusedNorm(m, rms, float(eps)))
    return out


def swap_linear_act(module: torch.nn.Module) -> torch.nn.Module:
    out = copy.deepcopy(module)
    for name, i in find_linear_act(out):
        seq = out.get_submodule(name)
        act = act_of(seq[i + 1])
        seq[i] = FusedLinearAct(seq[i], act)
        seq[i + 1] = torch.nn.Identity()
    for name in find_swiglu(out):
        out = _replace(out, name, FusedSwiGLU(out.get_submodule(name)))
    return out


def swap_attention(module: torch.nn.Module) -> torch.nn.Module:
    return RoutedAttention(copy.deepcopy(module))


def find_decode_steps(module: torch.nn.Module) -> list[str]:
    """Modules with an unset `decode_attention` hook (kpt.gpu.models.LlamaDecodeStep): their decode attention
    can be kernels/decode.py's, which reads the cache once and never copies it."""
    return [n for n, m in module.named_modules() if "decode_attention" in vars(m) and m.decode_attention is None]


def swap_decode_attention(module: torch.nn.Module) -> torch.nn.Module:
    out = copy.deepcopy(module)
    for name in find_decode_steps(out):
        out.get_submodule(name).decode_attention = decode.decode_attention  # a plain function: copies by reference
    return out


def find_decode_layer_steps(module: torch.nn.Module) -> list[str]:
    """Decode steps with an unset `decode_layer` hook whose every layer decode_layer.py computes exactly."""
    return [n for n, m in module.named_modules() if "decode_layer" in vars(m) and m.decode_layer is None
            and all(decode_layer.eligible(layer) for layer in m.model.layers)]


def swap_decode_layers(module: torch.nn.Module) -> torch.nn.Module:
    """Each decode step's layers through decode_layer.py (with kernels/decode.py's attention, which it calls)."""
    out = copy.deepcopy(module)
    for name in find_decode_layer_steps(out):
        step = out.get_submodule(name)
        for layer in step.model.layers:
            decode_layer.prepare(layer)
        step.decode_attention = step.decode_attention or decode.decode_attention
        step.decode_layer = decode_layer.llama_layer
        if decode_layer.head_eligible(step):
            step.decode_head = decode_layer.llama_head
    return out


def find_decode_prefetch_steps(module: torch.nn.Module) -> list[str]:
    """Decode steps running their layers through decode_layer.py without an L2 prefetch plan."""
    return [n for n, m in module.named_modules() if vars(m).get("decode_layer") is decode_layer.llama_layer
            and not vars(m).get(decode_layer.PREFETCH)]


def swap_decode_prefetch(module: torch.nn.Module) -> torch.nn.Module:
    """Each such step with decode_layer.PREFETCH_PLAN: its launches ask the next launch's weight into L2."""
    out = copy.deepcopy(module)
    for name in find_decode_prefetch_steps(out):
        setattr(out.get_submodule(name), decode_layer.PREFETCH, dict(decode_layer.PREFETCH_PLAN))
    return out


def find_decode_pdl_steps(module: torch.nn.Module) -> list[str]:
    """Decode steps running their layers through decode_layer.py with plain launches, on sm_90+ (programmatic
    dependent launch)."""
    return [n for n, m in module.named_modules() if vars(m).get("decode_layer") is decode_layer.llama_layer
            and not vars(m).get(decode_layer.PDL) and m.lm_head.weight.is_cuda
            and torch.cuda.get_device_capability(m.lm_head.weight.device)[0] >= 9]


def swap_decode_pdl(module: torch.nn.Module) -> torch.nn.Module:
    """Each such step's launches as programmatic dependent ones (decode_layer.PDL: the kernels that then wait, which
    a captured graph's edges into may be made programmatic: kpt.gpu.graph_edges)."""
    out = copy.deepcopy(module)
    for name in find_decode_pdl_steps(out):
        setattr(out.get_submodule(name), decode_layer.PDL, WAITING_KERNELS)
    return out
