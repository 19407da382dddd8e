"""Open UNTRUSTED model uploads without running code they carry.

torch.export.load reads weights with torch.load(weights_only=False) and custom objects with
pickle.loads, so a crafted .pt2 would execute code on load. Before torch sees the file we:
  1. require a well-formed zip (truncated/corrupt/not-a-zip -> InvalidModel; a bare pickle ->
     UnsafeModel) with unique member names (a duplicate could show the scanner one member and
     the loader another) and intact CRCs;
  2. refuse members that are Python pickles outside a torch zip, and custom/opaque objects;
  3. load every nested torch zip (weights, constants, sample inputs) with weights_only=True,
     whose allow-list unpickler refuses anything but tensors and plain containers;
  4. check the program JSON for text torch turns into code: symbolic expressions (sympy.sympify
     evals them), guards (ExportedProgram.module() exec()s them) and value names (FX writes them
     into the forward it exec()s) must fit their narrow grammars;
and only then call torch.export.load, with TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 as a second guard. The
loaded graph may not call operators that open files (aten.from_file, aten.save).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import json
import logging
import os
import pickle
import pickletools
import re
import struct
import zipfile

import sympy
import torch
import torch.utils._sympy.functions as sympy_functions
from torch._export.verifier import SpecViolationError

from kpt.errors import InvalidModel, UnsafeModel, Unsupported

log = logging.getLogger(__name__)

_ZIP_MAGIC = b"PK\x03\x04"
_SCAN_LIMIT = 64 << 20
_BOMB_RATIO = 100  # a compressed member may inflate to at most this many times its size (or _SCAN_LIMIT)
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


# Names (values, parameters, modules) that FX writes into generated code: dotted identifiers.
_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
_NAME_TABLES = ("tensor_values", "sym_int_values", "sym_bool_values", "sym_float_values", "custom_obj_values",
                "range_constraints")
# Calls a serialized symbolic expression (sympy.srepr) may make: sympy classes, torch's sympy functions.
_SYMPY_CALLS = frozenset(n for mod in (sympy, sympy_functions) for n, v in vars(mod).items()
                         if isinstance(v, type) and issubclass(v, sympy.Basic))
# The only calls that take a string: a symbol's name, a float's digits.
_SYMPY_STR_ARG = {"Symbol": _NAME, "Dummy": _NAME, "Float": re.compile(r"[-+]?([0-9.]+([eE][-+]?[0-9]+)?|inf|nan)")}
# Guards are Python over L['<input>'].size()[i] and the like (torch's PythonPrinter).
_GUARD_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
_GUARD_CALLS = frozenset({"max", "min", "abs", "IsNonOverlappingAndDenseIndicator", "cast_symbool_to_symint_guardless"})
_GUARD_MATH = frozenset({"floor", "ceil", "trunc", "sqrt", "log2", "pow"})
_EXPR_NODES = (ast.Expression, ast.Call, ast.Name, ast.Load, ast.Constant, ast.keyword, ast.BinOp, ast.UnaryOp,
               ast.BoolOp, ast.Compare, ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.Tuple)
# Operators that read or write files named in the graph (besides any taking a `str filename`).
_FILE_OPS = frozenset({"aten::from_file", "aten::save"})


def _plain_name(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and not node.id.startswith("_") and node.id not in vars(builtins))


def _safe_sympy(text: str) -> bool:
    """Whether `text` is a sympy.srepr string (calls of sympy classes on numbers, names and flags), which
    sympy.sympify can eval without reaching anything else."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return False
    strings: dict[int, re.Pattern] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS):
                return False
            first = node.args[0] if node.args else None
            if node.func.id in _SYMPY_STR_ARG and isinstance(first, ast.Constant) and isinstance(first.value, str):
                strings[id(first)] = _SYMPY_STR_ARG[node.func.id]
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, str) and not (id(node) in strings and strings[id(node)].fullmatch(node.value)):
                return False
        elif isinstance(node, ast.Name):
            if node.id not in _SYMPY_CALLS and not _plain_name(node):
                return False
        elif not isinstance(node, _EXPR_NODES):
            return False
    return True


def _safe_guard(text: str) -> bool:
    """Whether `text` is a shape guard: comparisons and arithmetic over L['x'].size()[0]-style terms."""
    if any(c in text for c in '\n\r#;\\"'):  # one line; no comments, statements, escapes, "-strings
        return False
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            method = isinstance(f, ast.Attribute) and f.attr in _GUARD_METHODS and not node.args and not node.keywords
            math_fn = isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "math" \
                and f.attr in _GUARD_MATH
            if not (method or math_fn or (isinstance(f, ast.Name) and f.id in _GUARD_CALLS)):
                return False
        elif isinstance(node, ast.Attribute):
            if node.attr not in _GUARD_METHODS and not (isinstance(node.value, ast.Name) and node.value.id == "math"
                                                        and not node.attr.startswith("_")):
                return False
        elif isinstance(node, ast.Subscript):
            key = node.slice
            if not (isinstance(key, ast.Constant) and (type(key.value) is int or (
                    isinstance(key.value, str) and _NAME.fullmatch(key.value)))):
                return False
        elif isinstance(node, ast.Constant):
            if type(node.value) not in (int, float, bool) and not (isinstance(node.value, str)
                                                                   and _NAME.fullmatch(node.value)):
                return False
        elif isinstance(node, ast.Name):
            if node.id not in ("L", "math") and node.id not in _GUARD_CALLS:
                return False
        elif not isinstance(node, _EXPR_NODES):
            return False
    return True


def _check_program_json(data: bytes, member: str) -> None:
    """UnsafeModel where the program JSON holds text that torch would turn into code (module doc, step 4)."""
    try:
        program = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidModel(f"archive member {member!r} is not valid JSON ({e}); re-save the model with "
                           "torch.export.save.") from e

    def refuse(what: str, text: object) -> None:
        raise UnsafeModel(f"archive member {member!r} holds a {what} that is not what torch.export.save writes "
                          f"({str(text)[:120]!r}); refused, since torch would run it as code. Re-export the model.")

    def walk(obj: object) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k == "expr_str" and not (isinstance(v, str) and _safe_sympy(v)):
                    refuse("symbolic shape expression", v)
                elif k == "guards_code":
                    if not isinstance(v, list) or not all(isinstance(g, str) and _safe_guard(g) for g in v):
                        refuse("shape guard", v)
                elif (k.endswith("name") or k == "fqn") and isinstance(v, str) and v and not _NAME.fullmatch(v):
                    refuse("value or parameter name", v)
                elif k.endswith("names") and isinstance(v, list) and not all(
                        isinstance(n, str) and _NAME.fullmatch(n) for n in v):
                    refuse("list of names", v)
                elif k in _NAME_TABLES and isinstance(v, dict) and not all(_NAME.fullmatch(n) for n in v):
                    refuse("value name", next(n for n in v if not _NAME.fullmatch(n)))
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(program)


def _refuse_file_ops(ep: torch.export.ExportedProgram) -> None:
    for gm in ep.graph_module.modules():
        if not isinstance(gm, torch.fx.GraphModule):
            continue
        for node in gm.graph.nodes:
            schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
            if schema is not None and (schema.name in _FILE_OPS or any(
                    a.name == "filename" and str(a.type).startswith("str") for a in schema.arguments)):
                raise UnsafeModel(f"the graph calls {schema.name.replace('::', '.')}, which reads or writes files on "
                                  "the server; refused. Export a model that takes its data as inputs or weights.")


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
            # torch.export.save stores members uncompressed: a compressed one inflating far past its size is a zip
            # bomb, refused before testzip() and the scan below inflate it.
            for info in z.infolist():
                if info.compress_type != zipfile.ZIP_STORED and info.file_size > max(_BOMB_RATIO * info.compress_size,
                                                                                     _SCAN_LIMIT):
                    raise UnsafeModel(f"archive member {info.filename!r} inflates from {info.compress_size} to "
                                      f"{info.file_size} bytes; refused (torch.export.save stores members "
                                      "uncompressed).")
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
                    if "/models/" in f"/{name}" and name.endswith(".json"):
                        _check_program_json(data, name)
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
    except (RuntimeError, LookupError, ValueError, TypeError, AttributeError, AssertionError, SpecViolationError,
            zipfile.BadZipFile, EOFError) as e:
        # torch raises these for archives it cannot deserialize (wrong layout, schema version, bad json, a graph
        # its verifier refuses)
        raise InvalidModel(f"not a loadable torch.export archive ({type(e).__name__}: {e}). Save it with "
                           f"torch.export.save on torch {torch.__version__.split('+')[0]}.") from e
    if not isinstance(ep, torch.export.ExportedProgram):
        raise InvalidModel("the archive does not contain an ExportedProgram named 'model'.")
    _refuse_file_ops(ep)
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
