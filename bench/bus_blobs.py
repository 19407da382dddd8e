"""Blob throughput on loopback: kpt BlobStore vs nats-py's ObjectStore, and the chunk-size sweep.

    .venv/bin/python bench/bus_blobs.py                      # what docs/benchmarks/bus.md reports
    .venv/bin/python bench/bus_blobs.py --sizes 64 --runs 3 --sweep-runs 3   # quicker

Not a test: it starts its own nats-server (kpt.natsd, JetStream in a temp dir, max_payload
8 MiB), writes random blobs, and prints markdown tables (MiB/s, median of --runs with min-max).
Operations run round-robin (one of each per round, after a discarded warm-up round) so drift
on a shared VM hits every column alike. --json writes the raw samples.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from importlib import metadata

import nats

from kpt import natsd
from kpt.bus import blobs
from kpt.bus.blobs import BlobStore

MiB = 1 << 20
log = logging.getLogger("bench.bus_blobs")


def machine() -> dict[str, str]:
    model = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    server = subprocess.run([natsd.binary(), "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nats-py": metadata.version("nats-py"),
        "nats-server": server,
        "max_payload": f"{natsd.MAX_PAYLOAD // MiB} MiB",
        "BlobStore chunk": f"{blobs.CHUNK_SIZE // MiB} MiB",
        "BlobStore window": f"{blobs.WINDOW_BYTES // MiB} MiB",
    }


def write_random(path: str, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 64 * MiB))
            h.update(block)
            f.write(block)
            left -= len(block)
    return h.hexdigest()


async def mib_s(size: int, op: Awaitable[object]) -> float:
    t = time.perf_counter()  # a coroutine does nothing until awaited: creating it is not timed
    await op
    return size / MiB / (time.perf_counter() - t)


def fresh_file_write(data: bytes, path: str) -> None:
    """The ceiling for get_to_file: plain buffered writes of bytes already in memory to a new file."""
    with open(path, "wb") as f:
        for off in range(0, len(data), 4 * MiB):
            f.write(data[off : off + 4 * MiB])


async def drain(it) -> None:
    async for _ in it:
        pass


async def compare(js, work: str, size: int, runs: int, stock_runs: int) -> dict[str, list[float]]:
    src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
    sha = write_random(src, size)
    with open(src, "rb") as f:
        data = f.read()
    store = BlobStore(js, bucket="bench")
    await store.ensure()
    stock = await js.create_object_store("bench_stock")

    async def stock_put() -> None:
        with open(src, "rb") as f:
            await stock.put(sha, f)

    async def stock_get() -> None:
        with open(dst, "wb") as f:
            await stock.get(sha, writeinto=f)

    async def put_file_known() -> None:
        await store.delete(sha)
        await store.put_file(src, sha)

    ops: dict[str, tuple[Callable[[], Awaitable[object]], int]] = {
        "BlobStore.put_file (sha256 given)": (put_file_known, runs),
        "BlobStore.get_to_file": (lambda: store.get_to_file(sha, dst), runs),
        "BlobStore.iter_chunks": (lambda: drain(store.iter_chunks(sha)), runs),
        "BlobStore.put_file (hashes first)": (lambda: _then(store.delete(sha), store.put_file(src)), runs),
        "BlobStore.put_bytes (hashes first)": (lambda: _then(store.delete(sha), store.put_bytes(data)), runs),
        "nats-py ObjectStore.put (128 KiB chunks)": (stock_put, stock_runs),
        "nats-py ObjectStore.get (writeinto file)": (stock_get, stock_runs),
        "ceiling: write bytes to a new file": (lambda: asyncio.to_thread(fresh_file_write, data, dst), runs),
    }
    # Timed ops that delete first include a delete (~1 ms): negligible at these sizes.
    samples: dict[str, list[float]] = {name: [] for name in ops}
    for rnd in range(max(runs, stock_runs) + 1):  # round 0 warms up and is discarded
        for name, (op, n) in ops.items():
            if rnd > n:
                continue
            speed = await mib_s(size, op())
            if rnd:
                samples[name].append(speed)
            log.info("%d MiB round %d %s: %.0f MiB/s", size // MiB, rnd, name, speed)
    await store.delete(sha)
    await js.delete_object_store("bench_stock")
    for path in (src, dst):
        os.unlink(path)
    return samples


async def _then(first: Awaitable[object], second: Awaitable[object]) -> None:
    await first
    await second


async def sweep(
    js, work: str, size: int, runs: int, chunk_sizes: list[int], windows: list[int]
) -> dict[str, dict[str, list[float]]]:
    """put/get/iter per (chunk size, window); the window is a module constant, set per config."""
    src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
    sha = write_random(src, size)
    configs = [(cs, blobs.WINDOW_BYTES) for cs in chunk_sizes] + [(blobs.CHUNK_SIZE, w) for w in windows]
    stores = {(cs, w): BlobStore(js, bucket=f"sweep_{cs}_{w}", chunk_size=cs) for cs, w in configs}
    for s in stores.values():
        await s.ensure()
    samples = {_config(*c): {"put_file": [], "get_to_file": [], "iter_chunks": []} for c in stores}
    default_window = blobs.WINDOW_BYTES
    for rnd in range(runs + 1):
        for (cs, w), s in stores.items():
            blobs.WINDOW_BYTES = w
            await s.delete(sha)
            put = await mib_s(size, s.put_file(src, sha))
            get = await mib_s(size, s.get_to_file(sha, dst))
            it = await mib_s(size, drain(s.iter_chunks(sha)))
            await s.delete(sha)
            log.info("sweep round %d %s: put %.0f get %.0f iter %.0f", rnd, _config(cs, w), put, get, it)
            if rnd:
                for key, v in (("put_file", put), ("get_to_file", get), ("iter_chunks", it)):
                    samples[_config(cs, w)][key].append(v)
    blobs.WINDOW_BYTES = default_window
    for s in stores.values():
        await js.delete_object_store(s.bucket)
    for path in (src, dst):
        os.unlink(path)
    return samples


def _config(chunk: int, window: int) -> str:
    return f"{_label(chunk)} | {_label(window)}"


def _label(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB else f"{n >> 10} KiB"


def _size(text: str) -> int:
    text = text.strip().upper()
    for suffix, mult in (("K", 1 << 10), ("M", MiB)):
        if text.endswith(suffix):
            return int(text[:-1]) * mult
    return int(text)


def cell(v: list[float]) -> str:
    return f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})" if v else "-"


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="64,1024", help="blob sizes in MiB (default 64,1024)")
    p.add_argument("--runs", type=int, default=5, help="timed rounds per operation")
    p.add_argument("--stock-runs", type=int, default=3, help="timed rounds of nats-py's slow ObjectStore")
    p.add_argument("--sweep", default="128K,512K,1M,2M,4M,8M", help="chunk sizes ('' skips the sweep)")
    p.add_argument("--windows", default="4M,8M,32M", help="windows swept at the default chunk size")
    p.add_argument("--sweep-size", type=int, default=256, help="blob size of the sweep in MiB")
    p.add_argument("--sweep-runs", type=int, default=5)
    p.add_argument("--json", help="write machine info and raw samples here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("kpt").setLevel(logging.WARNING)

    env = machine()
    result: dict = {"machine": env, "compare": {}, "sweep": {}}
    with tempfile.TemporaryDirectory(prefix="kpt-bench-") as work:
        server = natsd.start(os.path.join(work, "nats"))
        try:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            for mib in (int(x) for x in args.sizes.split(",") if x):
                result["compare"][f"{mib} MiB"] = await compare(js, work, mib * MiB, args.runs, args.stock_runs)
            chunks = [_size(x) for x in args.sweep.split(",") if x]
            windows = [_size(x) for x in args.windows.split(",") if x]
            if chunks or windows:
                result["sweep"] = await sweep(js, work, args.sweep_size * MiB, args.sweep_runs, chunks, windows)
            await nc.close()
        finally:
            server.stop()

    print("\n| machine | |\n|---|---|")
    for k, v in env.items():
        print(f"| {k} | {v} |")
    sizes = list(result["compare"])
    if sizes:
        print(f"\nMiB/s, median of {args.runs} (nats-py: {args.stock_runs}) rounds, (min-max):\n")
        print("| operation | " + " | ".join(sizes) + " |\n|---|" + "---|" * len(sizes))
        for name in result["compare"][sizes[0]]:
            print(f"| {name} | " + " | ".join(cell(result["compare"][s][name]) for s in sizes) + " |")
    if result["sweep"]:
        print(f"\nSweep, {args.sweep_size} MiB blob, MiB/s, median of {args.sweep_runs} (min-max):\n")
        print("| chunk | window | put_file | get_to_file | iter_chunks |\n|---|---|---|---|---|")
        for label, v in result["sweep"].items():
            print(f"| {label} | {cell(v['put_file'])} | {cell(v['get_to_file'])} | {cell(v['iter_chunks'])} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    asyncio.run(main())
