"""kpt.gpu.runtime's choices, on the CPU: the package's runtime record, strict fp32, which inputs a graph binds by
address, and what a CUDA graph capture does around itself (the collector, cuBLAS workspaces, the caller's stream).
What needs the device is in test_gpu_runtime.py."""

import contextlib
import gc
import zipfile

import pytest
import torch

from kpt.gpu import runtime
from kpt.optimize import inputs as inp
from kpt.optimize.passes import export_module
from tests.gpu.helpers import tiny_bert


def test_runtime_record_is_an_extra_file_of_the_pt2_archive(tmp_path):
    """Appended to the zip under the archive's top folder; torch's PT2 reader still loads the archive and
    lists the record among its extra files."""
    model, spec = tiny_bert(batch=1, seq=8)
    path = str(tmp_path / "model.pt2")
    torch.export.save(export_module(model, spec), path)
    assert runtime.read_record(path) == {}
    rec = runtime.write_record(path, cudagraphs=True)
    assert runtime.read_record(path) == rec == {"version": 1, "cudagraphs": True}
    with pytest.raises(ValueError, match="written once"):
        runtime.write_record(path, cudagraphs=False)
    with zipfile.ZipFile(path) as z:
        tops = {n.split("/")[0] for n in z.namelist()}
    assert len(tops) == 1
    from torch.export.pt2_archive._package import load_pt2

    contents = load_pt2(path)
    assert "kpt_runtime.json" in contents.extra_files
    ep = torch.export.load(path)
    x = inp.generate(spec, seed=1)
    with torch.inference_mode():
        torch.testing.assert_close(ep.module()(*x), model(*x))


def test_strict_fp32_restores_the_flags():
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with runtime.strict_fp32():
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == old


def test_a_graph_whose_edges_cannot_be_rewritten_runs_as_captured(monkeypatch, caplog):
    """kpt.gpu.runtime: where cuda-bindings is missing or the driver refuses the rewrite, the captured graph keeps
    its plain edges (the same results, without the overlap) and the runner says so in the log."""
    from kpt.errors import Unsupported
    from kpt.gpu import graph_edges, runtime

    def refused(graph, waits):  # noqa: ANN001, ANN202
        raise Unsupported("cuGraphAddDependencies returned CUDA_ERROR_INVALID_VALUE")

    def missing(graph, waits):  # noqa: ANN001, ANN202
        raise ImportError("No module named 'cuda'")

    for fails in (refused, missing):
        monkeypatch.setattr(graph_edges, "make_programmatic", fails)
        with caplog.at_level("WARNING", logger="kpt.gpu.runtime"):
            assert runtime._programmatic(object(), lambda name: True) == 0
    assert [r.getMessage() for r in caplog.records] == [
        "captured graph kept with plain edges: UNSUPPORTED: cuGraphAddDependencies returned CUDA_ERROR_INVALID_VALUE",
        "captured graph kept with plain edges: No module named 'cuda'"]


def test_graph_keys_bind_large_inputs_by_address():
    cpu = torch.device("cpu")
    ids, pos = torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    kv = torch.zeros(runtime.BIND_BYTES // 2, dtype=torch.bfloat16)  # exactly BIND_BYTES
    args = (ids, pos, kv, "flag")
    assert runtime.bindable(args, cpu) == (False, False, True)
    assert runtime.bindable(args, torch.device("meta")) == (False, False, False)  # elsewhere: copied over
    shifted = torch.zeros(runtime.BIND_BYTES // 2 + 1, dtype=torch.bfloat16)[1:]  # 2 bytes past an aligned start
    assert runtime.bindable((shifted,), cpu) == (False,)  # copied into an aligned buffer, as before
    shapes, addresses = runtime.graph_key(args, runtime.bindable(args, cpu))
    assert shapes == runtime._key(args) and addresses == (kv.data_ptr(),)
    assert runtime.graph_key(args, (False, False, False)) == (shapes, ())


class _Replay:
    """Stands in for a captured torch.cuda.CUDAGraph in the CPU tests of GraphedRunner's choices."""

    def replay(self) -> None:
        pass


def _cpu_runner(monkeypatch):
    """A GraphedRunner on the CPU whose captures are stand-ins, recording each bound address captured."""
    run = runtime.GraphedRunner(lambda *a: a[0], device=torch.device("cpu"))
    captured = []

    def capture(args, binds):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        captured.append(tuple(t.data_ptr() for t, b in zip(tensors, binds, strict=True) if b))
        return runtime._Graph(_Replay(), [None if b else t.clone() for t, b in zip(tensors, binds, strict=True)], tensors[0])

    monkeypatch.setattr(run, "_capture", capture)
    return run, captured


def test_a_shape_binds_a_few_addresses_rebinds_a_few_then_copies(monkeypatch):
    run, captured = _cpu_runner(monkeypatch)
    bound, rebinds = runtime.BOUND_GRAPHS, runtime.REBINDS
    caches = [torch.zeros(runtime.BIND_BYTES // 4) for _ in range(bound + rebinds + 1)]
    small = torch.zeros(4)
    shapes = runtime._key((small, caches[0]))
    for kv in caches[:bound]:  # each new address of the shape gets a graph of its own
        run(small, kv)
        run(small, kv)  # found again: replayed without a copy, no capture
    assert captured == [(kv.data_ptr(),) for kv in caches[:bound]]
    run(small, caches[0])  # now caches[1]'s graph is the least recently replayed
    run(small, caches[bound])  # a new address takes its place
    assert captured[-1] == (caches[bound].data_ptr(),)
    assert (shapes, (caches[1].data_ptr(),)) not in run.graphs and (shapes, (caches[0].data_ptr(),)) in run.graphs
    for kv in caches[bound + 1:-1]:  # the rest of the shape's replacements
        run(small, kv)
    assert len(captured) == bound + rebinds and all(k[1] for k in run.graphs)
    key, binds = run._pick((small, caches[-1]))  # spent: a new address copies into the shape's copying graph
    assert key == (shapes, ()) and binds == (False, False)
    run(small, caches[-1])
    assert captured[-1] == () and sum(1 for k in run.graphs if k[1]) == bound
    run(small, caches[-2])  # the bound ones are still replayed in place
    assert len(captured) == bound + rebinds + 1
    assert run._pick((small, small))[0][1] == ()  # nothing large: as before, copied


def test_a_capture_starts_with_old_cycles_collected_and_collects_none_during_it(monkeypatch):
    """runtime.capturing: garbage cycles left before a capture are freed before it starts (what they free may
    call CUDA, which a capture forbids), and the collector stays off while the graph is captured, back on after,
    an error in the capture included."""
    freed, seen = [], {}

    class Cycle:
        def __init__(self):
            self.me = self

        def __del__(self):
            freed.append(self)  # resurrected: kept by the list

    @contextlib.contextmanager
    def graph(g, pool=None, stream=None):  # torch.cuda.graph stand-in: what the collector does while "capturing"
        seen["freed_before"] = len(freed)
        seen["enabled_during"] = gc.isenabled()
        yield

    monkeypatch.setattr(torch.cuda, "graph", graph)
    Cycle()
    assert gc.isenabled() and not freed  # only the collector frees a cycle
    with runtime.capturing(object()):
        Cycle()  # made during the capture: left for later
    assert seen == {"freed_before": 1, "enabled_during": False} and gc.isenabled() and len(freed) == 1
    with pytest.raises(RuntimeError), runtime.capturing(object()):
        raise RuntimeError("operation failed due to a previous error during capture")
    assert gc.isenabled() and len(freed) == 2
    # Two captures at once (a worker per GPU, each in its thread): the second collects nothing (it would run
    # destructors during the first), and the collector stays off until the last one ends.
    with runtime.capturing(object()):
        Cycle()
        with runtime.capturing(object()):
            assert len(freed) == 2 and not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled() and runtime._Captures.running == 0


def test_a_failed_capture_leaves_the_current_stream_and_no_cublas_workspace_behind(monkeypatch):
    """runtime.capturing: cuBLAS's per-stream workspaces are dropped before and after every capture (one made during
    it lives in the graph's pool and must not outlive the graph), and where torch.cuda.graph's exit raised before
    putting the caller's stream back (its capture_end failed), the caller's stream is put back."""
    state = {"stream": "caller", "cleared": 0, "set": []}

    @contextlib.contextmanager
    def graph(g, pool=None, stream=None):  # torch.cuda.graph: the capture stream current while capturing
        prev, state["stream"] = state["stream"], stream or "capture"
        state["cleared_before"] = state["cleared"]
        yield
        if g == "fails":  # capture_end raised: torch.cuda.graph's exit leaves its stream current
            raise RuntimeError("operation failed due to a previous error during capture")
        state["stream"] = prev

    def set_stream(s):
        state["set"].append(s)
        state["stream"] = s

    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: state["stream"])
    monkeypatch.setattr(torch.cuda, "set_stream", set_stream)
    monkeypatch.setattr(torch._C, "_cuda_clearCublasWorkspaces",
                        lambda: state.__setitem__("cleared", state["cleared"] + 1), raising=False)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: (0, 1))
    monkeypatch.setattr(runtime, "_end_routing", lambda pool, stream: None)  # test_a_failed_captures_pool_routing_...
    monkeypatch.setattr(runtime, "_end_generator_capture", lambda stream: None)  # on the device: test_gpu_runtime
    with runtime.capturing("ok", stream="runner's"):
        assert state["stream"] == "runner's" and state["cleared_before"] == 1
    assert state["stream"] == "caller" and state["set"] == [] and state["cleared"] == 2
    with pytest.raises(RuntimeError, match="previous error"), runtime.capturing("fails"):
        pass
    assert state["stream"] == "caller" and state["set"] == ["caller"] and state["cleared"] == 4
    # Captures at once (threads): none cleared while another runs (its graph may hold a workspace it allocated)
    with runtime.capturing("ok", stream="a"):
        with runtime.capturing("ok", stream="b"):
            assert state["cleared"] == 5
        assert state["cleared"] == 5
    assert state["cleared"] == 6


class _Allocator:
    """torch's caching allocator as a capture sees it: the pools captures route allocations into (its
    captures_underway) and each pool's use count (a capture's begin adds one, the graph's reset or releasePool takes
    it back)."""

    def __init__(self):
        self.routing: list[tuple] = []
        self.uses: dict[tuple, int] = {}
        self.handles = 0

    def handle(self) -> tuple:
        self.handles += 1
        return (0, self.handles)

    def begin(self, pool: tuple) -> None:
        if pool in self.routing:
            raise RuntimeError("beginAllocateToPool: already recording to mempool_id")
        self.routing.append(pool)
        self.uses[pool] = self.uses.get(pool, 0) + 1

    def end(self, device: int, pool: tuple) -> None:
        if pool not in self.routing:
            raise RuntimeError("endAllocatePool: not currently recording to mempool_id")
        self.routing.remove(pool)

    def release(self, device: int, pool: tuple) -> None:
        self.uses[pool] -= 1


def test_a_failed_captures_pool_routing_is_ended_and_its_pool_given_back(monkeypatch, caplog):
    """runtime.capturing: torch's capture_end ends the allocator's routing into the graph's pool only after
    cudaStreamEndCapture succeeds (and the graph's reset releases the pool only then), so a capture that fails there
    leaves the allocator counting a capture underway for good, and refuses the next capture into that pool. Where
    capture_end got that far (the body raised, the capture ended), the graph keeps its pool as torch leaves it."""
    alloc = _Allocator()

    @contextlib.contextmanager
    def graph(g, pool=None, stream=None):  # torch.cuda.graph's capture_begin and capture_end, as the allocator sees them
        alloc.begin(pool)
        try:
            yield
        finally:
            if g == "fails":  # cudaStreamEndCapture raised: the routing is left as it was
                raise RuntimeError("operation failed due to a previous error during capture")
            alloc.end(0, pool)

    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", alloc.handle)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: "caller")
    monkeypatch.setattr(torch._C, "_cuda_endAllocateToPool", alloc.end, raising=False)
    monkeypatch.setattr(torch._C, "_cuda_releasePool", alloc.release, raising=False)
    monkeypatch.setattr(torch._C, "_cuda_clearCublasWorkspaces", lambda: None, raising=False)
    tidied: list[object] = []  # the generator's capture mode ended (_end_generator_capture; on the device: test_gpu_runtime)
    monkeypatch.setattr(runtime, "_end_generator_capture", tidied.append)
    with runtime.capturing("ok"):  # no pool given: one is named for it
        pass
    assert alloc.routing == [] and alloc.uses == {(0, 1): 1} and tidied == []  # the graph holds its pool
    with caplog.at_level("WARNING", logger="kpt.gpu.runtime"):
        with pytest.raises(RuntimeError, match="previous error"), runtime.capturing("fails", pool=(0, 1)):
            pass
    assert alloc.routing == [] and alloc.uses == {(0, 1): 1}  # routing ended, the failed capture's use given back
    assert "routing ended, pool released" in caplog.text and tidied == [None]
    with runtime.capturing("ok", pool=(0, 1)):  # the pool takes a next capture
        pass
    assert alloc.uses == {(0, 1): 2}
    caplog.clear()
    with caplog.at_level("WARNING", logger="kpt.gpu.runtime"):
        with pytest.raises(ValueError), runtime.capturing("ok"):
            raise ValueError("the model raised; the capture still ended")
    assert alloc.routing == [] and alloc.uses[(0, 2)] == 1 and not caplog.text  # as torch leaves it
    assert tidied == [None, None]
    monkeypatch.setattr(runtime._Captures, "running", 1)  # another thread's capture runs: its end ends the mode
    with pytest.raises(RuntimeError, match="previous error"), runtime.capturing("fails"):
        pass
    assert tidied == [None, None] and runtime._Captures.running == 1


def test_copies_keep_the_inference_kind_so_a_compiled_runner_is_not_compiled_again_in_the_capture():
    from torch._dynamo.testing import CompileCounter

    cpu = torch.device("cpu")
    count = CompileCounter()
    f = torch.compile(lambda a, b: a * 2 + b, backend=count, dynamic=False)
    x, y = torch.randn(4), torch.randn(4)  # the caller's inputs: not inference tensors
    try:
        with torch.inference_mode():
            f(x, y)  # the trial's compile
            cx, cy = runtime.copy_like(x, cpu), runtime.copy_like(y, cpu)
            f(cx, cy)  # the warm-up, on copies
            f(x, cy)  # the capture: a bound original beside a copy
            assert not cx.is_inference() and torch.equal(cx, x) and cx.data_ptr() != x.data_ptr()
            assert runtime.copy_like(torch.ones(2), cpu).is_inference()  # made in inference mode: stays one
            assert count.frame_count == 1
            f(x.detach().clone(), y)  # a copy of the other kind: compiled again (the guard this avoids)
        assert count.frame_count == 2
    finally:
        torch._dynamo.reset()
