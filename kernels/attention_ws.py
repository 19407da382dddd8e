"""Attention forward for Hopper (sm_90) written in Gluon, Triton's lower-level language: warp-specialized the way
FlashAttention-3 is, which upstream Triton's compiler does not do on Hopper (its warp specialization partitions
for Blackwell; kernels/attention.py's loop holds 250+ registers a thread and reaches about 480 TFLOP/s at hd128).

One program per 128 query rows of one head:
  * a loader partition (one warp, 24 registers) copies the query rows once, then each key and value block into a
    ring of STAGES shared-memory buffers by TMA, each buffer with a "ready" barrier the copy completes
    (expect-tx) and an "empty" barrier every consumer arrives on when its tensor-core reads of it are done;
  * two consumer warpgroups of 64 query rows each (240 registers) run the online softmax with wgmma, overlapped
    within each warpgroup: block j's scores (Q K_j^T) and block j-1's P V product are issued together, the
    scores waited for first, and block j's softmax runs while the P V product is still on the tensor cores;
  * PINGPONG (FlashAttention-3's schedule): the two warpgroups are partitions of their own and take turns issuing
    their products (a pair of mbarriers), so one's softmax runs while the other's products run. Without it they
    form one partition and move in step.

Scope: the plain cases the headline benchmark and most prefill calls are (causal with the query and key lengths
equal, or non-causal; GQA; head dim 64 or 128; fp16 or bf16; lengths multiples of 128; contiguous [B, H, N, D]
tensors). supports() says whether a call is one; everything else stays with kernels/attention.py, and the
registry times this kernel as one more candidate ("kpt_ws") only where it supports the call. Gluon has no
interpreter: correctness is checked on the GPU (tests/kernels/test_gpu.py) and the compiled form on the CPU
(python -m kernels.cubin --attention-ws: partitions, register split, no spills).
"""

from __future__ import annotations

import math

import torch

from ._gluon import (
    constexpr_function,
    descriptor,
    fence_async_shared,
    gl,
    gluon,
    hopper,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

BLOCK_M = 128  # query rows a program: two warpgroups of 64 (wgmma's M per warpgroup)
BLOCK_N = 128  # keys a block
STAGES = 2  # key/value buffers in the ring: Q 32 KB + 2 x (K 32 KB + V 32 KB) at hd128
# The deepest rings that fit a program's 227 KB of shared memory (sm_90 cubins: 229744 bytes at 3 for hd128,
# 213424 at 6 for hd64; kernels.cubin --attention-ws). kernels.bench's kpt_ws_deep rows time them against STAGES
# before either becomes the default.
DEEP_STAGES = {64: 6, 128: 3}  # head dim -> stages
DEEP = False  # the default ring is DEEP_STAGES's: off until measured faster
HEAD_DIMS = (64, 128)
PINGPONG = True  # FlashAttention-3's schedule (attention()'s pingpong); both forms are timed on the card
LOG2E = 1.4426950408889634


def ring(head_dim: int, stages: int | None = None) -> int:
    """The key/value ring's buffers a launch uses: stages if given, else DEEP_STAGES's where DEEP is on, else STAGES."""
    return stages or (DEEP_STAGES[head_dim] if DEEP else STAGES)


def plain(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> bool:
    """Whether the call is a case this kernel computes (module doc): dtypes, head dim, GQA, block multiples, layout."""
    b, h, nq, d = q.shape
    nk = k.shape[2]
    return (q.dtype in (torch.float16, torch.bfloat16) and k.dtype == q.dtype and v.dtype == q.dtype
            and d in HEAD_DIMS and k.shape == v.shape and k.shape[0] == b and k.shape[3] == d and h % k.shape[1] == 0
            and nq % BLOCK_M == 0 and nk % BLOCK_N == 0 and nq > 0 and nk > 0 and (not causal or nq == nk)
            and all(t.is_contiguous() for t in (q, k, v)))


def supports(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> bool:
    """Whether attention(q, k, v, causal) can run here: Gluon, an sm_90 device, and plain()."""
    return hopper(q) and plain(q, k, v, causal)


if gluon is not None:

    @constexpr_function
    def _mma_layout(n, warps):
        """The wgmma accumulator layout of a [BLOCK_M, n] tile over `warps` warps stacked along M."""
        return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[warps, 1], instr_shape=[16, n, 16])

    @gluon.jit
    def _load(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, k_ready, v_ready, k_empty, v_empty,
              q_row, kv_row, n_blocks, STAGES: gl.constexpr, CONSUMERS: gl.constexpr):
        """The loader partition: each consumer's query rows, then the key and value blocks (_load_blocks)."""
        _load_rows(q_desc, q_smem, 0, q_ready, q_row, CONSUMERS)
        _load_blocks(k_desc, v_desc, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, kv_row, 0, n_blocks, 0, STAGES)

    @gluon.jit
    def _load_rows(q_desc, q_smem, first, q_ready, q_row, CONSUMERS: gl.constexpr):
        """Each consumer's query rows from q_row on into buffers first, first + 1, ..., completing q_ready."""
        QM: gl.constexpr = q_desc.block_type.shape[0]
        mbarrier.expect(q_ready, CONSUMERS * q_desc.block_type.nbytes)
        for w in gl.static_range(CONSUMERS):
            tma.async_copy_global_to_shared(q_desc, [q_row + w * QM, 0], q_ready, q_smem.index(first + w))

    @gluon.jit
    def _load_blocks(k_desc, v_desc, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, kv_row, j0, n, c0,
                     STAGES: gl.constexpr):
        """Key and value blocks j0 .. j0 + n - 1 from kv_row on, block j0 + i into ring use c0 + i (buffer
        (c0 + i) % STAGES) once every consumer has released that buffer's previous use (a fresh barrier's wait on
        parity 1 passes at once)."""
        BN: gl.constexpr = k_desc.block_type.shape[0]
        for j in range(n):
            c = c0 + j
            s = c % STAGES
            free = ((c // STAGES) & 1) ^ 1
            mbarrier.wait(k_empty.index(s), free)
            mbarrier.expect(k_ready.index(s), k_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(k_desc, [kv_row + (j0 + j) * BN, 0], k_ready.index(s), k_smem.index(s))
            mbarrier.wait(v_empty.index(s), free)
            mbarrier.expect(v_ready.index(s), v_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(v_desc, [kv_row + (j0 + j) * BN, 0], v_ready.index(s), v_smem.index(s))

    @gluon.jit
    def _my_turn(turn, w, r, PINGPONG: gl.constexpr):
        """Ping-pong: round r of consumer w issues its wgmmas only after the other consumer issued its round r - 1
        (consumer 0) or r (consumer 1), so one consumer's softmax runs while the other's products are on the tensor
        cores. Consumer 0's first round waits on a fresh barrier's parity 1: it passes at once."""
        if PINGPONG:
            mbarrier.wait(turn.index(w), (r & 1) ^ (1 - w))

    @gluon.jit
    def _your_turn(turn, w, PINGPONG: gl.constexpr):
        if PINGPONG:
            mbarrier.arrive(turn.index(1 - w))

    @gluon.jit
    def _scores(q, k_smem, k_ready, j, STAGES: gl.constexpr, s_layout: gl.constexpr, BM: gl.constexpr,
                BN: gl.constexpr):
        """Issues Q K_j^T on the tensor cores once K_j has landed; returns the wgmma token."""
        s = j % STAGES
        mbarrier.wait(k_ready.index(s), (j // STAGES) & 1)
        zero = gl.zeros([BM, BN], gl.float32, s_layout)
        return warpgroup_mma(q, k_smem.index(s).permute((1, 0)), zero, use_acc=False, is_async=True)

    @gluon.jit
    def _softmax(scores, m_i, l_i, qk_scale, j, q_first, CAUSAL: gl.constexpr, s_layout: gl.constexpr,
                 BM: gl.constexpr, BN: gl.constexpr):
        """Block j's online-softmax step in log2 units: (p, the new running max and sum, the old sum's factor).
        q_first: the query position of this consumer's first row."""
        x = scores * qk_scale
        if CAUSAL:  # the diagonal block: keys after the query row are hidden (lengths equal, blocks aligned)
            if j * BN + BN > q_first:
                rows = q_first + gl.arange(0, BM, layout=gl.SliceLayout(1, s_layout))
                cols = j * BN + gl.arange(0, BN, layout=gl.SliceLayout(0, s_layout))
                x = gl.where(cols[None, :] <= rows[:, None], x, -float("inf"))
        m_new = gl.maximum(m_i, gl.max(x, axis=1))
        alpha = gl.exp2(m_i - m_new)
        p = gl.exp2(x - m_new[:, None])
        return p, m_new, l_i * alpha + gl.sum(p, axis=1), alpha

    @gluon.jit
    def _blocks(w, q, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, turn, n, j0, c0, r0, q_first, qk_scale,
                CAUSAL: gl.constexpr, STAGES: gl.constexpr, HEAD_D: gl.constexpr, PINGPONG: gl.constexpr,
                WARPS: gl.constexpr):
        """Consumer w's online softmax of its query rows q over n key blocks: keys block j0 + i in ring buffer use
        c0 + i, turn round r0 + i (n + 1 rounds). Each block's scores are issued together with the previous block's
        P V and waited for first. Returns (acc, running max, running sum): acc not yet divided by the sum."""
        BM: gl.constexpr = q.shape[0]
        BN: gl.constexpr = k_smem.shape[1]
        s_layout: gl.constexpr = _mma_layout(BN, WARPS)
        o_layout: gl.constexpr = _mma_layout(HEAD_D, WARPS)
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
        row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
        m_i = gl.full([BM], -float("inf"), gl.float32, row_layout)
        l_i = gl.zeros([BM], gl.float32, row_layout)
        acc = gl.zeros([BM, HEAD_D], gl.float32, o_layout)

        _my_turn(turn, w, r0, PINGPONG)
        tok = _scores(q, k_smem, k_ready, c0, STAGES, s_layout, BM, BN)
        _your_turn(turn, w, PINGPONG)
        scores = warpgroup_mma_wait(0, deps=(tok,))
        mbarrier.arrive(k_empty.index(c0 % STAGES))
        p, m_i, l_i, alpha = _softmax(scores, m_i, l_i, qk_scale, j0, q_first, CAUSAL, s_layout, BM, BN)
        for j in range(1, n):
            prev = (c0 + j - 1) % STAGES
            _my_turn(turn, w, r0 + j, PINGPONG)
            tok = _scores(q, k_smem, k_ready, c0 + j, STAGES, s_layout, BM, BN)  # Q K_j^T, in flight
            mbarrier.wait(v_ready.index(prev), ((c0 + j - 1) // STAGES) & 1)
            acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
            p_op = gl.convert_layout(p.to(q.dtype), p_layout)
            acc_tok = warpgroup_mma(p_op, v_smem.index(prev), acc, is_async=True)  # P_{j-1} V_{j-1}, in flight
            _your_turn(turn, w, PINGPONG)
            scores = warpgroup_mma_wait(1, deps=(tok,))  # the scores (issued first) are done
            mbarrier.arrive(k_empty.index((c0 + j) % STAGES))
            p, m_i, l_i, alpha = _softmax(scores, m_i, l_i, qk_scale, j0 + j, q_first, CAUSAL, s_layout, BM, BN)
            acc, p_op = warpgroup_mma_wait(0, deps=(acc_tok, p_op))
            mbarrier.arrive(v_empty.index(prev))
        last = (c0 + n - 1) % STAGES
        mbarrier.wait(v_ready.index(last), ((c0 + n - 1) // STAGES) & 1)
        acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
        p_op = gl.convert_layout(p.to(q.dtype), p_layout)
        _my_turn(turn, w, r0 + n, PINGPONG)
        acc_tok = warpgroup_mma(p_op, v_smem.index(last), acc, is_async=True)
        _your_turn(turn, w, PINGPONG)
        acc, p_op = warpgroup_mma_wait(0, deps=(acc_tok, p_op))
        mbarrier.arrive(v_empty.index(last))
        return acc, m_i, l_i

    @gluon.jit
    def _consume(w, o_desc, q_smem, k_smem, v_smem, q_ready, k_ready, v_ready, k_empty, v_empty, turn, q_row,
                 q_first, n_blocks, qk_scale, CAUSAL: gl.constexpr, STAGES: gl.constexpr, HEAD_D: gl.constexpr,
                 PINGPONG: gl.constexpr, WARPS: gl.constexpr):
        """Consumer w (of one or two): the online softmax of its query rows over the key blocks (_blocks); then its
        output rows by TMA."""
        BM: gl.constexpr = q_smem.shape[1]
        o_layout: gl.constexpr = _mma_layout(HEAD_D, WARPS)
        q = q_smem.index(w)
        q_first += w * BM
        mbarrier.wait(q_ready, 0)
        acc, m_i, l_i = _blocks(w, q, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, turn, n_blocks, 0, 0, 0,
                                q_first, qk_scale, CAUSAL, STAGES, HEAD_D, PINGPONG, WARPS)
        acc = acc / gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))[:, None]
        # q takes the output rows: only this consumer's (waited) wgmmas read it
        q.store(acc.to(q_smem.dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(o_desc, [q_row + w * BM, 0], q)
        tma.store_wait(0)

    @gluon.jit
    def _barriers(STAGES: gl.constexpr, CONSUMERS: gl.constexpr):
        """The ring's barriers (ready: the copy's bytes complete it; empty: each consumer partition arrives once a
        use), STAGES of each, and the two consumers' turn barriers, allocated and initialized."""
        k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        for s in gl.static_range(STAGES):
            mbarrier.init(k_ready.index(s), count=1)
            mbarrier.init(v_ready.index(s), count=1)
            mbarrier.init(k_empty.index(s), count=CONSUMERS)
            mbarrier.init(v_empty.index(s), count=CONSUMERS)
        for w in gl.static_range(2):
            mbarrier.init(turn.index(w), count=1)
        return k_ready, v_ready, k_empty, v_empty, turn

    @gluon.jit
    def _attn_ws_kernel(q_desc, k_desc, v_desc, o_desc, qk_scale, n_q, n_k, heads, kv_heads,
                        CAUSAL: gl.constexpr, STAGES: gl.constexpr, PINGPONG: gl.constexpr,
                        num_warps: gl.constexpr):
        """One program: BLOCK_M query rows of one head. PINGPONG: two consumer partitions of one warpgroup each
        (64 rows each, their wgmmas taking turns); otherwise one partition of num_warps (two warpgroups, 128 rows,
        in step)."""
        CONSUMERS: gl.constexpr = 2 if PINGPONG else 1
        QM: gl.constexpr = q_desc.block_type.shape[0]  # each consumer's query rows
        BM: gl.constexpr = QM * CONSUMERS
        BN: gl.constexpr = k_desc.block_type.shape[0]
        HEAD_D: gl.constexpr = q_desc.block_type.shape[1]
        m_blocks = n_q // BM
        m_block = gl.program_id(0)
        if CAUSAL:  # the longest rows first: the last programs to start are the short ones
            m_block = m_blocks - 1 - m_block
        bh = gl.program_id(1)
        kvh = (bh // heads) * kv_heads + (bh % heads) // (heads // kv_heads)
        q_first = m_block * BM
        q_row = bh * n_q + q_first
        kv_row = kvh * n_k
        n_blocks = n_k // BN
        if CAUSAL:
            n_blocks = (q_first + BM) // BN

        q_smem = gl.allocate_shared_memory(q_desc.dtype, [CONSUMERS, QM, HEAD_D], q_desc.layout)
        k_smem = gl.allocate_shared_memory(k_desc.dtype, [STAGES, BN, HEAD_D], k_desc.layout)
        v_smem = gl.allocate_shared_memory(v_desc.dtype, [STAGES, BN, HEAD_D], v_desc.layout)
        q_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        k_ready, v_ready, k_empty, v_empty, turn = _barriers(STAGES, CONSUMERS)
        mbarrier.init(q_ready, count=1)

        if PINGPONG:  # consumer 0 in the kernel's own warps, consumer 1 and the loader (24 registers) beside
            gl.warp_specialize([
                (_consume, (0, o_desc, q_smem, k_smem, v_smem, q_ready, k_ready, v_ready, k_empty, v_empty, turn,
                            q_row, q_first, n_blocks, qk_scale, CAUSAL, STAGES, HEAD_D, PINGPONG, num_warps)),
                (_consume, (1, o_desc, q_smem, k_smem, v_smem, q_ready, k_ready, v_ready, k_empty, v_empty, turn,
                            q_row, q_first, n_blocks, qk_scale, CAUSAL, STAGES, HEAD_D, PINGPONG, num_warps)),
                (_load, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, k_ready, v_ready, k_empty,
                         v_empty, q_row, kv_row, n_blocks, STAGES, CONSUMERS)),
            ], [num_warps, 1], [240, 24])
        else:  # one consumer partition of num_warps, and the loader (one warp, 24 registers)
            gl.warp_specialize([
                (_consume, (0, o_desc, q_smem, k_smem, v_smem, q_ready, k_ready, v_ready, k_empty, v_empty, turn,
                            q_row, q_first, n_blocks, qk_scale, CAUSAL, STAGES, HEAD_D, PINGPONG, num_warps)),
                (_load, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, k_ready, v_ready, k_empty,
                         v_empty, q_row, kv_row, n_blocks, STAGES, CONSUMERS)),
            ], [1], [24])


def descriptors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, q_rows: int) -> tuple:
    """Host-side TMA descriptors over the [B * H * N, D] views: q_rows query (and output) rows a box, BLOCK_N keys."""
    d = q.shape[-1]
    return (descriptor(q.view(-1, d), [q_rows, d]), descriptor(k.view(-1, d), [BLOCK_N, d]),
            descriptor(v.view(-1, d), [BLOCK_N, d]), descriptor(o.view(-1, d), [q_rows, d]))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              scale: float | None = None, pingpong: bool | None = None, stages: int | None = None) -> torch.Tensor:
    """softmax(q k^T * scale (+ causal mask)) v for a call supports() accepts: kernels.attention.reference's
    semantics for that case. pingpong: the two consumer warpgroups as partitions taking turns on the tensor cores
    (FlashAttention-3's schedule) rather than one partition in step; None: PINGPONG. stages: the key/value ring's
    buffers (None: ring()'s default)."""
    b, h, n_q, d = q.shape
    o = torch.empty_like(q)
    pp = PINGPONG if pingpong is None else pingpong
    qk_scale = (scale if scale is not None else 1.0 / math.sqrt(d)) * LOG2E
    q_desc, k_desc, v_desc, o_desc = descriptors(q, k, v, o, BLOCK_M // 2 if pp else BLOCK_M)
    grid = (n_q // BLOCK_M, b * h)
    _attn_ws_kernel[grid](q_desc, k_desc, v_desc, o_desc, qk_scale, n_q, k.shape[2], h, k.shape[1],
                          CAUSAL=causal, STAGES=ring(d, stages), PINGPONG=pp, num_warps=4 if pp else 8)
    return o


def flops(q: torch.Tensor, k: torch.Tensor, causal: bool) -> float:
    """Matmul FLOPs of one call (two matmuls; half the score matrix where causal)."""
    b, h, n_q, d = q.shape
    return 4.0 * b * h * n_q * k.shape[2] * d * (0.5 if causal else 1.0)
