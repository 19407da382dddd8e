"""kpt.gpu.graph_edges' choice of the edges it makes programmatic, on given edges (no GPU: the rewrite itself runs in
tests/kernels/test_gpu.py)."""

import torch

from kpt.gpu.graph_edges import ATTR, Edge, chosen, kernels_of, named


def test_only_default_edges_between_kernels_into_a_waiting_kernel_are_chosen():
    kernels = {"embed": "triton_poi_fused_embedding_0", "qkv": "_gemv_kernel_0", "attn": "_split_kernel_1",
               "other": "triton_red_fused_2", "late": "_gemv_kernel_3"}
    edges = [Edge("embed", "qkv", True),      # any kernel into one that waits: chosen
             Edge("qkv", "attn", True),
             Edge("attn", "other", True),     # into a kernel that does not wait: left
             Edge("copy", "late", True),      # from a node that is not a kernel (a memcpy): left
             Edge("other", "late", False)]    # already not a default edge: left
    waits = {"_gemv_kernel_0", "_split_kernel_1", "_gemv_kernel_3"}.__contains__
    assert chosen(edges, kernels, waits) == edges[:2]
    assert chosen(edges, kernels, lambda name: False) == []


def test_waiting_kernels_are_known_by_their_entry_names_and_inductors_copies():
    waits = named(("_gemv_kernel", "_split_kernel"))
    assert all(waits(n) for n in ("_gemv_kernel", "_gemv_kernel_12", "_split_kernel_0"))
    assert not any(waits(n) for n in ("_gemv_kernel_x", "triton_poi_fused_0", "_merge_kernel", "_gemv",
                                      "x_gemv_kernel", "_split_kernel_"))


def test_a_modules_waiting_kernels_are_what_kernels_set_on_its_parts():
    outer = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.ReLU()))
    assert kernels_of(outer) == ()
    setattr(outer[1], ATTR, ("_split_kernel", "_gemv_kernel"))
    setattr(outer[0], ATTR, ("_gemv_kernel",))
    assert kernels_of(outer) == ("_gemv_kernel", "_split_kernel")


def test_kernels_sets_the_attribute_the_gpu_service_reads():
    from kernels import decode_layer

    assert decode_layer.PDL == ATTR
