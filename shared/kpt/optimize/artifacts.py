"""The public loader for every artifact kpt produces: load(path, format) -> callable on torch tensors.

    from kpt.optimize.artifacts import load
    model = load("model.aoti.pt2", "ARTIFACT_FORMAT_AOTI_PACKAGE")   # or "aoti_package"
    out = model(input_ids, attention_mask)

The callable runs under torch.inference_mode and returns what the artifact returns (a tensor, or
a tuple/list/dict of them; onnx: a list). Exported programs are opened through the same guarded
loader as uploads. AOTI packages and TorchScript archives hold compiled code: load only artifacts
this service produced (their sha256 is in the job result).
"""

from __future__ import annotations

import json
import zipfile
from typing import Callable

import torch

from kpt.errors import InvalidArgument, InvalidModel, Unsupported
from kpt.optimize import inductor, loading


class Loaded:
    """A loaded artifact: call it like the model."""

    def __init__(self, fn: Callable, fmt: str, path: str) -> None:
        self._fn, self.format, self.path = fn, fmt, path

    def __call__(self, *args: torch.Tensor) -> object:
        with torch.inference_mode():
            return self._fn(*args)

    def __repr__(self) -> str:
        return f"Loaded({self.format}, {self.path!r})"


def _aoti(path: str) -> Callable:
    try:
        return inductor.load_package(path)
    except (RuntimeError, OSError) as e:
        raise InvalidModel(f"cannot load AOTInductor package {path}: {e}") from e


def _program(path: str) -> Callable:
    return loading.load_exported_program(path).module()


def _uses_ipex(path: str) -> bool:
    """True when a TorchScript archive's code calls intel_extension_for_pytorch ops (IPEX-frozen
    graphs hold prepacked-weight objects of class torch.classes.ipex_prepack.*)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(b"ipex" in z.read(n) for n in z.namelist() if "/code/" in n and n.endswith(".py"))
    except (zipfile.BadZipFile, OSError):
        return False  # torch.jit.load reports what is wrong with the file


def _torchscript(path: str) -> Callable:
    if _uses_ipex(path):
        try:  # registers the ipex ops and classes the archive refers to
            import intel_extension_for_pytorch  # noqa: F401
        except ImportError as e:
            raise Unsupported(f"TorchScript archive {path} was frozen with intel_extension_for_pytorch ops: load "
                              "it where IPEX 2.8 with torch 2.8 is installed (the intel service's environment)") from e
    try:
        return torch.jit.load(path, map_location="cpu").eval()
    except (RuntimeError, ValueError) as e:
        raise InvalidModel(f"cannot load TorchScript archive {path}: {e}") from e


def _onnx(path: str) -> Callable:
    from kpt.optimize import ort

    session = ort.session(path)
    return lambda *args: ort.run(session, args)


# An OpenVINO IR artifact is one zip (stored, not compressed) of the IR's two files plus the compile
# settings it was validated with: model.xml, model.bin, compile.json ({"INFERENCE_PRECISION_HINT": "f32"}).
OPENVINO_MEMBERS = ("model.xml", "model.bin", "compile.json")
OPENVINO_SETTINGS = {"INFERENCE_PRECISION_HINT": ("f32", "bf16"), "PERFORMANCE_HINT": ("LATENCY", "THROUGHPUT")}


def _openvino(path: str) -> Callable:
    try:
        import openvino as ov
    except ImportError as e:
        raise Unsupported("OpenVINO IR artifacts need the openvino package (pip install openvino)") from e
    try:
        with zipfile.ZipFile(path) as z:
            xml, weights, settings = (z.read(n) for n in OPENVINO_MEMBERS)
        config = {k: v for k, v in json.loads(settings).items() if v in OPENVINO_SETTINGS.get(k, ())}
        core = ov.Core()
        compiled = core.compile_model(core.read_model(xml, weights), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32", **config,
                                       "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, RuntimeError) as e:
        raise InvalidModel(f"cannot load OpenVINO IR artifact {path} (a zip of {', '.join(OPENVINO_MEMBERS)}): "
                           f"{type(e).__name__}: {str(e).strip()[:300]}") from e
    return lambda *args: [torch.from_numpy(o) for o in compiled([a.detach().cpu().numpy() for a in args]).to_tuple()]


def _stablehlo(path: str) -> Callable:
    try:  # the tpu service's artifact (a zip of program.pt2 + StableHLO) runs under torch_xla
        from kpt_tpu import artifact
    except ImportError as e:
        raise Unsupported(f"StableHLO artifact {path} runs under torch_xla: load it where the tpu service's "
                          "environment (services/tpu/.venv: torch 2.9 + torch_xla 2.9) is installed") from e
    return artifact.load(path)


LOADERS: dict[str, Callable[[str], Callable]] = {
    "ARTIFACT_FORMAT_AOTI_PACKAGE": _aoti,
    "ARTIFACT_FORMAT_EXPORTED_PROGRAM": _program,
    "ARTIFACT_FORMAT_TORCHSCRIPT": _torchscript,
    "ARTIFACT_FORMAT_ONNX": _onnx,
    "ARTIFACT_FORMAT_STABLEHLO": _stablehlo,
    "ARTIFACT_FORMAT_OPENVINO_IR": _openvino,
}


def format_name(fmt: str) -> str:
    """Accept the enum name or its short form ("onnx", "aoti_package", ...)."""
    name = fmt if fmt.startswith("ARTIFACT_FORMAT_") else "ARTIFACT_FORMAT_" + fmt.upper()
    if name not in LOADERS:
        if name in ("ARTIFACT_FORMAT_STABLEHLO", "ARTIFACT_FORMAT_OPENVINO_IR"):
            raise Unsupported(f"{name} artifacts are not produced or loaded by this package")
        raise InvalidArgument(f"unknown artifact format {fmt!r}; one of {sorted(LOADERS)}")
    return name


def load(path: str, format: str) -> Loaded:  # noqa: A002 - the contract's field name
    name = format_name(format)
    return Loaded(LOADERS[name](path), name, path)
