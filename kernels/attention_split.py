"""Non-causal attention_ws with its last wave's tiles split across every SM (stream-K for the remainder, as CUTLASS's
"data-parallel + stream-K" GEMM schedule does).

attention_ws.py runs one program per 128 query rows of a head, one program an SM at a time (its shared memory), all
tiles equally long where non-causal: at the goal shape (b1 h16 16k, 2048 tiles) an H100's 132 SMs run 15 full
waves and then 68 tiles with 64 SMs idle, 16 waves' time for 15.52 waves of work (attention_ws alone: 596.6 TFLOP/s,
230 us a tile). Here the first `full` tiles (whole waves) run as there, one program each; the remaining tiles' key
blocks are cut into `programs` equal ranges, one program each, so the last wave ends at about 15.52 tiles' time.
A range is shorter than a tile, so a program computes at most two pieces (the end of one tile, the start of the
next), each written unnormalized with its rows' running maximum and sum to a workspace; a small Triton kernel
(_merge_kernel) then merges each split tile's pieces into the output (softmax's usual rescaling, flash-decoding's
merge). Each piece re-loads its query rows (the loader waits until both consumers are done with the previous ones).
PERSISTENT (a launch argument, the module's default on): one program an SM instead, taking its whole tiles in turn
and then its split range, the next piece's query rows loading into a second buffer where one fits.

Gluon has no interpreter: the schedule (schedule(), work()) and the merge run on the CPU tests, the kernel on the
GPU suite (tests/kernels/test_gpu.py) and its compiled form in test_cubin.py (kernels.cubin --attention-split).
kernels.bench times it as kpt_ws_split (and _deep, _persist) beside kpt_ws: on the H100 (2026-12-05), persistent,
623.3 TFLOP/s at the goal shape against 603.2 without the split, and the op's non-causal gluon calls take it (USE).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import attention_ws as ws
from ._common import LOG2E, launch
from ._gluon import SHARED_BYTES, fence_async_shared, gl, gluon, mbarrier, tma

# attention.py's "gluon" mode sends the non-causal calls attention_ws covers here. On since the H100 run of
# 2026-12-05 (docs/benchmarks/kernels-quick-attention-ws-h100.md): kpt_ws_split_persist 623.3 TFLOP/s against
# kpt_ws 603.2 and cuDNN 619.4 at b1 h16 n16384 d128, and faster than kpt_ws at every non-causal shape timed.
USE = True
# Split the remainder only where it leaves at least this share of a wave idle: a split tile costs its pieces'
# pipeline fills (query rows and first key blocks) and the merge's reads, a few microseconds against a tile's 230 us.
MIN_IDLE = 0.1
MERGE_ROWS = 32  # query rows a merge program
# One program an SM taking its whole tiles in turn (tiles p, p + SMs, ...), then its split range, with the next
# tile's query rows loading during this one where two buffers fit (hd128 at 2 key/value buffers, hd64 at 6): the
# pipeline fill of each new program goes (about 1-2 us of a tile's 230). On since the same run: faster than the
# program-a-tile split at all three non-causal shapes (b4 h16 n4096 d128: 0.931 against 0.972 ms).
PERSISTENT = True
BARRIER_BYTES = 512  # the barriers beside the buffers, with room to spare (the cubins: 384 bytes at 2 stages)


def schedule(tiles: int, n_blocks: int, sms: int) -> tuple[int, int]:
    """(full, programs): the first `full` tiles one program each, the other tiles' key blocks (n_blocks a tile) in
    `programs` ranges, one program each (0 where nothing is split). Splits only where the last wave would leave
    MIN_IDLE of the SMs idle; every range is at least one key block."""
    rem = tiles % sms
    if rem == 0 or (sms - rem) < MIN_IDLE * sms:
        return tiles, 0
    return tiles - rem, min(sms, rem * n_blocks)


def work(pid: int, nprog: int, full: int, programs: int, tiles: int, n_blocks: int,
         persistent: bool) -> list[tuple[int, int, int, int]]:
    """The (tile, first key block, key blocks, workspace slot or -1 for a whole tile) pieces program pid of nprog
    computes, in order: the kernel's _work and _nth in Python, for the tests and the merge's reference."""
    total = (tiles - full) * n_blocks
    dp = range(pid, full, nprog) if persistent else range(pid, min(pid + 1, full))
    q = pid if persistent else pid - full
    lo = hi = 0
    if 0 <= q < programs:
        lo, hi = full * n_blocks + q * total // programs, full * n_blocks + (q + 1) * total // programs
    out = [(tile, 0, n_blocks, -1) for tile in dp]
    n_split = (hi - 1) // n_blocks - lo // n_blocks + 1 if hi > lo else 0
    for k in range(n_split):
        tile = lo // n_blocks + k
        first = max(lo, tile * n_blocks)
        out.append((tile, first - tile * n_blocks, min(hi, (tile + 1) * n_blocks) - first, 2 * q + k))
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
        for tile, j0, n, slot in work(full + p, full + programs, full, programs, tiles, n_blocks, False):
            bh, mb = divmod(tile, m_blocks)
            bi, hi = divmod(bh, h)
            rows = qf[bi, hi, mb * ws.BLOCK_M:(mb + 1) * ws.BLOCK_M]
            keys = slice(j0 * ws.BLOCK_N, (j0 + n) * ws.BLOCK_N)
            x = rows @ kf[bi, hi // group, keys].T * qk_scale
            row_max[slot] = x.amax(1)
            e = torch.exp2(x - row_max[slot][:, None])
            row_sum[slot] = e.sum(1)
            acc[slot] = e @ vf[bi, hi // group, keys]
    return acc, row_max, row_sum


if gluon is not None:

    @gluon.jit
    def _work(pid, nprog, full, programs, total, n_blocks, PERSISTENT: gl.constexpr):
        """What program pid computes: whole tiles dp_start, dp_start + dp_step, ... (n_dp of them), then the key-block
        iterations [lo, hi) of the split tiles (counted from tile 0's first block), their pieces in workspace slots
        from slot0; and how many pieces that is. Not persistent: tile pid whole for pid < full, else split range
        pid - full (work() in Python). PERSISTENT: tiles pid, pid + nprog, ... below full, then split range pid
        where pid < programs."""
        dp_start = pid
        n_dp = (pid < full).to(gl.int32)
        dp_step = 1
        q = pid - full
        if PERSISTENT:
            n_dp = gl.maximum(full - pid + nprog - 1, 0) // nprog
            dp_step = nprog
            q = pid
        lo = 0
        hi = 0
        if (q >= 0) & (q < programs):
            lo = full * n_blocks + q * total // programs
            hi = full * n_blocks + (q + 1) * total // programs
        n_split = gl.where(hi > lo, (hi - 1) // n_blocks - lo // n_blocks + 1, 0)
        return dp_start, dp_step, n_dp, lo, hi, 2 * q, n_dp + n_split

    @gluon.jit
    def _nth(i, dp_start, dp_step, n_dp, lo, hi, slot0, n_blocks):
        """(tile, first key block, key blocks, workspace slot or -1 for a whole tile) of the program's piece i."""
        tile = dp_start + i * dp_step
        j0 = 0
        n = n_blocks
        slot = -1
        if i >= n_dp:
            k = i - n_dp
            tile = lo // n_blocks + k
            first = gl.maximum(lo, tile * n_blocks)
            j0 = first - tile * n_blocks
            n = gl.minimum(hi, (tile + 1) * n_blocks) - first
            slot = slot0 + k
        return tile, j0, n, slot

    @gluon.jit
    def _rows(tile, m_blocks, n_q, n_k, heads, kv_heads, BM: gl.constexpr):
        """(first query row, first key row) of a tile in the [B * H * N, D] views."""
        bh = tile // m_blocks
        kvh = (bh // heads) * kv_heads + (bh % heads) // (heads // kv_heads)
        return bh * n_q + (tile % m_blocks) * BM, kvh * n_k

    @gluon.jit
    def _load_piece(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty,
                    v_empty, tile, j0, n, i, c, m_blocks, n_q, n_k, heads, kv_heads, STAGES: gl.constexpr,
                    QBUF: gl.constexpr):
        """The loader's piece i (key blocks j0 .. j0 + n - 1 of tile; ring uses from c): its query rows into buffer
        i % QBUF once both consumers released that buffer's previous piece, then its key and value blocks."""
        QM: gl.constexpr = q_desc.block_type.shape[0]
        b = i % QBUF
        q_row, kv_row = _rows(tile, m_blocks, n_q, n_k, heads, kv_heads, 2 * QM)
        if i >= QBUF:
            mbarrier.wait(q_empty.index(b), ((i // QBUF) - 1) & 1)
        ws._load_rows(q_desc, q_smem, 2 * b, q_ready.index(b), q_row, 2)
        ws._load_blocks(k_desc, v_desc, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, kv_row, j0, n, c, STAGES)

    @gluon.jit
    def _load(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty, v_empty,
              dp_start, dp_step, n_dp, lo, hi, slot0, count, n_blocks, m_blocks, n_q, n_k, heads, kv_heads,
              STAGES: gl.constexpr, QBUF: gl.constexpr):
        """The loader: the program's pieces in order (_work, _nth), each through _load_piece."""
        c = 0
        for i in range(count):
            tile, j0, n, _ = _nth(i, dp_start, dp_step, n_dp, lo, hi, slot0, n_blocks)
            _load_piece(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty,
                        v_empty, tile, j0, n, i, c, m_blocks, n_q, n_k, heads, kv_heads, STAGES, QBUF)
            c += n

    @gluon.jit
    def _consume_piece(w, o_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty, v_empty, turn,
                       acc_ptr, m_ptr, l_ptr, tile, j0, n, i, c0, r0, slot, m_blocks, n_q, qk_scale,
                       STAGES: gl.constexpr, HEAD_D: gl.constexpr, WARPS: gl.constexpr, QBUF: gl.constexpr):
        """Consumer w's piece i: the online softmax over its key blocks (attention_ws._blocks; ring uses from c0,
        turn rounds from r0), then a whole tile's rows by TMA (slot < 0) as attention_ws does, or a split piece's
        unnormalized rows, maxima and sums to workspace slot `slot`; then its query buffer is released."""
        QM: gl.constexpr = q_smem.shape[1]
        BN: gl.constexpr = k_smem.shape[1]
        o_layout: gl.constexpr = ws._mma_layout(HEAD_D, WARPS)
        row_layout: gl.constexpr = gl.SliceLayout(1, ws._mma_layout(BN, WARPS))
        b = i % QBUF
        q = q_smem.index(2 * b + w)
        mbarrier.wait(q_ready.index(b), (i // QBUF) & 1)
        acc, m_i, l_i = ws._blocks(w, q, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, turn, n, j0, c0, r0, 0,
                                   qk_scale, False, STAGES, HEAD_D, True, WARPS)
        if slot >= 0:
            row = slot * (2 * QM) + w * QM
            rows = row + gl.arange(0, QM, layout=gl.SliceLayout(1, o_layout))
            cols = gl.arange(0, HEAD_D, layout=gl.SliceLayout(0, o_layout))
            gl.store(acc_ptr + rows[:, None] * HEAD_D + cols[None, :], acc)
            stats = row + gl.arange(0, QM, layout=row_layout)
            gl.store(m_ptr + stats, m_i)
            gl.store(l_ptr + stats, l_i)
        else:
            q_row = (tile // m_blocks) * n_q + (tile % m_blocks) * (2 * QM)
            acc = acc / gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))[:, None]
            q.store(acc.to(q_smem.dtype))  # the query rows' buffer takes the output rows (its wgmmas are waited)
            fence_async_shared()
            tma.async_copy_shared_to_global(o_desc, [q_row + w * QM, 0], q)
            tma.store_wait(0)
        mbarrier.arrive(q_empty.index(b))  # the loader may bring a later piece's rows into this buffer

    @gluon.jit
    def _consume(w, o_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty, v_empty, turn,
                 acc_ptr, m_ptr, l_ptr, dp_start, dp_step, n_dp, lo, hi, slot0, count, n_blocks, m_blocks, n_q,
                 qk_scale, STAGES: gl.constexpr, HEAD_D: gl.constexpr, WARPS: gl.constexpr, QBUF: gl.constexpr):
        """Consumer w of two (ping-pong): the program's pieces in the loader's order, each through _consume_piece."""
        c0 = 0
        r0 = 0
        for i in range(count):
            tile, j0, n, slot = _nth(i, dp_start, dp_step, n_dp, lo, hi, slot0, n_blocks)
            _consume_piece(w, o_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty, v_empty,
                           turn, acc_ptr, m_ptr, l_ptr, tile, j0, n, i, c0, r0, slot, m_blocks, n_q, qk_scale,
                           STAGES, HEAD_D, WARPS, QBUF)
            c0 += n
            r0 += n + 1

    @gluon.jit
    def _attn_split_kernel(q_desc, k_desc, v_desc, o_desc, acc_ptr, m_ptr, l_ptr, qk_scale, n_q, n_k, heads,
                           kv_heads, full, programs, total, STAGES: gl.constexpr, QBUF: gl.constexpr,
                           PERSISTENT: gl.constexpr, num_warps: gl.constexpr):
        """The whole tiles below `full` and `programs` ranges of the split tiles' key blocks (schedule(); total: the
        split tiles' key blocks), as _work hands them out. Two consumer partitions in ping-pong and the loader, as
        attention_ws; QBUF buffers of query rows (2: a persistent program's next tile's rows load during this one)."""
        QM: gl.constexpr = q_desc.block_type.shape[0]
        BN: gl.constexpr = k_desc.block_type.shape[0]
        HEAD_D: gl.constexpr = q_desc.block_type.shape[1]
        m_blocks = n_q // (2 * QM)
        n_blocks = n_k // BN
        # the program's work, worked out once here: inside the partitions ptxas kept parts of it across their
        # register reallocation in local memory
        dp_start, dp_step, n_dp, lo, hi, slot0, count = _work(gl.program_id(0), gl.num_programs(0), full, programs,
                                                              total, n_blocks, PERSISTENT)

        q_smem = gl.allocate_shared_memory(q_desc.dtype, [QBUF * 2, QM, HEAD_D], q_desc.layout)  # buffer b: 2b, 2b+1
        k_smem = gl.allocate_shared_memory(k_desc.dtype, [STAGES, BN, HEAD_D], k_desc.layout)
        v_smem = gl.allocate_shared_memory(v_desc.dtype, [STAGES, BN, HEAD_D], v_desc.layout)
        q_ready = gl.allocate_shared_memory(gl.int64, [QBUF, 1], mbarrier.MBarrierLayout())
        q_empty = gl.allocate_shared_memory(gl.int64, [QBUF, 1], mbarrier.MBarrierLayout())
        k_ready, v_ready, k_empty, v_empty, turn = ws._barriers(STAGES, 2)
        for b in gl.static_range(QBUF):
            mbarrier.init(q_ready.index(b), count=1)
            mbarrier.init(q_empty.index(b), count=2)

        gl.warp_specialize([
            (_consume, (0, o_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty, v_empty, turn,
                        acc_ptr, m_ptr, l_ptr, dp_start, dp_step, n_dp, lo, hi, slot0, count, n_blocks, m_blocks,
                        n_q, qk_scale, STAGES, HEAD_D, num_warps, QBUF)),
            (_consume, (1, o_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty, v_empty, turn,
                        acc_ptr, m_ptr, l_ptr, dp_start, dp_step, n_dp, lo, hi, slot0, count, n_blocks, m_blocks,
                        n_q, qk_scale, STAGES, HEAD_D, num_warps, QBUF)),
            (_load, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty,
                     v_empty, dp_start, dp_step, n_dp, lo, hi, slot0, count, n_blocks, m_blocks, n_q, n_k, heads,
                     kv_heads, STAGES, QBUF)),
        ], [num_warps, 1], [240, 24])


def supports(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> bool:
    """Non-causal calls attention_ws runs (causal tiles differ in length: the longest-first order balances them)."""
    return not causal and ws.supports(q, k, v, causal)


def query_buffers(head_dim: int, stages: int, persistent: bool) -> int:
    """Query-row buffers a program gets: two where persistent and they fit beside the key/value ring (the next tile's
    rows load during this one), else one."""
    ring = stages * 2 * ws.BLOCK_N * head_dim * 2
    return 2 if persistent and 2 * ws.BLOCK_M * head_dim * 2 + ring + BARRIER_BYTES <= SHARED_BYTES else 1


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
              stages: int | None = None, sms: int | None = None, persistent: bool | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v for a call supports() accepts, the last wave split (schedule(); sms: the SMs it
    plans for, None: the device's); stages: the key/value ring's buffers (None: attention_ws.ring()'s default);
    persistent: one program an SM taking its whole tiles in turn, then its split range (None: PERSISTENT)."""
    b, h, n_q, d = q.shape
    n_k = k.shape[2]
    m_blocks, n_blocks = n_q // ws.BLOCK_M, n_k // ws.BLOCK_N
    tiles = b * h * m_blocks
    sms = sms or torch.cuda.get_device_properties(q.device).multi_processor_count
    full, programs = schedule(tiles, n_blocks, sms)
    persistent = PERSISTENT if persistent is None else persistent
    stages = ws.ring(d, stages)
    o = torch.empty_like(q)
    slots = max(2 * programs, 1)
    acc = torch.empty(slots, ws.BLOCK_M, d, device=q.device, dtype=torch.float32)
    row_max, row_sum = (torch.empty(slots, ws.BLOCK_M, device=q.device, dtype=torch.float32) for _ in range(2))
    qk_scale = (scale if scale is not None else 1.0 / math.sqrt(d)) * LOG2E
    q_desc, k_desc, v_desc, o_desc = ws.descriptors(q, k, v, o, ws.BLOCK_M // 2)
    grid = max(min(sms, full), programs) if persistent else full + programs
    _attn_split_kernel[(grid,)](q_desc, k_desc, v_desc, o_desc, acc, row_max, row_sum, qk_scale, n_q, n_k, h,
                                k.shape[1], full, programs, (tiles - full) * n_blocks, STAGES=stages,
                                QBUF=query_buffers(d, stages, persistent), PERSISTENT=persistent, num_warps=4)
    if programs:
        merge(acc, row_max, row_sum, o, full, programs, tiles, n_blocks, n_q)
    return o
