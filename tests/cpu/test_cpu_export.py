import os

import pytest

from kpt.errors import InvalidArgument, Unsupported
from kpt.optimize import inputs as inp
from kpt.optimize import source
from tests.cpu.cpu_helpers import fresh_check, zoo

pytestmark = pytest.mark.timeout(300)
FORMATS = ["ARTIFACT_FORMAT_ONNX", "ARTIFACT_FORMAT_TORCHSCRIPT", "ARTIFACT_FORMAT_EXPORTED_PROGRAM"]


def test_export_job_writes_each_format_checked_and_loadable_elsewhere(run_job, tmp_path):
    result = run_job("JOB_KIND_EXPORT", zoo("cnn"), export_formats=FORMATS)
    arts = {a["format"]: a for a in result["artifacts"]}
    assert set(arts) == set(FORMATS)
    assert {a["name"] for a in arts.values()} == {"model.onnx", "model.torchscript.pt", "model.pt2"}
    variants = {v["variant"]: v for v in result["variants"]}
    assert set(variants) == {"eager_fp32", "onnxruntime", "torchscript", "kpt_O0"}
    assert all("latency" in v for v in variants.values())
    src = source.from_zoo("cnn", None)
    x = inp.generate(src.spec, seed=21, vary_dynamic=True)
    for fmt, art in arts.items():
        meta = art["metadata"]
        assert float(meta["rel_l2"]) < 1e-5 and meta["p50_ms"] and meta["toolchain.torch"]
        m = fresh_check(os.path.join(run_job.workdir, art["name"]), fmt, src.module, x, tmp_path)
        assert m["rel_l2"] < 1e-5, fmt


def test_unsupported_and_missing_formats(run_job):
    with pytest.raises(Unsupported, match="STABLEHLO"):
        run_job("JOB_KIND_EXPORT", zoo("mlp"), export_formats=["ARTIFACT_FORMAT_ONNX", "ARTIFACT_FORMAT_STABLEHLO"])
    assert not os.path.exists(os.path.join(run_job.workdir, "model.onnx"))  # refused before any work
    with pytest.raises(InvalidArgument, match="export_formats"):
        run_job("JOB_KIND_EXPORT", zoo("mlp"))
