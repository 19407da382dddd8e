"""kpt.gpu.graph_edges' choice of the edges it makes programmatic, on given edges (no GPU: the rewrite itself runs in
tests/kernels/test_gpu.py)."""

import torch

from kpt.gpu.graph_edges import ATTR, Edge, already, chosen, kernels_of, named


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
    # the edge captured as other than default into a waiting kernel counts as programmatic already; none else does
    assert already(edges, kernels, waits) == [edges[4]]
    assert already(edges[:4], kernels, waits) == [] and already(edges, kernels, lambda name: False) == []


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


def test_a_graph_without_a_waiting_kernel_is_described_by_its_kernels_names():
    from kpt.gpu.graph_edges import unmatched

    kernels = {1: "_gemv_kernel_9x", 2: "triton_poi_fused_0", 3: "", 4: "triton_poi_fused_0", 5: ""}
    assert unmatched(kernels) == "2 distinct kernel names (_gemv_kernel_9x, triton_poi_fused_0); 2 kernel node(s) " \
                                 "without a name"
    many = {i: f"k{i:02d}" for i in range(14)}
    assert unmatched(many, limit=2) == "14 distinct kernel names (k00, k01 and 12 more); 0 kernel node(s) without a name"
    assert unmatched({1: ""}) == "0 distinct kernel names (none); 1 kernel node(s) without a name"


def test_a_trial_says_when_its_pdl_kernels_ran_as_plain_launches():
    from kpt.gpu.passes import timed_how

    assert timed_how({"compiled": 1, "graphs": 1}) == ""
    assert timed_how({"compiled": 1, "graphs": 1, "trial_edges": 133}) == ""
    assert timed_how({"compiled": 0, "graphs": 0}) == " uncompiled eager"
    assert "PDL code ran as plain launches" in timed_how({"compiled": 1, "graphs": 1, "trial_edges": 0})
    assert timed_how({"compiled": 1, "graphs": 1, "trial_edges": 133, "retimed": 1}) == \
        " (timed twice: the first graph got no programmatic edge)"


def test_a_trial_without_programmatic_edges_is_timed_once_more(monkeypatch):
    from kpt.gpu import passes

    edges = iter([0, 133, 0, 0, 7])
    calls = []

    def trial(base, candidate, x):  # noqa: ANN001, ANN202 - stands in for the compile and the graph replay
        calls.append(1)
        return {"base_ms": 1.0, "trial_ms": 0.9, "trial_edges": next(edges)}

    monkeypatch.setattr(passes, "time_trial", trial)
    assert passes._timed_once_more_without_edges(None, None, ()) == {"base_ms": 1.0, "trial_ms": 0.9,
                                                                    "trial_edges": 133, "retimed": 1}
    assert passes._timed_once_more_without_edges(None, None, ())["trial_edges"] == 0  # kept, said so by timed_how
    assert passes._timed_once_more_without_edges(None, None, ()) == {"base_ms": 1.0, "trial_ms": 0.9, "trial_edges": 7}
    assert len(calls) == 5
