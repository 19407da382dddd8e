"""bench/gemv_configs.py's parts that need no GPU: the decode step's matrix-vector shapes, and a config forced past
the autotuner computing what the op computes (here under Triton's interpreter, its one config)."""

import torch

from tests.gpu.helpers import bench_module, tiny_llama_decode
from tests.kernels.conftest import DEVICE


def test_shapes_are_the_layer_paths_launches():
    step, _, _ = tiny_llama_decode(layers=1)
    # hidden 256, 8 query heads of 32 and 2 key/value heads, intermediate 512
    assert bench_module("gemv_configs").shapes(step) == {
        "qkv": (256 + 2 * 64, 256, False), "o": (256, 256, False), "gate_up": (512, 256, True),
        "down": (256, 512, False)}


def test_a_forced_config_computes_the_ops_result():
    from kernels import gemv
    from kernels._common import ACTS

    torch.manual_seed(0)
    x = torch.randn(1, 96, device=DEVICE)
    w, w2 = (torch.randn(40, 96, device=DEVICE) for _ in range(2))
    g = torch.randn(96, device=DEVICE)
    out = torch.empty(1, 40, device=DEVICE)
    launch = bench_module("gemv_configs").forced(gemv._gemv_kernel, gemv._INTERP[0])
    gemv.run(launch, x, w, w2, w, w, out, False, ACTS["silu"], True, g, None, 1e-5)
    torch.testing.assert_close(out, gemv.reference(x, w, w2, g, None, 1e-5, "silu"), rtol=1e-4, atol=1e-4)
