"""kernels/attention_split.py on the CPU: the schedule (which tiles run whole, how the rest's key blocks are cut) and
the merge kernel (Triton's interpreter) over the pieces the Gluon kernel writes, computed here with torch. The
Gluon kernel itself runs on the GPU suite (test_gpu.py) and compiles in test_cubin.py."""

from __future__ import annotations

import pytest
import torch

from kernels import attention, attention_split
from kernels import attention_ws as ws
from tests.kernels.conftest import DEVICE


def test_whole_waves_run_whole_and_the_remainder_is_split_over_every_sm():
    # the goal shape on an H100: 2048 tiles of 128 key blocks, 132 SMs -> 15 waves whole, 68 tiles over 132 programs
    assert attention_split.schedule(2048, 128, 132) == (1980, 132)
    assert attention_split.schedule(2 * 132, 128, 132) == (264, 0)  # whole waves: nothing to split
    assert attention_split.schedule(131, 128, 132) == (131, 0)  # under MIN_IDLE of the SMs idle: not worth a merge
    assert attention_split.schedule(100, 128, 132) == (0, 132)  # under one wave: every tile split
    assert attention_split.schedule(3, 2, 132) == (0, 6)  # a range is at least one key block


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("tiles,n_blocks,sms", [(2048, 128, 132), (8, 4, 5), (7, 5, 3), (100, 128, 132), (3, 2, 132),
                                                (5, 1, 4), (264, 3, 132), (131, 2, 132)])
def test_every_block_is_computed_once_whole_tiles_in_one_piece_and_split_ones_in_their_slots(tiles, n_blocks, sms,
                                                                                             persistent):
    """work(), the kernel's _work and _nth in Python, over every program of the launch attention() makes: each
    (tile, key block) exactly once; a whole tile in one piece written to the output (slot -1); a split program's
    pieces (at most two) in slots 2q and 2q + 1; a persistent program's whole tiles an SM apart."""
    full, programs = attention_split.schedule(tiles, n_blocks, sms)
    grid = max(min(sms, full), programs) if persistent else full + programs
    seen, slots = [], []
    for pid in range(grid):
        got = attention_split.work(pid, grid, full, programs, tiles, n_blocks, persistent)
        whole = [t for t, j0, n, slot in got if slot < 0]
        split = [(slot, n) for t, j0, n, slot in got if slot >= 0]
        assert all(t < full for t in whole) and whole == list(range(pid, full, grid))[:len(whole)]
        assert len(split) <= 2 and all(n >= 1 for _, n in split)
        slots += [slot for slot, _ in split]
        seen += [(t, j0 + i) for t, j0, n, _ in got for i in range(n)]
    assert sorted(seen) == [(t, j) for t in range(tiles) for j in range(n_blocks)]
    assert len(set(slots)) == len(slots) and all(0 <= s < 2 * programs for s in slots)
    if persistent:  # one program an SM at most, the whole tiles shared evenly
        whole = [sum(slot < 0 for *_, slot in attention_split.work(p, grid, full, programs, tiles, n_blocks, True))
                 for p in range(grid)]
        assert grid <= sms and max(whole) - min(whole) <= 1


@pytest.mark.parametrize("shape,sms", [((1, 4, 256, 512, 64), 5), ((2, 3, 128, 384, 64), 4), ((1, 2, 384, 256, 32), 4)])
def test_the_merge_of_the_pieces_is_attention(shape, sms):
    """The workspace as the split programs write it (torch), merged by _merge_kernel, equals attention on the split
    tiles' rows; the whole tiles' rows are left to the Gluon kernel (untouched here)."""
    b, h, n, nk, d = shape
    g = torch.Generator().manual_seed(n + nk)
    q = torch.randn(b, h, n, d, generator=g).to(DEVICE)
    k, v = (torch.randn(b, 1, nk, d, generator=g).to(DEVICE) for _ in range(2))  # GQA: every head on one kv head
    m_blocks, n_blocks = n // ws.BLOCK_M, nk // ws.BLOCK_N
    tiles = b * h * m_blocks
    full, programs = attention_split.schedule(tiles, n_blocks, sms)
    assert 0 < programs and full < tiles
    acc, row_max, row_sum = attention_split.reference_pieces(q, k, v, full, programs)
    o = torch.zeros_like(q)
    attention_split.merge(acc, row_max, row_sum, o, full, programs, tiles, n_blocks, n)
    ref = attention.reference(q.double(), k.double(), v.double()).view(-1, d)
    rows = o.view(-1, d)
    split_rows = torch.cat([torch.arange(t // m_blocks * n + t % m_blocks * ws.BLOCK_M,
                                         t // m_blocks * n + (t % m_blocks + 1) * ws.BLOCK_M)
                            for t in range(full, tiles)])
    # fp32 throughout (exp2 of log2-unit scores, two roundings of the scale): a few ulps of the fp64 reference, where
    # a piece merged twice, missed or from the wrong slot is off by the output's own size
    torch.testing.assert_close(rows[split_rows].double(), ref[split_rows], atol=2e-6, rtol=2e-5)
    whole = torch.ones(rows.shape[0], dtype=torch.bool)
    whole[split_rows] = False
    assert not rows[whole].any()


def test_only_non_causal_calls_are_split():
    q, k, v = (torch.empty(1, 8, 256, 128, dtype=torch.bfloat16, device="meta") for _ in range(3))
    cpu = [torch.zeros(t.shape, dtype=t.dtype) for t in (q, k, v)]
    assert not attention_split.supports(*cpu, False)  # not on a GPU
    assert not attention_split.supports(*cpu, True)


def test_the_op_sends_non_causal_gluon_calls_here_only_where_use_is_on(monkeypatch):
    """attention.py's "gluon" mode: a plain eager call attention_ws covers goes to attention_split when USE is on and
    the call is non-causal, to attention_ws otherwise (the kernels stubbed: no GPU here)."""
    from kernels import attention_ws

    calls = []
    monkeypatch.setattr(attention_ws, "supports", lambda *a: True)
    monkeypatch.setattr(attention_ws, "attention", lambda q, k, v, causal, scale: calls.append(("ws", causal)) or q)
    monkeypatch.setattr(attention_split, "attention", lambda q, k, v, scale: calls.append(("split", False)) or q)
    monkeypatch.setattr(attention, "MODE", "gluon")
    q = torch.zeros(1, 2, 128, 64)
    for use in (False, True):
        monkeypatch.setattr(attention_split, "USE", use)
        for causal in (False, True):
            attention._run(q, q, q, causal, None, -1, -1, None, 0.0, None, "gluon")
    assert calls == [("ws", False), ("ws", True), ("split", False), ("ws", True)]
