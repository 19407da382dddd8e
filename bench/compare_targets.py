"""One model on several targets of this machine, through the real mesh, as `kpt compare` shows it.

    python bench/compare_targets.py --model bert-base --targets cpu,tpu --level O2 --out docs/benchmarks/compare-bert-base

Starts nats-server and the gateway, submits one job per target in one group, and runs the targets' services
one after another (the gateway accepts a job for a target whose service is not up yet: KPT_REQUIRE_LIVE_TARGET
is off here), so each job has the whole machine while it measures instead of sharing its cores with the
other. Writes <out>.json (the jobs) and <out>.md (the side-by-side table, the environment and the command).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import secrets
import sys
import tempfile
import time

from rich.console import Console

from kpt import contract as c
from kpt import local, report

log = logging.getLogger("bench.compare")


def run(args: argparse.Namespace) -> list[c.Job]:
    targets = args.targets.split(",")
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory() as tmp:
        mesh = local.Mesh.start(tmp, {token: "bench"}, targets=(targets[0],), KPT_REQUIRE_LIVE_TARGET="false")
        try:
            with mesh.client() as cl:
                spec = cl._spec(args.kind, args.model, args.level)
                jobs = cl.submit(spec, targets, bypass_cache=True)
                for i, (target, job) in enumerate(zip(targets, jobs, strict=True)):
                    if i:
                        mesh.add_replica(f"svc-{target}", target=target)
                    t0 = time.monotonic()
                    job.wait(timeout=args.timeout, raise_on_failure=False)
                    log.info("%s: %s in %.0fs", target, job.state, time.monotonic() - t0)
                    mesh.kill(f"svc-{target}")  # the next target gets the machine to itself
                return [j.refresh().proto for j in jobs]
        finally:
            mesh.stop()


def markdown(args: argparse.Namespace, jobs: list[c.Job]) -> str:
    console = Console(record=True, width=160)
    console.print(report.compare_table(jobs))
    lines = [f"# {args.model}: {', '.join(args.targets.split(','))} side by side ({args.kind}, {args.level})", "",
             f"Command: `python bench/compare_targets.py {' '.join(sys.argv[1:])}` (Python {platform.python_version()}). "
             "One group of jobs through the real mesh; the services ran one after another, each with the whole "
             "machine. Baseline = kpt_O0 (the exported program, unchanged) on that target; optimized = the level "
             "delivered there.", "", "```", console.export_text().rstrip(), "```", ""]
    for j in jobs:
        r = j.result
        env = dict(r.environment)
        lines.append(f"- {c.target_name(j.target)}: device {r.device or '-'} ({env.get('device_kind', env.get('device', ''))}), "
                     f"backend {r.backend or '-'}, state {c.state_name(j.state)}"
                     + (f", error {j.error.code}: {j.error.message[:200]}" if j.HasField("error") else ""))
        for v in r.variants:
            lines.append(f"  - {v.variant}: p50 {v.latency.p50_ms:.3f} ms, p99 {v.latency.p99_ms:.3f} ms"
                         + (f" ({v.error})" if v.error else ""))
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bert-base")
    ap.add_argument("--targets", default="cpu,tpu")
    ap.add_argument("--kind", default="optimize", choices=("optimize", "benchmark"))
    ap.add_argument("--level", default="O2")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", required=True, help="path prefix of the .json and .md written")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    jobs = run(args)
    with open(args.out + ".json", "w") as f:
        json.dump({"command": sys.argv, "jobs": [c.to_dict(j) for j in jobs]}, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(markdown(args, jobs))
    Console().print(report.compare_table(jobs))
    return 0 if all(j.state == c.JobState.JOB_STATE_SUCCEEDED for j in jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
