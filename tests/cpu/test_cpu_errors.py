"""Bad jobs and bad uploads through run(): each gets the right typed error and a useful message."""

import os
import pickle

import pytest

from kpt.errors import InvalidArgument, InvalidInput, InvalidModel, UnsafeModel, Unsupported
from tests.cpu.cpu_helpers import zoo

PT2 = {"format": "MODEL_FORMAT_EXPORTED_PROGRAM", "name": "model.pt2", "sha256": "00" * 32}


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def upload(tmp_path, data: bytes) -> str:
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    return str(path)


def test_truncated_upload(run_job, tmp_path, mlp_pt2):
    data = open(mlp_pt2, "rb").read()
    with pytest.raises(InvalidModel, match="truncated"):
        run_job("JOB_KIND_OPTIMIZE", PT2, upload(tmp_path, data[: len(data) * 2 // 3]), level="LEVEL_O0")


@pytest.mark.parametrize("data", [os.urandom(10000), "a text file\n".encode() * 50, b""])
def test_random_bytes_text_and_empty_uploads(run_job, tmp_path, data):
    with pytest.raises(InvalidModel) as e:
        run_job("JOB_KIND_OPTIMIZE", PT2, upload(tmp_path, data), level="LEVEL_O0")
    assert type(e.value) is InvalidModel


def test_malicious_pickle_is_refused_and_never_runs(run_job, tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafeModel, match="never loaded"):
        run_job("JOB_KIND_OPTIMIZE", PT2, upload(tmp_path, pickle.dumps(Payload(str(marker)))), level="LEVEL_O0")
    assert not marker.exists()


def test_wrong_input_shape_for_an_upload_names_tensor_and_expected_shape(run_job, mlp_pt2):
    spec = {"tensors": [{"name": "x", "dtype": "float32", "dims": [{"size": 8}, {"size": 32}]}]}
    with pytest.raises(InvalidInput, match=r"'x'.*float32\[\w+\[1\.\.64\], 64\].*dim 1 is 32"):
        run_job("JOB_KIND_OPTIMIZE", PT2, mlp_pt2, level="LEVEL_O0", inputs=spec)


def test_wrong_input_shape_for_a_zoo_model(run_job):
    spec = {"tensors": [{"name": "x", "dtype": "float32", "dims": [{"size": 8}, {"size": 32}]}]}
    with pytest.raises(InvalidInput, match="rejects inputs generated from the spec"):
        run_job("JOB_KIND_OPTIMIZE", zoo("mlp"), level="LEVEL_O0", inputs=spec)


def test_requests_this_target_cannot_serve(run_job, tmp_path):
    with pytest.raises(Unsupported, match="PRECISION_FP16 is not available on CPU"):
        run_job("JOB_KIND_OPTIMIZE", zoo("mlp"), level="LEVEL_O2", precision="PRECISION_FP16")
    with pytest.raises(InvalidArgument, match="unknown zoo model"):
        run_job("JOB_KIND_OPTIMIZE", zoo("alexnet"), level="LEVEL_O0")
    with pytest.raises(InvalidArgument, match="job kind"):
        run_job("JOB_KIND_UNSPECIFIED", zoo("mlp"))
    with pytest.raises(InvalidArgument, match="needs the uploaded model file"):
        run_job("JOB_KIND_OPTIMIZE", PT2, None, level="LEVEL_O0")


def test_onnx_upload_cannot_be_optimized(run_job, tmp_path):
    from kpt.optimize import export, source

    src = source.from_zoo("cnn", None)
    path = export.EXPORTERS[export.OnnxExport](export.OnnxExport(), src, str(tmp_path / "m.onnx"))
    spec = {"tensors": [{"name": "x", "dtype": "float32",
                         "dims": [{"size": 2}, {"size": 3}, {"size": 64}, {"size": 64}]}]}
    onnx_ref = {"format": "MODEL_FORMAT_ONNX", "name": "m.onnx", "sha256": "11" * 32}
    with pytest.raises(Unsupported, match="ONNX uploads can be benchmarked"):
        run_job("JOB_KIND_OPTIMIZE", onnx_ref, path, level="LEVEL_O1", inputs=spec)
    result = run_job("JOB_KIND_BENCHMARK", onnx_ref, path, inputs=spec)
    (row,) = result["variants"]
    assert row["variant"] == "onnxruntime" and row["latency"]["p50_ms"] > 0 and "accuracy" not in row
