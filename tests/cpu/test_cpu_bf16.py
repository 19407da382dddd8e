"""The bf16 decision: native bf16 flags or nothing, with the skip reason the report shows."""

import pytest

from kpt.optimize import env, zoo
from kpt.optimize.passes import Work, apply
from kpt_cpu import capability
from kpt_cpu.passes import NativeBF16, bf16_decision

FLAGS_WITHOUT = "fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni"


def fake_cpuinfo(tmp_path, flags: str) -> str:
    path = tmp_path / f"cpuinfo-{abs(hash(flags))}"
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: {flags}\n\n"
                    f"processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: {flags}\n")
    return str(path)


@pytest.mark.parametrize("extra, native", [("", False), ("avx512_bf16", True), ("amx_tile amx_bf16", True),
                                           ("avx512_fp16", False)])
def test_decision_follows_the_flags(tmp_path, extra, native):
    info = env.cpu_info(fake_cpuinfo(tmp_path, f"{FLAGS_WITHOUT} {extra}"))
    assert info.model == "Test CPU 9000"
    use, why = bf16_decision(info.flags)
    assert use is native
    assert ("lacks avx512_bf16 and amx_bf16" in why) is (not native)


def work(tmp_path, allowed=frozenset({"fp32", "bf16", "int8"})) -> Work:
    model, spec = zoo.build("mlp")
    return Work(model, spec, "cpu", str(tmp_path), allowed)


def test_pass_skips_with_the_reason_on_a_cpu_without_bf16(tmp_path):
    w = work(tmp_path)
    row = apply(NativeBF16(cpuinfo_path=fake_cpuinfo(tmp_path, FLAGS_WITHOUT)), w, "LEVEL_O2")
    assert row["applied"] is False and "emulated" in row["reason"] and w.precision == "fp32"
    assert next(w.module.parameters()).dtype.is_floating_point and str(next(w.module.parameters()).dtype) == "torch.float32"


def test_pass_casts_on_a_cpu_with_bf16(tmp_path):
    w = work(tmp_path)
    row = apply(NativeBF16(cpuinfo_path=fake_cpuinfo(tmp_path, FLAGS_WITHOUT + " avx512_bf16")), w, "LEVEL_O2")
    assert row["applied"] and w.precision == "bf16" and "6 weight/buffer tensors" in row["reason"]
    x = w.example()
    assert w.module(*x).dtype.is_floating_point and str(w.module(*x).dtype) == "torch.float32"  # fp32 interface


def test_job_precision_can_rule_bf16_out(tmp_path):
    w = work(tmp_path, allowed=frozenset({"fp32"}))
    row = apply(NativeBF16(cpuinfo_path=fake_cpuinfo(tmp_path, "avx512_bf16")), w, "LEVEL_O2")
    assert not row["applied"] and "precision excludes bf16" in row["reason"]


def test_capability_lists_bf16_only_with_native_support(tmp_path):
    without = capability.capability(fake_cpuinfo(tmp_path, FLAGS_WITHOUT))
    with_bf16 = capability.capability(fake_cpuinfo(tmp_path, FLAGS_WITHOUT + " amx_bf16"))
    assert without["precisions"] == ["PRECISION_FP32", "PRECISION_INT8"]
    assert with_bf16["precisions"] == ["PRECISION_FP32", "PRECISION_BF16", "PRECISION_INT8"]
    assert without["toolchain_fingerprint"] != with_bf16["toolchain_fingerprint"]  # the flags that matter count
