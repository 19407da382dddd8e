"""Untrusted uploads: nothing in them runs, and every bad file gets a typed error."""

import io
import json
import os
import pickle
import struct
import zipfile

import pytest
import torch

from kpt.errors import InvalidModel, UnsafeModel, Unsupported
from kpt.optimize import loading


class Payload:
    """Creates a marker file when unpickled: proof that loading ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def rewrite(src: str, dst: str, replace: dict) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, replace.get(item.filename, zin.read(item.filename)))


def poison_weight(src: str, dst: str, blob: bytes) -> None:
    """A real .pt2 whose first weight is `blob`, marked as pickled in the weights config."""
    with zipfile.ZipFile(src) as z:
        names = z.namelist()
        cfg_name = next(n for n in names if n.endswith("model_weights_config.json"))
        cfg = json.loads(z.read(cfg_name))
    fqn, meta = next(iter(cfg["config"].items()))
    meta["use_pickle"] = True
    weight = next(n for n in names if n.endswith("/weights/" + meta["path_name"]))
    rewrite(src, dst, {cfg_name: json.dumps(cfg).encode(), weight: blob})


def torch_saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_plain_torch_export_load_would_run_the_payload(mlp_pt2, tmp_path):
    """Why the scan exists: torch.export.load unpickles weights with weights_only=False."""
    marker = tmp_path / "pwned"
    bad = str(tmp_path / "evil.pt2")
    poison_weight(mlp_pt2, bad, torch_saved(Payload(str(marker))))
    try:
        torch.export.load(bad)
    except Exception:  # noqa: BLE001 - only the side effect matters here
        pass
    assert marker.exists()


@pytest.mark.parametrize("blob_kind", ["torch_save_zip", "raw_pickle"])
def test_pickle_inside_the_archive_is_refused_without_running(mlp_pt2, tmp_path, blob_kind):
    marker = tmp_path / "pwned"
    payload = Payload(str(marker))
    blob = torch_saved(payload) if blob_kind == "torch_save_zip" else pickle.dumps(payload, protocol=2)
    bad = str(tmp_path / "evil.pt2")
    poison_weight(mlp_pt2, bad, blob)
    with pytest.raises(UnsafeModel):
        loading.load_exported_program(bad)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_bare_pickle_instead_of_a_pt2_is_unsafe(tmp_path, protocol):
    marker = tmp_path / "pwned"
    bad = tmp_path / "model.pt2"
    bad.write_bytes(pickle.dumps(Payload(str(marker)), protocol=protocol))
    with pytest.raises(UnsafeModel, match="pickle"):
        loading.load_exported_program(str(bad))
    assert not marker.exists()


def test_torch_save_of_an_object_is_unsafe_and_of_weights_is_invalid(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "model.pt2"
    bad.write_bytes(torch_saved(Payload(str(marker))))
    with pytest.raises(UnsafeModel):
        loading.load_exported_program(str(bad))
    assert not marker.exists()
    bad.write_bytes(torch_saved({"w": torch.ones(2)}))
    with pytest.raises(InvalidModel, match="checkpoint") as e:
        loading.load_exported_program(str(bad))
    assert type(e.value) is InvalidModel


def test_truncated_pt2_is_invalid(mlp_pt2, tmp_path):
    data = open(mlp_pt2, "rb").read()
    for cut in (len(data) // 2, len(data) - 30):
        bad = tmp_path / f"cut{cut}.pt2"
        bad.write_bytes(data[:cut])
        with pytest.raises(InvalidModel) as e:
            loading.load_exported_program(str(bad))
        assert type(e.value) is InvalidModel and "truncated or corrupt" in e.value.message


@pytest.mark.parametrize("content", [os.urandom(4096), b"this is a text file, not a model\n" * 10,
                                     pickle.dumps({"weights": [1, 2, 3]})])
def test_random_bytes_text_and_plain_pickles_are_invalid(tmp_path, content):
    bad = tmp_path / "model.pt2"
    bad.write_bytes(content)
    with pytest.raises(InvalidModel) as e:
        loading.load_exported_program(str(bad))
    assert type(e.value) is InvalidModel and "torch.export" in e.value.message


def test_zip_that_is_not_an_exported_program_is_invalid(tmp_path):
    bad = tmp_path / "model.pt2"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(InvalidModel) as e:
        loading.load_exported_program(str(bad))
    assert type(e.value) is InvalidModel


def test_corrupted_member_and_duplicates_are_invalid(mlp_pt2, tmp_path):
    data = bytearray(open(mlp_pt2, "rb").read())
    with zipfile.ZipFile(mlp_pt2) as z:
        info = z.getinfo(next(n for n in z.namelist() if n.endswith("weight_0")))
    off = info.header_offset  # the local header's name/extra lengths (they differ from the central directory's)
    name_len, extra_len = struct.unpack("<HH", bytes(data[off + 26:off + 30]))
    at = off + 30 + name_len + extra_len + 4
    data[at] ^= 0xFF  # flip a byte of stored weight data: CRC mismatch
    bad = tmp_path / "crc.pt2"
    bad.write_bytes(bytes(data))
    with pytest.raises(InvalidModel, match="CRC|corrupt"):
        loading.load_exported_program(str(bad))
    dup = tmp_path / "dup.pt2"
    with zipfile.ZipFile(dup, "w") as z:
        z.writestr("a/x", b"1")
        with pytest.warns(UserWarning):
            z.writestr("a/x", b"2")
    with pytest.raises(InvalidModel, match="twice"):
        loading.load_exported_program(str(dup))


def test_valid_upload_loads(mlp_pt2):
    ep = loading.load_exported_program(mlp_pt2)
    assert isinstance(ep, torch.export.ExportedProgram) and ep.example_inputs is not None
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # the guard is scoped to the load


def test_onnx_garbage_and_external_data(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(2048))
    with pytest.raises(InvalidModel):
        loading.check_onnx(str(junk))
    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("float_data")
    w.external_data.add(key="location", value="../../etc/passwd")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [w])
    ext = tmp_path / "ext.onnx"
    ext.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(Unsupported, match="external data"):
        loading.check_onnx(str(ext))
    assert onnx  # imported for the helper module above
