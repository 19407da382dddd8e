"""Helpers for the CPU service tests: run a job through the public run(), check an artifact in a
fresh Python process through the public loader."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from google.protobuf import json_format

from kpt.v1 import job_pb2

FRESH_CHECK = r"""
import json, sys, torch
from kpt.optimize import accuracy, artifacts
path, fmt, data = sys.argv[1:4]
x, ref = torch.load(data)
model = artifacts.load(path, fmt)
m = accuracy.compare(model(*x), ref)
print(json.dumps({"rel_l2": m.rel_l2, "max_abs_err": m.max_abs_err, "cosine": m.cosine, "sqnr_db": m.sqnr_db,
                  "loaded": sorted({k.split('.')[0] for k in sys.modules} & {"transformers", "torchao"})}))
"""


def make_job(kind: str, model: dict, **spec) -> dict:
    """A kpt.v1.Job in the protobuf JSON dict form the worker passes (built through the proto, so
    defaults are omitted and int64 fields are strings exactly as in production)."""
    msg = json_format.ParseDict({"id": "job-test", "spec": {"kind": kind, "model": model, **spec}}, job_pb2.Job())
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


class Runner:
    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.events: list[tuple[str, str, float]] = []

    def __call__(self, kind: str, model: dict, model_path: str | None = None, **spec) -> dict:
        from kpt_cpu import jobs

        spec.setdefault("benchmark", {"min_iters": 5, "max_iters": 200, "time_budget_s": 0.5, "warmup_iters": 2})
        result = jobs.run(make_job(kind, model, **spec), model_path, self.workdir,
                          lambda phase, msg, progress: self.events.append((phase, msg, progress)))
        json_format.ParseDict(result, job_pb2.Result())  # a valid kpt.v1.Result, nothing extra
        return result


def zoo(name: str) -> dict:
    return {"format": "MODEL_FORMAT_ZOO", "name": name}


def fresh_check(artifact: str, fmt: str, reference: torch.nn.Module, inputs: tuple, tmp_path) -> dict:
    """Load the artifact in a new Python process via kpt.optimize.artifacts.load and compare its
    outputs on `inputs` with the eager reference's; returns the metrics."""
    data = str(tmp_path / "check_data.pt")
    with torch.no_grad():
        torch.save((inputs, reference(*inputs)), data)
    out = subprocess.run([sys.executable, "-c", FRESH_CHECK, artifact, fmt, data], capture_output=True, text=True,
                         timeout=180, check=False)
    assert out.returncode == 0, (out.returncode, out.stderr[-3000:], out.stdout[-1000:])
    return json.loads(out.stdout.strip().splitlines()[-1])
