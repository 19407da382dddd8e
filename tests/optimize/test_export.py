import pytest
import torch

from kpt.errors import InvalidArgument, Unsupported
from kpt.optimize import accuracy, artifacts, export, source
from kpt.optimize import inputs as inp


@pytest.mark.parametrize("fmt", ["ARTIFACT_FORMAT_ONNX", "ARTIFACT_FORMAT_TORCHSCRIPT",
                                 "ARTIFACT_FORMAT_EXPORTED_PROGRAM"])
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_each_format_loads_back_and_matches_eager(tmp_path, fmt, model):
    src = source.from_zoo(model, None)
    refs = accuracy.reference_outputs(src.module, src.spec, samples=3, seed=1)
    done = export.export(export.config_for(fmt), src, str(tmp_path), refs, accuracy.DEFAULTS["fp32"])
    assert done.accuracy.passed and done.accuracy.metrics.rel_l2 < 1e-5
    loaded = artifacts.load(done.path, fmt)
    x = inp.generate(src.spec, seed=77, vary_dynamic=True)  # another batch size than the export example
    got = accuracy.flatten(loaded(*x))[0]
    torch.testing.assert_close(got, src.module(*x).detach(), rtol=1e-5, atol=1e-5)


def test_formats_this_service_does_not_export():
    with pytest.raises(Unsupported, match="ARTIFACT_FORMAT_STABLEHLO is not an export format"):
        export.config_for("ARTIFACT_FORMAT_STABLEHLO")
    with pytest.raises(Unsupported):
        export.config_for("ARTIFACT_FORMAT_AOTI_PACKAGE")
    with pytest.raises(InvalidArgument):
        export.config_for("ARTIFACT_FORMAT_PNG")


def test_loader_accepts_short_names_and_refuses_unknown(tmp_path):
    assert artifacts.format_name("onnx") == "ARTIFACT_FORMAT_ONNX"
    assert artifacts.format_name("aoti_package") == "ARTIFACT_FORMAT_AOTI_PACKAGE"
    with pytest.raises(Unsupported):
        artifacts.load(str(tmp_path / "x"), "stablehlo")
    with pytest.raises(InvalidArgument):
        artifacts.load(str(tmp_path / "x"), "pickle")


def test_onnx_opset_is_validated():
    with pytest.raises(ValueError, match="opset"):
        export.OnnxExport(opset=9)
