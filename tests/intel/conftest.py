"""Fixtures for the intel service tests.

The service runs on torch 2.8 + IPEX 2.8 + OpenVINO in its own environment (services/intel/.venv), which
the development environment cannot import. Jobs therefore run through kpt_intel.jobs.run in one
subprocess of that environment (tests/intel/driver.py, one IPEX import for the whole session), and
artifacts are loaded back in another fresh one (tests/intel/check_artifacts.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from google.protobuf import json_format

from kpt.v1 import job_pb2

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
INTEL_PY = REPO / "services" / "intel" / ".venv" / "bin" / "python"
BENCH = {"min_iters": 5, "max_iters": 200, "time_budget_s": 0.5, "warmup_iters": 2}


def intel_python() -> str:
    if not INTEL_PY.exists():
        pytest.skip("services/intel/.venv is not built (make services/intel/.venv): the intel service's torch 2.8 + "
                    "IPEX + OpenVINO stack is needed to run its jobs")
    return str(INTEL_PY)


def run_intel(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run the intel environment's python (niced: the suite shares 2 cores) from the repository root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPT_")}
    out = subprocess.run(["nice", "-n", "5", intel_python(), *args], cwd=REPO, capture_output=True, text=True,
                         timeout=timeout, check=False, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def make_job(kind: str, model: dict, **spec) -> dict:
    """A kpt.v1.Job as the worker passes it (through the proto: defaults omitted, int64 as strings)."""
    spec.setdefault("benchmark", BENCH)
    msg = json_format.ParseDict({"id": "job-test", "spec": {"kind": kind, "model": model, **spec}}, job_pb2.Job())
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def zoo(name: str) -> dict:
    return {"format": "MODEL_FORMAT_ZOO", "name": name}


EXPORT_ALL = ["ARTIFACT_FORMAT_TORCHSCRIPT", "ARTIFACT_FORMAT_ONNX", "ARTIFACT_FORMAT_OPENVINO_IR"]
# Every job of the suite, run once per session in one intel process.
JOBS = {
    "o1_mlp": ("JOB_KIND_OPTIMIZE", zoo("mlp"), {"level": "LEVEL_O1"}),
    "o1_cnn": ("JOB_KIND_OPTIMIZE", zoo("cnn"), {"level": "LEVEL_O1"}),
    "o2_cnn": ("JOB_KIND_OPTIMIZE", zoo("cnn"), {"level": "LEVEL_O2"}),
    "o2_mlp_fp32": ("JOB_KIND_OPTIMIZE", zoo("mlp"), {"level": "LEVEL_O2", "precision": "PRECISION_FP32"}),
    "o3_cnn": ("JOB_KIND_OPTIMIZE", zoo("cnn"), {"level": "LEVEL_O3"}),
    "o3_mlp": ("JOB_KIND_OPTIMIZE", zoo("mlp"), {"level": "LEVEL_O3"}),
    "o1_upload_mlp": ("JOB_KIND_OPTIMIZE", {"format": "MODEL_FORMAT_EXPORTED_PROGRAM", "name": "mlp.pt2",
                                            "sha256": "ab" * 32}, {"level": "LEVEL_O1"}),
    "o3_upload_mlp": ("JOB_KIND_OPTIMIZE", {"format": "MODEL_FORMAT_EXPORTED_PROGRAM", "name": "mlp.pt2",
                                            "sha256": "ab" * 32}, {"level": "LEVEL_O3"}),
    "export_mlp": ("JOB_KIND_EXPORT", zoo("mlp"), {"export_formats": EXPORT_ALL}),
    "bench_mlp": ("JOB_KIND_BENCHMARK", zoo("mlp"), {"level": "LEVEL_O1"}),
    "err_fp16": ("JOB_KIND_OPTIMIZE", zoo("mlp"), {"level": "LEVEL_O2", "precision": "PRECISION_FP16"}),
    "err_int4": ("JOB_KIND_OPTIMIZE", zoo("mlp"), {"level": "LEVEL_O3", "precision": "PRECISION_INT4"}),
    "err_stablehlo": ("JOB_KIND_EXPORT", zoo("mlp"), {"export_formats": ["ARTIFACT_FORMAT_STABLEHLO"]}),
    "err_aoti": ("JOB_KIND_EXPORT", zoo("mlp"), {"export_formats": ["ARTIFACT_FORMAT_ONNX",
                                                                    "ARTIFACT_FORMAT_AOTI_PACKAGE"]}),
    "err_no_formats": ("JOB_KIND_EXPORT", zoo("mlp"), {}),
}


class Outcomes:
    def __init__(self, data: dict, root: Path) -> None:
        self.data, self.root = data, root

    def result(self, name: str) -> dict:
        item = self.data[name]
        assert "result" in item, item.get("error")
        return item["result"]

    def error(self, name: str) -> dict:
        item = self.data[name]
        assert "error" in item, f"{name} should have failed, got a result"
        return item["error"]

    def artifact(self, name: str, fmt: str | None = None) -> tuple[str, dict]:
        arts = self.result(name)["artifacts"]
        (art,) = [a for a in arts if fmt is None or a["format"] == fmt]
        path = self.root / name / art["name"]
        assert path.is_file(), path
        return str(path), art


@pytest.fixture(scope="session")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Outcomes:
    root = tmp_path_factory.mktemp("intel-jobs")
    upload = str(root / "mlp.pt2")  # exported by the driver, in the intel environment's torch
    todo = {name: {"workdir": str(root / name), "job": make_job(kind, model, **spec),
                   **({"model_path": upload, "upload_zoo": "mlp"} if "upload" in name else {})}
            for name, (kind, model, spec) in JOBS.items()}
    cpu_py = REPO / "services" / "cpu" / ".venv" / "bin" / "python"
    if cpu_py.exists():  # an upload saved by the cpu service's newer torch (2.13's per-weight .pt2 layout)
        newer = str(root / "mlp.newer.pt2")
        subprocess.run([str(cpu_py), "-c", f"from kpt.optimize import zoo; zoo.export('mlp', {newer!r})"], cwd=REPO,
                       check=True, capture_output=True, timeout=300)
        todo["o1_upload_newer_torch"] = {
            "workdir": str(root / "o1_upload_newer_torch"), "model_path": newer,
            "job": make_job("JOB_KIND_OPTIMIZE", {"format": "MODEL_FORMAT_EXPORTED_PROGRAM", "name": "mlp.pt2",
                                                  "sha256": "cd" * 32}, level="LEVEL_O1")}
    jobs_path, out_path = root / "jobs.json", root / "out.json"
    jobs_path.write_text(json.dumps(todo))
    run_intel([str(HERE / "driver.py"), str(jobs_path), str(out_path)], timeout=600)
    return Outcomes(json.loads(out_path.read_text()), root)


def fresh_check(items: list[tuple[str, str, str, str]], tmp_path: Path) -> list[dict]:
    """Load each (path, format, zoo name, input_spec json) in one new intel process; metrics per item."""
    items_path = tmp_path / "items.json"
    items_path.write_text(json.dumps(items))
    out = run_intel([str(HERE / "check_artifacts.py"), str(items_path)], timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])
