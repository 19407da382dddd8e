"""The TPU artifact (ARTIFACT_FORMAT_STABLEHLO): one zip file holding

    manifest.json            format version, precision, shape buckets, torch/torch_xla versions
    program.pt2              the optimized model as a torch.export program with the dynamic dims
    stablehlo/functions/*    StableHLO bytecode (+ text) of the program at the example shape
    stablehlo/data/*         its weights as .npy (plain arrays: read with allow_pickle=False)
    stablehlo/constants/*

load(path) runs it the way this service measures it: program.pt2 on the XLA device through dynamo's
openxla backend, inputs padded to their bucket, so XLA compiles once per bucket and every later call
runs the cached executable (torch_xla's StableHLO runner, _run_stablehlo, compiles on every call:
fine for checking a portable file, not for serving). load_stablehlo(path) runs the StableHLO
program itself, for serving stacks without PyTorch and for round-trip checks.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from typing import Callable

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch.export.passes import move_to_device_pass

from kpt.errors import InvalidModel
from kpt.optimize import inputs as inp
from kpt.optimize import loading
from kpt_tpu import buckets, runtime

log = logging.getLogger(__name__)

FORMAT = "ARTIFACT_FORMAT_STABLEHLO"
MANIFEST_VERSION = 1


def _versions() -> dict[str, str]:
    import torch_xla

    return {"torch": torch.__version__, "torch_xla": torch_xla.__version__}


def write(module: torch.nn.Module, spec: inp.InputSpec, precision: str, path: str) -> dict:
    """Export `module` (CPU, eval) and write the artifact zip at path; returns its manifest."""
    import torch_xla.experimental.xla_quantized_matmul  # noqa: F401 - registers xla::quantized_matmul
    from torch_xla.stablehlo import StableHLOExportOptions, exported_program_to_stablehlo

    from kpt.optimize.passes import export_module

    runtime.setup()
    ep = export_module(module, spec)
    plan = buckets.plan(ep, spec)
    example = inp.generate(spec, seed=0)
    with torch.no_grad():
        static = torch.export.export(module, example)
    shlo = exported_program_to_stablehlo(static, StableHLOExportOptions(include_human_readable_text=True))
    manifest = {"version": MANIFEST_VERSION, "precision": precision, "buckets": plan.to_json(),
                "example_shapes": [list(x.shape) for x in example], "input_spec": inp.to_dict(spec),
                **_versions()}
    with tempfile.TemporaryDirectory() as tmp:
        torch.export.save(ep, os.path.join(tmp, "program.pt2"))
        shlo.save(os.path.join(tmp, "stablehlo"))
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            for root, _, files in os.walk(tmp):
                for name in sorted(files):
                    full = os.path.join(root, name)
                    z.write(full, os.path.relpath(full, tmp))
    return manifest


def _extract(path: str, into: str) -> dict:
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.startswith("/") or ".." in name.split("/"):
                    raise InvalidModel(f"artifact member {name!r} points outside the archive")
            z.extractall(into)
        with open(os.path.join(into, "manifest.json")) as f:
            manifest = json.load(f)
    except (zipfile.BadZipFile, OSError, KeyError, json.JSONDecodeError) as e:
        raise InvalidModel(f"{path} is not a kpt StableHLO artifact: {e}") from e
    if manifest.get("version") != MANIFEST_VERSION:
        raise InvalidModel(f"{path}: manifest version {manifest.get('version')} is not {MANIFEST_VERSION}")
    return manifest


class XlaProgram:
    """The artifact's program on the XLA device, compiled by dynamo's openxla backend per bucket.
    Host tensors in -> host tensors out; XLA tensors in -> XLA tensors out (for timing)."""

    xla = True

    def __init__(self, module: torch.nn.Module, manifest: dict) -> None:
        self.device = runtime.device()
        self.manifest = manifest
        self.plan = buckets.Plan.from_json(manifest["buckets"])
        self.module = module.to(self.device)
        self.fn = torch.compile(self.module, backend="openxla", dynamic=False)

    def __call__(self, *args: torch.Tensor) -> object:
        # dynamo cannot trace inference tensors (kpt's loaders call under inference_mode): plain no_grad
        with torch.inference_mode(False), torch.no_grad():
            return self._call(*[a.clone() if a.is_inference() else a for a in args])

    def _call(self, *args: torch.Tensor) -> object:
        on_host = args[0].device.type != "xla"
        host = [a.cpu() for a in args] if not on_host else list(args)
        x, sizes = buckets.pad_inputs(tuple(host), self.plan)
        if not on_host and all(a.shape == b.shape for a, b in zip(args, x, strict=True)):
            out = self.fn(*args)  # already on the device at bucket size
        else:
            out = self.fn(*[t.to(self.device) for t in x])
        if on_host:
            out = pytree.tree_map_only(torch.Tensor, lambda t: t.cpu(), out)
        return buckets.cut_outputs(out, sizes, self.plan)


def load(path: str) -> XlaProgram:
    import torch_xla.experimental.xla_quantized_matmul  # noqa: F401 - the int8 op the program may call

    runtime.setup()
    tmp = tempfile.mkdtemp(prefix="kpt-xla-")
    try:
        manifest = _extract(path, tmp)
        ep = loading.load_exported_program(os.path.join(tmp, "program.pt2"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # Constants the graph holds (e.g. a BERT attention mask built from a host tensor) and device= arguments
    # recorded at export move with the program: Module.to() alone leaves them on the host.
    ep = move_to_device_pass(ep, str(runtime.device()))
    return XlaProgram(_for_xla(ep.module()), manifest)


def _for_xla(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The exported graph, made device-neutral for the XLA device:
    - torch.export records dtype casts with _assert_tensor_metadata(device=cpu) checks: removed (they
      check the host device and have no other effect);
    - aten.view was recorded against host strides; XLA tensors have their own layout, so a view that was
      legal on the host may not be there: it becomes aten.reshape (a view where possible, else a copy;
      the same values, and an inference graph writes through no views)."""
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is torch.ops.aten._assert_tensor_metadata.default:
            gm.graph.erase_node(node)
        elif node.target is torch.ops.aten.view.default:
            node.target = torch.ops.aten.reshape.default
    gm.recompile()
    return gm


def _stablehlo_bundle(folder: str):
    """torch_xla's bundle layout, read without unpickling (its own loader passes allow_pickle=True)."""
    from torch_xla.stablehlo import StableHLOFunc, StableHLOModelBundle, stablehlo_obj_hook

    def arrays(sub: str) -> dict[str, np.ndarray]:
        d = os.path.join(folder, sub)
        return {n: np.load(os.path.join(d, n), allow_pickle=False) for n in sorted(os.listdir(d))} \
            if os.path.isdir(d) else {}

    funcs = []
    fdir = os.path.join(folder, "functions")
    for name in sorted(os.listdir(fdir)):
        if name.endswith(".meta"):
            stem = name[:-5]
            with open(os.path.join(fdir, name)) as f:
                meta = json.load(f, object_hook=stablehlo_obj_hook)
            with open(os.path.join(fdir, stem + ".bytecode"), "rb") as f:
                code = f.read()
            funcs.append(StableHLOFunc(meta, code, None))
    consts = arrays("constants")
    return StableHLOModelBundle(state_dict=arrays("data"), additional_constants=[consts[k] for k in sorted(consts, key=int)],
                                stablehlo_funcs=funcs)


def load_stablehlo(path: str) -> Callable:
    """The StableHLO program of the artifact (static, at the example shapes): host tensors in and out."""
    from torch_xla.stablehlo import StableHLOGraphModule

    runtime.setup()
    tmp = tempfile.mkdtemp(prefix="kpt-shlo-")
    try:
        _extract(path, tmp)
        graph = StableHLOGraphModule(_stablehlo_bundle(os.path.join(tmp, "stablehlo")))
    except (OSError, ValueError, KeyError) as e:
        raise InvalidModel(f"{path}: cannot read its StableHLO program: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    dev = runtime.device()

    def run(*args: torch.Tensor) -> object:
        out = graph(*[a.to(dev) for a in args])
        return pytree.tree_map_only(torch.Tensor, lambda t: t.cpu(), out)

    return run
