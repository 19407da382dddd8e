"""bench/read_skeleton.py's launch plan (no GPU): the decode step's launches in decode_layer.py's order, the
weights' launches reading exactly the bytes the decode goal counts (roofline.step_bytes), the cache up to pos."""

import torch

from tests.gpu.helpers import bench_module, tiny_llama_decode


def test_plan_reads_the_goals_bytes_in_launch_order():
    # imported here, not at collection: kpt.gpu.roofline imports triton (through torch's flop counter), which must
    # first be imported after tests/kernels/conftest.py asks for the interpreter
    from kpt.gpu import roofline

    step, _, _ = tiny_llama_decode(context=256, layers=3)
    step = step.to(torch.bfloat16)
    launches = bench_module("read_skeleton").plan(step, pos=99, chunks=4)
    names = [n for n, _ in launches]
    assert names == ["qkv", "split", "merge", "o", "gate_up", "down"] * 3 + ["head"]
    weights = sum(b for n, b in launches if n not in ("split", "merge"))
    assert weights == roofline.step_bytes(step, "bf16")
    # hidden 256, 8 query heads of 32, 2 key/value heads: the cache up to and with position 99, in bf16
    assert dict(launches)["split"] == 2 * 2 * 100 * 32 * 2
    assert dict(launches)["merge"] == 8 * 4 * (32 + 2) * 4  # fp32 maxima, sums and outputs of 4 chunks a head
    assert dict(launches)["qkv"] == (256 + 256 * 256 + 2 * 64 * 256) * 2  # the norm, q, then k and v of 64 rows
