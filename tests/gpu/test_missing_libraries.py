"""A GPU service whose environment lacks an optional library: onnxruntime (export and benchmark jobs that do
not need it still run; one that does gets Unsupported, not ModuleNotFoundError) and torchao (no int8/fp8/int4
is offered, since the GPU quantization passes are torchao's). A missing package is simulated the way Python
itself reports one: sys.modules[name] = None makes `import name` raise ImportError."""

import sys

import pytest

from kpt.errors import Unsupported
from kpt.gpu import export as gpu_export
from kpt.gpu.vendor import Precisions, with_libraries


def test_providers_without_onnxruntime_are_the_cpu_fallback(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert gpu_export.providers_for(("CUDAExecutionProvider",)) == ["CPUExecutionProvider"]


def test_onnx_session_without_onnxruntime_is_unsupported(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(Unsupported, match="onnxruntime is not installed"):
        gpu_export.ort_session(str(tmp_path / "model.onnx"), ["CPUExecutionProvider"])


def test_without_torchao_no_quantized_precision_is_offered(monkeypatch):
    h100 = Precisions(bf16=True, int4=True, fp8="float8_e4m3fn")
    assert with_libraries(h100) == h100  # torchao is installed here
    monkeypatch.setitem(sys.modules, "torchao", None)
    table = with_libraries(h100)
    assert table.contract() == ["PRECISION_FP32", "PRECISION_BF16", "PRECISION_FP16"]
    assert table.fp8_format == "none" and any("torchao" in w for w in table.why)
