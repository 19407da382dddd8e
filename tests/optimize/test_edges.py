"""Hostile and edge-case inputs to the optimize pipeline: each ends as a typed error, nothing runs, the gate holds."""

from __future__ import annotations

import json
import os
import zipfile

import pytest
import torch

from kpt.errors import InvalidInput, InvalidModel, UnsafeModel
from kpt.optimize import accuracy, loading, source
from kpt.optimize import inputs as inp


def rewrite_program(src: str, dst: str, edit, member: str = "models/model.json") -> None:
    """Copy a .pt2, passing the JSON member ending in `member` through edit(obj) (edit may return a new obj)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith(member):
                obj = json.loads(data)
                new = edit(obj)
                data = json.dumps(obj if new is None else new).encode()
            zout.writestr(item.filename, data)


def graph(m: dict) -> dict:
    return m["graph_module"]["graph"]


def run_uploaded(path: str) -> None:
    """What a job does with an upload: open it, then run the eager reference on spec inputs."""
    src = source.from_exported_program(path, "digest", "upload", None)
    accuracy.reference_outputs(src.module, src.spec, 1, seed=1)


def test_symbolic_expression_strings_in_the_archive_never_run(mlp_pt2, tmp_path):
    """torch's deserializer hands expr_str to sympy.sympify, which evals it."""
    marker = tmp_path / "pwned"
    bad = str(tmp_path / "evil.pt2")

    def edit(m):
        graph(m)["tensor_values"]["linear"]["sizes"][0]["as_expr"]["expr_str"] = (
            f"__import__('os').system('touch {marker}')")

    rewrite_program(mlp_pt2, bad, edit)
    with pytest.raises(UnsafeModel, match="expression"):
        loading.load_exported_program(bad)
    assert not marker.exists()


def test_guard_code_in_the_archive_never_runs(mlp_pt2, tmp_path):
    """ExportedProgram.module() exec()s guards_code into a function every call runs."""
    marker = tmp_path / "pwned"
    bad = str(tmp_path / "evil.pt2")
    rewrite_program(mlp_pt2, bad, lambda m: m.update(guards_code=[f"__import__('os').system('touch {marker}') == 0"]))
    with pytest.raises(UnsafeModel, match="guard"):
        run_uploaded(bad)
    assert not marker.exists()


def test_value_names_are_not_spliced_into_generated_code(mlp_pt2, tmp_path):
    """FX writes placeholder targets verbatim into `def forward(self, ...)`, which it exec()s."""
    marker = tmp_path / "pwned"
    evil = f"input=__import__('os').system('touch {marker}')"
    bad = str(tmp_path / "evil.pt2")

    def edit(m):
        text = json.dumps(m).replace('"as_tensor": {"name": "input"}', '"as_tensor": ' + json.dumps({"name": evil}))
        m = json.loads(text)
        graph(m)["tensor_values"][evil] = graph(m)["tensor_values"].pop("input")
        return m

    rewrite_program(mlp_pt2, bad, edit)
    with pytest.raises(UnsafeModel, match="name"):
        run_uploaded(bad)
    assert not marker.exists()


def file_op_nodes(path: str) -> list[dict]:
    meta = {"as_tensor": {"name": "ff"}}
    return [{"target": "torch.ops.aten.from_file.default", "inputs": [
                {"name": "filename", "arg": {"as_string": path}, "kind": 1},
                {"name": "shared", "arg": {"as_bool": True}, "kind": 1},
                {"name": "size", "arg": {"as_int": 4}, "kind": 1}],
             "outputs": [meta], "metadata": {}},
            {"target": "torch.ops.aten.fill_.Scalar", "inputs": [
                {"name": "self", "arg": {"as_tensor": {"name": "ff"}}, "kind": 1},
                {"name": "value", "arg": {"as_float": 0.0}, "kind": 1}],
             "outputs": [{"as_tensor": {"name": "ff2"}}], "metadata": {}}]


def test_graph_ops_that_open_files_are_refused(mlp_pt2, tmp_path):
    """aten.from_file(shared=True) + fill_ would overwrite any file the service can write."""
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"A" * 16)
    meta = {"dtype": 7, "sizes": [{"as_int": 4}], "requires_grad": False, "device": {"type": "cpu", "index": None},
            "strides": [{"as_int": 1}], "storage_offset": {"as_int": 0}, "layout": 7}
    bad = str(tmp_path / "evil.pt2")

    def edit(m):
        graph(m)["nodes"][0:0] = file_op_nodes(str(victim))
        graph(m)["tensor_values"].update(ff=meta, ff2=meta)

    rewrite_program(mlp_pt2, bad, edit)
    with pytest.raises(UnsafeModel, match="from_file"):
        run_uploaded(bad)
    assert victim.read_bytes() == b"A" * 16


def test_a_non_operator_callable_in_the_graph_is_a_typed_error(mlp_pt2, tmp_path):
    marker = tmp_path / "pwned"
    bad = str(tmp_path / "evil.pt2")
    rewrite_program(mlp_pt2, bad, lambda m: graph(m)["nodes"].insert(0, {
        "target": "torch.os.system", "inputs": [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}],
        "outputs": [{"as_none": True}], "metadata": {}}))
    with pytest.raises(InvalidModel):
        loading.load_exported_program(bad)
    assert not marker.exists()


@pytest.mark.parametrize("member,edit", [
    ("models/model.json", lambda m: graph(m).update(tensor_values=[])),  # AttributeError inside torch
    ("models/model.json", lambda m: m.update(range_constraints=[])),
    ("models/model.json", lambda m: m.update(guards_code=5)),  # TypeError from ExportedProgram.module()
    ("models/model.json", lambda m: m["graph_module"]["module_call_graph"][0].update(fqn="0")),  # in call_spec
])
def test_malformed_archives_are_invalid_model(mlp_pt2, tmp_path, member, edit):
    bad = str(tmp_path / "bad.pt2")
    rewrite_program(mlp_pt2, bad, edit, member)
    with pytest.raises(InvalidModel):
        source.from_exported_program(bad, "digest", "upload", None)


def test_a_program_with_real_shape_guards_still_loads_and_runs(tmp_path):
    class Halves(torch.nn.Module):
        def forward(self, x, y):
            if x.shape[0] > 4:
                return x.reshape(-1, 2).sum(0) + y[: x.shape[0] // 2].sum()
            return x.sum() + y.sum()

    auto = torch.export.Dim.AUTO
    ep = torch.export.export(Halves(), (torch.randn(8), torch.randn(10)), dynamic_shapes=({0: auto}, {0: auto}))
    assert ep._guards_code  # the case under test: guards recorded in the archive
    path = str(tmp_path / "halves.pt2")
    torch.export.save(ep, path)
    loaded = loading.load_exported_program(path)
    out = loaded.module()(torch.ones(8), torch.ones(10))
    assert torch.allclose(out, torch.tensor([8.0, 8.0]))


def test_overflowing_norms_cannot_hide_a_wrong_sample():
    """float64 outputs past 1e154 overflow the squared norms: NaN metrics, which max()/min() then dropped."""
    small = (torch.tensor([1.0]),)
    big = (torch.tensor([2.0]),)
    refs = [(small, torch.tensor([1.0, 2.0], dtype=torch.float64)),
            (big, torch.tensor([1e200, 1e200], dtype=torch.float64))]

    def candidate(x):  # right on the first sample, 50% off on the second
        if float(x[0]) == 1.0:
            return torch.tensor([1.0, 2.0], dtype=torch.float64)
        return torch.tensor([1e200, 1.5e200], dtype=torch.float64)

    m = accuracy.compare(candidate(*big), refs[1][1])
    assert m.rel_l2 == pytest.approx(0.5 / 2 ** 0.5) and m.cosine < 0.99
    report = accuracy.check(candidate, refs, accuracy.DEFAULTS["fp32"])
    assert not report.passed
    assert accuracy.compare(refs[1][1], refs[1][1]) == accuracy.Metrics(0.0, 0.0, 1.0, float("inf"))


def test_an_input_spec_too_large_to_allocate_is_invalid_input():
    spec = inp.parse({"tensors": [{"name": "x", "dtype": "float32",
                                   "dims": [{"size": str(10 ** 11)}, {"size": "64"}]}]})
    src = source.from_zoo("mlp", spec)
    with pytest.raises(InvalidInput, match="x"):
        accuracy.reference_outputs(src.module, spec, 1, seed=1)
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") is None


def test_a_compressed_member_inflating_far_past_its_size_is_refused_before_it_inflates(mlp_pt2, tmp_path):
    """A zip bomb: a deflated member declaring 80 MiB in 80 KB. torch.export.save stores members uncompressed,
    so the scan refuses it from the sizes alone, before testzip() or a read would inflate it."""
    bomb = str(tmp_path / "bomb.pt2")
    with zipfile.ZipFile(mlp_pt2) as src, zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info.filename))
        prefix = src.namelist()[0].split("/", 1)[0]
        member = zipfile.ZipInfo(f"{prefix}/extra/zeros.bin")
        member.compress_type = zipfile.ZIP_DEFLATED
        with dst.open(member, "w", force_zip64=True) as f:
            for _ in range(80):
                f.write(bytes(1 << 20))
    with pytest.raises(UnsafeModel, match="inflates"):
        loading.scan_pt2(bomb)
