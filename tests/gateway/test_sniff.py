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


def _patched(data: bytes, local: dict, central: dict) -> bytes:
    """The zip with header bytes overwritten: {offset: value} in the first local and central headers."""
    out = bytearray(data)
    lh, cd = out.find(b"PK\x03\x04"), out.find(b"PK\x01\x02")
    for off, v in local.items():
        out[lh + off] = v
    for off, v in central.items():
        out[cd + off] = v
    return bytes(out)


def _corrupt_deflate() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("m/archive_format", bytes(range(256)) * 8)
    data = bytearray(buf.getvalue())
    at = data.find(b"m/archive_format") + len("m/archive_format")
    data[at:at + 4] = bytes(b ^ 0xFF for b in data[at:at + 4])
    return bytes(data)


def _bad_utf8_name() -> bytes:
    data = pt2_zip({"m/archive_format\u00e9": "pt2"})
    cd = data.find(b"PK\x01\x02")
    at = data.find("\u00e9".encode(), cd)
    return data[:at] + b"\xff\xff" + data[at + 2:]


def _negative_offset() -> bytes:
    data = pt2_zip({"m/archive_format": "pt2"})
    at = data.rfind(b"PK\x05\x06") + 16  # end of central directory: where the central directory starts
    start = int.from_bytes(data[at:at + 4], "little") + 1000
    return data[:at] + start.to_bytes(4, "little") + data[at + 4:]


@pytest.mark.parametrize("data", [
    _corrupt_deflate(),  # zlib.error
    _patched(pt2_zip({"m/archive_format": "pt2"}), {6: 1}, {8: 1}),  # encrypted: RuntimeError
    _patched(pt2_zip({"m/archive_format": "pt2"}), {8: 99}, {10: 99}),  # compression 99: NotImplementedError
    _bad_utf8_name(),  # utf-8 flagged name that is not utf-8: UnicodeDecodeError
    _negative_offset(),  # a local header before the file's start: OSError from seek
], ids=["corrupt-deflate", "encrypted", "unknown-compression", "bad-utf8-name", "negative-offset"])
def test_hostile_zip_is_invalid_model(tmp_path, data):
    with pytest.raises(InvalidModel):
        sniff(write(tmp_path, data), 0)


def test_archive_format_bomb_is_not_inflated(tmp_path):
    """A few hundred KiB whose archive_format entry inflates to 256 MiB: refused without inflating it."""
    import tracemalloc

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("m/archive_format", b"\0" * (256 << 20))
    path = write(tmp_path, buf.getvalue())
    tracemalloc.start()
    try:
        with pytest.raises(InvalidModel):
            sniff(path, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"sniff allocated {peak >> 20} MiB"
