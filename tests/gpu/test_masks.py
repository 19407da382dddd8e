"""kpt.gpu.masks on the CPU: the masks torch.export materializes for transformers models without padding are
dropped (all true) or made is_causal (causal), with the same outputs; masks that depend on an input, or have
another pattern, stay."""

import pytest
import torch

from kpt.gpu import passes
from kpt.gpu.masks import SDPA, classify, drop_static_masks
from kpt.optimize import inputs as inp
from kpt.optimize.passes import Work
from tests.gpu.helpers import tiny_bert, tiny_llama_decode


def _sdpa_calls(ep: torch.export.ExportedProgram) -> list[tuple[tuple, dict]]:
    return [(n.args, dict(n.kwargs)) for n in ep.graph.nodes if n.op == "call_function" and n.target == SDPA]


def _rewritten(model: torch.nn.Module, x: tuple) -> tuple[str, torch.export.ExportedProgram, torch.Tensor, torch.Tensor]:
    ep = torch.export.export(model, x)
    with torch.no_grad():
        before = ep.module()(*x)
        what = drop_static_masks(ep, x)
        after = ep.module()(*x)
    return what, ep, before, after


def _vit():
    from transformers import ViTConfig, ViTModel

    from kpt.optimize.zoo import HFTensors

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, image_size=32,
                    patch_size=8, attn_implementation="sdpa")
    return HFTensors(ViTModel(cfg, add_pooling_layer=False), ("pixel_values",), ("last_hidden_state",)).eval()


def _gpt2():
    from transformers import GPT2Config, GPT2Model

    from kpt.optimize.zoo import HFTensors

    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=64, n_layer=2, n_head=2, vocab_size=100, n_positions=32, attn_implementation="sdpa",
                     use_cache=False)
    return HFTensors(GPT2Model(cfg), ("input_ids",), ("last_hidden_state",)).eval()


def test_vit_all_true_mask_is_dropped():
    what, ep, before, after = _rewritten(_vit(), (torch.randn(2, 3, 32, 32),))
    assert what == "2 all-true mask(s) dropped"
    for args, kwargs in _sdpa_calls(ep):
        assert len(args) == 3 and "attn_mask" not in kwargs and kwargs["is_causal"] is False
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_gpt2_causal_mask_becomes_is_causal():
    what, ep, before, after = _rewritten(_gpt2(), (torch.randint(0, 100, (2, 16)),))
    assert what == "2 causal mask(s) made is_causal"
    assert all(len(a) == 3 and k["is_causal"] is True for a, k in _sdpa_calls(ep))
    assert not any(n.target == torch.ops.aten.arange.start_step and not n.users for n in ep.graph.nodes)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_llama_gqa_causal_mask_becomes_is_causal():
    from transformers import LlamaConfig, LlamaModel

    from kpt.optimize.zoo import HFTensors

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=100, attn_implementation="sdpa", use_cache=False)
    model = HFTensors(LlamaModel(cfg), ("input_ids",), ("last_hidden_state",)).eval()
    what, ep, before, after = _rewritten(model, (torch.randint(0, 100, (1, 12)),))
    assert what == "2 causal mask(s) made is_causal"
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_a_mask_from_an_input_stays():
    model, spec = tiny_bert(batch=2, seq=8)
    x = tuple(inp.generate(spec, seed=0))
    what, ep, before, after = _rewritten(model, x)
    assert what == "2 mask(s) kept"
    assert all(len(a) == 4 for a, _ in _sdpa_calls(ep))
    torch.testing.assert_close(after, before)


def test_the_decode_steps_position_mask_stays():
    """The decode step's mask hides the cache beyond input_pos: built from an input's values, never evaluated."""
    from kpt.optimize.passes import export_module

    step, spec, _ = tiny_llama_decode(context=16)
    x = tuple(inp.generate(spec, seed=0, for_export=True))
    ep = export_module(step, spec)
    assert drop_static_masks(ep, x) == "2 mask(s) kept"
    assert all(len(a) == 4 for a, _ in _sdpa_calls(ep))


def test_a_mask_of_another_pattern_stays():
    class Windowed(torch.nn.Module):
        def forward(self, q):
            i = torch.arange(q.shape[-2])
            keep = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < 3)  # sliding window of 3
            return torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=keep)

    what, ep, before, after = _rewritten(Windowed(), (torch.randn(1, 2, 8, 16),))
    assert what == "1 mask(s) kept"
    torch.testing.assert_close(after, before)


def test_a_mask_under_a_dynamic_dim_stays():
    class Causal(torch.nn.Module):
        def forward(self, q):
            n = q.shape[-2]
            keep = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
            return torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=keep)

    q = torch.randn(1, 2, 8, 16)
    ep = torch.export.export(Causal(), (q,), dynamic_shapes=({2: torch.export.Dim("seq", min=2, max=64)},))
    assert drop_static_masks(ep, (q,)) == "1 mask(s) kept"  # evaluated at one length, it would prove nothing


@pytest.mark.parametrize(("mask", "kind"), [
    (torch.ones(4, 4, dtype=torch.bool), "all"),
    (torch.zeros(1, 4, 4), "all"),
    (torch.ones(4, 4, dtype=torch.bool).tril(), "causal"),
    (torch.zeros(4, 4).masked_fill(~torch.ones(4, 4, dtype=torch.bool).tril(), torch.finfo(torch.float32).min),
     "causal"),
    (torch.zeros(4, 4).masked_fill(~torch.ones(4, 4, dtype=torch.bool).tril(), -1.0), "other"),  # a bias
    (torch.ones(4, 4, dtype=torch.bool).tril(-1), "other"),
    (torch.ones(4, 6, dtype=torch.bool).tril(), "other"),  # not square: SDPA's is_causal aligns top-left
])
def test_classify(mask, kind):
    assert classify(mask, mask.shape[-2]) == kind


def test_attention_backends_are_timed_on_the_rewritten_calls(tmp_path):
    """The backends are timed on the calls the compile pass lowers: the exported graph's, after
    drop_static_masks. Eagerly GPT-2 asks for is_causal=True; exported, it passes a boolean mask, which flash
    cannot take (on the H200 the package ran the efficient kernel, at 2.6x cuDNN's time); rewritten, is_causal
    again."""
    spec = inp.InputSpec((inp.TensorSpec("input_ids", "int64", (inp.Dim(2), inp.Dim(16)), 0, 100),))
    [(_, args, kwargs, count)] = passes.attention_calls(Work(_gpt2(), spec, "cpu", str(tmp_path))).values()
    assert count == 2 and len(args) == 3 and kwargs.get("is_causal") is True and "attn_mask" not in kwargs
