"""The model of one job: its eager fp32 reference, its ExportedProgram and its InputSpec.

Zoo models carry their own spec. An uploaded ExportedProgram without a spec gets one derived
from the program (dims and ranges from its placeholders, example sizes and integer value ranges
from the example inputs torch.export.save recorded); a given spec is checked against the program
and a mismatch names the tensor and the shape the model expects.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import sympy
import torch
from torch.utils._sympy.numbers import int_oo

from kpt.errors import InvalidArgument, InvalidInput, InvalidModel, Unsupported
from kpt.optimize import inputs as inp
from kpt.optimize import loading, zoo
from kpt.optimize.passes import export_module

UNBOUNDED = sys.maxsize - 1  # torch.export's largest dim bound


@dataclass
class Source:
    name: str
    digest: str  # sha256 of the upload, or "zoo:<name>"
    format: str  # ModelFormat enum name
    spec: inp.InputSpec
    module: torch.nn.Module | None = None  # eager fp32 reference (None for ONNX uploads)
    program: torch.export.ExportedProgram | None = None
    onnx_path: str | None = None

    def exported(self) -> torch.export.ExportedProgram:
        if self.program is None:
            if self.module is None:
                raise Unsupported("this source has no torch model to export")
            self.program = export_module(self.module, self.spec)
        return self.program


def _user_placeholders(ep: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    names = set(ep.graph_signature.user_inputs)
    return [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in names]


def signature(ep: torch.export.ExportedProgram) -> list[inp.TensorSpec]:
    """What the program accepts: dtype and dims (static, or dynamic with the program's range).
    Integer inputs come without a value range (low=high=0); examples fill it in."""
    in_spec = ep.call_spec.in_spec
    if in_spec is not None and (in_spec.child(1) if hasattr(in_spec, "child")  # torch < 2.10: children_specs
                                else in_spec.children_specs[1]).num_leaves:
        raise Unsupported("the exported program takes keyword inputs; export it with positional inputs only "
                          "(torch.export.export(model, args) with kwargs empty)")
    out = []
    for i, node in enumerate(_user_placeholders(ep)):
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise Unsupported(f"input #{i} ({node.name}) is a {type(val).__name__}, not a tensor; only tensor inputs "
                              "are supported")
        dims = []
        for axis, s in enumerate(val.shape):
            if isinstance(s, int):
                dims.append(inp.Dim(s))
                continue
            expr = s.node.expr
            if not isinstance(expr, sympy.Symbol) or expr not in ep.range_constraints:
                raise InvalidInput(f"input {node.name} dim {axis} is the expression {expr}; give the input specs "
                                   "explicitly (--input)")
            vr = ep.range_constraints[expr]
            hi = UNBOUNDED if vr.upper == int_oo else int(vr.upper)
            dims.append(inp.Dim(int(vr.lower), int(vr.lower), hi, str(expr)))
        out.append((node.name, inp.dtype_name(val.dtype), dims))
    return [_spec_unchecked(n, dt, dims) for n, dt, dims in out]


def _spec_unchecked(name: str, dtype: str, dims: list[inp.Dim]) -> inp.TensorSpec:
    t = object.__new__(inp.TensorSpec)  # integer range unknown yet: skip TensorSpec's range check
    for k, v in (("name", name), ("dtype", dtype), ("dims", tuple(dims)), ("low", 0), ("high", 0)):
        object.__setattr__(t, k, v)
    return t


def derive_spec(ep: torch.export.ExportedProgram) -> inp.InputSpec:
    sig = signature(ep)
    examples = list(ep.example_inputs[0]) if ep.example_inputs else []
    if len(examples) != len(sig):
        examples = []
    tensors = []
    for i, t in enumerate(sig):
        ex = examples[i] if examples else None
        dims = tuple(inp.Dim(ex.shape[a] if ex is not None else d.size, d.min, d.max, d.name) if d.dynamic else d
                     for a, d in enumerate(t.dims))
        low = high = 0
        if inp.DTYPES[t.dtype].is_floating_point is False and inp.DTYPES[t.dtype] != torch.bool:
            if ex is None or ex.numel() == 0:
                raise InvalidInput(f"integer input {t.name!r} has no recorded example to take its value range from; "
                                   "give input specs with low/high (e.g. token ids low=0 high=vocab_size)")
            low, high = int(ex.min()), int(ex.max()) + 1
        try:
            tensors.append(inp.TensorSpec(t.name, t.dtype, dims, low, high))
        except ValueError as e:
            raise InvalidInput(f"cannot derive an input spec from the program: {e}; give input specs") from e
    return inp.InputSpec(tuple(tensors))


def _expected(t: inp.TensorSpec) -> str:
    return f"{t.dtype}[{', '.join(d.describe() for d in t.dims)}]"


def check_spec(spec: inp.InputSpec, ep: torch.export.ExportedProgram) -> None:
    """InvalidInput naming the tensor and the expected shape where spec and program disagree."""
    sig = signature(ep)
    if len(spec.tensors) != len(sig):
        raise InvalidInput(f"the model takes {len(sig)} inputs ({'; '.join(t.name + ': ' + _expected(t) for t in sig)}), "
                           f"the spec gives {len(spec.tensors)}")
    for i, (got, want) in enumerate(zip(spec.tensors, sig, strict=True)):
        where = f"input #{i} {got.name!r} (model: {want.name}: {_expected(want)})"
        if got.dtype != want.dtype and inp.DTYPES[got.dtype] != inp.DTYPES[want.dtype]:
            raise InvalidInput(f"{where}: dtype {got.dtype} given, the model expects {want.dtype}")
        if len(got.dims) != len(want.dims):
            raise InvalidInput(f"{where}: {len(got.dims)} dims given {_expected(got)}, the model expects "
                               f"{len(want.dims)}")
        for axis, (g, w) in enumerate(zip(got.dims, want.dims, strict=True)):
            lo, hi = (g.min, g.max) if g.dynamic else (g.size, g.size)
            if not w.dynamic and (lo, hi) != (w.size, w.size):
                raise InvalidInput(f"{where}: dim {axis} is {g.describe()} in the spec, the model expects exactly "
                                   f"{w.size}")
            if w.dynamic and not (w.min <= lo and hi <= w.max):
                raise InvalidInput(f"{where}: dim {axis} range [{lo}, {hi}] in the spec lies outside the model's "
                                   f"[{w.min}, {w.max}]")


def from_zoo(name: str, spec: inp.InputSpec | None, device: str = "cpu") -> Source:
    module, default_spec = zoo.build(name, device)
    return Source(name, f"zoo:{name}", "MODEL_FORMAT_ZOO", spec or default_spec, module=module)


def from_exported_program(path: str, digest: str, name: str, spec: inp.InputSpec | None,
                          device: str = "cpu") -> Source:
    ep = loading.load_exported_program(path)
    try:
        if spec is None:
            spec = derive_spec(ep)
        else:
            check_spec(spec, ep)
        module = ep.module().to(device)
    except torch.OutOfMemoryError:  # the device is full: not the program's fault (the job's OutOfMemory)
        raise
    except (AssertionError, AttributeError, LookupError, TypeError, ValueError, RuntimeError) as e:
        # a program torch deserialized but cannot describe or unlift (its call spec, module call graph, guards)
        raise InvalidModel(f"the exported program is malformed ({type(e).__name__}: "
                           f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}); re-save it with "
                           "torch.export.save.") from e
    return Source(name, digest, "MODEL_FORMAT_EXPORTED_PROGRAM", spec, module=module, program=ep)


_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
                11: "float64", 16: "bfloat16"}


def from_onnx(path: str, digest: str, name: str, spec: inp.InputSpec | None) -> Source:
    """An ONNX upload: checked, its inputs read from the graph (benchmarked with onnxruntime)."""
    model = loading.check_onnx(path)
    weights = {t.name for t in model.graph.initializer}
    sig = []
    for v in model.graph.input:
        if v.name in weights:
            continue
        tt = v.type.tensor_type
        dtype = _ONNX_DTYPES.get(tt.elem_type)
        if dtype is None:
            raise Unsupported(f"ONNX input {v.name!r} has element type {tt.elem_type}, which is not supported")
        sig.append((v.name, dtype, [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                                    for d in tt.shape.dim]))
    if spec is None:
        symbolic = [f"{n}[{', '.join(map(str, dims))}]" for n, _, dims in sig if any(isinstance(d, str) for d in dims)]
        ints = [n for n, dt, _ in sig if not inp.DTYPES[dt].is_floating_point and dt != "bool"]
        if symbolic or ints:
            raise InvalidInput("give input specs for this ONNX model: "
                               + (f"symbolic dims in {', '.join(symbolic)}" if symbolic else "")
                               + (f"; value ranges (low/high) for integer inputs {', '.join(ints)}" if ints else ""))
        spec = inp.InputSpec(tuple(inp.TensorSpec(n, dt, tuple(inp.Dim(d) for d in dims)) for n, dt, dims in sig))
    if len(spec.tensors) != len(sig):
        raise InvalidInput(f"the ONNX model takes {len(sig)} inputs ({', '.join(n for n, _, _ in sig)}), "
                           f"the spec gives {len(spec.tensors)}")
    for (n, dt, dims), t in zip(sig, spec.tensors, strict=True):
        want = f"{dt}[{', '.join(map(str, dims))}]"
        if inp.DTYPES[t.dtype] != inp.DTYPES[dt] or len(t.dims) != len(dims) or any(
                isinstance(w, int) and (g.dynamic or g.size != w) for g, w in zip(t.dims, dims, strict=True)):
            raise InvalidInput(f"input {n!r}: the ONNX model expects {want}, the spec gives {t.describe()}")
    return Source(name, digest, "MODEL_FORMAT_ONNX", spec, onnx_path=path)


def open_source(fmt: str, name: str, digest: str, model_path: str | None, spec: inp.InputSpec | None,
                device: str = "cpu") -> Source:
    """The job's model from its ModelRef fields: a zoo name, or the uploaded file at model_path."""
    if fmt == "MODEL_FORMAT_ZOO" or (fmt == "MODEL_FORMAT_UNSPECIFIED" and model_path is None):
        if not name:
            raise InvalidArgument("a zoo model needs model.name (one of " + ", ".join(zoo.MODELS) + ")")
        return from_zoo(name, spec, device)
    if model_path is None or not os.path.isfile(model_path):
        raise InvalidArgument(f"{fmt} needs the uploaded model file; none was given to the job")
    if os.path.getsize(model_path) == 0:
        raise InvalidModel("the uploaded model file is empty; upload it again")
    if fmt == "MODEL_FORMAT_UNSPECIFIED":
        with open(model_path, "rb") as f:
            fmt = "MODEL_FORMAT_EXPORTED_PROGRAM" if f.read(4) == b"PK\x03\x04" else "MODEL_FORMAT_ONNX"
    if fmt == "MODEL_FORMAT_EXPORTED_PROGRAM":
        return from_exported_program(model_path, digest, name, spec, device)
    if fmt == "MODEL_FORMAT_ONNX":
        return from_onnx(model_path, digest, name, spec)
    raise InvalidArgument(f"unknown model format {fmt!r}")


def open_for_job(req, model_path: str | None, device: str, emit, opener=None, onto: str = "",
                 ready_note: str = "") -> Source:
    """The job's model (req: a kpt.optimize.jobspec.JobRequest), with the two "load" progress events every
    service sends around it; opener replaces open_source (the GPU services add their own models)."""
    emit("load", f"loading {req.model_name or req.model_format}{onto}", 0.01)
    src = (opener or open_source)(req.model_format, req.model_name, req.model_sha256, model_path, req.inputs, device)
    emit("load", f"model ready; inputs {src.spec.describe()}{ready_note}", 0.05)
    return src
