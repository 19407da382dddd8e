"""kpt_intel.jobs.run end to end in the intel environment: O1/O2/O3 on zoo mlp and cnn, the IPEX-vs-OpenVINO
race, exports, a benchmark, typed errors. Every artifact is loaded back in a fresh process."""

import json
import zipfile

import pytest

from kpt.errors import Unsupported
from kpt.optimize import artifacts, env
from tests.e2e import jobs_helpers as h
from tests.intel.conftest import REPO, fresh_check, run_intel

pytestmark = pytest.mark.timeout(600)

META_KEYS = {"source_digest", "target", "device", "level", "passes", "precision", "max_abs_err", "input_spec",
             "toolchain.torch", "toolchain.intel_extension_for_pytorch", "toolchain.openvino", "p50_ms", "speedup"}
NATIVE_BF16 = bool({"avx512_bf16", "amx_bf16"} & env.cpu_info().flags)


def rows(result: dict) -> dict[str, dict]:
    return {r["variant"]: r for r in result["variants"]}


def passes(result: dict) -> dict[str, dict]:
    return {p["name"]: p for p in result["passes"] if p["level"] == result["achieved_level"]}


def ov_should_win(ipex_row: dict, ov_row: dict) -> bool:
    """The race's rule: OpenVINO is kept only when it passes and beats IPEX on both p50 and min."""
    return ov_row["accuracy"]["passed"] and (
        not ipex_row["accuracy"]["passed"]
        or (ov_row["latency"]["p50_ms"] < ipex_row["latency"]["p50_ms"]
            and ov_row["latency"]["min_ms"] < ipex_row["latency"]["min_ms"]))


def check_race(result: dict, level: str) -> str:
    """Both backends were checked and timed; the kept artifact is the one the rule picks. Returns its format."""
    r = rows(result)
    ipex_row, ov_row = r[f"ipex_{level}"], r[f"openvino_{level}"]
    for row in (ipex_row, ov_row):
        assert row["latency"]["p50_ms"] > 0 and row["latency"]["iterations"] >= 15, row
        assert "accuracy" in row and row["accuracy"]["samples"] == 2
    race = passes(result)["openvino_race"]
    assert race["applied"] and f"ipex_{level}: p50" in race["reason"] and f"openvino_{level}: p50" in race["reason"]
    fmt = result["artifacts"][0]["format"]
    if ov_should_win(ipex_row, ov_row):
        assert fmt == "ARTIFACT_FORMAT_OPENVINO_IR" and race["reason"].startswith("OpenVINO kept")
    else:
        assert fmt == "ARTIFACT_FORMAT_TORCHSCRIPT" and race["reason"].startswith("IPEX kept")
    return fmt


@pytest.fixture(scope="module")
def fresh(outcomes, tmp_path_factory) -> dict[str, dict]:
    """Every optimize/export artifact of the session, loaded and checked in one new intel process."""
    items, keys = [], []
    for name in ("o1_mlp", "o1_cnn", "o2_cnn", "o2_mlp_fp32", "o3_cnn", "o3_mlp", "o1_upload_mlp", "o3_upload_mlp",
                 "export_mlp"):
        model = "cnn" if "cnn" in name else "mlp"
        for art in outcomes.result(name)["artifacts"]:
            path, _ = outcomes.artifact(name, art["format"])
            items.append((path, art["format"], model, art["metadata"]["input_spec"]))
            keys.append(f"{name}:{art['format']}")
    metrics = fresh_check(items, tmp_path_factory.mktemp("fresh"))
    return dict(zip(keys, metrics, strict=True))


@pytest.mark.parametrize("name", ["o1_mlp", "o1_cnn"])
def test_o1_ipex_fp32_races_openvino(outcomes, fresh, name):
    result = outcomes.result(name)
    assert result["achieved_level"] == "LEVEL_O1" and not result.get("fallback_reason")
    jit = passes(result)["ipex_jit"]
    swapped = "_IPEXConv2d, _IPEXLinear" if "cnn" in name else "_IPEXLinear"
    assert jit["applied"] and f"ipex.optimize(fp32; {swapped})" in jit["reason"]
    fmt = check_race(result, "O1")
    meta = result["artifacts"][0]["metadata"]
    assert META_KEYS <= set(meta) and meta["precision"] == "fp32" and meta["target"] == "TARGET_INTEL"
    assert {"kpt_O0", "kpt_O1"} <= set(rows(result)) and result["accuracy"]["passed"]
    m = fresh[f"{name}:{fmt}"]
    assert "error" not in m and m["rel_l2"] <= 1e-5 and m["cosine"] >= 0.99999, m


def test_o1_artifact_passes_the_contract_check(outcomes):
    """What tests/contract does with an O1 mlp artifact, run with the intel environment's python."""
    path, art = outcomes.artifact("o1_mlp")
    out = run_intel([str(REPO / "tests" / "e2e" / "check_artifact.py"), path, art["format"], "zoo:mlp",
                     art["metadata"]["input_spec"]], timeout=180)
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert h.within(metrics, art["metadata"]["precision"]), metrics


def test_o2_bf16_where_the_isa_has_it(outcomes, fresh):
    result = outcomes.result("o2_cnn")
    gate = passes(result)["bf16_native"]
    fmt = check_race(result, "O2")
    m = fresh[f"o2_cnn:{fmt}"]
    if NATIVE_BF16:
        assert gate["applied"] and "native bf16" in gate["reason"]
        assert result["artifacts"][0]["metadata"]["precision"] == "bf16"
        assert 1e-5 < m["rel_l2"] <= 3e-2, m  # bf16 arithmetic really ran, within bf16's bound
    else:
        assert not gate["applied"] and "lacks avx512_bf16 and amx_bf16" in gate["reason"]
        assert result["artifacts"][0]["metadata"]["precision"] == "fp32" and m["rel_l2"] <= 1e-5


def test_o2_fp32_job_skips_bf16_with_the_reason(outcomes, fresh):
    result = outcomes.result("o2_mlp_fp32")
    gate = passes(result)["bf16_native"]
    assert not gate["applied"] and gate["reason"] == "the job's precision excludes bf16"
    fmt = check_race(result, "O2")
    assert result["artifacts"][0]["metadata"]["precision"] == "fp32"
    assert fresh[f"o2_mlp_fp32:{fmt}"]["rel_l2"] <= 1e-5


@pytest.mark.parametrize("name", ["o3_mlp", "o3_cnn"])
def test_o3_ipex_static_int8_judged_by_sqnr(outcomes, fresh, name):
    result = outcomes.result(name)
    assert result["achieved_level"] == "LEVEL_O3", result.get("fallback_reason")
    p = passes(result)
    assert p["ipex_static_int8"]["applied"] and "8 calibration batches" in p["ipex_static_int8"]["reason"]
    assert not p["openvino_race"]["applied"] and "NNCF" in p["openvino_race"]["reason"]
    path, art = outcomes.artifact(name)
    assert art["format"] == "ARTIFACT_FORMAT_TORCHSCRIPT" and art["metadata"]["precision"] == "int8"
    with zipfile.ZipFile(path) as z:
        code = b"".join(z.read(n) for n in z.namelist() if "/code/" in n and n.endswith(".py"))
    assert b"quantize_per_tensor" in code or b"quantized" in code  # the frozen graph holds int8 ops
    assert result["accuracy"]["sqnr_db"] >= 20.0 and result["accuracy"]["passed"]
    m = fresh[f"{name}:ARTIFACT_FORMAT_TORCHSCRIPT"]
    assert m["sqnr_db"] >= 20.0 and m["cosine"] >= 0.99, m
    assert m["rel_l2"] > 1e-4, m  # quantization error is there: this is not the fp32 graph


@pytest.mark.parametrize(("name", "precision"), [("o1_upload_mlp", "fp32"), ("o3_upload_mlp", "int8")])
def test_uploaded_program_linears_are_lifted_for_ipex(outcomes, fresh, name, precision):
    """An uploaded .pt2 is a graph of aten.linear calls: they become nn.Linear so IPEX can prepack/quantize them."""
    result = outcomes.result(name)
    level = result["achieved_level"]
    assert level == ("LEVEL_O1" if precision == "fp32" else "LEVEL_O3"), result.get("fallback_reason")
    path, art = outcomes.artifact(name)
    meta = art["metadata"]
    assert meta["precision"] == precision and meta["source_digest"] == "ab" * 32
    p = passes(result)
    if precision == "fp32":
        assert "_IPEXLinear" in p["ipex_jit"]["reason"]
        check_race(result, "O1")
        assert fresh[f"{name}:{art['format']}"]["rel_l2"] <= 1e-5
    else:
        assert "3 linear/conv layer(s) to int8" in p["ipex_static_int8"]["reason"]
        m = fresh[f"{name}:{art['format']}"]
        assert m["sqnr_db"] >= 20.0 and m["rel_l2"] > 1e-4, m


def test_upload_saved_by_a_newer_torch_is_rewritten_for_torch_28(outcomes, tmp_path):
    """torch >= 2.9 saves each weight as its own file; kpt_intel.upload rewrites the archive for torch 2.8."""
    if "o1_upload_newer_torch" not in outcomes.data:
        pytest.skip("services/cpu/.venv (torch 2.13, which writes the newer .pt2 layout) is not built")
    result = outcomes.result("o1_upload_newer_torch")
    assert result["achieved_level"] == "LEVEL_O1", result.get("fallback_reason")
    path, art = outcomes.artifact("o1_upload_newer_torch")
    assert art["metadata"]["source_digest"] == "cd" * 32
    (m,) = fresh_check([(path, art["format"], "mlp", art["metadata"]["input_spec"])], tmp_path)
    assert m["rel_l2"] <= 1e-5, m  # the rewritten program computes what the zoo model computes


def test_race_rule_keeps_the_faster_passing_backend():
    out = run_intel(["-c", r"""
import json
from kpt_intel.passes import openvino_wins
def row(p50, mn, ok): return {"latency": {"p50_ms": p50, "min_ms": mn}, "accuracy": {"passed": ok}}
print(json.dumps([openvino_wins(row(2, 1, True), row(1, 0.5, True)), openvino_wins(row(1, 0.5, True), row(2, 1, True)),
                  openvino_wins(row(2, 1, True), row(1, 0.5, False)), openvino_wins(row(2, 1, False), row(3, 2, True)),
                  openvino_wins(row(2, 0.5, True), row(1, 0.6, True)), openvino_wins(row(2, 1, True), {"error": "x"})]))
"""], timeout=90)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, False, False, True, False, False]


def test_bf16_gate_skips_with_the_reason_on_a_cpu_without_native_bf16(tmp_path):
    """The O2 gate run through the pass registry on a cpuinfo without avx512_bf16/amx_bf16 (this host has them)."""
    flags = sorted(env.cpu_info().flags - {"avx512_bf16", "amx_bf16"})
    fake = tmp_path / "cpuinfo"
    fake.write_text(f"model name\t: Test CPU\nflags\t\t: {' '.join(flags)}\n")
    out = run_intel(["-c", r"""
import json, sys
from kpt.optimize import passes, zoo
from kpt_intel.passes import NativeBF16
m, spec = zoo.build("mlp")
rows = []
for path in sys.argv[1:]:
    work = passes.Work(m, spec, "cpu", sys.argv[1] + ".work")
    row = passes.apply(NativeBF16(cpuinfo_path=path), work, "LEVEL_O2")
    rows.append([row["applied"], row["reason"], work.precision])
print(json.dumps(rows))
""", str(fake), "/proc/cpuinfo"], timeout=90)
    (applied, reason, precision), native = json.loads(out.stdout.strip().splitlines()[-1])
    assert not applied and precision == "fp32" and "lacks avx512_bf16 and amx_bf16" in reason
    assert native[0] == NATIVE_BF16 and native[2] == ("bf16" if NATIVE_BF16 else "fp32")


def test_export_torchscript_onnx_openvino_checked_in_a_fresh_process(outcomes, fresh):
    result = outcomes.result("export_mlp")
    fmts = [a["format"] for a in result["artifacts"]]
    assert fmts == ["ARTIFACT_FORMAT_TORCHSCRIPT", "ARTIFACT_FORMAT_ONNX", "ARTIFACT_FORMAT_OPENVINO_IR"]
    assert set(rows(result)) == {"eager_fp32", "ipex-torchscript", "onnxruntime", "openvino"}
    assert all(r["latency"]["p50_ms"] > 0 and r["accuracy"]["passed"] for r in result["variants"])
    for fmt in fmts:
        m = fresh[f"export_mlp:{fmt}"]
        assert "error" not in m and m["rel_l2"] <= 1e-5, (fmt, m)
    ov_path, _ = outcomes.artifact("export_mlp", "ARTIFACT_FORMAT_OPENVINO_IR")
    with zipfile.ZipFile(ov_path) as z:
        assert sorted(z.namelist()) == sorted(artifacts.OPENVINO_MEMBERS)
        assert json.loads(z.read("compile.json"))["INFERENCE_PRECISION_HINT"] == "f32"
        assert b"<net " in z.read("model.xml")[:4096] and b'element_type="f16"' not in z.read("model.xml")


def test_ipex_torchscript_loader_imports_ipex_itself(outcomes):
    path, _ = outcomes.artifact("export_mlp", "ARTIFACT_FORMAT_TORCHSCRIPT")
    out = run_intel(["-c", r"""
import sys
from kpt.optimize import artifacts
before = "intel_extension_for_pytorch" in sys.modules
artifacts.load(sys.argv[1], "ARTIFACT_FORMAT_TORCHSCRIPT")
print(before, "intel_extension_for_pytorch" in sys.modules)
""", path], timeout=120)
    assert out.stdout.split() == ["False", "True"]


def test_dev_environment_refuses_intel_artifacts_with_a_typed_error(outcomes):
    """Without IPEX (this environment: torch 2.13) the IPEX archive is refused with a hint, not a crash."""
    pytest.importorskip("torch")
    try:
        import intel_extension_for_pytorch  # noqa: F401
        pytest.skip("this environment has IPEX")
    except ImportError:
        pass
    path, _ = outcomes.artifact("export_mlp", "ARTIFACT_FORMAT_TORCHSCRIPT")
    with pytest.raises(Unsupported, match="intel_extension_for_pytorch"):
        artifacts.load(path, "ARTIFACT_FORMAT_TORCHSCRIPT")
    try:
        import openvino  # noqa: F401
    except ImportError:
        ov_path, _ = outcomes.artifact("export_mlp", "ARTIFACT_FORMAT_OPENVINO_IR")
        with pytest.raises(Unsupported, match="openvino"):
            artifacts.load(ov_path, "ARTIFACT_FORMAT_OPENVINO_IR")


def test_benchmark_side_by_side(outcomes):
    result = outcomes.result("bench_mlp")
    r = rows(result)
    assert {"eager_fp32", "eager_bf16", "onnxruntime", "openvino", "kpt_O0", "kpt_O1"} == set(r)
    timed = [n for n in r if n != "eager_bf16" or NATIVE_BF16]
    for n in timed:
        assert r[n]["latency"]["p50_ms"] > 0 and r[n]["accuracy"]["passed"], (n, r[n])
    if not NATIVE_BF16:
        assert "lacks avx512_bf16" in r["eager_bf16"]["error"]
    assert result["environment"]["toolchain.openvino"]


@pytest.mark.parametrize(("name", "code", "text"), [
    ("err_fp16", "UNSUPPORTED", "PRECISION_FP16 is not available"),
    ("err_int4", "UNSUPPORTED", "PRECISION_INT4 is not available"),
    ("err_stablehlo", "UNSUPPORTED", "ARTIFACT_FORMAT_STABLEHLO is not an export format"),
    ("err_aoti", "UNSUPPORTED", "ARTIFACT_FORMAT_AOTI_PACKAGE is not an export format"),
    ("err_no_formats", "INVALID_ARGUMENT", "an export job needs export_formats"),
])
def test_typed_errors(outcomes, name, code, text):
    err = outcomes.error(name)
    assert err["code"] == code and text in err["message"], err
    assert not (outcomes.root / name).exists() or not any((outcomes.root / name).iterdir())  # refused before work
