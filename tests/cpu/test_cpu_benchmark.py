import pytest

from kpt.optimize import env
from kpt_cpu.passes import bf16_decision
from tests.cpu.cpu_helpers import zoo

pytestmark = pytest.mark.timeout(300)
REFERENCES = {"eager_fp32", "eager_bf16", "compile_default", "compile_max_autotune", "onnxruntime"}


def test_benchmark_job_measures_references_and_kpt_side_by_side(run_job):
    result = run_job("JOB_KIND_BENCHMARK", zoo("mlp"), level="LEVEL_O0")
    rows = {v["variant"]: v for v in result["variants"]}
    assert set(rows) == REFERENCES | {"kpt_O0"}
    native, why = bf16_decision(env.cpu_info().flags)
    if not native:
        assert rows.pop("eager_bf16")["error"] == why
    for name, row in rows.items():
        assert "error" not in row, (name, row.get("error"))
        lat = row["latency"]
        assert lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert 0 < len(lat["samples_ms"]) <= 256 and lat["iterations"] >= 5
        assert row["accuracy"]["passed"], (name, row["accuracy"])
        assert row["throughput_per_s"] == pytest.approx(8 * 1000 / lat["p50_ms"])  # mlp batch 8
    assert rows["compile_default"]["compile_s"] > 0 and rows["onnxruntime"]["compile_s"] > 0
    iters = {row["latency"]["iterations"] for row in rows.values()}
    assert len(iters) == 1  # interleaved rounds: every variant ran equally often
    env_ = result["environment"]
    assert env_["cpu_model"] and env_["toolchain.torch"] and env_["fingerprint"] and env_["cores"]
