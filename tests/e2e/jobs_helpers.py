"""Shared pieces of the e2e job tests: models to upload, and the fresh-process artifact check."""

from __future__ import annotations

import io
import json
import os
import subprocess
import zipfile

from kpt import local

HERE = os.path.dirname(__file__)
# The bound each precision's artifact must meet in a fresh process (fp32 compiled code reorders sums).
BOUNDS = {"fp32": {"rel_l2": 1e-4}, "bf16": {"rel_l2": 3e-2}, "int8": {"sqnr_db": 20.0}}


def export_zoo(name: str, path: str) -> str:
    py = local.service_python("cpu")
    subprocess.run([py, "-c", f"from kpt.optimize import zoo; zoo.export({name!r}, {path!r})"], check=True,
                   capture_output=True)
    return path


def check_in_fresh_process(path: str, fmt: str, reference: str, input_spec: str, target: str = "cpu") -> dict:
    """Load the artifact in a new process of the target's own environment (tpu and intel artifacts need their
    stacks) and compare it with the reference on fresh inputs; the cpu environment where the target has none."""
    py = local.service_python(target) or local.service_python("cpu")
    out = subprocess.run([py, os.path.join(HERE, "check_artifact.py"), path, fmt, reference, input_spec],
                         check=True, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def within(metrics: dict, precision: str) -> bool:
    bound = BOUNDS[precision]
    if "rel_l2" in bound:
        return metrics["rel_l2"] <= bound["rel_l2"]
    return metrics["sqnr_db"] >= bound["sqnr_db"] and metrics["cosine"] >= 0.99


def corrupt_pt2(good: str, path: str) -> str:
    """A well-formed zip that claims to be a .pt2 but whose program is garbage."""
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(path, "w") as out:
        for name in z.namelist():
            data = z.read(name)
            if name.endswith("models/model.json"):
                data = b'{"this": "is not a graph"' + os.urandom(64)
            out.writestr(name, data)
    return path


def pickle_bomb_pt2(good: str, path: str, marker: str) -> str:
    """A real .pt2 whose pickled sample inputs would create `marker` if unpickled unsafely."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Payload(), protocol=2))
        z.writestr("archive/version", "3\n")
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(path, "w") as out:
        for name in z.namelist():
            data = z.read(name)
            if name.endswith("sample_inputs/model.pt"):
                data = inner.getvalue()
            out.writestr(name, data)
    return path
