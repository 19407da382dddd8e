"""Uploads saved by a newer torch: torch.export.save from torch >= 2.9 writes each weight as its own raw file
(data/weights/weight_<n> plus model_weights_config.json); torch 2.8's torch.export.load reads only the one
torch.save'd dict data/weights/<model>.pt. `compatible_pt2` rewrites such an archive into the 2.8 layout (same
model.json, the weights gathered into that dict) so the shared guarded loader can open it.

Security: the original archive is scanned by kpt.optimize.loading.scan_pt2 before anything is read, raw
weights are only reinterpreted as tensors, pickled ones are read with weights_only=True, and the rewritten
archive goes through the same guarded loader afterwards.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import zipfile

import torch

from kpt.errors import InvalidModel
from kpt.optimize import loading

WEIGHTS, CONSTANTS = "data/weights/", "data/constants/"
# Fields newer export schemas added that torch 2.8 does not know, dropped on rewrite because running the program
# does not read them: guards_code (the source of the shape guards, which 2.8 re-derives from range_constraints)
# and Node.name (a node's display name; 2.8 names nodes after their outputs).
# Any other unknown field makes the upload InvalidModel instead of being dropped silently.
DROPPABLE = frozenset({"guards_code", "name"})
log = logging.getLogger(__name__)
CONFIGS = {WEIGHTS: "model_weights_config.json", CONSTANTS: "model_constants_config.json"}


def _needs_rewrite(names: list[str]) -> bool:
    return any(n.endswith(WEIGHTS + CONFIGS[WEIGHTS]) for n in names) and not any(
        n.endswith(WEIGHTS + "model.pt") for n in names)


def _tensor(raw: bytes, meta: dict) -> torch.Tensor:
    from torch._export.serde import schema, serialize

    dtype = serialize._SERIALIZE_TO_TORCH_DTYPE[schema.ScalarType(meta["dtype"])]
    sizes = [s["as_int"] for s in meta["sizes"]]
    strides = [s["as_int"] for s in meta["strides"]]
    offset = meta.get("storage_offset", {}).get("as_int", 0)
    flat = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
    return flat.as_strided(sizes, strides, offset).clone()


def _gather(z: zipfile.ZipFile, prefix: str, folder: str) -> bytes:
    """The torch.save bytes of {name: tensor} for one folder's config (weights or constants)."""
    config = json.loads(z.read(prefix + folder + CONFIGS[folder]))["config"]
    out: dict[str, torch.Tensor] = {}
    for name, entry in config.items():
        raw = z.read(prefix + folder + entry["path_name"])
        if entry.get("use_pickle"):
            value = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
        else:
            value = _tensor(raw, entry["tensor_meta"])
        if entry.get("is_param"):
            value = torch.nn.Parameter(value, requires_grad=entry["tensor_meta"].get("requires_grad", False))
        out[name] = value
    buf = io.BytesIO()
    torch.save(out, buf)
    return buf.getvalue()


def _known_fields(cls, data, path: str, dropped: set[str]):
    """`data` (a serialized schema object) with only the fields torch 2.8's schema `cls` has."""
    import dataclasses
    import typing

    from torch._export.serde.schema import _Union

    origin = typing.get_origin(cls)
    if origin is typing.Annotated:
        return _known_fields(cls.__origin__, data, path, dropped)
    if origin is typing.Union and type(None) in typing.get_args(cls):
        return None if data is None else _known_fields(typing.get_args(cls)[0], data, path, dropped)
    if isinstance(cls, type) and issubclass(cls, _Union):
        (key, value), = data.items()
        if key not in cls.__annotations__:
            raise InvalidModel(f"the program uses {path}.{key}, which torch {torch.__version__.split('+')[0]}'s "
                               "export schema lacks: re-save it with torch 2.8")
        return {key: _known_fields(cls.__annotations__[key], value, f"{path}.{key}", dropped)}
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        unknown = set(data) - set(hints)
        if unknown - DROPPABLE:
            raise InvalidModel(f"the program has fields {sorted(unknown - DROPPABLE)} at {path or 'top level'} that "
                               f"torch {torch.__version__.split('+')[0]}'s export schema lacks: re-save it with torch 2.8")
        dropped.update(unknown)
        return {k: _known_fields(hints[k], v, f"{path}.{k}", dropped) for k, v in data.items() if k in hints}
    if isinstance(data, list):
        return [_known_fields(typing.get_args(cls)[0], d, path, dropped) for d in data] if data else data
    if isinstance(data, dict):
        return {k: _known_fields(typing.get_args(cls)[1], v, f"{path}[{k}]", dropped) for k, v in data.items()}
    return data


def compatible_pt2(path: str, workdir: str) -> str:
    """`path` itself when this torch can read it, else a rewritten copy in workdir (typed errors)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return path  # not a zip: the shared loader says what it is
    if not _needs_rewrite(names):
        return path
    loading.scan_pt2(path)
    out = os.path.join(workdir, "upload.torch28.pt2")
    try:
        with zipfile.ZipFile(path) as z, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
            (config,) = [n for n in names if n.endswith(WEIGHTS + CONFIGS[WEIGHTS])]
            prefix = config[: -len(WEIGHTS + CONFIGS[WEIGHTS])]
            models = [n[len(prefix + "models/"):-len(".json")] for n in names
                      if n.startswith(prefix + "models/") and n.endswith(".json")]
            if len(models) != 1:
                raise InvalidModel(f"the .pt2 archive holds {len(models)} programs; upload one exported program")
            for folder in (WEIGHTS, CONSTANTS):
                data = _gather(z, prefix, folder) if prefix + folder + CONFIGS[folder] in names else b""
                w.writestr(f"{prefix}{folder}{models[0]}.pt", data)
            from torch._export.serde import schema

            dropped: set[str] = set()
            program = _known_fields(schema.ExportedProgram, json.loads(z.read(f"{prefix}models/{models[0]}.json")),
                                    "", dropped)
            w.writestr(f"{prefix}models/{models[0]}.json", json.dumps(program))
            for n in names:
                if not n.startswith((prefix + WEIGHTS, prefix + CONSTANTS, prefix + "models/")):
                    w.writestr(n, z.read(n))
    except (KeyError, ValueError, TypeError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise InvalidModel(f"the .pt2 archive (saved by a newer torch) has unreadable weights: "
                           f"{type(e).__name__}: {str(e).strip()[:300]}") from e
    log.info("rewrote %s (saved by a newer torch) for torch %s; dropped fields: %s", path, torch.__version__,
             ", ".join(sorted(dropped)) or "none")
    return out
