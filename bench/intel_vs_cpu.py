"""The intel service's artifacts against eager and the cpu service's artifact, model by model, in one run.

    .venv/bin/python bench/intel_vs_cpu.py                                  # cnn, bert-base; O1 and O2
    .venv/bin/python bench/intel_vs_cpu.py --models cnn --levels O1 --time-budget 3

The two services pin different torch releases (cpu: torch 2.13 + AOTInductor; intel: torch 2.8 + IPEX 2.8 +
OpenVINO), so no single process can load both artifacts. For each model this script runs the same probe
(PROBE below) in each service's own environment: an optimize job through that service's public
jobs.run, the artifact loaded back through kpt.optimize.artifacts.load, then eager fp32 (the nn.Module in
that environment's torch) and the artifact checked on fresh inputs and timed interleaved. Speedups are
taken against the eager run of the same process; the two environments' eager medians are in the table
too, so a difference between torch releases shows. The services run one after the other with the same
thread count, and the load average is recorded with each probe.

Writes JSON (every row) and a markdown table; nothing is simulated: a probe that fails is reported with
its error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ("cnn", "bert-base")

PROBE = r"""
import json, os, sys, time
import torch
from google.protobuf import json_format
from kpt.errors import KptError
from kpt.optimize import accuracy, artifacts, bench, env, source
from kpt.optimize import variants as var
from kpt.v1 import job_pb2

service, model, level, workdir, budget, threads = sys.argv[1:7]
jobs = __import__(f"kpt_{service}.jobs", fromlist=["run"])
torch.set_num_threads(int(threads))
settings = {"min_iters": 20, "max_iters": 2000, "time_budget_s": float(budget), "warmup_iters": 5,
            "threads": int(threads)}
job = json_format.MessageToDict(json_format.ParseDict({"id": "bench", "spec": {
    "kind": "JOB_KIND_OPTIMIZE", "model": {"format": "MODEL_FORMAT_ZOO", "name": model},
    "level": f"LEVEL_{level}", "benchmark": settings}}, job_pb2.Job()), preserving_proto_field_name=True)
out = {"service": service, "model": model, "level": level, "torch": torch.__version__,
       "loadavg_1m": os.getloadavg()[0]}
t0 = time.perf_counter()
try:
    result = jobs.run(job, None, workdir, lambda *a: None)
except KptError as e:
    out["error"] = e.to_dict()
    print(json.dumps(out))
    raise SystemExit(0)
out["job_s"] = time.perf_counter() - t0
(art,) = result["artifacts"]
out.update(achieved=result["achieved_level"], format=art["format"], backend=result["backend"],
           precision=art["metadata"]["precision"], passes=[p["name"] for p in result["passes"]
                                                            if p["level"] == result["achieved_level"] and p["applied"]],
           job_variants=result["variants"])
src = source.from_zoo(model, None)
loaded = artifacts.load(os.path.join(workdir, art["name"]), art["format"])
refs = accuracy.reference_outputs(src.module, src.spec, 3, seed=1)
rows = var.measure([var.Variant("eager_fp32", src.module),
                    var.Variant(f"{service}_{level}", loaded, precision=art["metadata"]["precision"])],
                   src.spec, bench.settings_from_dict(settings), "cpu", refs, None)
out["rows"] = rows
out["environment"] = {k: v for k, v in env.environment("cpu").items() if not k.startswith("toolchain.")}
print(json.dumps(out))
"""


def service_python(name: str) -> str:
    exe = REPO / "services" / name / ".venv" / "bin" / "python"
    if not exe.exists():
        raise SystemExit(f"services/{name}/.venv is missing: build it (make services/{name}/.venv)")
    return str(exe)


def probe(service: str, model: str, level: str, budget: float, threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"kpt-bench-{service}-") as work:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KPT_")}
        env["KPT_CACHE_DIR"] = os.path.join(work, "cache")
        proc = subprocess.run([service_python(service), "-c", PROBE, service, model, level, os.path.join(work, "out"),
                               str(budget), str(threads)], cwd=REPO, env=env, capture_output=True, text=True,
                              check=False, timeout=3600)
    if proc.returncode != 0:
        return {"service": service, "model": model, "level": level,
                "error": {"code": "PROBE_FAILED", "message": proc.stderr.strip()[-2000:]}}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    lines = ["| model | service | level (achieved) | artifact | precision | eager p50 ms | artifact p50 ms | "
             "speedup vs eager | rel_l2 / SQNR | torch |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['service']} | {r['level']} | error: {r['error']['code']} "
                         f"{r['error']['message'][:120]} | | | | | | |")
            continue
        eager, art = r["rows"]
        if "latency" not in art:
            lines.append(f"| {r['model']} | {r['service']} | {r['level']} ({r['achieved']}) | {r['format']} | "
                         f"{r['precision']} | | not timed: {art.get('error', '')} | | | {r['torch']} |")
            continue
        e50, a50 = eager["latency"]["p50_ms"], art["latency"]["p50_ms"]
        acc = art["accuracy"]
        err = f"SQNR {acc['sqnr_db']:.1f} dB" if r["precision"] == "int8" else f"{acc['rel_l2']:.2e}"
        lines.append(f"| {r['model']} | {r['service']} | {r['level']} ({r['achieved'].removeprefix('LEVEL_')}) | "
                     f"{r['format'].removeprefix('ARTIFACT_FORMAT_').lower()} ({r['backend']}) | {r['precision']} | "
                     f"{e50:.3f} | {a50:.3f} | {e50 / a50:.2f}x | {err} | {r['torch'].split('+')[0]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--levels", nargs="+", default=["O1", "O2"], choices=["O1", "O2", "O3"])
    ap.add_argument("--time-budget", type=float, default=10.0, help="seconds of timing per variant")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "intel_vs_cpu"),
                    help="writes OUT.json and OUT.md")
    args = ap.parse_args()
    results = []
    for model in args.models:
        for level in args.levels:
            for service in ("cpu", "intel"):
                sys.stderr.write(f"{model} {level} {service}...\n")
                results.append(probe(service, model, level, args.time_budget, args.threads))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"threads": args.threads, "results": results}, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(table(results))
    sys.stdout.write(table(results))


if __name__ == "__main__":
    main()
