"""The registry's decision rule, the CustomKernels entry point without a GPU, the module swaps, and that the
ops trace (fake implementations: torch.export, opcheck)."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch

from kernels import attention, linear_act, modules, norms, registry  # noqa: E402
from tests.kernels.conftest import CUDA, DEVICE

REPO = Path(__file__).resolve().parents[2]


def test_decide_picks_ours_only_when_faster_and_correct():
    errs = {"kpt": 0.002, "sdpa_cudnn": 0.0015, "sdpa_flash": 0.001}
    assert registry.decide({"kpt": 1.0, "sdpa_cudnn": 1.2, "sdpa_flash": 1.5}, errs) == "kpt"
    assert registry.decide({"kpt": 1.3, "sdpa_cudnn": 1.2, "sdpa_flash": 1.5}, errs) == "sdpa_cudnn"  # slower
    wrong = dict(errs, kpt=0.0021)  # > 2x the best vendor error (0.001)
    assert registry.decide({"kpt": 1.0, "sdpa_cudnn": 1.2, "sdpa_flash": 1.5}, wrong) == "sdpa_cudnn"
    failed = {"kpt": "produced NaN", "sdpa_cudnn": "not usable (x)", "sdpa_flash": 1.5}
    assert registry.decide(failed, {"sdpa_flash": 0.001}) == "sdpa_flash"
    assert registry.decide({"kpt": 1.0, "torch": 2.0}, {"kpt": 1e-3, "torch": 0.0}, floor=1e-3) == "kpt"
    with pytest.raises(ValueError):
        registry.decide({"kpt": "not usable"}, {})


def test_choose_measures_once_then_uses_the_stored_decision(tmp_path, monkeypatch):
    monkeypatch.setenv("KPT_CACHE_DIR", str(tmp_path))
    registry.clear_memory()
    calls = []
    x = torch.randn(8, 97)

    def providers():
        calls.append(1)
        return {"kpt": lambda: x * 1.0, "torch": lambda: x + 1e-3}

    monkeypatch.setattr(registry, "measure", lambda p, r: ({n: float(i + 1) for i, n in enumerate(p)},
                                                           {n: (f().float() - r()).abs().max().item()
                                                            for n, f in p.items()}))
    parts = {"class": registry.shape_class(n_rows=8, n=97), "dtype": "float32"}
    pick = registry.choose("test_op", parts, providers, lambda: x, 1e-7, torch.device("cpu"))
    assert pick == "kpt" and len(calls) == 1
    registry.clear_memory()  # a new process: the decision comes from KPT_CACHE_DIR/choices/
    assert registry.choose("test_op", parts, providers, lambda: x, 1e-7, torch.device("cpu")) == "kpt"
    assert len(calls) == 1 and list((tmp_path / "choices").glob("*.json"))
    assert registry.cached("test_op", dict(parts, dtype="float16"), torch.device("cpu")) is None


def test_a_compiled_model_takes_the_stored_decision_without_tracing_the_lookup(tmp_path, monkeypatch):
    """Under torch.compile the swapped modules' lookup is a constant of the graph (fullgraph: no break)."""
    monkeypatch.setenv("KPT_CACHE_DIR", str(tmp_path))
    registry.clear_memory()
    x, w = torch.randn(1, 64, dtype=torch.bfloat16), torch.ones(64, dtype=torch.bfloat16)

    def f(x: torch.Tensor) -> torch.Tensor:
        return x + 1 if registry.pick_norm(x, w, None, 1e-6, True) == registry.OURS else x - 1

    torch._dynamo.reset()
    assert torch.equal(torch.compile(f, fullgraph=True)(x), x - 1)  # nothing stored: the vendor's path
    parts = {"class": registry.shape_class(n_rows=1, n=64), "dtype": str(x.dtype), "rms": True, "bias": False}
    monkeypatch.setattr(registry, "measure", lambda p, r: ({n: float(n != registry.OURS) + 1 for n in p},
                                                           {n: 0.0 for n in p}))
    assert registry.choose("norm", parts, lambda: {registry.OURS: None, "torch": None}, None, 0.0,
                           x.device) == registry.OURS
    torch._dynamo.reset()
    assert torch.equal(torch.compile(f, fullgraph=True)(x), x + 1)
    torch._dynamo.reset()


def test_shape_class_buckets_token_counts_only():
    assert registry.shape_class(n_q=1025, head_dim=128) == {"n_q": 2048, "head_dim": 128}
    assert registry.shape_class(n_rows=1) == {"n_rows": 1}


def _load_like_the_pass():
    init = REPO / "kernels" / "__init__.py"
    spec = importlib.util.spec_from_file_location("kpt_repo_kernels", init,
                                                  submodule_search_locations=[str(init.parent)])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(CUDA, reason="checks the no-GPU answer")
def test_candidates_without_gpu_is_empty_with_a_reason(caplog):
    mod = _load_like_the_pass()
    with caplog.at_level(logging.INFO):
        assert mod.candidates(torch.nn.Linear(4, 4), "cpu") == []
        assert mod.candidates(torch.nn.Linear(4, 4), "cuda:0") == []
    assert "CUDA devices only" in caplog.text and "no CUDA device" in caplog.text


def test_pinned_runs_the_swapped_module_once_eagerly():
    """kernels.pinned: the swap, then one eager call of what it returns on the example (its autotuners pick there,
    gemv.PIN), none without an example; the module passed in is left alone."""
    mod = _load_like_the_pass()
    calls = []

    class Swapped(torch.nn.Module):
        def forward(self, x):
            calls.append(torch.is_inference_mode_enabled())
            return x

    base = torch.nn.Linear(2, 2)
    out = mod.pinned(lambda m: Swapped(), (torch.ones(2),))(base)
    assert isinstance(out, Swapped) and calls == [True]
    assert isinstance(mod.pinned(lambda m: Swapped(), None)(base), Swapped) and calls == [True]


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(64)
        self.ff = torch.nn.Sequential(torch.nn.Linear(64, 97), torch.nn.GELU(), torch.nn.Linear(97, 64))
        self.rms = torch.nn.RMSNorm(64, eps=1e-6)

    def forward(self, x):
        h = self.ff(self.norm(x))
        q = h.view(x.shape[0], -1, 2, 32).transpose(1, 2)
        return self.rms(torch.nn.functional.scaled_dot_product_attention(q, q, q).transpose(1, 2).reshape(x.shape))


def test_swaps_find_the_modules_and_keep_fp32_results():
    torch.manual_seed(0)
    m = _Block().eval()
    assert modules.find_norms(m) == ["norm", "rms"] and modules.find_linear_act(m) == [("ff", 0)]
    x = torch.randn(2, 5, 64)
    swapped = modules.swap_attention(modules.swap_linear_act(modules.swap_norms(m)))
    assert isinstance(swapped.inner.ff[0], modules.FusedLinearAct) and isinstance(swapped.inner.ff[1], torch.nn.Identity)
    assert isinstance(swapped.inner.norm, modules.FusedNorm) and isinstance(m.norm, torch.nn.LayerNorm)  # a copy
    torch.testing.assert_close(swapped(x), m(x), rtol=1e-5, atol=1e-5)  # fp32 takes the vendor path: same math


def test_attention_swap_counts_only_the_calls_it_could_route():
    """Without an SDPA call the attention kernel could take, its trial is left out (the 1B Llama's decode step
    passes a cache mask to every call)."""

    class Masked(torch.nn.Module):
        def forward(self, q):
            mask = torch.ones(q.shape[2], q.shape[2], dtype=torch.bool)
            return torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)

    x = torch.randn(2, 5, 64)
    assert modules.routable_attention_calls(_Block().eval(), (x,)) == 0  # fp32
    assert modules.routable_attention_calls(_Block().eval().to(torch.bfloat16), (x.bfloat16(),)) == 1
    assert modules.routable_attention_calls(Masked(), (torch.randn(1, 2, 5, 32, dtype=torch.bfloat16),)) == 0


def test_swiglu_is_found_in_a_transformers_llama():
    """transformers 5 gives Llama's MLP a SiLUActivation, not nn.SiLU: the SwiGLU swap must still find it (it
    found none in the 1B Llama's decode step, H200, 2026-12-04: candidates were norms and attention only)."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    mlp = LlamaMLP(LlamaConfig(hidden_size=64, intermediate_size=96)).eval()
    assert modules.find_swiglu(torch.nn.ModuleDict({"mlp": mlp})) == ["mlp"]
    swapped = modules.swap_linear_act(mlp)
    assert isinstance(swapped, modules.FusedSwiGLU)
    x = torch.randn(1, 1, 64)
    torch.testing.assert_close(swapped(x), mlp(x))  # fp32 takes the vendor path: the same math


def test_quantized_linears_are_left_to_their_own_path():
    """O3 quantizes before it tries kernels: torchao's int8 weights are tensor subclasses the kernels cannot read,
    so no swap is offered for them, and a swapped MLP whose weights are quantized runs the vendor path."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    mlp = LlamaMLP(LlamaConfig(hidden_size=64, intermediate_size=96)).eval().to(torch.bfloat16)
    swapped = modules.FusedSwiGLU(mlp)
    quantize_(mlp, Int8WeightOnlyConfig())
    assert modules.find_swiglu(torch.nn.ModuleDict({"mlp": mlp})) == []
    seq = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU()).to(torch.bfloat16)
    quantize_(seq, Int8WeightOnlyConfig())
    assert modules.find_linear_act(seq) == []
    x = torch.randn(1, 1, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        torch.testing.assert_close(swapped(x), mlp(x))  # the registry is never asked: nothing to measure on a CPU


def test_ops_export_with_fake_implementations():
    class M(torch.nn.Module):
        def forward(self, x, w, q):
            h = linear_act.linear_act(x, w, None, "silu")
            h = norms.rms_norm(h, None, 1e-6)
            return h, attention.attention(q, q, q, causal=True)

    args = (torch.randn(7, 32, device=DEVICE), torch.randn(97, 32, device=DEVICE) / 6,
            torch.randn(1, 2, 33, 32, device=DEVICE))
    ep = torch.export.export(M(), args)
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert {"kpt.linear_act.default", "kpt.norm.default", "kpt.attention.default"} <= targets or CUDA
    h, o = ep.module()(*args)
    ref_h = norms.rms_norm_reference(linear_act.reference(args[0], args[1], None, "silu"), None, 1e-6)
    torch.testing.assert_close(h, ref_h, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(o, attention.reference(args[2], args[2], args[2], causal=True), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(CUDA, reason="triton_op on the GPU is checked by test_gpu.py")
def test_opcheck():
    x, w = torch.randn(5, 32), torch.randn(17, 32)
    torch.library.opcheck(torch.ops.kpt.linear_act.default, (x, w, None, None, None, "gelu"))
    torch.library.opcheck(torch.ops.kpt.norm.default, (x, None, None, 1e-5, False, 0.0, 0))
    q = torch.randn(1, 2, 19, 16)
    torch.library.opcheck(torch.ops.kpt.attention.default, (q, q, q, True, None, -1, -1, None, 0.0, None))


def test_a_decision_key_is_digested_once_per_process(tmp_path, monkeypatch):
    # Swapped modules ask the registry on every eager call: the key (a digest over the toolchain's versions)
    # must come from memory after the first time, or the Python overhead makes our kernels lose every timing.
    cache = pytest.importorskip("kpt.gpu.cache", reason="keys are digests through kpt (PYTHONPATH=shared)")
    monkeypatch.setenv("KPT_CACHE_DIR", str(tmp_path))
    registry.clear_memory()
    digests = []
    real = cache.choice_key
    monkeypatch.setattr(cache, "choice_key", lambda kind, parts: digests.append(kind) or real(kind, parts))
    parts = {"class": registry.shape_class(n_rows=8, n=96), "dtype": "float32", "probe": str(tmp_path)}
    for _ in range(5):
        assert registry.cached("test_op", parts, torch.device("cpu")) is None
    assert digests == ["kernels.test_op"]


def test_bench_goals_compare_against_the_same_runs_rows():
    bench = pytest.importorskip("kernels.bench")
    rows = [{"op": "attention", "shape": "b1 h16 n16384 d128", "dtype": "bfloat16", "causal": False, "provider": p,
             "ms": ms, "tflops": tf, "gbps": 1.0} for p, ms, tf in (("kpt", 3.0, 630.0), ("sdpa_cudnn", 3.5, 611.0))]
    rows += [{"op": op, "shape": "4096x4096", "dtype": "bfloat16", "causal": None, "provider": p, "ms": 0.1,
              "tflops": 0.0, "gbps": g} for op, p, g in (("rms_norm", "kpt", 2500.0), ("copy", "torch", 2800.0),
                                                          ("layer_norm", "kpt", 2000.0))]
    rows += [{"op": "swiglu", "shape": "m", "dtype": "bfloat16", "causal": None, "provider": p, "ms": ms,
              "tflops": 1.0, "gbps": 1.0} for p, ms in (("kpt", 1.0), ("cublas+act", 1.2))]
    text = "\n".join(bench.goals(rows))
    assert "630.0 TFLOP/s (same run: sdpa_cudnn 611.0) | yes" in text
    assert "4096x4096 89% | yes" in text and "4096x4096 71% | no (4096x4096 71%)" in text
    assert "1.20x (1.0 vs 1.2 ms) | yes" in text
    assert "| attention causal" not in text  # no causal rows measured: no claim about them


def test_bench_variant_table_names_the_best_norm_variant_against_copy():
    bench = pytest.importorskip("kernels.bench")
    base = {"op": "rms_norm", "shape": "65536x1024", "dtype": "bfloat16", "causal": None, "ms": 0.1, "tflops": 0.0}
    rows = [base | {"provider": p, "gbps": g} for p, g in
            (("kpt", 2000.0), ("kpt_w4", 3800.0), ("kpt_w8", 3900.0), ("kpt_w16", 2000.0), ("kpt_w32", 1000.0))]
    rows.append(base | {"op": "copy", "provider": "torch", "gbps": 4000.0})
    table = bench.variant_table(rows)
    assert table[2] == "| rms_norm | 65536x1024 | bfloat16 | 50% | 95% | 98% | 50% | 25% | kpt_w8 |"
    assert bench.variant_table([r for r in rows if not r["provider"].startswith("kpt_w")]) == []
    assert "## Norms: each kernel variant" in bench.markdown(rows, "dev", "v", "cmd")
    persistent = [r for r in rows if r["provider"] in ("kpt", "torch")] + [base | {"provider": "kpt_persistent",
                                                                                   "gbps": 3600.0}]
    assert bench.variant_table(persistent)[2] == "| rms_norm | 65536x1024 | bfloat16 | 50% | 90% | kpt_persistent |"
    slower = [r | {"gbps": 1000.0} if r["provider"] == "kpt_persistent" else r for r in persistent]
    # the H200's 2026-12-04 run: the persistent kernel slower everywhere, and the table named it the best
    assert bench.variant_table(slower)[2] == "| rms_norm | 65536x1024 | bfloat16 | 50% | 25% | kpt |"


def test_measure_times_providers_in_rotating_rounds():
    from kernels import registry

    order = []
    x = torch.ones(4)

    def provider(name, fail=False):
        def fn():
            if fail:
                raise RuntimeError("No available kernel")
            order.append(name)
            return x
        return fn

    providers = {"a": provider("a"), "b": provider("b"), "bad": provider("bad", fail=True)}
    ms = iter([5.0, 1.0, 1.5, 4.0, 6.0, 2.0, 1.0, 3.0, 3.5, 9.0])  # one value per timed call, in call order
    timings, errors = registry.measure(providers, lambda: x, timer=lambda fn: (fn(), next(ms))[1])
    assert order == ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]  # checks, then 5 rounds
    assert list(timings) == ["a", "b", "bad"] and timings["bad"].startswith("not usable (No available kernel")
    assert timings["a"] == 4.0 and timings["b"] == 1.5  # a: 5 4 6 3 3.5; b: 1 1.5 2 1 9 and errors == {"a": 0.0, "b": 0.0}


def test_measure_drops_a_provider_whose_timing_fails():
    from kernels import registry

    x = torch.ones(4)
    calls = {"oom": 0}

    def runs_once_then_oom():
        calls["oom"] += 1
        if calls["oom"] > 1:  # the check passes; the timed calls run out of memory (a dense fallback, say)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 GiB")
        return x

    timings, errors = registry.measure({"ok": lambda: x, "oom": runs_once_then_oom}, lambda: x,
                                       timer=lambda fn: (fn(), 1.0)[1])
    assert timings["ok"] == 1.0 and errors == {"ok": 0.0}
    assert timings["oom"].startswith("not usable (timing failed: CUDA out of memory")
    assert calls["oom"] == 2  # not timed again in later rounds


def test_flex_calls_allow_more_compiled_variants_and_never_fall_back_to_eager(monkeypatch):
    import torch._dynamo.config as dynamo_config
    from torch._dynamo.exc import FailOnRecompileLimitHit

    from kernels import registry

    seen = {}

    def fake_flex(*args, **kwargs):
        seen.update(limit=dynamo_config.recompile_limit, fail=dynamo_config.fail_on_recompile_limit_hit,
                    suppress=dynamo_config.suppress_errors)
        return args[0]

    monkeypatch.setattr(registry, "_FLEX", fake_flex)
    assert registry._flex_call("q") == "q"
    assert seen == {"limit": registry.FLEX_RECOMPILES, "fail": True, "suppress": False}
    assert registry.FLEX_RECOMPILES > 8
    assert dynamo_config.recompile_limit == 8  # restored after the call

    def over_the_limit(*args, **kwargs):
        raise FailOnRecompileLimitHit("recompile_limit reached")

    monkeypatch.setattr(registry, "_FLEX", over_the_limit)
    with pytest.raises(RuntimeError, match="FlexAttention not compiled"):  # the providers' failure type
        registry._flex_call("q")


def test_bench_row_records_a_timing_that_runs_out_of_memory(monkeypatch):
    from kernels import bench

    def oom(fn, rep_ms):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 GiB")

    monkeypatch.setattr(bench, "gpu_ms", oom)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    assert bench._time(lambda: None) == "failed: CUDA out of memory. Tried to allocate 16.00 GiB"
    monkeypatch.setattr(bench, "gpu_ms", lambda fn, rep_ms: 0.5)
    assert bench._time(lambda: None) == 0.5


def test_bench_skips_the_providers_it_is_told_to(monkeypatch):
    """--skip: a provider whose GPU test failed (and so might hang) gets no row; the others are timed."""
    from kernels import bench

    timed = []
    monkeypatch.setattr(bench, "_time", lambda fn: timed.append(fn()) or 0.5)
    monkeypatch.setattr(bench, "SKIP", {"kpt_ws_split"})
    rows = bench._rows("attention", "s", torch.bfloat16, False, {"kpt_ws": lambda: "ws", "kpt_ws_split": lambda: "split"},
                       1e9, 1e6)
    assert [r["provider"] for r in rows] == ["kpt_ws"] and timed == ["ws"]


def test_bench_merge_replaces_a_case_with_the_later_runs_rows(tmp_path):
    """kernels.bench --merge: a case (op, shape, dtype, causal) a later run measured comes whole from that run (its
    vendor rows too: a goal compares one run's rows), other cases stay; runs of different devices are refused."""
    from kernels import bench

    def row(op, provider, ms):  # noqa: ANN001, ANN202
        return {"op": op, "shape": "s", "dtype": "bfloat16", "causal": False, "provider": provider, "ms": ms,
                "tflops": 1.0, "gbps": 1.0}

    first = {"device": "H100", "torch": "2.11", "command": "a", "left_out": [row("flex", "flex", 9)],
             "rows": [row("attention", "kpt", 2), row("attention", "sdpa_cudnn", 2), row("norm", "kpt", 1)]}
    second = {"device": "H100", "torch": "2.11", "command": "b", "rows": [row("attention", "kpt", 1.5)]}
    paths = []
    for i, doc in enumerate((first, second)):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(doc))
    assert bench.main(["--merge", *map(str, paths), "--name", "m", "--out", str(tmp_path)]) == 0
    merged = json.loads((tmp_path / "m.json").read_text())
    assert [(r["op"], r["provider"], r["ms"]) for r in merged["rows"]] == [("norm", "kpt", 1), ("attention", "kpt", 1.5)]
    assert merged["command"] == "a; then b" and merged["left_out"] == first["left_out"]
    assert "| attention | s | bfloat16 | no | kpt | 1.5 |" in (tmp_path / "m.md").read_text()
    with pytest.raises(ValueError, match="different devices"):
        bench.merge([first, second | {"device": "H200"}])
