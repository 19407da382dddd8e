"""Running AOTInductor packages on the GPU: CUDA graph replay, strict fp32, and the loader hook.

AOTInductor itself never captures CUDA graphs (Inductor's cudagraph trees exist only for
torch.compile). A package is still capturable: loaded with run_single_threaded=True, its model
container runs on the caller's current stream without the events and locks of its thread-safe
path, so torch.cuda.graph can capture one call and replay it. GraphedRunner does that per input
shape: inputs are copied into static buffers, the graph is replayed, outputs are cloned (replays
overwrite them) and handed back. An input of BIND_BYTES or more (a decode step's key/value caches) is not
copied: the graph reads it where the caller keeps it, and its address joins the graph's key (BOUND_GRAPHS such
graphs a shape; beyond them that shape's graph copies again). Where the record names kernels compiled for
programmatic dependent launch (pdl_kernels: kernels/' decode layers with the trial kpt_decode_pdl kept), each
captured graph's edges into them are made programmatic before it first runs (kpt.gpu.graph_edges): AOTInductor's
own launches carry no launch attributes, so the graph is where those kernels get to start while the one before
finishes.

Whether a package is replayed as a graph is decided once, when it is built (passes.CudaGraphs
measures it), and recorded inside the .pt2 as extra/kpt_runtime.json, a member of the archive's
own "extra files" directory (torch.export.pt2_archive reads it back as extra_files). The record
is appended to the zip: the package's own members are not rewritten.

kpt.optimize.artifacts.load does not know this record. install() registers load() as the loader
of ARTIFACT_FORMAT_AOTI_PACKAGE in this process, so the pipeline validates exactly what it
ships; a process that loads our packages through kpt.optimize.artifacts without kpt.gpu gets
correct results, without graph replay and with TF32 convolutions (see docs/gpu.md).

One load per package per process. Every package is loaded once, with run_single_threaded=True, and
that runner serves every later use in the process: the CUDA-graphs pass's measurement, the ladder's
validation, the benchmark, at whatever path the package is copied to (packages are identified by their
members' names and CRC-32s, the runtime record left out). A lock per runner makes the unlocked
single-threaded path safe for callers on several threads. Loaders are never dropped while the process
runs: an AOTInductor .so carries STB_GNU_UNIQUE symbols, so dlclose cannot unload it, while the loader's
destructor deletes the extracted file; glibc identifies loaded libraries by device and inode, and a later
package extracted onto the recycled inode would be handed the old library's code. On the H100 (torch
2.11) a test process segfaulted inside aoti_load_package, cause not yet known: check_in_fresh_process()
therefore loads and runs each freshly compiled package once in a child process first, so a package that
crashes the loader fails its level (Unsupported, with the child's last output) instead of taking the
job's process down.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.utils._pytree as pytree

from kpt.errors import InvalidModel, Unsupported, cause
from kpt.gpu import graph_edges
from kpt.optimize import artifacts, inductor

log = logging.getLogger(__name__)

RECORD = "extra/kpt_runtime.json"
RECORD_VERSION = 1
MAX_GRAPHS = 8  # input shapes captured per loaded package; further shapes run without a graph
# An input this large is read where the caller keeps it rather than copied into the graph's own buffer at every
# call: a decode step's key/value caches were copied whole every token (46 MB of the 1B Llama's 2048-entry
# cache, 0.034 ms of its 1.36 ms step on the H100, 2026-12-05; a long context's cache is GBs). Its address is
# part of the graph's key, so a caller that keeps its cache where it is replays one graph without copying it.
BIND_BYTES = 1 << 20
BOUND_GRAPHS = 4  # graphs a shape may have bound to callers' addresses at once
# Past BOUND_GRAPHS a new address takes the place of the shape's least recently replayed bound graph, this many
# times a shape; after that the shape's new addresses copy into its copying graph. A caller's addresses often move
# once (a check on a few samples, then the calls that matter: the benchmark's accuracy check bound three of the
# 1B Llama decode step's four, and three of its four timed input sets then copied their 46 MB of caches at every
# call: the package measured 1.081 ms a step where its build had timed 1.037, H100, 2026-12-06); a caller cycling
# through more addresses than BOUND_GRAPHS stops recapturing once these are spent.
REBINDS = BOUND_GRAPHS
# A child process imports torch (and torchao for quantized packages), extracts the package, loads it and runs
# it once: seconds for small models, tens of seconds for a 1B-parameter one. Past this it counts as hung.
CHECK_TIMEOUT_S = 300.0


def read_record(path: str) -> dict:
    """The runtime record of a package ({} when it has none)."""
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.endswith("/" + RECORD):
                    return json.loads(z.read(name))
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise InvalidModel(f"cannot read the AOTInductor package {path}: {e}") from e
    return {}


def write_record(path: str, **fields: object) -> dict:
    """Append the runtime record to a package that has none yet; returns the record."""
    if read_record(path):
        raise ValueError(f"{path} already carries {RECORD}; records are written once")
    record = {"version": RECORD_VERSION, **fields}
    with zipfile.ZipFile(path, "a") as z:
        # members of a PT2 archive all sit under one top-level folder; the reader insists on it
        top = z.namelist()[0].split("/", 1)[0]
        z.writestr(f"{top}/{RECORD}", json.dumps(record, sort_keys=True))
    return record


@contextlib.contextmanager
def strict_fp32():
    """fp32 matmuls and convolutions in IEEE fp32, as every level was validated (cuDNN defaults to TF32
    convolutions; cuBLAS to IEEE fp32). Restores the previous flags."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


class _Captures:
    """Captures in progress in this process (a worker per GPU captures from its own thread). Python's collector is
    process-wide: the first capture to start collects and turns it off, the last to end turns it back on, and
    nothing is collected while any capture runs (a destructor's CUDA call in one thread breaks another's capture
    too under torch.cuda.graph's default "global" capture mode)."""

    lock = threading.Lock()
    running = 0
    collector_was_on = True


@contextlib.contextmanager
def capturing(graph: torch.cuda.CUDAGraph, pool: object = None, stream: torch.cuda.Stream | None = None):
    """torch.cuda.graph(graph, pool=pool, stream=stream) with Python's cyclic garbage collected first and none
    collected during the capture (_Captures). What such garbage frees may call CUDA where a capture forbids it (a
    dropped graph's memory pool, a compiled Triton kernel's module), and the capture then fails with "operation not
    permitted when stream is capturing". The O3 build's int8 trial, then its kernels trial right after that one's
    failed capture and a torch._dynamo.reset() (both leave such cycles), failed so (H100, 2026-12-06) and were timed
    eagerly. torch.cuda.graph collects nothing itself unless torch.compiler.config.force_cudagraph_gc.

    Around the capture, what a failed one would leave behind is undone: cuBLAS's per-stream workspaces are dropped
    before the first of the captures running at once and after the last, as Inductor's CUDA graph trees do around
    theirs, so one a capture allocates lives in that graph's pool and none outlives the graph that holds it; and the
    thread's current stream is put back where a failed capture left its capture stream current (torch.cuda.graph's
    exit skips that when its capture_end raises: _stream_kept); and the caching allocator's routing into the graph's
    memory pool is ended where capture_end raised before ending it (_end_routing), and so is the default CUDA
    generator's capture mode (_end_generator_capture). The 1B Llama's O3 builds' later failed captures were not
    such leftovers: each trial was compiled again inside its capture (copy_like says why; bench/capture_probe.py,
    H100, 2026-12-08)."""
    with _Captures.lock:
        if _Captures.running == 0:
            gc.collect()
            _Captures.collector_was_on = gc.isenabled()
            gc.disable()
            _clear_cublas_workspaces()  # not while another thread captures: its graph may hold one
        _Captures.running += 1
    if pool is None and torch.cuda.is_available():
        pool = torch.cuda.graph_pool_handle()  # named here, so that a failed capture's routing into it can be ended
    try:
        with _stream_kept(), torch.cuda.graph(graph, pool=pool, stream=stream):
            yield
    except BaseException:
        _end_routing(pool, stream)
        with _Captures.lock:  # no capture starts meanwhile: the tidying allocates, which breaks a global-mode one
            if _Captures.running == 1:  # else the other capture's end ends the generator's capture mode
                _end_generator_capture(stream)
        raise
    finally:
        with _Captures.lock:
            _Captures.running -= 1
            if _Captures.running == 0:
                _clear_cublas_workspaces()
                if _Captures.collector_was_on:
                    gc.enable()


def _end_routing(pool: object, stream: torch.cuda.Stream | None) -> None:
    """After a capture that raised: the caching allocator's routing of the capture's allocations into its pool ended,
    and the pool given back, where capture_end did not get that far. torch's CUDAGraph::capture_end ends the routing
    only after cudaStreamEndCapture succeeds, and its reset releases the pool only after a capture that ended; a
    failed capture leaves the allocator counting a capture underway for the rest of the process (it then never
    processes the events of blocks used on several streams, so their memory is not reused, and empty_cache cannot
    release everything), and a later capture into the same pool is refused ("already recording to mempool_id")."""
    end = getattr(torch._C, "_cuda_endAllocateToPool", None)
    if pool is None or end is None:
        return
    device = stream.device.index if stream is not None else torch.cuda.current_device()
    try:
        end(device, pool)
    except RuntimeError:  # "not currently recording to mempool_id": capture_end ended it; the graph releases the pool
        return
    torch._C._cuda_releasePool(device, pool)
    log.warning("a failed CUDA graph capture left the allocator routing into its memory pool: routing ended, pool "
                "released")


def _end_generator_capture(stream: torch.cuda.Stream | None) -> None:
    """After a capture that raised: the device's default CUDA generator out of its capture mode. torch's
    CUDAGraph::capture_begin puts the generator's state in capture mode and capture_end takes it out only after
    cudaStreamEndCapture succeeds; a failed capture leaves it so, and every later random op of the device outside a
    capture then raises "Offset increment outside graph capture encountered unexpectedly" (torch.randn after a runner's
    failed capture, H100 2026-12-07). The next capture that ends takes it out: one of a single in-place kernel, on a
    stream of its own, in thread-local mode, the graph then dropped; only where no other capture runs (capturing), as
    any capture that ends also ends the mode of the generator it shares."""
    if not torch.cuda.is_available():
        return
    device = stream.device if stream is not None else torch.device("cuda", torch.cuda.current_device())
    try:
        with torch.cuda.device(device):
            x = torch.zeros(1, device=device)
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, stream=side, capture_error_mode="thread_local"):
                x.add_(1)
            del g
    except RuntimeError as e:  # the context itself is broken (a fault): nothing more to tidy
        log.warning("after a failed CUDA graph capture, the generator's capture mode could not be ended (%s)",
                    cause(e, 200))


def _clear_cublas_workspaces() -> None:
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)  # in CUDA builds of torch; what Inductor calls
    if clear is not None:
        clear()


@contextlib.contextmanager
def _stream_kept():
    """The thread's current stream the same after a capture as before, whether the capture raised or not."""
    prev = torch.cuda.current_stream() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        if prev is not None and torch.cuda.current_stream() != prev:
            log.warning("a failed CUDA graph capture left its capture stream current: %s put back", prev)
            torch.cuda.set_stream(prev)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor | None]  # per tensor argument: its static buffer (None: the graph reads the caller's)
    outputs: object  # the pytree the package returned during capture


def copy_like(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A copy of t on device, an inference tensor exactly where t is one. A compiled runner's guards include it
    (the tensor's dispatch keys): called on copies of the other kind beside bound originals, it compiled a third
    time inside the capture, whose constant folding then read a value to the host and broke it (the 1B Llama's
    decode step, every kernel trial: "operation not permitted when stream is capturing", H100, 2026-12-08)."""
    with torch.inference_mode(t.is_inference()):
        return t.detach().to(device, copy=True)


def _key(args: tuple) -> tuple:
    return tuple((tuple(a.shape), a.dtype, a.stride()) if isinstance(a, torch.Tensor) else repr(a) for a in args)


def bindable(args: tuple, device: torch.device) -> tuple[bool, ...]:
    """Per tensor argument: whether a graph may read it in place (BIND_BYTES or more, already on the device, and
    16-byte aligned as the copies are: Inductor's kernels may assume it of their inputs)."""
    return tuple(a.device == device and a.numel() * a.element_size() >= BIND_BYTES and a.data_ptr() % 16 == 0
                 for a in args if isinstance(a, torch.Tensor))


def graph_key(args: tuple, binds: tuple[bool, ...]) -> tuple:
    """(shapes, addresses of the bound tensor arguments): one graph each; no addresses for a graph that copies."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    return _key(args), tuple(t.data_ptr() for t, b in zip(tensors, binds, strict=True) if b)


@dataclass
class GraphedRunner:
    """Replays one CUDA graph per input shape of `runner` (a package loaded with run_single_threaded=True).
    `lock` is the runner's (shared with every other wrapper of the same runner): one call at a time."""

    runner: Callable
    lock: threading.Lock = field(default_factory=threading.Lock)
    device: torch.device = field(default_factory=lambda: torch.device("cuda", torch.cuda.current_device()))
    max_graphs: int = MAX_GRAPHS
    graphs: dict[tuple, _Graph] = field(default_factory=dict)  # graph_key() -> its graph
    pools: dict[tuple, object] = field(default_factory=dict)  # input shapes -> the memory pool their graphs share
    resident_bytes: int = 0  # GPU memory the captured graphs' pools hold (reserved)
    # The kernels whose launches wait for the one before (compiled for programmatic dependent launch: the package's
    # record, kpt.gpu.graph_edges): each captured graph's edges into them are made programmatic before it first runs.
    waits: Callable[[str], bool] | None = None
    programmatic_edges: int = 0  # programmatic edges into waiting kernels (rewritten or captured so), all graphs
    rebinds: dict[tuple, int] = field(default_factory=dict)  # input shapes -> bound graphs replaced (REBINDS)
    # The stream this runner captures on, on its device (made at its first capture): torch.cuda.graph's default
    # one is a single stream for the process, made on whichever device first captured.
    stream: torch.cuda.Stream | None = None

    def _capture(self, args: tuple, binds: tuple[bool, ...]) -> _Graph:
        """One graph of the runner on args: bound tensor arguments (binds) read in place, the others from copies.
        The first graph of a shape (no memory pool for it yet) runs the runner twice first, off the capture, on
        copies of every input (lazy loads, constant folding, workspaces; a package that wrote into an input writes
        into the caller's only when replayed, as a plain call does)."""
        buffers, static, flags = [], [], iter(binds)  # per tensor argument its copy (None: bound); the call's args
        for a in args:
            if isinstance(a, torch.Tensor):
                buffers.append(None if next(flags) else copy_like(a, self.device))
                a = a if buffers[-1] is None else buffers[-1]
            static.append(a)
        shapes = _key(args)
        if shapes not in self.pools:
            scratch = [copy_like(a, self.device) if isinstance(a, torch.Tensor) else a for a in args]
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):  # warm up off the capture
                    self.runner(*scratch)
            torch.cuda.current_stream(self.device).wait_stream(side)
            del scratch
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_reserved(self.device)
        graph = torch.cuda.CUDAGraph(keep_graph=self.waits is not None)
        # The graphs of one shape share a memory pool (the same allocations in the same order): replays are one at
        # a time (the lock) and each one's outputs are cloned before the next, so none reads what another wrote.
        if self.stream is None:
            self.stream = torch.cuda.Stream(self.device)
        try:
            with capturing(graph, pool=self.pools.get(shapes), stream=self.stream):
                outputs = self.runner(*static)
        except BaseException:
            # where capture_begin also routes pinned host memory into the pool (recent torch), no Python call ends
            # that routing and a next capture into the pool would be refused: the shape's next graph gets its own
            self.pools.pop(shapes, None)
            raise
        self.pools.setdefault(shapes, graph.pool())
        if self.waits is not None:
            rewritten = _programmatic(graph, self.waits)
            try:
                graph.instantiate()
            except RuntimeError as e:  # the driver took the edges but not the graph: capture it again, plain
                log.warning("the graph with %d programmatic edges does not instantiate (%s): captured again with "
                            "plain edges", rewritten, e)
                del graph, outputs
                torch.cuda.synchronize(self.device)
                self.waits = None
                return self._capture(args, binds)
            self.programmatic_edges += rewritten
        torch.cuda.synchronize(self.device)
        self.resident_bytes += max(0, torch.cuda.memory_reserved(self.device) - before)
        return _Graph(graph, buffers, outputs)

    def _pick(self, args: tuple) -> tuple[tuple, tuple[bool, ...]]:
        """The graph key and bound arguments for this call: the caller's addresses where its large inputs may be
        bound and the shape has a graph for them or room for one more (BOUND_GRAPHS; while REBINDS lasts, room is
        made by dropping the shape's least recently replayed bound graph), else the shape's copying graph."""
        binds = bindable(args, self.device)
        key = graph_key(args, binds)
        if not key[1] or key in self.graphs:
            return key, binds
        bound = [k for k in self.graphs if k[0] == key[0] and k[1]]  # oldest replay first (__call__'s order)
        if len(bound) < BOUND_GRAPHS:
            return key, binds
        if self.rebinds.get(key[0], 0) < REBINDS:
            self.rebinds[key[0]] = self.rebinds.get(key[0], 0) + 1
            self._drop(bound[0])
            return key, binds
        return (key[0], ()), tuple(False for _ in binds)

    def _drop(self, key: tuple) -> None:
        """Forget one graph. Its replays finish first: its outputs were cloned on the stream, but the shape's pool
        may hand its blocks to the next capture."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        del self.graphs[key]
        log.info("a bound CUDA graph gave way to a new input address (%d of %d replacements for the shape)",
                 self.rebinds.get(key[0], 0), REBINDS)

    def __call__(self, *args: torch.Tensor) -> object:
        with self.lock:
            key, binds = self._pick(args)
            g = self.graphs.pop(key, None)  # put back last: the dict runs from least to most recently replayed
            if g is None:
                if len(self.graphs) >= self.max_graphs:
                    with strict_fp32():
                        return self.runner(*args)
                with strict_fp32():
                    g = self._capture(args, binds)
                log.info("captured a CUDA graph for input shapes %s, %d input(s) read in place (%d graph(s), "
                         "%.1f MiB held)", [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)], sum(binds),
                         len(self.graphs) + 1, self.resident_bytes / 2**20)
            self.graphs[key] = g
            for dst, src in zip(g.inputs, [a for a in args if isinstance(a, torch.Tensor)], strict=True):
                if dst is not None:
                    dst.copy_(src, non_blocking=True)
            g.graph.replay()
            return pytree.tree_map_only(torch.Tensor, torch.clone, g.outputs)


def _programmatic(graph: torch.cuda.CUDAGraph, waits: Callable[[str], bool]) -> int:
    """graph_edges.make_programmatic, or 0 edges where the driver API is missing or refuses: the graph then runs
    as captured (plain launches, the same results)."""
    try:
        return graph_edges.make_programmatic(graph, waits)
    except (ImportError, Unsupported) as e:
        log.warning("captured graph kept with plain edges: %s", e)
        return 0


@dataclass
class PlainRunner:
    """A package run directly, under the strict fp32 it was validated with; one call at a time (`lock`)."""

    runner: Callable
    lock: threading.Lock = field(default_factory=threading.Lock)
    resident_bytes: int = 0

    def __call__(self, *args: torch.Tensor) -> object:
        with self.lock, strict_fp32():
            return self.runner(*args)


@dataclass
class Shared:
    """A package loaded in this process: the runner (run_single_threaded=True) and the lock of its callers."""

    runner: Callable
    lock: threading.Lock = field(default_factory=threading.Lock)


_LOADED: dict[tuple, Shared] = {}  # package identity -> its runner; never dropped (see the module doc)


def identity(path: str) -> tuple:
    """What makes two package files the same compiled model: their members' names (below the archive's top
    folder, which follows the file name it was written as) with sizes and CRC-32s, the runtime record left
    out (it is appended after compiling and does not change what runs)."""
    try:
        with zipfile.ZipFile(path) as z:
            return tuple(sorted((i.filename.split("/", 1)[-1], i.file_size, i.CRC) for i in z.infolist()
                                if not i.filename.endswith("/" + RECORD)))
    except (zipfile.BadZipFile, OSError) as e:
        raise InvalidModel(f"cannot read the AOTInductor package {path}: {e}") from e


def shared(path: str) -> Shared:
    """The package's runner in this process, loaded on first use only (see the module doc)."""
    key = identity(path)
    entry = _LOADED.get(key)
    if entry is None:
        try:
            runner = inductor.load_package(path, run_single_threaded=True)
        except (RuntimeError, OSError) as e:
            raise InvalidModel(f"cannot load AOTInductor package {path}: {e}") from e
        entry = _LOADED[key] = Shared(runner)
        log.info("loaded AOTInductor package %s (%d package(s) loaded in this process)", path, len(_LOADED))
    return entry


def load_aoti(path: str) -> Callable:
    """The package as a callable: graph replay when its record says so and a GPU is present."""
    record = read_record(path)
    graphs = bool(record.get("cudagraphs")) and torch.cuda.is_available()
    entry = shared(path)
    if not graphs:
        return PlainRunner(entry.runner, entry.lock)
    waiting = record.get("pdl_kernels") or ()
    return GraphedRunner(entry.runner, entry.lock, waits=graph_edges.named(waiting) if waiting else None)


# Loads the package and runs it once on the saved inputs, in a process of its own (see check_in_fresh_process).
# It reports each step on stderr, so a crash says whether loading or running the package took the process down.
_CHECK = r"""
import faulthandler, gc, sys
faulthandler.enable()

def step(name):
    print("kpt-check: " + name, file=sys.stderr, flush=True)

step("importing torch")
import torch
path, data, device, quantized = sys.argv[1:5]
if quantized == "1":
    try:
        import torchao  # noqa: F401 - registers the torchao operators a quantized package may call
    except ImportError:
        pass
x = [t.to(device) for t in torch.load(data, weights_only=True)]
step("loading the package")
from kpt.optimize.inductor import load_package
model = load_package(path, run_single_threaded=True)
step("running it")
with torch.inference_mode():
    model(*x)
if device.startswith("cuda"):
    torch.cuda.synchronize()
step("unloading it")
del model
gc.collect()  # the loader's destructor removes the package's extracted files
step("done")
"""


def check_in_fresh_process(path: str, example: tuple[torch.Tensor, ...], device: str, quantized: bool = False,
                           timeout_s: float = CHECK_TIMEOUT_S) -> float:
    """Load the package and run it once on `example` in a new Python process; returns the seconds it took.

    Unsupported (with the step it reached, the signal or error, and the child's last lines) when the child
    crashes, fails or hangs: a package the loader cannot take fails its level instead of taking the job's
    process down. A package that passes is then loaded in this process by shared()."""
    fd, data = tempfile.mkstemp(suffix=".pt", dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    t0 = time.perf_counter()
    try:
        torch.save(tuple(t.detach().cpu() for t in example), data)
        argv = [sys.executable, "-c", _CHECK, path, data, device, "1" if quantized else "0"]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as e:
            raise Unsupported(f"loading and running the AOTInductor package did not finish within {timeout_s:.0f}s "
                              "in a fresh process; not used") from e
    finally:
        os.unlink(data)
    if out.returncode != 0:
        text = (out.stderr or "") + (out.stdout or "")
        lines = [line.strip()[:300] for line in text.strip().splitlines()  # without traceback carets and
                 if line.strip(" ^~") and not line.startswith("Extension modules:")]  # faulthandler's module list
        steps = [line.removeprefix("kpt-check: ") for line in lines if line.startswith("kpt-check: ")]
        log.warning("the fresh-process check of %s ended with exit code %d; its output ends:\n%s", path,
                    out.returncode, "\n".join(lines[-40:]))
        if steps and steps[-1] in ("unloading it", "done"):
            # Loaded and ran; only the loader's teardown failed, which a job's process never reaches while
            # it works (loaded packages stay loaded, see the module doc).
            return time.perf_counter() - t0
        if out.returncode < 0:
            try:
                what = signal.Signals(-out.returncode).name
            except ValueError:
                what = f"signal {-out.returncode}"
            why = f"crashed a fresh process ({what})"
        else:
            why = f"failed in a fresh process (exit code {out.returncode})"
        others = [line for line in lines if not line.startswith("kpt-check: ")]
        raise Unsupported(f"the AOTInductor package {why} while {steps[-1] if steps else 'starting'}; not used. "
                          f"Last output: {' | '.join(others[-5:])[-600:]}")
    return time.perf_counter() - t0


def resident_bytes(fn: object) -> int:
    """GPU memory a loaded artifact keeps between calls beyond its weights (graph pools); 0 if none."""
    inner = getattr(fn, "_fn", fn)  # artifacts.Loaded keeps the loader's callable in _fn
    return int(getattr(inner, "resident_bytes", 0))


def install() -> None:
    """Make load_aoti the AOTInductor loader of kpt.optimize.artifacts in this process."""
    artifacts.LOADERS["ARTIFACT_FORMAT_AOTI_PACKAGE"] = load_aoti
