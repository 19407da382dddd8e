"""A bfloat16 ONNX upload benchmarked on the CPU service: a typed error, not INTERNAL."""

import pytest

from kpt.errors import Unsupported


def test_benchmark_of_a_bfloat16_onnx_upload_is_unsupported(run_job, tmp_path):
    """onnxruntime's Python API has no numpy bfloat16; the job failed with a bare TypeError (INTERNAL)."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2, 3])])
    path = str(tmp_path / "bf16.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), path)
    ref = {"format": "MODEL_FORMAT_ONNX", "name": "bf16.onnx", "sha256": "22" * 32}
    with pytest.raises(Unsupported, match="bfloat16"):
        run_job("JOB_KIND_BENCHMARK", ref, path)
