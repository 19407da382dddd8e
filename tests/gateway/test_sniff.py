"""What the gateway decides from an upload's bytes alone."""

import io
import pickle
import zipfile

import pytest

from kpt.contract import ModelFormat
from kpt.errors import InvalidModel, UnsafeModel
from kpt_gateway.sniff import sniff


class Boom:
    def __reduce__(self):
        return (print, ("pwned",))


def write(tmp_path, data: bytes, name="m.pt2"):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def pt2_zip(entries: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in entries.items():
            z.writestr(k, v)
    return buf.getvalue()


def test_valid_pt2(tmp_path):
    data = pt2_zip({"m/archive_format": "pt2", "m/models/model.json": "{}"})
    assert sniff(write(tmp_path, data), 0) == ModelFormat.MODEL_FORMAT_EXPORTED_PROGRAM


def test_truncated_pt2(tmp_path):
    data = pt2_zip({"m/archive_format": "pt2", "m/models/model.json": "{}" * 1000})
    with pytest.raises(InvalidModel, match="truncated or corrupt"):
        sniff(write(tmp_path, data[: len(data) // 2]), 0)


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_pickle_refused(tmp_path, protocol):
    with pytest.raises(UnsafeModel, match="never loaded"):
        sniff(write(tmp_path, pickle.dumps(Boom(), protocol=protocol)), 0)


def test_torch_save_archive_refused(tmp_path):
    data = pt2_zip({"model/data.pkl": pickle.dumps({"a": 1}), "model/version": "3"})
    with pytest.raises(UnsafeModel, match="torch.save"):
        sniff(write(tmp_path, data), 0)


def test_zip_slip_refused(tmp_path):
    data = pt2_zip({"../evil/archive_format": "pt2"})
    with pytest.raises(InvalidModel, match="'..'"):
        sniff(write(tmp_path, data), 0)


@pytest.mark.parametrize("data", [b"hello, I am a text file\n", b"\x00" * 64, b"GIF89a...."])
def test_not_a_model(tmp_path, data):
    with pytest.raises(InvalidModel, match="not a model"):
        sniff(write(tmp_path, data), 0)


def test_empty(tmp_path):
    with pytest.raises(InvalidModel, match="empty"):
        sniff(write(tmp_path, b""), 0)


def test_declared_format_must_match(tmp_path):
    data = pt2_zip({"m/archive_format": "pt2"})
    with pytest.raises(InvalidModel, match="declared format"):
        sniff(write(tmp_path, data), ModelFormat.MODEL_FORMAT_ONNX)


def test_onnx_header(tmp_path):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    assert sniff(write(tmp_path, model.SerializeToString(), "m.onnx"), 0) == ModelFormat.MODEL_FORMAT_ONNX
