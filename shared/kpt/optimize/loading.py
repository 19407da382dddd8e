"""Open UNTRUSTED model uploads without running code they carry.

torch.export.load reads weights with torch.load(weights_only=False) and custom objects with
pickle.loads, so a crafted .pt2 would execute code on load. Before torch sees the file we:
  1. require a well-formed zip (truncated/corrupt/not-a-zip -> InvalidModel; a bare pickle ->
     UnsafeModel) with unique member names (a duplicate could show the scanner one member and
     the loader another) and intact CRCs;
  2. refuse members that are Python pickles outside a torch zip, and custom/opaque objects;
  3. load every nested torch zip (weights, constants, sample inputs) with weights_only=True,
     whose allow-list unpickler refuses anything but tensors and plain containers;
and only then call torch.export.load, with TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 as a second guard.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import pickletools
import struct
import zipfile

import torch

from kpt.errors import InvalidModel, UnsafeModel, Unsupported

log = logging.getLogger(__name__)

_ZIP_MAGIC = b"PK\x03\x04"
_SCAN_LIMIT = 64 << 20
# Code-carrying pickle opcodes: any of these means "imports or calls something when loaded".
_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD", "EXT1", "EXT2", "EXT4"}
# torch.export.save prefixes for torchbind / opaque Python objects (torch.export.pt2_archive.constants)
_OBJECT_PREFIXES = ("custom_obj_", "opaque_obj_")


def _pickle_opcodes(data: bytes) -> set[str] | None:
    """The opcode names if the whole of `data` is one pickle (STOP on its last byte), else None.

    Raw tensor bytes may start with valid opcodes by chance; they essentially never parse
    through to a STOP on exactly the last byte, which is what every pickle does.
    """
    names: set[str] = set()
    try:
        for op, _, pos in pickletools.genops(io.BytesIO(data)):
            names.add(op.name)
            if op.name == "STOP":
                return names if pos == len(data) - 1 else None
    except (ValueError, EOFError, KeyError, IndexError, UnicodeDecodeError, pickle.UnpicklingError):
        return None
    return None


def _refuse_pickle(data: bytes, what: str) -> None:
    ops = _pickle_opcodes(data)
    if ops and ops & _CODE_OPCODES:
        raise UnsafeModel(f"{what} is a Python pickle that imports or calls code ({', '.join(sorted(ops & _CODE_OPCODES))}); "
                          "pickles are never loaded. Upload a torch.export.save() archive (.pt2) or ONNX instead.")


def _check_nested_torch_zip(data: bytes, member: str) -> None:
    try:
        torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise UnsafeModel(f"archive member {member!r} holds pickled objects that are not plain tensors "
                          f"(refused by the weights_only unpickler: {str(e).splitlines()[0]}). "
                          "Re-export the model with torch.export.save from plain tensors.") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile) as e:
        raise InvalidModel(f"archive member {member!r} is corrupt ({e}); re-save the model with torch.export.save.") from e


def _ends_with_central_directory(path: str) -> bool:
    """True when the zip's end record closes the file. zipfile alone would, in a truncated .pt2,
    find the end record of the nested torch.save zip (sample inputs) and read that instead."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, size - (22 + 0xFFFF)))
        tail = f.read()
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + 22 > len(tail):
        return False
    (comment_len,) = struct.unpack("<H", tail[pos + 20:pos + 22])
    return pos + 22 + comment_len == len(tail)


def scan_pt2(path: str) -> None:
    """Raise InvalidModel/UnsafeModel unless `path` is a zip archive with nothing executable in it."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head != _ZIP_MAGIC:
        with open(path, "rb") as f:
            data = f.read(_SCAN_LIMIT)  # a longer non-zip file is refused below either way
        _refuse_pickle(data, "the uploaded file")
        if _pickle_opcodes(data) is not None:
            raise InvalidModel("the upload is a pickle of plain Python data, not a model: upload the .pt2 "
                               "written by torch.export.save, or an ONNX file.")
        raise InvalidModel("the upload is not a torch.export archive (.pt2 is a zip file; this file does not start "
                           "like one): upload the file written by torch.export.save(exported_program, path).")
    if not _ends_with_central_directory(path):
        raise InvalidModel("the .pt2 archive is truncated or corrupt (its zip end record is missing); upload the "
                           "complete file written by torch.export.save.")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if any(n.count("/") == 1 and n.endswith("/data.pkl") for n in names):
                with open(path, "rb") as f:
                    _check_nested_torch_zip(f.read(), "the uploaded file")
                raise InvalidModel("the upload is a torch.save checkpoint (weights or a pickled module), not a "
                                   "program: export the model with torch.export.export and torch.export.save.")
            if len(names) != len(set(names)):
                raise InvalidModel("the .pt2 archive lists a member twice; re-save it with torch.export.save.")
            bad = z.testzip()
            if bad is not None:
                raise InvalidModel(f"the .pt2 archive is corrupt (CRC mismatch in {bad!r}); upload it again.")
            for name in names:
                base = name.rsplit("/", 1)[-1]
                if base.startswith(_OBJECT_PREFIXES):
                    raise UnsafeModel(f"archive member {name!r} is a pickled custom Python object, which is never "
                                      "loaded; export a model whose constants are plain tensors.")
                data = z.read(name)
                if data.startswith(_ZIP_MAGIC):
                    _check_nested_torch_zip(data, name)
                else:
                    _refuse_pickle(data, f"archive member {name!r}")
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise InvalidModel(f"the .pt2 archive is truncated or corrupt ({e}); upload the complete file written by "
                           "torch.export.save.") from e


@contextlib.contextmanager
def _weights_only_loads():
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


def load_exported_program(path: str) -> torch.export.ExportedProgram:
    """torch.export.load of an untrusted file, after scan_pt2; errors are typed."""
    scan_pt2(path)
    try:
        with _weights_only_loads():
            ep = torch.export.load(path)
    except pickle.UnpicklingError as e:
        raise UnsafeModel(f"the archive holds objects outside the weights_only allow-list: {e}") from e
    except (RuntimeError, KeyError, ValueError, TypeError, AssertionError, zipfile.BadZipFile, EOFError) as e:
        # torch raises these for archives it cannot deserialize (wrong layout, schema version, bad json)
        raise InvalidModel(f"not a loadable torch.export archive ({type(e).__name__}: {e}). Save it with "
                           f"torch.export.save on torch {torch.__version__.split('+')[0]}.") from e
    if not isinstance(ep, torch.export.ExportedProgram):
        raise InvalidModel("the archive does not contain an ExportedProgram named 'model'.")
    return ep


def check_onnx(path: str):
    """Parse and check an untrusted ONNX file; return the onnx.ModelProto.

    External-data tensors are refused: their locations are file paths that onnxruntime would
    read from this machine.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise InvalidModel(f"not a readable ONNX model ({e}); upload the .onnx file from torch.onnx.export.") from e
    if not model.graph.node and not model.graph.output:
        raise InvalidModel("the ONNX file parses but holds no graph (truncated, or not an ONNX model).")
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise Unsupported(f"ONNX initializers stored as external data ({', '.join(external[:3])}...) are not "
                          "accepted: their paths point at files on the server. Save with all tensors inside the file.")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise InvalidModel(f"the ONNX model fails onnx.checker: {str(e).splitlines()[0]}") from e
    return model
