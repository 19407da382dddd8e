"""Non-causal attention_ws with its last wave's tiles split across every SM (stream-K for the remainder, as CUTLASS's
"data-parallel + stream-K" GEMM schedule does).

attention_ws.py runs one program per 128 query rows of a head, one program an SM at a time (its shared memory), all
tiles equally long where non-causal: at the goal shape (b1 h16 16k, 2048 tiles) an H100's 132 SMs run 15 full
waves and then 68 tiles with 64 SMs idle, 16 waves' time for 15.52 waves of work (kernels-h100.md: 596.6 TFLOP/s,
230 us a tile). Here the first `full` tiles (whole waves) run as there, one program each; the remaining tiles' key
blocks are cut into `programs` equal ranges, one program each, so the last wave ends at about 15.52 tiles' time.
A range is shorter than a tile, so a program computes at most two pieces (the end of one tile, the start of the
next), each written unnormalized with its rows' running maximum and sum to a workspace; a small Triton kernel
(_merge_kernel) then merges each split tile's pieces into the output (softmax's usual rescaling, flash-decoding's
merge). Each piece re-loads its query rows (the loader waits until both consumers are done with the previous ones).

Gluon has no interpreter: the schedule (schedule(), pieces()) and the merge run on the CPU tests, the kernel on the
GPU suite (tests/kernels/test_gpu.py) and its compiled form in test_cubin.py (kernels.cubin --attention-split).
kernels.bench times it as kpt_ws_split beside kpt_ws before it replaces anything.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import attention_ws as ws
from ._common import LOG2E, launch
from ._gluon import fence_async_shared, gl, gluon, mbarrier, tma

# attention.py's "gluon" mode sends the non-causal calls attention_ws covers here: off until kernels.bench's kpt_ws_split
# rows measure it faster than kpt_ws on a card.
USE = False
# Split the remainder only where it leaves at least this share of a wave idle: a split tile costs its pieces'
# pipeline fills (query rows and first key blocks) and the merge's reads, a few microseconds against a tile's 230 us.
MIN_IDLE = 0.1
MERGE_ROWS = 32  # query rows a merge program


def schedule(tiles: int, n_blocks: int, sms: int) -> tuple[int, int]:
    """(full, programs): the first `full` tiles one program each, the other tiles' key blocks (n_blocks a tile) in
    `programs` ranges, one program each (0 where nothing is split). Splits only where the last wave would leave
    MIN_IDLE of the SMs idle; every range is at least one key block."""
    rem = tiles % sms
    if rem == 0 or (sms - rem) < MIN_IDLE * sms:
        return tiles, 0
    return tiles - rem, min(sms, rem * n_blocks)


def pieces(full: int, programs: int, tiles: int, n_blocks: int, program: int) -> list[tuple[int, int, int]]:
    """The (tile, first key block, key blocks) pieces split program `program` (0-based among the split ones)
    computes: the kernel's _pieces, for the tests and the merge's reference."""
    total = (tiles - full) * n_blocks
    lo, hi = program * total // programs, (program + 1) * total // programs
    out = []
    while lo < hi:
        tile, j0 = divmod(lo, n_blocks)
        n = min(hi, (tile + 1) * n_blocks) - lo
        out.append((full + tile, j0, n))
        lo += n
    return out


@triton.jit
def _merge_kernel(acc_ptr, m_ptr, l_ptr, o_ptr, full, programs, n_blocks, m_blocks, n_q,
                  BLOCK_M: tl.constexpr, HEAD_D: tl.constexpr, ROWS: tl.constexpr):
    """Split tile `full + program_id(0)`'s ROWS query rows from row block program_id(1): its pieces (every split
    program whose key-block range meets the tile's; piece slot 2 * program + (0 where the range starts in this tile,
    else 1)) merged as out = sum 2^(m - M) acc / sum 2^(m - M) l (m in log2 units), written to o."""
    s = tl.program_id(0)
    r = tl.program_id(1) * ROWS + tl.arange(0, ROWS)
    d = tl.arange(0, HEAD_D)
    total = (tl.num_programs(0)) * n_blocks
    first = ((s * n_blocks + 1) * programs - 1) // total  # the last program whose range starts at or before the tile
    last = tl.minimum(((s + 1) * n_blocks * programs - 1) // total, programs - 1)
    big_m = tl.full((ROWS,), -float("inf"), tl.float32)
    big_l = tl.zeros((ROWS,), tl.float32)
    out = tl.zeros((ROWS, HEAD_D), tl.float32)
    for p in range(first, last + 1):
        slot = 2 * p + tl.where((p * total // programs) // n_blocks == s, 0, 1)
        m = tl.load(m_ptr + slot * BLOCK_M + r)
        m_new = tl.maximum(big_m, m)
        keep, add = tl.exp2(big_m - m_new), tl.exp2(m - m_new)
        big_l = big_l * keep + tl.load(l_ptr + slot * BLOCK_M + r) * add
        acc = tl.load(acc_ptr + (slot * BLOCK_M + r)[:, None] * HEAD_D + d[None, :])
        out = out * keep[:, None] + acc * add[:, None]
        big_m = m_new
    tile = full + s
    row0 = (tile // m_blocks) * n_q + (tile % m_blocks) * BLOCK_M  # the tile's first row in the [B * H * N, D] view
    tl.store(o_ptr + (row0 + r)[:, None] * HEAD_D + d[None, :], (out / big_l[:, None]).to(o_ptr.dtype.element_ty))


def merge(acc: torch.Tensor, row_max: torch.Tensor, row_sum: torch.Tensor, o: torch.Tensor, full: int, programs: int,
          tiles: int, n_blocks: int, n_q: int) -> None:
    """_merge_kernel over the split tiles: acc [2 * programs, BLOCK_M, D] fp32, the rows' running maxima (log2
    units) and sums [2 * programs, BLOCK_M] fp32; o [B, H, n_q, D] written in place."""
    d = o.shape[-1]
    grid = (tiles - full, ws.BLOCK_M // MERGE_ROWS)
    launch(_merge_kernel, acc, o)[grid](acc, row_max, row_sum, o, full, programs, n_blocks, n_q // ws.BLOCK_M, n_q,
                                        BLOCK_M=ws.BLOCK_M, HEAD_D=d, ROWS=MERGE_ROWS)


def reference_pieces(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, full: int, programs: int,
                     scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The workspace the kernel's split programs write, computed with torch (fp32): for the CPU tests of the merge."""
    b, h, n_q, d = q.shape
    n_k = k.shape[2]
    m_blocks, n_blocks = n_q // ws.BLOCK_M, n_k // ws.BLOCK_N
    tiles = b * h * m_blocks
    qk_scale = (scale if scale is not None else 1.0 / math.sqrt(d)) * LOG2E
    acc = torch.zeros(2 * programs, ws.BLOCK_M, d, dtype=torch.float32, device=q.device)
    row_max, row_sum = (torch.zeros(2 * programs, ws.BLOCK_M, dtype=torch.float32, device=q.device) for _ in range(2))
    qf, kf, vf = (t.float() for t in (q, k, v))
    group = h // k.shape[1]
    for p in range(programs):
        for i, (tile, j0, n) in enumerate(pieces(full, programs, tiles, n_blocks, p)):
            bh, mb = divmod(tile, m_blocks)
            bi, hi = divmod(bh, h)
            rows = qf[bi, hi, mb * ws.BLOCK_M:(mb + 1) * ws.BLOCK_M]
            keys = slice(j0 * ws.BLOCK_N, (j0 + n) * ws.BLOCK_N)
            x = rows @ kf[bi, hi // group, keys].T * qk_scale
            row_max[2 * p + i] = x.amax(1)
            e = torch.exp2(x - row_max[2 * p + i][:, None])
            row_sum[2 * p + i] = e.sum(1)
            acc[2 * p + i] = e @ vf[bi, hi // group, keys]
    return acc, row_max, row_sum


if gluon is not None:

    @gluon.jit
    def _pieces(pid, full, programs, total, n_blocks):
        """(first iteration, end) of program pid over the key blocks of tiles from `full` on, counted from tile 0's
        first block: a whole tile for pid < full, else its share of the split tiles' blocks (pieces() in Python)."""
        lo = pid * n_blocks
        hi = lo + n_blocks
        if pid >= full:
            q = pid - full
            lo = full * n_blocks + q * total // programs
            hi = full * n_blocks + (q + 1) * total // programs
        return lo, hi

    @gluon.jit
    def _rows(tile, m_blocks, n_q, n_k, heads, kv_heads, BM: gl.constexpr):
        """(first query row, first key row) of a tile in the [B * H * N, D] views."""
        bh = tile // m_blocks
        kvh = (bh // heads) * kv_heads + (bh % heads) // (heads // kv_heads)
        return bh * n_q + (tile % m_blocks) * BM, kvh * n_k

    @gluon.jit
    def _piece(it, hi, n_blocks):
        """(tile, first key block, key blocks) of the piece that starts at iteration it of a range ending at hi."""
        tile = it // n_blocks
        return tile, it % n_blocks, gl.minimum(hi, (tile + 1) * n_blocks) - it

    @gluon.jit
    def _load(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty, v_empty,
              lo, hi, n_blocks, m_blocks, n_q, n_k, heads, kv_heads, STAGES: gl.constexpr, CONSUMERS: gl.constexpr):
        """The loader: for each piece of [lo, hi) (tile by tile) its query rows, once both consumers have released the
        previous piece's, then its key and value blocks through the ring (attention_ws's loads)."""
        QM: gl.constexpr = q_desc.block_type.shape[0]
        c = 0
        piece = 0
        it = lo
        while it < hi:
            tile, j0, n = _piece(it, hi, n_blocks)
            q_row, kv_row = _rows(tile, m_blocks, n_q, n_k, heads, kv_heads, QM * CONSUMERS)
            if piece > 0:
                mbarrier.wait(q_empty, (piece - 1) & 1)
            ws._load_rows(q_desc, q_smem, q_ready, q_row, CONSUMERS)
            ws._load_blocks(k_desc, v_desc, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, kv_row, j0, n, c, STAGES)
            c += n
            it += n
            piece += 1

    @gluon.jit
    def _consume(w, o_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty, v_empty, turn,
                 acc_ptr, m_ptr, l_ptr, lo, hi, split, slot0, n_blocks, m_blocks, n_q, qk_scale,
                 STAGES: gl.constexpr, HEAD_D: gl.constexpr, WARPS: gl.constexpr):
        """Consumer w of two (ping-pong): each piece's online softmax (attention_ws._blocks), then a whole tile's rows
        by TMA as attention_ws does, or a split piece's unnormalized rows, maxima and sums to workspace slot
        slot0 + piece."""
        QM: gl.constexpr = q_smem.shape[1]
        BN: gl.constexpr = k_smem.shape[1]
        o_layout: gl.constexpr = ws._mma_layout(HEAD_D, WARPS)
        row_layout: gl.constexpr = gl.SliceLayout(1, ws._mma_layout(BN, WARPS))
        q = q_smem.index(w)
        c0 = 0
        r0 = 0
        piece = 0
        it = lo
        while it < hi:
            tile, j0, n = _piece(it, hi, n_blocks)
            mbarrier.wait(q_ready, piece & 1)
            acc, m_i, l_i = ws._blocks(w, q, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, turn, n, j0, c0, r0,
                                       0, qk_scale, False, STAGES, HEAD_D, True, WARPS)
            if split:
                mbarrier.arrive(q_empty)  # its wgmmas are waited: the loader may bring the next piece's rows
                row = (slot0 + piece) * (2 * QM) + w * QM
                rows = row + gl.arange(0, QM, layout=gl.SliceLayout(1, o_layout))
                cols = gl.arange(0, HEAD_D, layout=gl.SliceLayout(0, o_layout))
                gl.store(acc_ptr + rows[:, None] * HEAD_D + cols[None, :], acc)
                stats = row + gl.arange(0, QM, layout=row_layout)
                gl.store(m_ptr + stats, m_i)
                gl.store(l_ptr + stats, l_i)
            else:
                q_row = (tile // m_blocks) * n_q + (tile % m_blocks) * (2 * QM)
                acc = acc / gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))[:, None]
                q.store(acc.to(q_smem.dtype))
                fence_async_shared()
                tma.async_copy_shared_to_global(o_desc, [q_row + w * QM, 0], q)
                tma.store_wait(0)
            c0 += n
            r0 += n + 1
            it += n
            piece += 1

    @gluon.jit
    def _attn_split_kernel(q_desc, k_desc, v_desc, o_desc, acc_ptr, m_ptr, l_ptr, qk_scale, n_q, n_k, heads,
                           kv_heads, full, programs, total, STAGES: gl.constexpr, num_warps: gl.constexpr):
        """Program pid < full: tile pid whole; else split program pid - full: its range of the split tiles' key
        blocks (schedule(); total: the split tiles' key blocks). Two consumer partitions in ping-pong and the loader,
        as attention_ws."""
        QM: gl.constexpr = q_desc.block_type.shape[0]
        BN: gl.constexpr = k_desc.block_type.shape[0]
        HEAD_D: gl.constexpr = q_desc.block_type.shape[1]
        m_blocks = n_q // (2 * QM)
        n_blocks = n_k // BN
        pid = gl.program_id(0)
        lo, hi = _pieces(pid, full, programs, total, n_blocks)
        split = pid >= full
        slot0 = 2 * (pid - full)

        q_smem = gl.allocate_shared_memory(q_desc.dtype, [2, QM, HEAD_D], q_desc.layout)
        k_smem = gl.allocate_shared_memory(k_desc.dtype, [STAGES, BN, HEAD_D], k_desc.layout)
        v_smem = gl.allocate_shared_memory(v_desc.dtype, [STAGES, BN, HEAD_D], v_desc.layout)
        q_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        q_empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        k_ready, v_ready, k_empty, v_empty, turn = ws._barriers(STAGES, 2)
        mbarrier.init(q_ready, count=1)
        mbarrier.init(q_empty, count=2)

        gl.warp_specialize([
            (_consume, (0, o_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty, v_empty, turn,
                        acc_ptr, m_ptr, l_ptr, lo, hi, split, slot0, n_blocks, m_blocks, n_q, qk_scale, STAGES,
                        HEAD_D, num_warps)),
            (_consume, (1, o_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty, v_empty, turn,
                        acc_ptr, m_ptr, l_ptr, lo, hi, split, slot0, n_blocks, m_blocks, n_q, qk_scale, STAGES,
                        HEAD_D, num_warps)),
            (_load, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty,
                     v_empty, lo, hi, n_blocks, m_blocks, n_q, n_k, heads, kv_heads, STAGES, 2)),
        ], [num_warps, 1], [240, 24])


def supports(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> bool:
    """Non-causal calls attention_ws runs (causal tiles differ in length: the longest-first order balances them)."""
    return not causal and ws.supports(q, k, v, causal)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
              stages: int | None = None, sms: int | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v for a call supports() accepts, the last wave split (schedule(); sms: the SMs it
    plans for, None: the device's); stages: the key/value ring's buffers (None: attention_ws.ring()'s default)."""
    b, h, n_q, d = q.shape
    n_k = k.shape[2]
    m_blocks, n_blocks = n_q // ws.BLOCK_M, n_k // ws.BLOCK_N
    tiles = b * h * m_blocks
    full, programs = schedule(tiles, n_blocks, sms or torch.cuda.get_device_properties(q.device).multi_processor_count)
    o = torch.empty_like(q)
    slots = max(2 * programs, 1)
    acc = torch.empty(slots, ws.BLOCK_M, d, device=q.device, dtype=torch.float32)
    row_max, row_sum = (torch.empty(slots, ws.BLOCK_M, device=q.device, dtype=torch.float32) for _ in range(2))
    qk_scale = (scale if scale is not None else 1.0 / math.sqrt(d)) * LOG2E
    q_desc, k_desc, v_desc, o_desc = ws.descriptors(q, k, v, o, ws.BLOCK_M // 2)
    _attn_split_kernel[(full + programs,)](q_desc, k_desc, v_desc, o_desc, acc, row_max, row_sum, qk_scale, n_q,
                                           n_k, h, k.shape[1], full, programs, (tiles - full) * n_blocks,
                                           STAGES=ws.ring(d, stages), num_warps=4)
    if programs:
        merge(acc, row_max, row_sum, o, full, programs, tiles, n_blocks, n_q)
    return o
