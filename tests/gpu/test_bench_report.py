"""bench/h100.py's arithmetic and report, on given rows (no GPU): roofline fractions, decode bandwidth,
the 1.15x verdict, and the merged JSON/markdown. The numbers here are inputs to the formulas, not results."""

import json
from argparse import Namespace

import pytest

from tests.gpu.helpers import bench_module


@pytest.fixture(scope="module")
def h100():
    return bench_module("h100")


@pytest.fixture(scope="module")
def report():
    return bench_module("h100_report")


def measured(variant: str, p50: float, passed: bool = True, compile_s: float = 1.0) -> dict:
    return {"variant": variant, "compile_s": compile_s, "latency": {"p50_ms": p50, "p99_ms": p50 * 1.1, "iterations": 50},
            "accuracy": {"max_abs_err": 1e-3, "rel_l2": 1e-3, "sqnr_db": 60.0, "passed": passed},
            "peak_memory_bytes": "1000"}


def test_rows_fractions_and_verdict(report):
    probe = {"bf16_tflops": 700.0, "fp32_tflops": 50.0, "copy_tbs": 2.9}
    flops = 780 * 10**9  # 1 ms at the nominal 780 TFLOP/s
    bytes_ = {"bf16": 2.1e9, "int8": 1.05e9, "fp32": 4.2e9}
    rows = [report.row_of("m", measured("eager_bf16", 4.0), "bf16", 0.0, flops, bytes_, probe),
            report.row_of("m", measured("kpt_O2", 2.0), "bf16", 30.0, flops, bytes_, probe),
            report.row_of("m", measured("kpt_O3", 1.0, passed=False), "int8", 30.0, flops, bytes_, probe),
            report.row_of("m", {"variant": "compile_default", "compile_s": 0.0, "error": "not built: budget"}, "fp32",
                        0.0, flops, bytes_, probe)]
    assert rows[1]["tflops"] == 390.0 and rows[1]["bf16_roofline_fraction"] == 0.5
    assert rows[1]["weight_tbs"] == pytest.approx(1.05) and rows[1]["bandwidth_fraction"] == pytest.approx(0.35)
    v = report.verdict(rows, flops, probe, decode=True)
    assert v["best_kpt"] == "kpt_O2" and v["best_hand_made"] == "eager_bf16"  # O3 failed its guard: not ours
    assert v["speedup"] == 2.0 and not v["goal_1_15x"]  # the bf16 torch.compile was not measured: not claimed
    assert v["goal_undecided_without"] == ["compile_max_autotune_bf16"]
    assert v["hand_made_not_measured"] == ["eager_fp32", "compile_default", "compile_max_autotune",
                                           "compile_max_autotune_bf16"]
    assert v["fp32_lower_bound_ms"] == pytest.approx(15.6) and v["goal_holds_for_unmeasured_fp32"]
    assert v["decode_best_bandwidth_variant"] == "kpt_O2" and not v["goal_decode_70pct"]
    assert v["decode_bandwidth_basis_tbs"] == 2.9 and v["decode_best_bandwidth_fraction"] == pytest.approx(1.05 / 2.9, abs=1e-4)
    fast = report.row_of("m", measured("kpt_O1", 0.95), "bf16", 30.0, flops, bytes_, {**probe, "copy_tbs": 4.2})
    assert fast["bandwidth_fraction"] >= 0.70  # 2.21 TB/s: 74% of the nominal 3.0 TB/s, 53% of this card's 4.2
    v = report.verdict([fast], flops, {**probe, "copy_tbs": 4.2}, decode=True)
    assert not v["goal_decode_70pct"] and v["decode_best_nominal_fraction"] == fast["bandwidth_fraction"]
    assert report.verdict([fast], flops, {}, decode=True)["goal_decode_70pct"]  # no probe: the nominal 3.0 TB/s
    rows.append(report.row_of("m", measured("compile_max_autotune_bf16", 2.2), "bf16", 40.0, flops, bytes_, probe))
    v = report.verdict(rows, flops, probe, decode=True)
    assert v["best_hand_made"] == "compile_max_autotune_bf16" and v["speedup"] == 1.1 and not v["goal_1_15x"]
    assert "goal_undecided_without" not in v


def test_merge_writes_json_and_markdown(report, tmp_path):
    env = {"gpu.name": "GPU", "fingerprint": "f"}
    doc = {"command": "python3 bench/h100.py run --models m", "phase": "bench-a", "environment": env,
           "measured_roofline": {"bf16_tflops": 700.0, "fp32_tflops": 50.0, "copy_tbs": 2.9}, "wall_s": 1,
           "models": {"m": {"verdict": {"best_kpt": "kpt_O2", "best_kpt_p50_ms": 2.0, "speedup": 2.0,
                                        "goal_1_15x": True, "hand_made_not_measured": []}}},
           "rows": [report.row_of("m", measured("kpt_O2", 2.0), "bf16", 3.0, 10**12, {}, {"bf16_tflops": 700.0})]}
    src = tmp_path / "h100-a.json"
    src.write_text(json.dumps(doc))
    notes = tmp_path / "notes.json"
    notes.write_text(json.dumps({"m": ["a note"]}))
    assert report.merge(Namespace(inputs=[str(src)], docs=str(tmp_path / "docs"), notes=str(notes))) == 0
    out = json.loads((tmp_path / "docs" / "h100.json").read_text())
    assert {"model", "target", "variant", "p50_ms", "p99_ms", "max_abs_err", "compile_s"} <= set(out["rows"][0])
    md = (tmp_path / "docs" / "h100.md").read_text()
    assert "| kpt_O2 | bf16 | 2.000 | 2.200 |" in md and "**2.00x**" in md and "Note: a note" in md


def test_merge_takes_each_model_from_its_latest_run(report, tmp_path):
    env = {"gpu.name": "GPU", "fingerprint": "f"}

    def doc(name: str, models: dict[str, float]) -> str:
        d = {"command": f"run {name}", "phase": name, "environment": env, "measured_roofline": {}, "wall_s": 1,
             "models": {m: {"verdict": {}} for m in models},
             "rows": [report.row_of(m, measured("kpt_O2", p50), "bf16", 3.0, 10**12, {}, {}) for m, p50 in models.items()]}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(d))
        return str(path)

    first, second = doc("a", {"bert": 2.3, "gpt2": 4.6}), doc("b", {"bert": 2.0})
    env = {"gpu.name": "H200", "fingerprint": "g"}  # a third run on another card: its model says so
    third = doc("c", {"vit": 6.5})
    assert report.merge(Namespace(inputs=[first, second, third], docs=str(tmp_path / "docs"), notes=None)) == 0
    out = json.loads((tmp_path / "docs" / "h100.json").read_text())
    assert sorted((r["model"], r["p50_ms"], r["device"]) for r in out["rows"]) == [
        ("bert", 2.0, "GPU"), ("gpt2", 4.6, "GPU"), ("vit", 6.5, "H200")]
    assert out["commands"] == ["run a", "run b", "run c"] and sorted(out["devices"]) == ["GPU", "H200"]
    md = (tmp_path / "docs" / "h100.md").read_text()
    assert "Measured on H200 (`run c`)" in md and "Measured on GPU (`run b`)" in md and "Devices: **GPU**" in md


def test_merge_judges_older_runs_by_todays_rivals(report, tmp_path):
    """A run from before compile_max_autotune_bf16 existed claimed its goal against the fp32 rivals: merged now,
    its verdict is recomputed from its rows and the goal is not claimed."""
    rows = [report.row_of("m", measured(v, p50), prec, 0.0, 10**12, {}, {})
            for v, p50, prec in (("kpt_O2", 2.0, "bf16"), ("eager_bf16", 4.0, "bf16"), ("compile_default", 5.0, "fp32"))]
    old = {"verdict": {"best_kpt": "kpt_O2", "speedup": 2.0, "goal_1_15x": True}, "flops_per_call": 10**12}
    src = tmp_path / "old.json"
    src.write_text(json.dumps({"command": "run old", "phase": "p", "environment": {"gpu.name": "GPU"},
                               "measured_roofline": {}, "wall_s": 1, "models": {"m": old}, "rows": rows}))
    assert report.merge(Namespace(inputs=[str(src)], docs=str(tmp_path / "docs"), notes=None)) == 0
    v = json.loads((tmp_path / "docs" / "h100.json").read_text())["models"]["m"]["verdict"]
    assert v["speedup"] == 2.0 and not v["goal_1_15x"] and v["goal_undecided_without"] == ["compile_max_autotune_bf16"]
    md = (tmp_path / "docs" / "h100.md").read_text()
    assert "**2.00x** (goal >= 1.15x: not claimed)" in md and "Not claimed: compile_max_autotune_bf16" in md


def test_warm_marks_decide_what_the_measuring_run_builds(h100, tmp_path):
    (tmp_path / "bert.kpt_O2.json").write_text(json.dumps({"build_s": 219.3, "compile_s": 148.0, "error": None}))
    assert h100.read_mark(str(tmp_path), "bert", "kpt_O2")["build_s"] == 219.3
    assert h100.read_mark(str(tmp_path), "bert", "kpt_O3") is None  # never finished: reported as not built
    assert h100.read_mark(None, "bert", "kpt_O2") is None


def test_a_rebuild_from_the_caches_keeps_the_cold_builds_mark(h100, tmp_path):
    """`warm` run again for a variant already built (its mark says so) must not replace the cold build's figures
    with the seconds of a cache hit: the H200 run of 2026-12-03 lost ResNet-50's and ViT's that way."""

    class Built:
        compile_s, error = 0.4, None

    marks = str(tmp_path)
    assert h100.warm_variants("vit", ["kpt_O2"], {"kpt_O2": lambda: Built()}, marks) == 0
    first = h100.read_mark(marks, "vit", "kpt_O2")
    assert h100.warm_variants("vit", ["kpt_O2"], {"kpt_O2": lambda: Built()}, marks) == 0
    again = h100.read_mark(marks, "vit", "kpt_O2")
    assert again["build_s"] == first["build_s"] and "rebuild_s" in again and again["error"] is None


def test_a_build_that_failed_for_memory_on_a_crowded_card_is_built_again_when_it_frees(h100, tmp_path):
    """The 1B Llama's kpt_O1 on the H100 (2026-12-05): its package's fresh-process load ran out of memory beside six
    other builds, and the table lost the row. Built again once the card has room; other failures are not retried."""

    class Result:
        compile_s = 1.0

        def __init__(self, error):
            self.error = error

    outcomes = ["the AOTInductor package failed in a fresh process (exit code 1) while loading the package", None]
    calls, gauge, slept = [], iter([0.1, 0.1, 0.2, 0.8]), []

    def build():
        calls.append(1)
        return Result(outcomes[len(calls) - 1])

    marks = str(tmp_path)
    assert h100.warm_variants("llama", ["kpt_O1"], {"kpt_O1": build}, marks, free_fraction=lambda: next(gauge),
                              sleep=slept.append) == 0
    assert len(calls) == 2 and slept == [10.0] and h100.read_mark(marks, "llama", "kpt_O1")["error"] is None
    # a compile error, or a memory failure on a card with room, is not retried
    for error, free in (("InductorError: bad", 0.1), ("CUDA error: out of memory", 0.9)):
        calls.clear()
        assert h100.warm_variants("llama", ["kpt_O3"], {"kpt_O3": lambda e=error: calls.append(1) or Result(e)}, marks,
                                  free_fraction=lambda f=free: f, sleep=slept.append) == 1
        assert len(calls) == 1


def test_a_models_own_low_precision_bounds_judge_only_its_bf16_variants(h100):
    """The Llama shapes' bf16 variants (hand-made and ours alike) are judged by rel_l2 <= 5e-2; an fp32 variant of
    the same model keeps fp32's bounds, and a model without bounds of its own is left to the defaults."""
    from kpt.optimize import accuracy
    from kpt.optimize import inputs as inp
    from kpt.optimize import variants as var

    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(4), inp.Dim(64))),))
    refs = accuracy.reference_outputs(lambda x: x * 3.0, spec, samples=2, seed=1)
    off = {rel: (lambda x, rel=rel: x * 3.0 * (1 + rel)) for rel in (0.04, 0.06)}  # rel_l2 = rel exactly
    variants = [var.Variant("eager_bf16", off[0.04], precision="bf16"), var.Variant("kpt_O2", off[0.06], precision="bf16"),
                var.Variant("kpt_O1", off[0.04], precision="fp32")]
    why = h100.judge_low_precision("llama-1b-decode", variants, refs)
    assert "5e-2" in why and variants[0].accuracy.passed and not variants[1].accuracy.passed
    assert variants[2].accuracy is None  # left to measure(), with fp32's bounds
    plain = [var.Variant("eager_bf16", off[0.04], precision="bf16")]
    assert h100.judge_low_precision("bert-base", plain, refs) == "" and plain[0].accuracy is None


def test_kernel_table_ranks_kernels_by_device_time_per_call():
    from kpt.gpu.bench import kernel_table

    records = [("gemv", 30.0), ("norm", 5.0), ("gemv", 30.0), ("attn", 20.0), ("norm", 5.0)] * 2  # two calls
    t = kernel_table(records, calls=2, top=2)
    assert t["launches_per_call"] == 5.0 and t["device_ms_per_call"] == 0.09
    assert [k["kernel"] for k in t["top"]] == ["gemv", "attn"]
    assert t["top"][0] == {"kernel": "gemv", "launches_per_call": 2.0, "ms_per_call": 0.06, "share": 0.6667}
    with pytest.raises(ValueError):
        kernel_table(records, calls=0)


def test_profile_lines_in_the_markdown(report):
    profs = {"kpt_O3": {"launches_per_call": 230.0, "device_ms_per_call": 1.25,
                        "top": [{"kernel": "triton_gemv", "launches_per_call": 110.0, "ms_per_call": 0.7, "share": 0.56}]},
             "kpt_O2": {"error": "RuntimeError: CUPTI"}}
    lines = report.profile_lines(profs)
    assert lines[0].startswith("Profile of kpt_O3: 1.250 ms of device time in 230 launches per call")
    assert "`triton_gemv` 0.700 ms (56%, 110 launches)" in lines[0]
    assert lines[1] == "Profile of kpt_O2: RuntimeError: CUPTI"
    assert "overlap" not in lines[0]
    overlapping = report.profile_lines(profs, p50_ms={"kpt_O3": 1.0})[0]  # kernels that waited inside their spans
    assert "The spans overlap (their sum is more than the call's p50 1.000 ms)" in overlapping
    assert "overlap" not in report.profile_lines(profs, p50_ms={"kpt_O3": 1.3})[0]


def test_a_decode_models_generation_loop_in_the_markdown(report):
    probe = {"copy_tbs": 3.0}
    loop = {"steps": 32, "variants": {"kpt_O3": report.loop_row(1.0, 2.4e9, probe),
                                      "compile_max_autotune_bf16": report.loop_row(2.0, 2.4e9, probe),
                                      "kpt_O1": report.loop_row(4.0, 4.8e9, probe)}}
    assert loop["variants"]["kpt_O3"] == {"ms_per_step": 1.0, "weight_tbs": 2.4, "bandwidth_fraction": 0.8,
                                          "measured_bandwidth_fraction": 0.8}
    line, = report.loop_lines(loop)
    assert line.startswith("Generation loop (32 greedy steps enqueued back to back")
    assert "kpt_O3 1.000 (80.0%); compile_max_autotune_bf16 2.000 (40.0%); kpt_O1 4.000 (40.0%)" in line
    assert line.endswith("Best kpt level in the loop: kpt_O3, 80.0%: goal >= 70% met by the loop's time per token.")
    slow = {"steps": 32, "variants": {"kpt_O3": report.loop_row(1.2, 2.4e9, probe)}}
    assert "66.7%: goal >= 70% NOT met" in report.loop_lines(slow)[0]
    slow["errors"] = {"compile_default": "RuntimeError: overwritten"}
    assert report.loop_lines(slow)[0].endswith("Not timed in the loop: compile_default (RuntimeError: overwritten).")
    assert report.loop_lines({"steps": 32, "error": "RuntimeError: boom"}) == [
        "Generation loop (32 greedy steps enqueued back to back, each step's token and cache position made on the "
        "device from the last, the host waiting only at the loop's end; ms per token): RuntimeError: boom"]
    assert report.loop_lines({}) == []


def test_an_experiment_is_reported_apart_and_never_counted(h100, report, tmp_path):
    rows = [report.row_of("m", measured(v, p50), "bf16", 0.0, 10**12, {}, {})
            for v, p50 in (("kpt_O2", 2.0), ("kpt_O2_tma", 1.6), ("compile_max_autotune_bf16", 2.2))]
    v = report.verdict(rows, 10**12, {}, decode=False)
    assert v["best_kpt"] == "kpt_O2" and v["speedup"] == 1.1  # the faster experiment is not ours yet
    summary = h100.experiment_summary(rows, ("kpt_O2_tma",))
    assert summary == {"kpt_O2_tma": {"p50_ms": 1.6, "kpt_O2_p50_ms": 2.0, "speedup_over_kpt_O2": 1.25, "error": None}}
    failed = h100.experiment_summary([rows[0], report.row_of("m", measured("kpt_O2_tma", 1.0, passed=False), "bf16",
                                                             0.0, 10**12, {}, {})], ("kpt_O2_tma",))
    assert failed["kpt_O2_tma"]["speedup_over_kpt_O2"] is None  # outside the guard: no ratio
    doc = {"command": "run x", "phase": "p", "environment": {"gpu.name": "GPU"}, "measured_roofline": {}, "wall_s": 1,
           "models": {"m": {"verdict": v, "experiments": summary}}, "rows": rows}
    src = tmp_path / "x.json"
    src.write_text(json.dumps(doc))
    assert report.merge(Namespace(inputs=[str(src)], docs=str(tmp_path / "docs"), notes=None)) == 0
    md = (tmp_path / "docs" / "h100.md").read_text()
    assert "Experiment kpt_O2_tma (not counted): 1.600 ms against kpt_O2's 2.000 ms, measured interleaved: 1.25x." in md


def test_every_experiment_names_a_level_its_compile_options_and_the_precisions_its_job_allows(h100):
    import dataclasses

    from kpt.gpu import compile as gcompile
    from kpt.gpu import levels
    from kpt.gpu.vendor import Precisions

    fields = {f.name for f in dataclasses.fields(gcompile.GpuInductorAOT)}
    for name, (level, options, allowed) in h100.EXPERIMENTS.items():
        assert set(options) <= fields, name
        passes = levels.levels(Precisions(bf16=True, fp8="float8_e4m3fn", int4=True), **options)[level]
        assert any(isinstance(p, gcompile.GpuInductorAOT) for p in passes), name
        assert allowed <= h100.ALLOWED, name  # an experiment narrows the job's precisions, never widens them
    assert h100.EXPERIMENTS["kpt_O3_bf16"][2].isdisjoint({"int8", "int4", "fp8"})  # O3 without quantization


def test_bench_runs_record_the_card_and_host_they_ran_on(monkeypatch):
    """bench/card.py: the environment (uuid, VBIOS, clocks, host) beside a bench/ run's numbers, or why there is none."""
    import torch

    from kpt.gpu import device
    from kpt.gpu.device import GpuInfo
    card = bench_module("card")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert card.environment()["unavailable"]  # this torch has no CUDA, or no GPU is visible: said so
    h100 = GpuInfo(name="NVIDIA H100 80GB HBM3", count=1, memory_bytes=80 << 30, arch="sm_90", major=9, minor=0,
                   runtime="cuda 13.0", uuid="GPU-2e6fb4c4", sm_count=132, l2_bytes=50 << 20,
                   memory_clock_khz=2619000, memory_bus_bits=5120)
    monkeypatch.setattr(device, "probe", lambda kind: h100)
    env = card.environment()  # nvidia-smi's fields where it runs (VBIOS, clocks), else why not in gpu.driver
    assert env["gpu.uuid"] == "GPU-2e6fb4c4" and env["gpu.name"] == h100.name and env["gpu.driver"]
    assert env["cpu_model"] and env["fingerprint"] and "unavailable" not in env


def test_a_variant_that_cannot_run_in_a_loop_is_left_out_of_it_alone(h100, monkeypatch):
    """decode_loop runs each variant's loop once first (here on the CPU): one that raises is recorded and the
    others are timed (the timing itself, CUDA events, is stood in for: what is tested is who gets timed)."""
    import torch

    from kpt.gpu import bench as gpu_bench
    from kpt.optimize import inputs as inp
    from kpt.optimize import variants as var
    from tests.gpu.helpers import tiny_llama_decode

    step, spec, _ = tiny_llama_decode(context=64)

    def broken(*x):
        raise RuntimeError("accessing an output overwritten by a later replay\nmore")

    timed = {}
    monkeypatch.setattr(gpu_bench, "per_step_ms", lambda fns, x, advance, steps, warmup: timed.update(fns) or {n: 2.0 for n in fns})
    variants = [var.Variant("kpt_O3", step, precision="bf16"), var.Variant("compile_default", broken),
                var.failed("kpt_O1", "not built")]
    with torch.inference_mode():
        got = h100.decode_loop(variants, inp.generate(spec, seed=0), {"bf16": 3e9}, {"copy_tbs": 3.0})
    assert list(timed) == ["kpt_O3"] and got["steps"] == h100.LOOP_STEPS
    assert got["errors"] == {"compile_default": "RuntimeError: accessing an output overwritten by a later replay"}
    assert got["variants"] == {"kpt_O3": {"ms_per_step": 2.0, "weight_tbs": 1.5, "bandwidth_fraction": 0.5,
                                          "measured_bandwidth_fraction": 0.5}}
