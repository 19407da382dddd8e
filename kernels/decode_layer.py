"""One decoder layer of a Llama-style decode step (kpt.gpu.models.LlamaDecodeStep's decode_layer hook) in six
launches, all kernels/ code: the three projections as one matrix-vector product over their concatenated weights
with the input RMSNorm folded in, the rotary embedding applied to q and k in its epilogue and the new key and
value written straight into the step's stacked outputs (gemv.gemv_qkv); decode attention (decode.py: the split
kernel, then a merge kernel: ATTENTION_LAUNCHES); the output projection with the residual added; gate/up with
the post-attention RMSNorm folded in and silu(gate) * up written once; the down projection with the residual
added (gemv.gemv_op). The logits
(decode_head hook): the final RMSNorm folded into the LM head's matrix-vector product: Inductor's reduction for
it took 49-80 us in the step's builds, gemv.py reads the same 32000x2048 weight in 32 us (H200, 2026-12-04).

Compiled, the layers run Inductor's matrix-vector reductions otherwise: eleven launches a layer in the 1B
Llama's step, five of them 1-2.6 us calls bound by latency (the key and value projections, two rotary
kernels, a norm's statistics), and a down projection that recomputes SiLU*mul in its loads (18 us a layer
against gemv.py's 10.3, H200, 2026-12-04: bench/decode_mlp.py). With cos and sin still Inductor's (eight
pointwise launches a step) and k and v copied into the stacked outputs after (two launches a layer) the layer
path ran the step in 1.095 ms against 1.216 for the best build without it (H200, 2026-12-04). The whole-model
trial decides whether it runs, as for decode attention. MLP_CHAIN puts the last three launches in one
(mlp_chain.py), LAYER_CHAIN the whole layer (layer_chain.py); both are off until measured. PDL makes the launches
programmatic dependent ones (where Triton launches them itself, the step uncompiled and captured as a CUDA
graph; in a compiled step or a package, through its captured graph's edges: kpt.gpu.graph_edges): each starts
while the one before finishes; the trial kpt_decode_pdl decides, as for the prefetch plan.
"""

from __future__ import annotations

import torch

from . import decode, gemv, layer_chain, mlp_chain
from .matching import act_of, is_rmsnorm, plain

QKV = "kpt_qkv"  # the buffer swap() adds to each layer's attention: q, k and v weights concatenated

PREFETCH = "kpt_prefetch"  # the step's L2 prefetch plan (modules.swap_decode_prefetch), absent: none
# launch -> the fraction of the weight the next weight-reading launch needs that it asks into L2 as it starts
# (_common.prefetch_l2): the q/k/v projection fetches the output projection's weight, decode attention
# (latency-bound: the memory system is mostly idle) the gate projection's, the output projection the up
# projection's, gate/up the down projection's, the down projection the next layer's q/k/v (the LM head's after
# the last). A launch that prefetches loads its own weight (or cache) as L2's first to evict (_common.STREAM_POLICY),
# so the stream does not push out what it asked in. Its first trial on a GPU faulted (H200, 2026-12-05, while
# Inductor took its kernels' operands as all written: kernels/_common.py); fixed, its GPU test passed on the H100
# (2026-12-05), and kernels/ offers it as a trial of its own again (kernels.DECODE_PREFETCH).
PREFETCH_PLAN = {"qkv": 1.0, "attention": 1.0, "o_proj": 0.5, "gate_up": 0.25, "down": 1.0}

PDL = "kpt_pdl"  # kpt.gpu.graph_edges.ATTR: set by modules.swap_decode_pdl to _common.WAITING_KERNELS, absent: none
# Where set, the layer path's launches are programmatic dependent ones (kernels/_common.py): each may start while the
# one before finishes, fetching its weight rows into L2 meanwhile. Uncompiled it passed its GPU test (H200,
# 2026-12-05); compiled (a compiled step's graph gets it through kpt.gpu.graph_edges) it gave wrong values while
# Inductor took its kernels' operands as all written (fixed since, and that test passed on the H100, 2026-12-05):
# kernels/ offers it as a trial of its own again (kernels.DECODE_PDL).

# Decode attention's launches a layer: 1 (each key/value head's last chunk merges, kernels/decode.py) or 2 (split,
# then merge). Two: replayed as a CUDA graph at the 1B Llama's shape (b1, 32/4 heads, 2048 cached, d64) the two
# launches took 4.8 us where one took 6.8-8.1 us at 8-32 chunks a head (kernels.bench --ops decode, H100,
# 2026-12-05: docs/benchmarks/kernels-quick-decode-h100.md), and the compiled step's one launch at its 32 chunks
# 9.2 us a layer (h100-llama-1b-decode-2026-12-05e.json): each head's last chunk merges all 32 chunks of its 8
# query heads alone, where the merge kernel spreads them over 32 programs. In the package's step with two: 4.9 us a
# layer (0.108 ms in 44 launches, h100-llama-1b-decode-2026-12-06.json).
ATTENTION_LAUNCHES = 2
# The output projection, gate/up and down in one launch at batch 1 (kernels/mlp_chain.py: each group's weights
# stream while the group before finishes). Correct on the H200 (its GPU test, 2026-12-05) but slower: the 1B
# Llama's step 1.592 ms with it (bench/decode_mlp.py's fused_layers+chain) against 1.360 without: off.
MLP_CHAIN = False
# The whole layer in one launch at batch 1 (kernels/layer_chain.py: q/k/v, decode attention's chunks and merges,
# then the MLP half, each group of programs waiting on the one before), its counters zeroed by a small fill launch.
# Its GPU test passed on the H200 (2026-12-05); compiled into the step it failed (Inductor's worker: NameError, a
# helper called through its module; fixed since): off until bench/decode_mlp.py's fused_layers+layer measures it.
LAYER_CHAIN = False


def _norm(m: torch.nn.Module) -> torch.nn.Module:
    return getattr(m, "inner", m)  # modules.FusedNorm wraps the model's norm where kpt_norms was kept


def _mlp(m: torch.nn.Module) -> torch.nn.Module:
    return getattr(m, "mlp", m)  # modules.FusedSwiGLU wraps the model's MLP where kpt_linear_act was kept


def _plain_linear(m: object) -> bool:
    return isinstance(m, torch.nn.Linear) and m.bias is None and plain(m.weight)


def _rmsnorm(n: torch.nn.Module) -> bool:
    return is_rmsnorm(_norm(n)) and hasattr(_norm(n), "variance_epsilon")  # the form llama_layer reads


def head_eligible(step: torch.nn.Module) -> bool:
    """The final norm and LM head this path computes exactly (a bias-free LM head with a plain weight)."""
    return _plain_linear(step.lm_head) and _rmsnorm(step.model.norm)


def eligible(layer: torch.nn.Module) -> bool:
    """A Llama-style layer this path computes exactly: bias-free projections with plain (unquantized) weights,
    a SiLU gated MLP, and RMSNorms of the `weight * x * rsqrt(mean(x^2) + eps)` form."""
    attn, mlp = getattr(layer, "self_attn", None), _mlp(getattr(layer, "mlp", None))
    norms = [getattr(layer, n, None) for n in ("input_layernorm", "post_attention_layernorm")]
    return (all(_plain_linear(getattr(attn, p, None)) for p in ("q_proj", "k_proj", "v_proj", "o_proj"))
            and all(_plain_linear(getattr(mlp, p, None)) for p in ("gate_proj", "up_proj", "down_proj"))
            and act_of(getattr(mlp, "act_fn", None)) == "silu"
            and all(_rmsnorm(n) for n in norms))


def prepare(layer: torch.nn.Module) -> None:
    """Adds the concatenated q/k/v weight the layer's first launch reads (a copy: the projections stay, for the
    path that does not take this hook)."""
    attn = layer.self_attn
    attn.register_buffer(QKV, torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).detach(),
                         persistent=False)


def llama_layer(step: torch.nn.Module, layer: torch.nn.Module, h: torch.Tensor, input_pos: torch.Tensor,
                k_cache: torch.Tensor, v_cache: torch.Tensor, k_all: torch.Tensor, v_all: torch.Tensor, slot: int,
                ) -> torch.Tensor:
    """The decode_layer hook: h [B, 1, hidden] after the layer, as LlamaDecodeStep's loop body computes it; the
    layer's new key and value written into k_all[slot] and v_all[slot] [B, Hkv, 1, D] (the step's stacked
    outputs, passed whole to the launch that writes them: gemv.gemv_qkv_op says why)."""
    k_new, v_new = k_all[slot], v_all[slot]  # read by decode attention (and written by the chain, when on)
    attn, mlp = layer.self_attn, _mlp(layer.mlp)
    n_in, n_post = _norm(layer.input_layernorm), _norm(layer.post_attention_layernorm)
    b, d, heads = h.shape[0], step.head_dim, step.heads
    if LAYER_CHAIN and b == 1 and heads * d == h.shape[-1]:
        zeroed = torch.zeros(layer_chain.COUNTERS, dtype=torch.int32, device=h.device)
        return layer_chain.layer_chain(
            h, getattr(attn, QKV), n_in.weight, n_in.variance_epsilon, input_pos, step.inv_freq, k_cache, v_cache,
            k_new, v_new, attn.o_proj.weight, n_post.weight, mlp.gate_proj.weight, mlp.up_proj.weight,
            mlp.down_proj.weight, n_post.variance_epsilon, zeroed)
    plan = getattr(step, PREFETCH, None) or {}
    pdl = bool(getattr(step, PDL, None))
    chain = MLP_CHAIN and b == 1
    # The layer's counters, zeroed by the q/k/v launch: decode attention's chunk counters (in one launch; none where
    # ATTENTION_LAUNCHES is 2: its merge kernel's launch instead), then mlp_chain's.
    kv = b * step.kv_heads if ATTENTION_LAUNCHES == 1 else 0
    count = kv + (mlp_chain.COUNTERS if chain else 0)
    counters = torch.empty(count, dtype=torch.int32, device=h.device) if count else None
    q = gemv.gemv_qkv(h, getattr(attn, QKV), n_in.weight, n_in.variance_epsilon, input_pos, step.inv_freq, k_all,
                      v_all, *_ahead(plan, "qkv", attn.o_proj.weight), counters, pdl, slot=slot)  # q and the key roped
    out = decode.decode_attention(q.view(b, 1, heads, d).transpose(1, 2), k_cache, v_cache, k_new, v_new, input_pos,
                                  None, *_ahead(plan, "attention", mlp.gate_proj.weight), counters if kv else None, pdl)
    out = out.reshape(b, heads, 1, d).transpose(1, 2).reshape(b, 1, -1)
    if chain:
        return mlp_chain.mlp_chain(out, h, attn.o_proj.weight, n_post.weight, mlp.gate_proj.weight, mlp.up_proj.weight,
                                   mlp.down_proj.weight, n_post.variance_epsilon, counters, kv)
    h = gemv.gemv_op(out, attn.o_proj.weight, None, None, h, 0.0, "none", *_ahead(plan, "o_proj", mlp.up_proj.weight),
                     pdl)
    act = gemv.gemv_op(h, mlp.gate_proj.weight, mlp.up_proj.weight, n_post.weight, None, n_post.variance_epsilon,
                       "silu", *_ahead(plan, "gate_up", mlp.down_proj.weight), pdl)
    return gemv.gemv_op(act, mlp.down_proj.weight, None, None, h, 0.0, "none", *_ahead(plan, "down", _after(step, layer)),
                        pdl)


def _after(step: torch.nn.Module, layer: torch.nn.Module) -> torch.Tensor:
    """The weight the launch after this layer's last reads: the next layer's q/k/v, or the LM head's."""
    layers = list(step.model.layers)
    i = next(i for i, m in enumerate(layers) if m is layer)
    return getattr(layers[i + 1].self_attn, QKV) if i + 1 < len(layers) else step.lm_head.weight


def _ahead(plan: dict[str, float], launch: str, weight: torch.Tensor) -> tuple[torch.Tensor | None, float]:
    """(weight, fraction) for the op's prefetch operands where the plan has `launch` ask it into L2, else (None, 0)."""
    fraction = plan.get(launch, 0.0)
    return (weight, fraction) if fraction > 0 else (None, 0.0)


def llama_head(step: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The decode_head hook: lm_head(norm(h)) in one launch."""
    norm = _norm(step.model.norm)
    return gemv.gemv_op(h, step.lm_head.weight, None, norm.weight, None, norm.variance_epsilon, "none", None, 1.0,
                        bool(getattr(step, PDL, None)))
