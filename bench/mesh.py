"""The mesh itself on loopback: submit -> service start latency, and submissions per second.

  .venv/bin/python bench/mesh.py [--jobs 40] [--submits 3000] [--concurrency 64]

Start latency: one job at a time to an idle cpu service (zoo mlp, O0 benchmark with a small
budget); from the client's SubmitJob call to the "started" event the service publishes (same host
clock, so the figure includes the client's gRPC call, the gateway, JetStream and the service).
Throughput: a gateway with no service (jobs queue, KPT_REQUIRE_LIVE_TARGET=false), many
concurrent SubmitJob calls from an asyncio gRPC client in another process; accepted per second.
Writes docs/benchmarks/mesh.json; docs/benchmarks/mesh.md is written from it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time

import grpc

from kpt import contract as c
from kpt.local import Mesh

TOKENS = {"tok-bench": "bench"}
# Between jobs: long enough for the worker's next (warm) job process to finish importing torch, so
# each submit meets an idle service, as a submit to a pool with a free replica does.
IDLE_S = 4.0


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def start_latency(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        mesh = Mesh.start(tmp, TOKENS, targets=("cpu",))
        try:
            lat = []
            with mesh.client() as cl:
                spec = c.JobSpec(kind=c.JobKind.JOB_KIND_BENCHMARK, level=c.Level.LEVEL_O0,
                                 model=cl.zoo("mlp"), benchmark=c.BenchmarkSettings(time_budget_s=0.2, max_iters=20))
                for i in range(n + 3):
                    t0 = time.time_ns()
                    job = cl.submit(spec, ["cpu"], bypass_cache=True)[0]
                    started = None
                    for ev in job.events():
                        if ev.phase == "started":
                            started = ev.time.ToNanoseconds()
                    if started and i >= 3:  # the first jobs warm the gateway and service paths
                        lat.append((started - t0) / 1e6)
                    time.sleep(IDLE_S)  # the service is idle again: its next job process is ready
            return {"jobs": len(lat), "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "max_ms": max(lat)}
        finally:
            mesh.stop()


async def _submit_load(addr: str, token: str, total: int, concurrency: int) -> tuple[int, float]:
    spec = c.JobSpec(kind=c.JobKind.JOB_KIND_OPTIMIZE, model=c.ModelRef(format=c.ModelFormat.MODEL_FORMAT_ZOO, name="mlp"))
    md = (("authorization", f"Bearer {token}"),)
    done = 0
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = c.GatewayStub(ch)
        queue = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)

        async def worker():
            nonlocal done
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await stub.SubmitJob(c.SubmitJobRequest(spec=spec, targets=[c.Target.TARGET_AMD], bypass_cache=True),
                                     metadata=md)
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done, time.perf_counter() - t0


def throughput(total: int, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        mesh = Mesh.start(tmp, TOKENS, targets=(), KPT_REQUIRE_LIVE_TARGET="false", KPT_LOG_LEVEL="WARNING")
        try:
            asyncio.run(_submit_load(mesh.gateway_addr, "tok-bench", 200, concurrency))  # warm-up
            done, secs = asyncio.run(_submit_load(mesh.gateway_addr, "tok-bench", total, concurrency))
            return {"submits": done, "seconds": secs, "per_s": done / secs, "concurrency": concurrency}
        finally:
            mesh.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--submits", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--out", default="docs/benchmarks/mesh.json")
    a = ap.parse_args()
    res = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "throughput": throughput(a.submits, a.concurrency),
        "start_latency": start_latency(a.jobs),
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))  # noqa: T201 - a benchmark script's output


if __name__ == "__main__":
    main()
