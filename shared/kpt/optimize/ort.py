"""onnxruntime sessions that take and return torch tensors."""

from __future__ import annotations

from typing import Sequence

import torch

from kpt.errors import InvalidInput, InvalidModel, Unsupported


def errors() -> tuple[type[Exception], ...]:
    """onnxruntime's exception types (they derive from Exception directly, not RuntimeError)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as st

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
             "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")
    return tuple(getattr(st, n) for n in names if hasattr(st, n))


def session(path: str, threads: int = 0, optimize: bool = True):
    """A CPU session. Spin-waiting is off: on a small host onnxruntime's spinning pool would steal
    the cores torch needs when variants are measured interleaved (measured: eager MiniLM went from
    22 ms to 600 ms right after an onnxruntime run with spinning on)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    except errors() as e:
        raise InvalidModel(f"onnxruntime cannot load {path}: {type(e).__name__}: {e}") from e


def run(sess, args: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    inputs = sess.get_inputs()
    if len(inputs) != len(args):
        raise InvalidInput(f"the ONNX model takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}), "
                           f"got {len(args)}")
    # numpy has no bfloat16: onnxruntime's Python API can neither take nor return such tensors
    bf16 = [i.name for i in list(inputs) + list(sess.get_outputs()) if i.type == "tensor(bfloat16)"]
    if bf16 or any(a.dtype == torch.bfloat16 for a in args):
        raise Unsupported(f"onnxruntime's Python API cannot pass bfloat16 tensors ({', '.join(bf16) or 'inputs'}): "
                          "use a model with float32 or float16 inputs and outputs")
    feeds = {i.name: a.detach().cpu().contiguous().numpy() for i, a in zip(inputs, args, strict=True)}
    try:
        outs = sess.run(None, feeds)
    except errors() as e:
        raise InvalidInput(f"onnxruntime rejects the inputs {[tuple(a.shape) for a in args]}: {e}") from e
    return [torch.from_numpy(o) for o in outs]
