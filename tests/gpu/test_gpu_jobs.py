"""On the GPU: optimize jobs at every level, each returned artifact loaded in a fresh process and checked
against eager fp32; export and benchmark jobs; compiler caches between jobs. Uploads (ExportedPrograms) go
through the public run(); the bf16 and quantized levels run on tiny models built from configs, as zoo
models are (helpers.run_source)."""

import os

import pytest
import torch

from kpt.gpu import models, runtime
from kpt.gpu.device import DEVICE
from kpt.optimize import inputs as inp
from kpt.optimize import source
from tests.gpu.helpers import (
    fresh_check,
    job_in_fresh_process,
    run_job,
    run_source,
    save_upload,
    tiny_bert,
    tiny_source,
    upload,
    zoo,
)

# The longest test first: under pytest-xdist (scripts/gpu_run.sh) the others then fill the second worker.
pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300), pytest.mark.usefixtures("in_process_budget")]


@pytest.fixture(scope="module")
def bert_pt2(tmp_path_factory) -> str:
    model, spec = tiny_bert()
    return save_upload(model, spec, str(tmp_path_factory.mktemp("uploads") / "tiny_bert.pt2"))


def passes_of(result: dict) -> dict:
    return {p["name"]: p for p in result["passes"] if p["level"] == result["achieved_level"]}


def artifact(result: dict, workdir: str) -> tuple[str, str, dict]:
    (art,) = result["artifacts"]
    path = os.path.join(workdir, art["name"])
    assert os.path.isfile(path)
    meta = art["metadata"]
    for key in ("source_digest", "target", "device_name", "gpu_arch", "driver", "level", "precision", "p50_ms",
                "toolchain.torch", "toolchain.triton", "env_fingerprint"):
        assert meta.get(key), key
    assert meta["target"] == "TARGET_NVIDIA" and meta["level"] == result["achieved_level"]
    return path, art["format"], meta


def uploaded(path: str) -> tuple[torch.nn.Module, inp.InputSpec]:
    src = models.open_source("MODEL_FORMAT_EXPORTED_PROGRAM", "m", "x", path, None, DEVICE)
    return src.module, src.spec


def test_o2_bf16_graphs_and_cache_reuse_between_jobs(tmp_path, kpt_cache_dir):
    """The same O2 job twice, each in a fresh process as a worker runs it, on a cache that starts cold: the
    second reuses the package and Inductor/Triton caches instead of compiling again."""
    cache = str(tmp_path / "cold-cache")
    first = job_in_fresh_process("tiny-bert", str(tmp_path / "w1"), cache, level="LEVEL_O2")
    second = job_in_fresh_process("tiny-bert", str(tmp_path / "w2"), cache, level="LEVEL_O2")
    assert first["achieved_level"] == second["achieved_level"] == "LEVEL_O2"
    rows1 = {p["name"]: p for p in first["passes"] if p["level"] == "LEVEL_O2"}
    rows2 = {p["name"]: p for p in second["passes"] if p["level"] == "LEVEL_O2"}
    assert rows1["reduced_precision"]["applied"] and "bf16" in rows1["reduced_precision"]["reason"]
    assert "compiled in" in rows1["inductor_aot"]["reason"] and "reused" in rows2["inductor_aot"]["reason"]
    ratio = first["seconds"] / second["seconds"]
    print(f"O2 job: first {first['seconds']:.1f}s, second {second['seconds']:.1f}s, {ratio:.1f}x; "
          f"compile {rows1['inductor_aot']['seconds']:.1f}s -> {rows2['inductor_aot']['seconds']:.1f}s; "
          f"cuda_graphs: {rows2['cuda_graphs']['reason']}")
    # Reuse is shown by the reasons above; the compile step itself must shrink to export + digest + copy (on the
    # H100: 78.5 s compile -> a few seconds). The whole job keeps its fixed costs (process start, accuracy check,
    # benchmark), so no ratio of job times is asserted.
    assert rows2["inductor_aot"]["seconds"] < rows1["inductor_aot"]["seconds"] / 3, (rows1, rows2)
    (art,) = os.listdir(tmp_path / "w2")
    path = str(tmp_path / "w2" / art)
    src = tiny_source("tiny-bert")
    m = fresh_check(path, "ARTIFACT_FORMAT_AOTI_PACKAGE", src.module, inp.generate(src.spec, seed=23, device=DEVICE),
                    tmp_path)
    assert m["rel_l2"] < 3e-2 and m["cosine"] > 0.999
    graphs = bool(runtime.read_record(path).get("cudagraphs", False))
    assert graphs is rows2["cuda_graphs"]["applied"]
    assert (m["runner"] == "GraphedRunner") is graphs and (m["graphs"] == 1) is graphs


def test_o0_is_the_exported_program(bert_pt2, tmp_path, kpt_cache_dir):
    result, _ = run_job(str(tmp_path), "JOB_KIND_OPTIMIZE", upload(bert_pt2), bert_pt2, level="LEVEL_O0")
    path, fmt, meta = artifact(result, str(tmp_path))
    assert fmt == "ARTIFACT_FORMAT_EXPORTED_PROGRAM" and result["achieved_level"] == "LEVEL_O0"
    assert meta["passes"] == "exported_program" and result["accuracy"]["passed"]


def test_o1_transformer_fp32_with_measured_attention(bert_pt2, tmp_path, kpt_cache_dir):
    result, _ = run_job(str(tmp_path), "JOB_KIND_OPTIMIZE", upload(bert_pt2), bert_pt2, level="LEVEL_O1")
    assert result["achieved_level"] == "LEVEL_O1", result.get("fallback_reason")
    rows = passes_of(result)
    assert rows["sdpa_backend"]["applied"] and "efficient" in rows["sdpa_backend"]["reason"]  # fp32: flash/cuDNN can't
    assert rows["inductor_aot"]["applied"] and not rows["channels_last"]["applied"]
    path, fmt, meta = artifact(result, str(tmp_path))
    assert fmt == "ARTIFACT_FORMAT_AOTI_PACKAGE" and meta["precision"] == "fp32"
    assert result["backend"].startswith("aoti-triton:") and result["accuracy"]["rel_l2"] < 1e-5
    model, spec = uploaded(bert_pt2)
    m = fresh_check(path, fmt, model, inp.generate(spec, seed=21, device=DEVICE), tmp_path)
    assert m["rel_l2"] < 1e-5 and m["again_rel_l2"] < 1e-5


def test_o1_cnn_folds_batchnorm_and_goes_channels_last(tmp_path, kpt_cache_dir):
    result, _ = run_job(str(tmp_path), "JOB_KIND_OPTIMIZE", zoo("cnn"), level="LEVEL_O1")
    assert result["achieved_level"] == "LEVEL_O1", result.get("fallback_reason")
    rows = passes_of(result)
    assert rows["fold_conv_bn"]["applied"] and rows["channels_last"]["applied"]
    assert "no scaled_dot_product_attention" in rows["sdpa_backend"]["reason"]
    path, fmt, _ = artifact(result, str(tmp_path))
    src = source.from_zoo("cnn", None, DEVICE)
    m = fresh_check(path, fmt, src.module, inp.generate(src.spec, seed=22, device=DEVICE), tmp_path)
    assert m["rel_l2"] < 1e-5  # strict fp32 in the loader: no TF32 convolutions


# Whether O3 keeps a quantization is timed on the device (kept only where it measures faster: the CPU tests give that
# decision its times). On the H100 tiny-bert's linears measured no faster quantized (bf16 0.095 -> int8 0.110 ms,
# fp32 0.127 -> fp8 0.130 ms, 2026-12-06), so these tests leave the timing out and check the quantized artifact's path.
@pytest.fixture
def untimed_quantization(monkeypatch):
    from kpt.gpu import quantize

    monkeypatch.setattr(quantize, "_unmeasured", lambda work: "not measured: the test checks the quantized artifact")


@pytest.mark.usefixtures("untimed_quantization")
def test_o3_compute_bound_transformer_quantizes_dynamically(tmp_path, kpt_cache_dir):
    src = tiny_source("tiny-bert")
    result = run_source(str(tmp_path), src, level="LEVEL_O3")
    q = next(p for p in result["passes"] if p["name"] == "quantize" and p["level"] == "LEVEL_O3")
    assert q["applied"] and q["reason"].startswith("int8_dynamic (256 rows per linear call: compute-bound)"), q
    assert "custom_kernels" in {p["name"] for p in result["passes"]}
    assert result["achieved_level"] == "LEVEL_O3", result.get("fallback_reason")
    path, fmt, meta = artifact(result, str(tmp_path))
    assert meta["precision"] == "int8"
    m = fresh_check(path, fmt, src.module, inp.generate(src.spec, seed=24, device=DEVICE), tmp_path)
    assert m["sqnr_db"] >= 20 and m["cosine"] >= 0.99


@pytest.mark.usefixtures("untimed_quantization")
def test_o3_fp8_when_the_job_asks_for_it(tmp_path, kpt_cache_dir):
    if "PRECISION_FP8" not in __import__("kpt_nvidia.capability").capability.capability()["precisions"]:
        pytest.skip("this GPU has no fp8")
    result = run_source(str(tmp_path), tiny_source("tiny-bert"), level="LEVEL_O3", precision="PRECISION_FP8")
    q = next(p for p in result["passes"] if p["name"] == "quantize" and p["level"] == "LEVEL_O3")
    assert q["applied"] and q["reason"].startswith("fp8_dynamic"), q["reason"]
    assert result["achieved_level"] == "LEVEL_O3", result.get("fallback_reason")
    assert result["artifacts"][0]["metadata"]["precision"] == "fp8" and result["accuracy"]["passed"]


def test_o3_decode_step_int8_weights_and_graphs(tmp_path, kpt_cache_dir):
    src = tiny_source("tiny-decode")
    result = run_source(str(tmp_path), src, level="LEVEL_O3")
    assert result["achieved_level"] == "LEVEL_O3", result.get("fallback_reason")
    rows = passes_of(result)
    assert rows["reduced_precision"]["applied"]
    assert rows["quantize"]["reason"].startswith("int8_weight_only (1 rows per linear call: memory-bound)")
    # Inductor tunes the matrix-vector products it generates; where kernels/' decode layers were kept, the linears
    # are gemv.py's launches and the exported program has none left
    layers = rows["custom_kernels"]["applied"] and "kept kpt_decode_layers" in rows["custom_kernels"]["reason"]
    assert ("coordinate-descent" in rows["inductor_aot"]["reason"]) != layers, (rows["custom_kernels"]["reason"],
                                                                               rows["inductor_aot"]["reason"])
    path, fmt, meta = artifact(result, str(tmp_path))
    print("decode cuda_graphs:", rows["cuda_graphs"]["reason"])
    m = fresh_check(path, fmt, src.module, inp.generate(src.spec, seed=25, device=DEVICE), tmp_path)
    assert m["sqnr_db"] >= 20 and m["cosine"] >= 0.99


def test_export_job_validates_every_format(bert_pt2, tmp_path, kpt_cache_dir):
    pytest.importorskip("onnxscript", reason="the ONNX exporter needs onnxscript")
    result, _ = run_job(str(tmp_path), "JOB_KIND_EXPORT", upload(bert_pt2), bert_pt2,
                        export_formats=["ARTIFACT_FORMAT_ONNX", "ARTIFACT_FORMAT_TORCHSCRIPT",
                                        "ARTIFACT_FORMAT_EXPORTED_PROGRAM"])
    formats = {a["format"]: a for a in result["artifacts"]}
    assert set(formats) == {"ARTIFACT_FORMAT_ONNX", "ARTIFACT_FORMAT_TORCHSCRIPT", "ARTIFACT_FORMAT_EXPORTED_PROGRAM"}
    assert formats["ARTIFACT_FORMAT_ONNX"]["metadata"]["backend"].startswith("onnxruntime:")
    assert formats["ARTIFACT_FORMAT_TORCHSCRIPT"]["metadata"]["backend"] == f"torchscript:{DEVICE}"
    assert result["accuracy"]["passed"] and result["accuracy"]["rel_l2"] < 1e-5
    assert {v["variant"] for v in result["variants"] if "latency" in v} == {"eager_fp32", "onnxruntime", "torchscript",
                                                                             "kpt_O0"}


def test_benchmark_job_measures_references_and_ours(tmp_path, kpt_cache_dir):
    result, _ = run_job(str(tmp_path), "JOB_KIND_BENCHMARK", zoo("mlp"), level="LEVEL_O2")
    rows = {r["variant"]: r for r in result["variants"]}
    assert set(rows) >= {"eager_fp32", "eager_bf16", "compile_default", "compile_max_autotune", "onnxruntime",
                         "kpt_O0", "kpt_O2"}
    for name in ("eager_fp32", "eager_bf16", "compile_default", "compile_max_autotune", "kpt_O0", "kpt_O2"):
        r = rows[name]
        assert r["latency"]["p50_ms"] > 0 and r["accuracy"]["passed"] and int(r["peak_memory_bytes"]) >= 0, r
    onnx = rows["onnxruntime"]
    assert "latency" in onnx or "no GPU execution provider" in onnx["error"]
    assert result["environment"]["gpu.driver"] and result["environment"]["tf32"] == "off"
