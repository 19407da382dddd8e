"""What an upload is, decided from its bytes before anything loads it (no torch here).

Deep checks (does it load, are shapes right) happen in the service's job child process.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
import zlib

from kpt.contract import ModelFormat
from kpt.errors import InvalidModel, UnsafeModel

PICKLE_HINT = ("pickled Python objects are never loaded (they can run code); "
               "save the model with torch.export.save(torch.export.export(model, args), 'model.pt2')")


def _pt2(path: str) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if any(n.startswith("/") or ".." in n.split("/") for n in names):
                raise InvalidModel("archive has entries with absolute or '..' paths; refused")
            if any(n.endswith("data.pkl") for n in names) and not any(n.endswith("archive_format") for n in names):
                raise UnsafeModel("this is a torch.save archive of pickled objects; " + PICKLE_HINT)
            fmt = [n for n in names if n.endswith("archive_format")]
            if not fmt or _head(z, fmt[0]).strip() != b"pt2":
                raise InvalidModel("zip archive is not a torch.export .pt2 (no archive_format 'pt2' entry)")
    # What zipfile raises besides BadZipFile on hostile bytes: corrupt deflate data (zlib.error), an
    # encrypted entry (RuntimeError), an unknown compression method (NotImplementedError), a name flagged
    # utf-8 that is not (UnicodeDecodeError), offsets before the file's start (OSError from seek), others
    # (ValueError, EOFError).
    except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, ValueError, EOFError, OSError) as e:
        raise InvalidModel(f"truncated or corrupt .pt2 archive ({e})") from None


def _head(z: zipfile.ZipFile, name: str, limit: int = 64) -> bytes:
    """At most `limit` bytes of an entry: a tiny archive may inflate to gigabytes (a zip bomb)."""
    with z.open(name) as f:
        return f.read(limit)


CODE_OPS = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}


def _is_pickle(path: str) -> bool:
    """True when the file parses as a pickle stream (any protocol) that imports or calls something.

    Parsing with pickletools never executes anything."""
    with open(path, "rb") as f:
        data = f.read(1 << 20)
    calls = False
    try:
        for op, _, _ in pickletools.genops(io.BytesIO(data)):
            calls = calls or op.name in CODE_OPS
            if op.name == "STOP":
                return calls
    except (ValueError, EOFError, KeyError, UnicodeDecodeError):
        return False
    return False


def _looks_onnx(head: bytes) -> bool:
    # ModelProto starts with field 1 (ir_version, varint): tag 0x08, then a small version.
    return len(head) >= 2 and head[0] == 0x08 and 3 <= head[1] <= 15


def sniff(path: str, declared: int) -> int:
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise InvalidModel("empty file")
    if head[:1] == b"\x80" or _is_pickle(path):
        raise UnsafeModel("this file is a pickle; " + PICKLE_HINT)
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        _pt2(path)
        found = ModelFormat.MODEL_FORMAT_EXPORTED_PROGRAM
    elif _looks_onnx(head):
        found = ModelFormat.MODEL_FORMAT_ONNX
    else:
        raise InvalidModel("not a model: expected a torch.export .pt2 archive or an ONNX file")
    if declared not in (ModelFormat.MODEL_FORMAT_UNSPECIFIED, found):
        raise InvalidModel(f"declared format {ModelFormat.Name(declared)} but the bytes are {ModelFormat.Name(found)}")
    return found
