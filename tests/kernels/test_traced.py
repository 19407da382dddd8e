"""kernels/' Triton kernels as torch.compile embeds them (`python -m kernels.traced`, no GPU needed): Inductor must
read exactly which operands each kernel writes, and its re-emitted source must define every name it uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# (op, kernel) -> the operands the kernel writes, with the PDL code and an L2 prefetch asked for
WRITES = {
    ("gemv (norm, SwiGLU, residual)", "_gemv_kernel"): ["out_ptr"],
    ("gemv_qkv (rope, zeroing the counters)", "_gemv_kernel"): ["k_ptr", "out_ptr", "v_ptr", "z_ptr"],
    ("decode_attention (two launches)", "_split_kernel"): ["acc_ptr", "l_ptr", "m_ptr"],
    ("decode_attention (two launches)", "_merge_kernel"): ["out_ptr"],
    ("decode_attention (one launch)", "_split_kernel"): ["acc_ptr", "cnt_ptr", "l_ptr", "m_ptr", "out_ptr"],
    ("mlp_chain", "_mlp_chain_kernel"): ["act_ptr", "cnt_ptr", "h1_ptr", "out_ptr"],
    ("layer_chain", "_layer_kernel"): ["a_ptr", "acc_ptr", "act_ptr", "cnt_ptr", "h1_ptr", "kn_ptr", "l_ptr", "m_ptr",
                                       "out_ptr", "q_ptr", "vn_ptr"],
}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    pytest.importorskip("triton")
    import kernels

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the interpreter has no TTIR
    out = subprocess.run([sys.executable, "-m", "kernels.traced"], env=env, text=True, capture_output=True,
                         timeout=300, cwd=os.path.dirname(os.path.dirname(kernels.__file__)))
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_inductor_reads_what_each_kernel_writes(rows):
    # Before the asm was pure, the analysis gave up on every kernel with the PDL code or a prefetch and took all
    # operands as written (weights included): the compiled PDL step returned garbage on the H200 (2026-12-05).
    got = {(r["op"], r["kernel"]): r["written"] for r in rows if r["check"] == "writes"}
    assert got == WRITES


def test_no_two_written_operands_are_one_tensor(rows):
    # Inductor clones each written operand and copies the clones back in turn: two of them on one tensor lose a write
    assert all(not r["written_twice"] for r in rows if r["check"] == "writes"), rows


def test_inductor_source_of_every_kernel_defines_what_it_calls(rows):
    # layer_chain called gemv.rope_rows and decode.split_chunk through their modules: Inductor's worker failed with
    # NameError('gemv is not defined') on the H200 (2026-12-05)
    assert [r for r in rows if r["check"] == "emitted"] == []


_COMPILED_STEP = """
import collections, json, sys, torch
import torch._inductor.fx_passes.post_grad as post_grad
from triton.runtime import driver
from kernels import modules
from kernels.traced import _Target
from kpt.optimize import inputs as inp
from tests.gpu.helpers import tiny_llama_decode

driver.set_active(_Target())  # TTIR for sm_90 without a GPU: Inductor's analysis of each kernel
step, spec, _ = tiny_llama_decode(context=64, layers=2)
step = modules.swap_decode_layers(step.to(torch.bfloat16))
if sys.argv[1] == "prefetch":
    step = modules.swap_decode_prefetch(step)
found = collections.Counter()
reinplace = post_grad.reinplace_inplaceable_ops


class Seen(Exception):
    pass


def after_reinplace(*args):
    reinplace(*args)
    graph = next(a for a in args if isinstance(a, torch.fx.Graph) or hasattr(a, "graph"))
    for node in (graph.graph if hasattr(graph, "graph") else graph).nodes:
        if node.target is torch.ops.higher_order.triton_kernel_wrapper_functional:
            found["kernels"] += 1
            found["clones"] += len(node.kwargs["tensors_to_clone"])
        elif node.op == "call_function" and ("scatter" in str(node.target) or "copy_" in str(node.target)):
            found["scatters"] += 1
        elif node.op == "call_function" and str(node.target) in ("aten.cat.default", "aten.stack.default"):
            found["stacks"] += 1
    raise Seen  # the graph is all this needs: Inductor's CPU codegen has no Triton kernel to emit


post_grad.reinplace_inplaceable_ops = after_reinplace
try:
    with torch.inference_mode():
        torch.compile(step, fullgraph=True)(*inp.generate(spec, seed=2))
except Exception as e:
    if "Seen" not in repr(e):
        raise
print(json.dumps(dict(found)))
"""


@pytest.mark.parametrize("plan", ["layers", "prefetch"])
def test_compiled_decode_step_writes_in_place(plan):
    # Each layer's new key and value were slices of the step's outputs: Inductor wrote them into clones and scattered
    # them back, 88 of the 198 launches of the 1B Llama's compiled step on the H200 (2026-12-05). With the prefetch
    # plan, the analysis gave up on the kernels' asm too (every operand cloned). Tensors of each layer's own, stacked
    # at the end, cost a copy launch each (44 on the H100, 2026-12-05): the outputs are now written whole, no stack.
    pytest.importorskip("triton")
    pytest.importorskip("transformers")
    import kernels

    root = os.path.dirname(os.path.dirname(kernels.__file__))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([root, os.path.join(root, "shared"), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", _COMPILED_STEP, plan], env=env, text=True, capture_output=True, timeout=600,
                         cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found == {"kernels": 2 * 6 + 1, "clones": 0}, found  # six launches a layer (decode attention's two)
