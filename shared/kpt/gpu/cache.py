"""Compiler caches kept between jobs, under KPT_CACHE_DIR.

  inductor/  Inductor's caches: generated kernels, autotuning results (max-autotune GEMM choices)
  triton/    compiled Triton kernels (cubin / hsaco)
  aoti/      finished AOTInductor packages, keyed by what decides their contents (with their CUDA-graph
             record once the graphs pass has measured them); on a GPU only packages that loaded and ran
             in a fresh process (kpt.gpu.runtime.check_in_fresh_process) are stored
  choices/   measured decisions of other passes (the attention backend order), keyed by what they measured

Inductor's FX graph cache does not serve AOTInductor compiles (compile_fx skips it in AOT mode, and
for frozen weights), so a second compile of the same program re-runs lowering, code generation
and the C++ build even when every kernel and autotuning result is cached. The package cache
covers that: the key is a digest of the exported program (graph code, signature, input metadata,
every weight's bytes), the Inductor options, the attention backend order, the device model and
the toolchain. Same key, same package, byte for byte, so reuse cannot change a result.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from kpt.gpu.env import toolchain
from kpt.optimize import inductor
from kpt.worker.trim import drop_least_recent

log = logging.getLogger(__name__)

KEY_VERSION = 2  # 2: an entry is stored only after the package loaded and ran in a fresh process
MAX_PACKAGE_BYTES = 64 << 30  # oldest packages are dropped beyond this (a few 1B-parameter models)


def configure(cache_dir: str) -> dict[str, str]:
    """Point Inductor and Triton at cache_dir; returns the folders used. A cache dir that cannot be written
    (read-only, full, not a folder) is skipped with a warning: the caches are an optimization, never a job's
    failure (Inductor and Triton then keep their own defaults)."""
    out: dict[str, str] = {}
    try:
        out["inductor"] = inductor.use_cache_dir(cache_dir)
        tri = os.path.join(cache_dir, "triton")
        os.makedirs(tri, exist_ok=True)
        os.environ["TRITON_CACHE_DIR"] = out["triton"] = tri
        pkg = os.path.join(cache_dir, "aoti")
        os.makedirs(pkg, exist_ok=True)
        out["aoti"] = pkg
    except OSError as e:
        log.warning("compiler cache %s cannot be used, continuing without it: %s", cache_dir, e)
    return out


def _hash_tensor(h: "hashlib._Hash", name: str, t: object) -> None:
    if not isinstance(t, torch.Tensor):
        h.update(f"{name}:{type(t).__name__}:{t!r}".encode())
        return
    if is_traceable_wrapper_subclass(t):  # torchao quantized weights: hash their inner tensors
        inner, ctx = t.__tensor_flatten__()
        h.update(f"{name}:{type(t).__name__}:{ctx!r}:{tuple(t.shape)}".encode())
        for attr in inner:
            _hash_tensor(h, f"{name}.{attr}", getattr(t, attr))
        return
    flat = t.detach().contiguous().reshape(-1)
    h.update(f"{name}:{flat.dtype}:{tuple(t.shape)}:{tuple(t.stride())}".encode())
    h.update(flat.view(torch.uint8).cpu().numpy())


def program_digest(ep: torch.export.ExportedProgram) -> str:
    h = hashlib.sha256()
    h.update(ep.graph_module.code.encode())
    h.update(str(ep.graph_signature).encode())
    h.update(repr(sorted((str(k), str(v)) for k, v in ep.range_constraints.items())).encode())
    for node in ep.graph.nodes:
        if node.op == "placeholder":
            val = node.meta.get("val")
            h.update(f"{node.name}:{getattr(val, 'shape', val)}:{getattr(val, 'dtype', '')}".encode())
    for name, t in sorted(ep.state_dict.items()):
        _hash_tensor(h, name, t)
    for name, t in sorted(ep.constants.items()):
        _hash_tensor(h, name, t)
    return h.hexdigest()


def package_key(ep: torch.export.ExportedProgram, options: dict, attention: tuple[str, ...], device_name: str) -> str:
    parts = {"version": KEY_VERSION, "program": program_digest(ep), "options": options, "attention": attention,
             "device": device_name, "toolchain": {k: v for k, v in toolchain(None).items()}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _entry(cache_dir: str, key: str) -> str:
    return os.path.join(cache_dir, "aoti", f"{key}.pt2")


# The cache entry each package of this process came from or went to (job package path -> entry path), so a
# later pass that completes the package (the CUDA-graph record) can complete the entry as well.
_ENTRIES: dict[str, str] = {}


def update(path: str) -> bool:
    """Copy a package a later pass completed back over its cache entry; False when it has none."""
    entry = _ENTRIES.get(os.path.abspath(path))
    if entry is None or not os.path.isfile(entry):
        return False
    return _write(entry, lambda tmp: shutil.copyfile(path, tmp))


def _write(dst: str, fill: Callable[[str], object]) -> bool:
    """Write dst atomically (fill writes a temporary file beside it, which then replaces dst: a concurrent job never
    reads half a file); False, with a warning and no partial file left, when the cache cannot be written
    (read-only, full disk)."""
    tmp = None
    try:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst), suffix=".partial")
        os.close(fd)
        fill(tmp)
        os.replace(tmp, dst)
        return True
    except OSError as e:
        log.warning("cache entry %s not written, continuing without it: %s", dst, e)
        return False
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


@functools.lru_cache(maxsize=1)
def _toolchain() -> str:
    return json.dumps(toolchain(None), sort_keys=True)  # package versions: read once per process


def choice_key(kind: str, parts: object) -> str:
    """Key of a measured decision: what was measured, on which device, with which toolchain."""
    blob = json.dumps({"kind": kind, "parts": parts, "version": KEY_VERSION,
                       "toolchain": _toolchain()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def load_choice(cache_dir: str, key: str) -> dict | None:
    try:
        with open(os.path.join(cache_dir, "choices", f"{key}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def save_choice(cache_dir: str, key: str, value: dict) -> None:
    """Store a decision; a cache that cannot be written (read-only, full disk) is skipped with a warning."""
    def fill(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(value, f)

    _write(os.path.join(cache_dir, "choices", f"{key}.json"), fill)


@contextlib.contextmanager
def _locked(cache_dir: str, key: str):
    """An exclusive lock on one decision across processes (fcntl, released when the holder exits or dies)."""
    folder = os.path.join(cache_dir, "choices")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{key}.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def decided(cache_dir: str | None, key: str, measure) -> tuple[dict, bool]:  # noqa: ANN001 - () -> dict
    """The decision stored under key, measuring it (measure()) only when none is stored: returns (value,
    reused). Jobs running at once on one node (a worker per GPU, parallel builds) take turns: the first
    measures and stores, the others wait and read its result, so every build of the same model makes the
    same choice and finds the same cached package. Without a cache dir it just measures."""
    if not cache_dir:
        return measure(), False
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_locked(cache_dir, key))
        except OSError as e:  # a cache that cannot be written: measure, unshared
            log.warning("decision cache %s cannot be used, measuring without it: %s", cache_dir, e)
            return measure(), False
        found = load_choice(cache_dir, key)
        if found is not None:
            return found, True
        value = measure()
        save_choice(cache_dir, key, value)
        return value, False


def fetch(cache_dir: str, key: str, path: str) -> bool:
    """Copy the cached package for key to path; False when there is none. A copy, not a link: later
    passes append to the job's package."""
    src = _entry(cache_dir, key)
    if not os.path.isfile(src):
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        shutil.copyfile(src, path)
    except OSError as e:  # removed meanwhile by another worker's trim, or unreadable: a miss
        log.warning("cache entry %s not reused: %s", src, e)
        return False
    try:
        os.utime(src)  # recently used: kept longest
    except OSError as e:  # a read-only cache still serves its entries
        log.debug("cache entry %s not touched: %s", src, e)
    _ENTRIES[os.path.abspath(path)] = src
    return True


def store(cache_dir: str, key: str, path: str) -> None:
    """Store a package (atomically); a cache that cannot be written is skipped with a warning."""
    dst = _entry(cache_dir, key)
    if not _write(dst, lambda tmp: shutil.copyfile(path, tmp)):
        return
    _ENTRIES[os.path.abspath(path)] = dst
    trim(os.path.dirname(dst))


def trim(folder: str, max_bytes: int = MAX_PACKAGE_BYTES) -> None:
    entries = []
    for name in os.listdir(folder):
        if name.endswith(".pt2"):
            try:
                st = os.stat(os.path.join(folder, name))
            except FileNotFoundError:  # another worker's trim removed it meanwhile
                continue
            entries.append((st.st_mtime, st.st_size, os.path.join(folder, name)))
    for _, _, path in drop_least_recent(entries, sum(e[1] for e in entries), max_bytes):
        log.info("package cache over %d GiB: dropped %s", max_bytes >> 30, os.path.basename(path))
