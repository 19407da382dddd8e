"""kernels/decode.py against its reference (the cache written at pos, then masked attention): GQA groups of
1, 3 and 8, every head dim, positions at the start, inside a chunk and at the end of the cache, odd lengths."""

from __future__ import annotations

import pytest
import torch

from kernels import decode  # noqa: E402
from tests.kernels.conftest import DEVICE, FP32_FACTOR, GEMM_DTYPES, check_2x


def _inputs(B, Hq, Hkv, S, D, pos, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, 1, D, generator=g)
    k_cache, v_cache = (torch.randn(B, Hkv, S, D, generator=g) for _ in range(2))
    k_new, v_new = (torch.randn(B, Hkv, 1, D, generator=g) for _ in range(2))
    return [t.to(DEVICE, dtype) for t in (q, k_cache, v_cache, k_new, v_new)] + [torch.tensor([pos], device=DEVICE)]


CASES = [  # B, Hq, Hkv, S, D, pos
    (1, 8, 2, 100, 64, 37),
    (2, 4, 4, 33, 32, 0),      # only the new token is visible
    (1, 6, 2, 64, 16, 63),     # a group of 3; the last cache entry is the one replaced
    (1, 3, 1, 50, 128, 49),
    (1, 32, 4, 300, 64, 257),  # the 1B Llama's heads
    (4, 16, 8, 200, 32, 150),  # 8 chunks a head of two blocks each (the others' chunks are one block)
]


@pytest.mark.parametrize("dtype", GEMM_DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}h{}/{}s{}d{}p{}".format(*c))
def test_decode_attention_matches_the_written_cache(case, dtype):
    args = _inputs(*case, dtype, seed=sum(case))
    out = decode.decode_attention(*args)
    assert out.shape == args[0].shape and out.dtype == dtype
    if dtype == torch.float32:  # one precision up, as tests/kernels/test_attention.py judges fp32
        ref64 = decode.reference(*(t.double() if t.is_floating_point() else t for t in args), dtype=torch.float64)
        check_2x(out, ref64, decode.reference(*args), FP32_FACTOR)
    else:
        check_2x(out, decode.reference(*args), decode.reference(*args, dtype=dtype))


def test_cache_entries_at_and_after_pos_never_count():
    """nan in the cache from pos on changes nothing: in the chunk holding pos, and in a chunk wholly past it, whose
    first block is loaded all the same (the interpreter's chunks: 3 of 16 keys)."""
    q, k_cache, v_cache, k_new, v_new, pos = _inputs(1, 4, 2, 40, 32, 21, torch.float32, seed=5)
    want = decode.decode_attention(q, k_cache, v_cache, k_new, v_new, pos)
    k_cache[:, :, 21:] = float("nan")
    v_cache[:, :, 21:] = float("nan")
    torch.testing.assert_close(decode.decode_attention(q, k_cache, v_cache, k_new, v_new, pos), want, rtol=0, atol=0)


def test_the_cases_cover_chunks_of_one_block_and_of_several():
    block = 16  # the interpreter's (decode_attention_op)
    chunks = {decode.splits(b, hkv, s, block)[1] for b, _, hkv, s, _, _ in CASES}
    assert min(chunks) <= block < max(chunks)


def test_split_count_depends_on_the_cache_length_only():
    assert decode.splits(1, 4, 2048, 64) == (32, 64)  # 128 programs of 64 keys
    assert decode.splits(1, 1, 2048, 64) == (32, 64)  # capped by the number of key blocks
    assert decode.splits(8, 8, 2048, 64) == (4, 512)
    assert decode.splits(1, 4, 33, 16) == (3, 16)


def test_bad_inputs_are_refused():
    q, k_cache, v_cache, k_new, v_new, pos = _inputs(1, 4, 2, 16, 32, 3, torch.float32, seed=1)
    with pytest.raises(ValueError, match="one query token"):
        decode.decode_attention(q.expand(1, 4, 2, 32), k_cache, v_cache, k_new, v_new, pos)
    with pytest.raises(ValueError, match="k_new must be"):
        decode.decode_attention(q, k_cache, v_cache, k_new[:, :1], v_new, pos)
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        decode.decode_attention(q[:, :3], k_cache, v_cache, k_new, v_new, pos)
    with pytest.raises(ValueError, match="share one of"):
        decode.decode_attention(q.half(), k_cache, v_cache, k_new, v_new, pos)
    with pytest.raises(ValueError, match="one integer position"):
        decode.decode_attention(q, k_cache, v_cache, k_new, v_new, pos.float())


def test_decode_step_runs_the_kernel_through_its_hook(monkeypatch):
    """kernels.modules swaps the op into kpt.gpu.models.LlamaDecodeStep's hook: same logits and new cache entries
    as the step's own copy-and-SDPA path (fp16 here: the interpreter computes bf16 dot products wrongly)."""
    from kernels import modules
    from kpt.optimize import inputs as inp
    from tests.gpu.helpers import tiny_llama_decode

    step, spec, _ = tiny_llama_decode(context=48)
    step = step.half().to(DEVICE)
    ids, pos, k_cache, v_cache = inp.generate(spec, seed=3)
    args = (ids.to(DEVICE), torch.tensor([29], device=DEVICE), k_cache.half().to(DEVICE), v_cache.half().to(DEVICE))
    assert modules.find_decode_steps(step) == [""]
    calls, real = [], decode.decode_attention
    monkeypatch.setattr(decode, "decode_attention", lambda *a: calls.append(a[-2]) or real(*a))
    swapped = modules.swap_decode_attention(step)
    assert step.decode_attention is None and modules.find_decode_steps(swapped) == []  # a new module
    with torch.inference_mode():
        want, got = step(*args), swapped(*args)
    assert len(calls) == 2 and int(calls[0]) == 29  # once per layer, at the step's position
    torch.testing.assert_close(got[1][0], want[1][0], rtol=0, atol=0)  # layer 0's entry precedes any attention
    for g, w in zip(got, want, strict=True):  # logits, then every layer's new entries: fp16 rounding apart
        assert (g.float() - w.float()).abs().max().item() <= 1e-2 * w.float().abs().max().item()
    ep = torch.export.export(swapped, args)  # the op's fake implementation lets export trace the step
    assert sum(n.target == torch.ops.kpt.decode_attention.default for n in ep.graph.nodes) == 2
    with torch.inference_mode():
        torch.testing.assert_close(ep.module()(*args), got, rtol=0, atol=0)


@pytest.mark.parametrize("one_round", [False, True])
@pytest.mark.parametrize("dtype", GEMM_DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}h{}/{}s{}d{}p{}".format(*c))
def test_one_launch_with_counters_matches_two(case, dtype, one_round, monkeypatch):
    """With zeroed counters the head's last chunk merges in the same launch: the two-launch result (up to the
    order of the sums), and the counters are left zero for the next call; the merge in rounds of two chunks (the
    interpreter's) or all chunks at once (merge_chunks covering them, as 16 chunks of a 64-wide head of 8 queries
    are on a GPU)."""
    if one_round:
        monkeypatch.setattr(decode, "merge_chunks", lambda block_s, block_gm, head_dim: block_s)
    args = _inputs(*case, dtype, seed=sum(case) + 1)
    counters = torch.zeros(case[0] * case[2] + 3, dtype=torch.int32, device=DEVICE)
    one = decode.decode_attention(*args, counters=counters)
    assert int(counters.abs().sum()) == 0
    two = decode.decode_attention(*args)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(one, two, rtol=tol, atol=tol)
    torch.testing.assert_close(decode.decode_attention(*args, counters=counters), one, rtol=0, atol=0)


def test_bad_counters_are_refused():
    args = _inputs(2, 4, 2, 16, 32, 3, torch.float32, seed=1)
    for bad in (torch.zeros(3, dtype=torch.int32), torch.zeros(4, dtype=torch.int64), torch.zeros(8, dtype=torch.int32)[::2]):
        with pytest.raises(ValueError, match="counters must be"):
            decode.decode_attention(*args, counters=bad.to(DEVICE))
