"""GPU-only model entries next to kpt.optimize.zoo: a Llama decode step with its KV cache as inputs.

The zoo's llama-1b runs the whole sequence (prefill). Decoding one token at a time needs the
cache of keys and values of the tokens before it; LlamaDecodeStep takes it as inputs and returns
the new token's logits and its keys and values (the caller writes them into its cache), so the
step is a pure function that exports, compiles and replays as a CUDA graph. It runs the zoo
model's own weights (same seed): its logits match LlamaForCausalLM's (tests/gpu/test_models.py).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kpt.errors import InvalidArgument
from kpt.gpu.device import normalize
from kpt.optimize import inputs as inp
from kpt.optimize import source, zoo

DECODE_CONTEXT = 2048  # cache length: one decode step after a 2048-token prefill


class LlamaDecodeStep(nn.Module):
    """forward(input_ids[B,1], input_pos[1], k_cache[L,B,Hkv,S,D], v_cache[L,B,Hkv,S,D])
    -> (logits[B,1,V], k_new[L,B,Hkv,1,D], v_new[L,B,Hkv,1,D]).

    Positions >= input_pos in the cache are masked; the new key and value are written at input_pos of a
    functional copy. Grouped-query attention runs without expanding the cache: the query heads of one
    key/value head become that head's query rows (HF's repeat_kv maps query head h to kv head h // n_rep).

    decode_attention (None: the copy and SDPA above) is the hook kernels/ swaps a decode-attention op into:
    called as decode_attention(q[B,H,1,D], k_cache[i], v_cache[i], k_new, v_new, input_pos, None) with the
    semantics of the copy and SDPA, it returns [B,H,1,D] without writing the cache (kernels/decode.py).
    decode_layer (None: the layer's modules as below), used where decode_attention is set too and the cache
    has the model's dtype, is the hook for a whole layer: called as decode_layer(step, layer, h, input_pos,
    k_cache[i], v_cache[i], k_new, v_new, i), it returns h as the loop body computes it and writes the layer's
    new key and value into k_new[i] and v_new[i] [B,Hkv,1,D] of the outputs. The outputs are passed whole with the
    layer's index: compiled, a kernel writing into a slice taken outside it is written into a clone that is then
    scattered back (4 more launches a layer: 88 of the 198 of the 1B Llama's compiled step on the H200,
    2026-12-05), and tensors of each layer's own stacked at the end cost a copy launch each (44 on the H100,
    2026-12-05). decode_head, with it, computes the logits from the last layer's output as decode_head(step, h)
    (kernels/decode_layer.py)."""

    def __init__(self, causal_lm: nn.Module) -> None:
        super().__init__()
        cfg = causal_lm.config
        self.model, self.lm_head = causal_lm.model, causal_lm.lm_head
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        rope = getattr(cfg, "rope_parameters", None) or {}
        theta = float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
        if rope.get("rope_type", "default") != "default":
            raise InvalidArgument(f"rope_type {rope.get('rope_type')!r} is not supported by the decode step")
        inv = 1.0 / theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim)
        self.register_buffer("inv_freq", inv.to(self.lm_head.weight.device), persistent=False)
        self.decode_attention: Callable | None = None
        self.decode_layer: Callable | None = None
        self.decode_head: Callable | None = None

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def forward(self, input_ids: torch.Tensor, input_pos: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = input_ids.shape[0]
        h = self.model.embed_tokens(input_ids)  # [B, 1, hidden]
        if self.decode_layer is not None and self.decode_attention is not None and h.dtype == k_cache.dtype:
            return self._hooked(h, input_pos, k_cache, v_cache)
        freqs = input_pos.to(torch.float32)[:, None] * self.inv_freq[None, :]  # [1, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(h.dtype), emb.sin().to(h.dtype)
        visible = (torch.arange(k_cache.shape[3], device=input_ids.device) <= input_pos)[None, None, None, :]
        n_rep = self.heads // self.kv_heads
        new_k, new_v = [], []
        for i, layer in enumerate(self.model.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = attn.q_proj(x).view(b, 1, self.heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(b, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(b, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            k_step, v_step = k.to(k_cache.dtype), v.to(v_cache.dtype)
            new_k.append(k_step)
            new_v.append(v_step)
            if self.decode_attention is not None and q.dtype == k_cache.dtype:
                out = self.decode_attention(q, k_cache[i], v_cache[i], k_step, v_step, input_pos, None)
            else:
                keys = k_cache[i].index_copy(2, input_pos, k_step).to(q.dtype)
                values = v_cache[i].index_copy(2, input_pos, v_step).to(q.dtype)
                q_rows = q.reshape(b, self.kv_heads, n_rep, self.head_dim)
                out = F.scaled_dot_product_attention(q_rows, keys, values, attn_mask=visible)
            out = out.reshape(b, self.heads, 1, self.head_dim).transpose(1, 2).reshape(b, 1, -1)
            h = h + attn.o_proj(out)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.lm_head(self.model.norm(h)), torch.stack(new_k), torch.stack(new_v)

    def _hooked(self, h: torch.Tensor, input_pos: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shape = (len(self.model.layers), h.shape[0], self.kv_heads, 1, self.head_dim)
        new_k, new_v = k_cache.new_empty(shape), v_cache.new_empty(shape)
        for i, layer in enumerate(self.model.layers):
            h = self.decode_layer(self, layer, h, input_pos, k_cache[i], v_cache[i], new_k, new_v, i)
        logits = self.decode_head(self, h) if self.decode_head else self.lm_head(self.model.norm(h))
        return logits, new_k, new_v


def decode_spec(cfg: object, batch: int = 1, context: int = DECODE_CONTEXT) -> inp.InputSpec:
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    cache = (inp.Dim(cfg.num_hidden_layers), inp.Dim(batch), inp.Dim(cfg.num_key_value_heads), inp.Dim(context),
             inp.Dim(head_dim))
    return inp.InputSpec((
        inp.TensorSpec("input_ids", "int64", (inp.Dim(batch), inp.Dim(1)), 0, cfg.vocab_size),
        inp.TensorSpec("input_pos", "int64", (inp.Dim(1),), 0, context),
        inp.TensorSpec("k_cache", "bfloat16", cache),
        inp.TensorSpec("v_cache", "bfloat16", cache),
    ))


def next_step(inputs: tuple[torch.Tensor, ...], outputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The decode step's inputs after `inputs`, made on the device as a greedy generation loop makes them: the
    step's new keys and values written into the caches at input_pos, the argmax token, input_pos + 1. Nothing
    here waits for the device (no .item()), so a loop of steps is enqueued back to back."""
    input_ids, input_pos, k_cache, v_cache = inputs
    logits, new_k, new_v = outputs[:3]
    k_cache.index_copy_(3, input_pos, new_k.to(k_cache.dtype))
    v_cache.index_copy_(3, input_pos, new_v.to(v_cache.dtype))
    return logits[:, -1].argmax(-1, keepdim=True).to(input_ids.dtype), input_pos + 1, k_cache, v_cache


def _llama_decode(device: str) -> tuple[nn.Module, inp.InputSpec]:
    wrapped, _ = zoo.build("llama-1b", device)
    step = LlamaDecodeStep(wrapped.model).eval()
    return step, decode_spec(wrapped.model.config)


MODELS: dict[str, Callable[[str], tuple[nn.Module, inp.InputSpec]]] = {"llama-1b-decode": _llama_decode}


def open_source(fmt: str, name: str, digest: str, model_path: str | None, spec: inp.InputSpec | None,
                device: str) -> source.Source:
    """source.open_source, plus the GPU-only entries of MODELS by name. An uploaded program is moved with
    torch.export's move_to_device_pass: besides its weights, a graph traced on another device carries that
    device in constants (torch.arange(..., device="cpu")), which Module.to() would leave behind. The device
    is normalized first ("cuda" -> "cuda:0"): the pass writes it into the graph as given, and a later export
    of the moved graph checks it against its inputs' devices, which always carry an index."""
    device = normalize(device)
    if name in MODELS and fmt in ("MODEL_FORMAT_ZOO", "MODEL_FORMAT_UNSPECIFIED") and model_path is None:
        module, default = MODELS[name](device)
        return source.Source(name, f"zoo:{name}", "MODEL_FORMAT_ZOO", spec or default, module=module)
    if model_path is None:
        return source.open_source(fmt, name, digest, model_path, spec, device)
    src = source.open_source(fmt, name, digest, model_path, spec, "cpu")
    if src.program is not None:
        from torch.export.passes import move_to_device_pass

        src.program = move_to_device_pass(src.program, device)
        src.module = src.program.module()
    return src


def program(src: source.Source, device: str) -> torch.export.ExportedProgram:
    """src.exported(), exported with inputs on the model's device (Source.exported() makes CPU inputs)."""
    if src.program is None:
        from kpt.optimize.passes import export_module

        src.program = export_module(src.module, src.spec, normalize(device))
    return src.program


def with_shape(spec: inp.InputSpec, sizes: dict[str, tuple[int, ...]]) -> inp.InputSpec:
    """The spec with static dims replaced for the named tensors (benchmark shapes)."""
    out = []
    for t in spec.tensors:
        if t.name in sizes:
            t = inp.TensorSpec(t.name, t.dtype, tuple(inp.Dim(s) for s in sizes[t.name]), t.low, t.high)
        out.append(t)
    return inp.InputSpec(tuple(out))
