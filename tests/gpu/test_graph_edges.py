"""kpt.gpu.graph_edges' choice of the edges it makes programmatic, on given edges (no GPU: the rewrite itself runs in
tests/kernels/test_gpu.py)."""

from kpt.gpu.graph_edges import Edge, chosen


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
