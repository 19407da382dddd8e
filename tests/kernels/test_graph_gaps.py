"""bench/graph_gaps.py's parts that need no GPU: boundaries from a profiled timeline, and graph node comparison."""

import pytest
import torch

from tests.gpu.helpers import bench_module


def test_gaps_are_each_boundarys_median_over_the_calls():
    gg = bench_module("graph_gaps")
    # two calls of three launches (Inductor's copy of a user kernel carries _<n>); the second call's gaps larger
    records = [(0.0, 5.0, "emb"), (6.0, 10.0, "_gemv_kernel_0"), (9.0, 12.0, "_split_kernel"),
               (20.0, 25.0, "emb"), (28.0, 32.0, "_gemv_kernel_0"), (35.0, 38.0, "_split_kernel")]
    bounds = gg.gaps(records, 3)
    assert bounds == [("emb", "_gemv_kernel", 2.0), ("_gemv_kernel", "_split_kernel", 1.0)]  # medians of (1, 3), (-1, 3)
    assert gg.by_boundary(bounds + [("emb", "_gemv_kernel", 0.5)]) == {
        "emb -> _gemv_kernel": {"count": 2, "us": 2.5}, "_gemv_kernel -> _split_kernel": {"count": 1, "us": 1.0}}
    with pytest.raises(ValueError, match="whole calls"):
        gg.gaps(records[:5], 3)
    with pytest.raises(ValueError, match="different kernels"):
        gg.gaps(records[:5] + [(35.0, 38.0, "_merge_kernel")], 3)


def test_durations_are_each_launchs_median_grouped_by_kernel_and_grid():
    gg = bench_module("graph_gaps")
    records = [(0.0, 5.0, "emb"), (6.0, 10.0, "_gemv_kernel_0"), (10.0, 12.0, "_gemv_kernel_1"),
               (20.0, 27.0, "emb"), (28.0, 30.0, "_gemv_kernel_0"), (30.0, 34.0, "_gemv_kernel_1")]
    durs = gg.durations(records, 3)
    assert durs == [("emb", 6.0), ("_gemv_kernel", 3.0), ("_gemv_kernel", 3.0)]  # medians of (5, 7), (4, 2), (2, 4)
    nodes = [{"name": "_Z3embv", "grid": [16, 1, 1]}, {"name": "_gemv_kernel", "grid": [640, 1, 1]},
             {"name": "_gemv_kernel", "grid": [512, 1, 1]}]
    assert gg.by_launch(durs, nodes) == {
        "emb grid 16x1x1": {"count": 1, "us": 6.0, "median_us": 6.0},
        "_gemv_kernel grid 640x1x1": {"count": 1, "us": 3.0, "median_us": 3.0},
        "_gemv_kernel grid 512x1x1": {"count": 1, "us": 3.0, "median_us": 3.0}}
    # a memset node (no grid) or a count that differs: by kernel alone
    assert gg.by_launch(durs, [*nodes[:2], {"name": "<memset>"}]) == gg.by_launch(durs, nodes[:2]) == {
        "emb": {"count": 1, "us": 6.0, "median_us": 6.0}, "_gemv_kernel": {"count": 2, "us": 6.0, "median_us": 3.0}}
    with pytest.raises(ValueError, match="different kernels"):
        gg.durations(records[:5] + [(35.0, 38.0, "_merge_kernel")], 3)


def test_node_diffs_name_the_positions_that_differ():
    gg = bench_module("graph_gaps")
    a = [{"name": "k", "grid": [4, 1, 1], "block": [128, 1, 1], "shared_bytes": 0, "carveout": -1}] * 2
    b = [a[0], {**a[0], "shared_bytes": 1024, "carveout": 100}]
    diffs = gg.node_diffs(a, b)
    assert diffs == {"shared_bytes": {"count": 1, "first": [[1, "k", 0, 1024]]},
                     "carveout": {"count": 1, "first": [[1, "k", -1, 100]]}}
    assert gg.node_diffs(a, b[:1]) == {"node_counts": [2, 1]}
    if not torch.cuda.is_available():  # CI: a clear refusal, not a traceback
        assert gg.main([]) == 2


def test_nodes_are_ordered_by_their_edges():
    gg = bench_module("graph_gaps")
    # given out of order: 7 -> 3 -> 9, and 5 on its own
    assert gg.ordered([9, 3, 5, 7], [(7, 3), (3, 9)]) == [5, 7, 3, 9]
    assert gg.ordered([1, 2], []) == [1, 2]
