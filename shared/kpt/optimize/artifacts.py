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

from typing import Callable

import torch

from kpt.errors import InvalidArgument, InvalidModel, Unsupported
from kpt.optimize import loading


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
        return torch._inductor.aoti_load_package(path)
    except (RuntimeError, OSError) as e:
        raise InvalidModel(f"cannot load AOTInductor package {path}: {e}") from e


def _program(path: str) -> Callable:
    return loading.load_exported_program(path).module()


def _torchscript(path: str) -> Callable:
    try:
        return torch.jit.load(path, map_location="cpu").eval()
    except (RuntimeError, ValueError) as e:
        raise InvalidModel(f"cannot load TorchScript archive {path}: {e}") from e


def _onnx(path: str) -> Callable:
    from kpt.optimize import ort

    session = ort.session(path)
    return lambda *args: ort.run(session, args)


LOADERS: dict[str, Callable[[str], Callable]] = {
    "ARTIFACT_FORMAT_AOTI_PACKAGE": _aoti,
    "ARTIFACT_FORMAT_EXPORTED_PROGRAM": _program,
    "ARTIFACT_FORMAT_TORCHSCRIPT": _torchscript,
    "ARTIFACT_FORMAT_ONNX": _onnx,
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
