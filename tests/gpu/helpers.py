"""Helpers for the GPU service tests: jobs through the public run(), small models from configs, and
artifact checks in a fresh Python process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from google.protobuf import json_format

from kpt.optimize import inputs as inp
from kpt.v1 import job_pb2

REPO = Path(__file__).resolve().parents[2]
SERVICES = {"nvidia": ("kpt_nvidia", "TARGET_NVIDIA"), "amd": ("kpt_amd", "TARGET_AMD")}


def bench_module(name: str):  # noqa: ANN201 - a module
    """bench/<name>.py loaded as a module (bench/ is a folder of scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pythonpath() -> str:
    """What a subprocess needs to import kpt and both services from this checkout."""
    parts = [str(REPO / "shared"), str(REPO / "services" / "nvidia"), str(REPO / "services" / "amd"), str(REPO)]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)


def make_job(kind: str, model: dict, **spec) -> dict:
    """A kpt.v1.Job as the worker passes it (through the proto: defaults omitted, int64 as strings)."""
    msg = json_format.ParseDict({"id": "job-test", "spec": {"kind": kind, "model": model, **spec}}, job_pb2.Job())
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def zoo(name: str) -> dict:
    return {"format": "MODEL_FORMAT_ZOO", "name": name}


def upload(path: str) -> dict:
    return {"format": "MODEL_FORMAT_EXPORTED_PROGRAM", "name": os.path.basename(path), "sha256": "ab" * 32}


QUICK_BENCH = {"min_iters": 5, "max_iters": 200, "time_budget_s": 0.5, "warmup_iters": 2}


def run_job(workdir: str, kind: str, model: dict, model_path: str | None = None, service: str = "nvidia",
            **spec) -> tuple[dict, list]:
    """jobs.run of the service in this process; returns the Result dict (checked against kpt.v1.Result)."""
    module = __import__(f"{SERVICES[service][0]}.jobs", fromlist=["run"])
    spec.setdefault("benchmark", QUICK_BENCH)
    events: list = []
    result = module.run(make_job(kind, model, **spec), model_path, workdir,
                        lambda phase, msg, progress: events.append((phase, msg, progress)))
    json_format.ParseDict(result, job_pb2.Result())
    return result, events


def run_source(workdir: str, src, kind: str = "JOB_KIND_OPTIMIZE", **spec) -> dict:
    """A job on a model built in this process (kpt.gpu.jobs after run()'s model loading), checked against
    kpt.v1.Result. Used for reduced precision: an uploaded ExportedProgram keeps the fp32 dtype conversions
    it was traced with, so bf16 levels are exercised on models built from configs, as zoo models are."""
    from kpt.gpu import jobs
    from kpt.optimize import jobspec
    from kpt_nvidia.vendor import VENDOR

    spec.setdefault("benchmark", QUICK_BENCH)
    req = jobspec.parse(make_job(kind, zoo(src.name), **spec)["spec"])
    info = jobs.probe(VENDOR)
    table = VENDOR.precisions(info)
    jobs.check_precision(req.precision, table, VENDOR, info)
    jobs.prepare(VENDOR, info)
    os.makedirs(workdir, exist_ok=True)
    emit = lambda *a: None  # noqa: E731
    if kind == "JOB_KIND_OPTIMIZE":
        result = jobs.optimize(VENDOR, info, table, req, src, workdir, emit)
    elif kind == "JOB_KIND_EXPORT":
        result = jobs.export_job(VENDOR, info, req, src, workdir, emit)
    else:
        result = jobs.benchmark(VENDOR, info, table, req, src, workdir, emit)
    json_format.ParseDict(result, job_pb2.Result())
    return result


def tiny_source(name: str, device: str = "cuda:0"):
    """A Source for "tiny-bert" or "tiny-decode" built from its config on device (seeded: the same weights
    in every process). The decode step has one layer here: coordinate-descent tuning, which its compile
    turns on, tunes every kernel and costs time per layer."""
    from kpt.optimize.source import Source

    module, spec = tiny_bert() if name == "tiny-bert" else tiny_llama_decode(layers=1)[:2]
    return Source(name, f"test:{name}", "MODEL_FORMAT_ZOO", spec, module=module.to(device))


def tiny_bert(batch: int = 4, seq: int = 64) -> tuple[torch.nn.Module, inp.InputSpec]:
    """A 2-layer BERT (hidden 128) with SDPA attention, built from a config with seeded weights."""
    from transformers import BertConfig, BertModel

    from kpt.optimize.zoo import HFTensors

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
                     vocab_size=1000, max_position_embeddings=256, attn_implementation="sdpa")
    model = HFTensors(BertModel(cfg), ("input_ids", "attention_mask"), ("last_hidden_state",)).eval()
    spec = inp.InputSpec((inp.TensorSpec("input_ids", "int64", (inp.Dim(batch), inp.Dim(seq)), 0, 1000),
                          inp.TensorSpec("attention_mask", "int64", (inp.Dim(batch), inp.Dim(seq)), 1, 2)))
    return model, spec


def tiny_llama_decode(context: int = 256, layers: int = 2) -> tuple[torch.nn.Module, inp.InputSpec, torch.nn.Module]:
    """(decode step, its spec, the LlamaForCausalLM it wraps) for a small Llama (hidden 256, GQA 8/2)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from kpt.gpu.models import LlamaDecodeStep, decode_spec

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=layers, num_attention_heads=8,
                      num_key_value_heads=2, vocab_size=512, attn_implementation="sdpa", use_cache=False)
    lm = LlamaForCausalLM(cfg).eval()
    return LlamaDecodeStep(lm).eval(), decode_spec(cfg, context=context), lm


def save_upload(module: torch.nn.Module, spec: inp.InputSpec, path: str) -> str:
    """torch.export.save of the module (what a user uploads)."""
    from kpt.optimize.passes import export_module

    torch.export.save(export_module(module, spec), path)
    return path


FRESH_CHECK = r"""
import json, sys, torch
from kpt.gpu import runtime
from kpt.optimize import accuracy, artifacts
runtime.install()
path, fmt, data = sys.argv[1:4]
x, ref = torch.load(data)
x = tuple(t.to("cuda:0") for t in x)
model = artifacts.load(path, fmt)
out = model(*x)
m = accuracy.compare(out, ref)
again = accuracy.compare(model(*x), ref)
inner = getattr(model, "_fn", None)
print(json.dumps({"rel_l2": m.rel_l2, "max_abs_err": m.max_abs_err, "cosine": m.cosine, "sqnr_db": m.sqnr_db,
                  "again_rel_l2": again.rel_l2, "runner": type(inner).__name__,
                  "graphs": len(getattr(inner, "graphs", {}) or {})}))
"""


def fresh_check(artifact: str, fmt: str, reference: torch.nn.Module, inputs: tuple, tmp_path) -> dict:
    """Load the artifact in a new Python process (kpt.gpu's loader installed into kpt.optimize.artifacts) and
    compare its outputs on `inputs` with the eager fp32 reference's; returns the metrics."""
    data = str(tmp_path / "check_data.pt")
    with torch.inference_mode():
        ref = reference(*inputs)
    cpu = lambda t: t.detach().cpu()  # noqa: E731
    torch.save((tuple(cpu(t) for t in inputs), torch.utils._pytree.tree_map_only(torch.Tensor, cpu, ref)), data)
    env = {**os.environ, "PYTHONPATH": pythonpath()}
    out = subprocess.run([sys.executable, "-c", FRESH_CHECK, artifact, fmt, data], capture_output=True, text=True,
                         timeout=300, check=False, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


JOB_IN_FRESH_PROCESS = r"""
import json, sys, time
import transformers, kpt.gpu.jobs  # imported before the clock starts, as in a worker's warm job process
from tests.gpu.helpers import run_source, tiny_source
name, workdir, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t0 = time.perf_counter()
result = run_source(workdir, tiny_source(name), **spec)
print(json.dumps({"seconds": time.perf_counter() - t0, "passes": result["passes"],
                  "achieved_level": result["achieved_level"]}))
"""


def job_in_fresh_process(name: str, workdir: str, cache_dir: str, **spec) -> dict:
    """One optimize job on a tiny model in a new process, as a worker runs it: model built, passes, validation
    and benchmark inside the clock; interpreter start and imports outside it."""
    env = {**os.environ, "PYTHONPATH": pythonpath(), "KPT_CACHE_DIR": cache_dir}
    argv = [sys.executable, "-c", JOB_IN_FRESH_PROCESS, name, workdir, json.dumps(spec)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, env=env, cwd=str(REPO))
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
