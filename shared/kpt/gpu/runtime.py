"""Running AOTInductor packages on the GPU: CUDA graph replay, strict fp32, and the loader hook.

AOTInductor itself never captures CUDA graphs (Inductor's cudagraph trees exist only for
torch.compile). A package is still capturable: loaded with run_single_threaded=True, its model
container runs on the caller's current stream without the events and locks of its thread-safe
path, so torch.cuda.graph can capture one call and replay it. GraphedRunner does that per input
shape: inputs are copied into static buffers, the graph is replayed, outputs are cloned (replays
overwrite them) and handed back.

Whether a package is replayed as a graph is decided once, when it is built (passes.CudaGraphs
measures it), and recorded inside the .pt2 as extra/kpt_runtime.json, a member of the archive's
own "extra files" directory (torch.export.pt2_archive reads it back as extra_files). The record
is appended to the zip: the package's own members are not rewritten.

kpt.optimize.artifacts.load does not know this record. install() registers load() as the loader
of ARTIFACT_FORMAT_AOTI_PACKAGE in this process, so the pipeline validates exactly what it
ships; a process that loads our packages through kpt.optimize.artifacts without kpt.gpu gets
correct results, without graph replay and with TF32 convolutions (see docs/gpu.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import zipfile
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.utils._pytree as pytree

from kpt.errors import InvalidModel
from kpt.optimize import artifacts

log = logging.getLogger(__name__)

RECORD = "extra/kpt_runtime.json"
RECORD_VERSION = 1
MAX_GRAPHS = 8  # input shapes captured per loaded package; further shapes run without a graph


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


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    outputs: object  # the pytree the package returned during capture


def _key(args: tuple) -> tuple:
    return tuple((tuple(a.shape), a.dtype, a.stride()) if isinstance(a, torch.Tensor) else repr(a) for a in args)


@dataclass
class GraphedRunner:
    """Replays one CUDA graph per input shape of `runner` (a package loaded with run_single_threaded=True)."""

    runner: Callable
    device: torch.device = field(default_factory=lambda: torch.device("cuda", torch.cuda.current_device()))
    max_graphs: int = MAX_GRAPHS
    graphs: dict[tuple, _Graph] = field(default_factory=dict)
    resident_bytes: int = 0  # GPU memory the captured graphs' private pools hold (reserved)

    def _capture(self, args: tuple) -> _Graph:
        static = [a.detach().to(self.device, copy=True) if isinstance(a, torch.Tensor) else a for a in args]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm up off the capture: lazy kernel loads, workspace allocations
                self.runner(*static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_reserved(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.runner(*static)
        torch.cuda.synchronize(self.device)
        self.resident_bytes += max(0, torch.cuda.memory_reserved(self.device) - before)
        return _Graph(graph, [s for s in static if isinstance(s, torch.Tensor)], outputs)

    def __call__(self, *args: torch.Tensor) -> object:
        key = _key(args)
        g = self.graphs.get(key)
        if g is None:
            if len(self.graphs) >= self.max_graphs:
                with strict_fp32():
                    return self.runner(*args)
            with strict_fp32():
                g = self._capture(args)
            self.graphs[key] = g
            log.info("captured a CUDA graph for input shapes %s (%d graph(s), %.1f MiB held)",
                     [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)], len(self.graphs),
                     self.resident_bytes / 2**20)
        for dst, src in zip(g.inputs, [a for a in args if isinstance(a, torch.Tensor)], strict=True):
            dst.copy_(src, non_blocking=True)
        g.graph.replay()
        return pytree.tree_map_only(torch.Tensor, torch.clone, g.outputs)


@dataclass
class PlainRunner:
    """A package run directly, under the strict fp32 it was validated with."""

    runner: Callable
    resident_bytes: int = 0

    def __call__(self, *args: torch.Tensor) -> object:
        with strict_fp32():
            return self.runner(*args)


def load_aoti(path: str) -> Callable:
    """The package as a callable: graph replay when its record says so and a GPU is present."""
    record = read_record(path)
    graphs = bool(record.get("cudagraphs")) and torch.cuda.is_available()
    try:
        runner = torch._inductor.aoti_load_package(path, run_single_threaded=graphs)
    except (RuntimeError, OSError) as e:
        raise InvalidModel(f"cannot load AOTInductor package {path}: {e}") from e
    return GraphedRunner(runner) if graphs else PlainRunner(runner)


def resident_bytes(fn: object) -> int:
    """GPU memory a loaded artifact keeps between calls beyond its weights (graph pools); 0 if none."""
    inner = getattr(fn, "_fn", fn)  # artifacts.Loaded keeps the loader's callable in _fn
    return int(getattr(inner, "resident_bytes", 0))


def install() -> None:
    """Make load_aoti the AOTInductor loader of kpt.optimize.artifacts in this process."""
    artifacts.LOADERS["ARTIFACT_FORMAT_AOTI_PACKAGE"] = load_aoti
