"""The shared GPU code's decisions, on the CPU: the decode step's math, the compile options and their
budget, the quantization choice and the package cache key (the runtime's: test_runtime_logic.py). Small and fast; what
needs the device is in test_gpu_*.py."""

import copy

import pytest
import torch

from kpt.errors import DeviceFault, Unsupported, first_cause, first_frames
from kpt.gpu import cache, device, levels, models, passes, quantize, runtime
from kpt.gpu import compile as gcompile
from kpt.gpu.vendor import Precisions
from kpt.optimize import inputs as inp
from kpt.optimize.passes import Work, apply, export_module
from tests.gpu.helpers import tiny_bert, tiny_llama_decode


def test_decode_step_matches_the_causal_lm_token_by_token():
    step, spec, lm = tiny_llama_decode(context=16)
    tokens = torch.randint(0, lm.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        full = lm(input_ids=tokens).logits[0]  # [T, V], causal over the whole sequence
        shape = (lm.config.num_hidden_layers, 1, lm.config.num_key_value_heads, 16, step.head_dim)
        k = torch.randn(shape).to(torch.bfloat16)  # garbage beyond each position must be masked out
        v = torch.randn(shape).to(torch.bfloat16)
        k, v = k.float(), v.float()
        for pos in range(tokens.shape[1]):
            logits, k_new, v_new = step(tokens[:, pos:pos + 1], torch.tensor([pos]), k, v)
            k[:, :, :, pos] = k_new[:, :, :, 0]
            v[:, :, :, pos] = v_new[:, :, :, 0]
            torch.testing.assert_close(logits[0, 0], full[pos], rtol=1e-4, atol=1e-4)


def test_decode_spec_describes_a_bf16_cache():
    step, spec, lm = tiny_llama_decode(context=32)
    names = [t.name for t in spec.tensors]
    assert names == ["input_ids", "input_pos", "k_cache", "v_cache"]
    assert spec.tensors[2].dtype == "bfloat16" and [d.size for d in spec.tensors[2].dims] == [2, 1, 2, 32, 32]
    x = inp.generate(spec, seed=0)
    with torch.inference_mode():
        logits, k_new, v_new = step(*x)
    assert logits.shape == (1, 1, 512) and k_new.shape == (2, 1, 2, 1, 32) and k_new.dtype == torch.bfloat16


def test_next_step_makes_a_greedy_loops_inputs_on_the_device():
    """models.next_step writes the step's keys and values at input_pos, feeds the argmax token and advances the
    position; a generation loop of it gives what stepping by hand gives."""
    from kpt.gpu import bench as gpu_bench

    step, spec, _ = tiny_llama_decode(context=16)
    ids, _, k, v = inp.generate(spec, seed=0)
    start = (ids, torch.tensor([5]), k.clone(), v.clone())
    with torch.inference_mode():
        out = step(*start)
        ids2, pos2, k2, v2 = models.next_step(start, out)
        assert pos2.tolist() == [6] and ids2.shape == (1, 1) and ids2.dtype == torch.int64
        assert ids2.item() == out[0][0, -1].argmax().item()
        torch.testing.assert_close(k2[:, :, :, 5], out[1][:, :, :, 0], rtol=0, atol=0)
        torch.testing.assert_close(v2[:, :, :, 6:], v[:, :, :, 6:], rtol=0, atol=0)  # nothing past the position
        by_hand = (ids, torch.tensor([5]), k.clone(), v.clone())
        for _ in range(3):
            by_hand = models.next_step(by_hand, step(*by_hand))
        looped = (ids, torch.tensor([5]), k.clone(), v.clone())
        gpu_bench.generation_loop(step, looped, models.next_step, steps=3)()
        torch.testing.assert_close(looped[2], by_hand[2], rtol=0, atol=0)  # the same caches written in place
        assert not torch.equal(looped[2][:, :, :, 5:8], k[:, :, :, 5:8]) and torch.equal(looped[2][:, :, :, 8:], k[:, :, :, 8:])
    with pytest.raises(ValueError):
        gpu_bench.generation_loop(step, looped, models.next_step, steps=0)


def test_gemm_problems_and_matrix_vector_detection():
    step, spec, _ = tiny_llama_decode(context=16)
    problems, gemv, scaled = gcompile.gemm_problems(export_module(step, spec))
    assert problems == 4 and gemv == problems and scaled == 0  # every linear of a decode step multiplies one row
    bert, bspec = tiny_bert(batch=2, seq=16)
    problems, gemv, _ = gcompile.gemm_problems(export_module(bert, bspec))
    assert problems >= 3 and gemv == 0
    # a dynamic batch makes the shapes SymInts, which cannot be hashed: the problems are told apart by name
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)).eval()
    mspec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(8, 1, 64, "batch"), inp.Dim(64))),))
    assert gcompile.gemm_problems(export_module(mlp, mspec)) == (2, 0, 0)


def test_trials_compile_with_the_builds_options():
    """A decode step's trial gets coordinate-descent tuning (its GEMMs multiply one row), BERT's does not."""
    step, spec, _ = tiny_llama_decode(context=16)
    opts = gcompile.trial_options(step, inp.generate(spec, seed=0))
    assert opts == {"freezing": True, "coordinate_descent_tuning": True}
    bert, bspec = tiny_bert(batch=2, seq=16)
    assert gcompile.trial_options(bert, inp.generate(bspec, seed=0))["coordinate_descent_tuning"] is False


def test_an_int8_weight_only_trial_of_one_row_gets_the_tuning():
    """The quantize pass's int8 side (torchao's weight-only linear) multiplies one row too, so its trial is tuned
    where its kernels/ base is not (time_trial compiles each side with its own options)."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    mlp = torch.nn.Sequential(torch.nn.Linear(64, 64)).to(torch.bfloat16).eval()
    quantize_(mlp, Int8WeightOnlyConfig())
    x = torch.randn(1, 64, dtype=torch.bfloat16)
    assert gcompile.trial_options(mlp, (x,))["coordinate_descent_tuning"] is True
    assert gcompile.trial_options(mlp, (x.expand(8, 64).contiguous(),))["coordinate_descent_tuning"] is False


class Fp8Linear(torch.nn.Module):
    """x @ w.T in fp8 through aten._scaled_mm, what torchao's float8 dynamic quantization exports to."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(n_out, n_in).to(torch.float8_e4m3fn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ones = torch.ones(x.shape[0], 1), torch.ones(1, self.w.shape[0])
        return torch._scaled_mm(x.to(torch.float8_e4m3fn), self.w.t(), *ones, out_dtype=torch.bfloat16)


def test_fp8_problems_are_counted_apart_and_cost_more_to_tune():
    model = torch.nn.Sequential(Fp8Linear(32, 64), Fp8Linear(64, 32)).eval()
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(16), inp.Dim(32))),))
    problems = gcompile.gemm_problems(export_module(model, spec))
    assert problems == (2, 0, 2)
    assert problems.tuning_s() == 2 * gcompile.AUTOTUNE_S_PER_SCALED_PROBLEM
    cfg = gcompile.GpuInductorAOT(max_autotune="budget", autotune_budget_s=120)
    tune, _, why = gcompile._decide(cfg, problems)  # 2 plain GEMMs would be tuned (12 s); 2 fp8 ones are not
    assert not tune and "2 GEMM/conv problems (2 fp8), estimated 240s > 120s" in why
    assert gcompile._decide(cfg, gcompile.Problems(2))[0]


def test_device_strings_carry_an_index():
    """torch.export writes devices into graphs as given; tensors always carry an index (see device.DEVICE)."""
    assert device.DEVICE == "cuda:0"
    assert device.normalize("cuda") == "cuda:0" and device.normalize("cuda:0") == "cuda:0"
    assert device.normalize(torch.device("cuda", 0)) == "cuda:0"
    assert device.normalize("cpu") == "cpu"


@pytest.mark.parametrize("mode, problems, gemv, tune, cd, words", [
    ("budget", 10, 0, True, False, "estimated 60s <= 300s"),
    ("budget", 80, 0, False, False, "max-autotune skipped: 80 GEMM/conv problems"),
    ("budget", 0, 0, False, False, "no GEMM/conv problems"),
    ("off", 10, 3, False, True, "coordinate-descent tuning (3 matrix-vector"),
    ("on", 80, 0, True, False, "max-autotune on 80"),
])
def test_autotune_budget_decision(mode, problems, gemv, tune, cd, words):
    cfg = gcompile.GpuInductorAOT(max_autotune=mode, autotune_budget_s=300)
    got = gcompile._decide(cfg, gcompile.Problems(problems, gemv))
    assert got[:2] == (tune, cd) and words in got[2]


def test_inductor_options_exist_in_this_torch():
    from torch._inductor import config

    opts = gcompile.inductor_options(True, True, True, tma=True, unfused_bias=True, realize_opcount=8)
    assert opts["triton.enable_persistent_tma_matmul"] is True and opts["realize_opcount_threshold"] == 8
    assert "realize_opcount_threshold" not in gcompile.inductor_options(True, True, True)
    assert opts["keep_addmm_fused_for_half_dtypes"] is False  # torch 2.13 has the switch (added in 2.10)
    assert "keep_addmm_fused_for_half_dtypes" not in gcompile.inductor_options(True, True, True)
    assert "triton.enable_persistent_tma_matmul" not in gcompile.inductor_options(False, False, True, tma=True)
    for key in opts:
        obj = config
        for part in key.split("."):
            assert hasattr(obj, part), key
            obj = getattr(obj, part)
    with pytest.raises(ValueError):
        gcompile.GpuInductorAOT(max_autotune="auto")


@pytest.mark.parametrize("tokens, allowed, fp8, int4, expected", [
    (1, {"fp32", "bf16", "int8"}, "float8_e4m3fn", True, "int8_weight_only"),  # int4 only when the job allows it
    (1, {"fp32", "int4"}, "float8_e4m3fn", True, "int4_weight_only"),
    (64, {"fp32", "int8"}, "", False, "int8_weight_only"),
    (3072, {"fp32", "bf16", "int8"}, "float8_e4m3fn", True, "int8_dynamic"),  # fp8 not allowed by default
    (3072, {"fp32", "fp8"}, "float8_e4m3fn", True, "fp8_dynamic"),
    (3072, {"fp32", "fp8", "int8"}, "float8_e4m3fnuz", False, "fp8_dynamic"),
    (3072, {"fp32", "fp8", "int8"}, "", False, "int8_dynamic"),  # device without fp8
])
def test_quantization_choice(tokens, allowed, fp8, int4, expected):
    picked = quantize.choose(tokens, frozenset(allowed), fp8, int4, 64)
    assert picked.name == expected
    if expected == "fp8_dynamic":
        assert picked.dtype == fp8


def test_quantization_choice_says_why_not():
    assert "neither int8 nor int4" in quantize.choose(1, frozenset({"fp32", "bf16"}), "", False, 64)
    assert "neither fp8 nor int8" in quantize.choose(999, frozenset({"fp32", "bf16"}), "x", True, 64)


class _Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = torch.nn.Linear(256, 512), torch.nn.Linear(512, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


@pytest.mark.parametrize("base_ms, trial_ms, kept", [(2.0, 1.0, True), (1.0, 1.3, False), (1.0, 0.99, False)])
def test_quantization_is_kept_only_where_it_measures_faster(monkeypatch, tmp_path, base_ms, trial_ms, kept):
    """The decision around torchao's int8 weight-only swap; the times are given (time_trial needs a GPU):
    slower, or faster by less than 2%, and the model is the unquantized one again, its precision too."""
    monkeypatch.setattr(quantize, "_needs", lambda work, precision: None)  # the schemes' GPU check
    monkeypatch.setattr(quantize, "_unmeasured", lambda work: "")
    timed = []
    monkeypatch.setattr(quantize, "_timed", lambda picked, base, work, rival: timed.append((base, work.module)) or (
        {"base_ms": base_ms, "trial_ms": trial_ms, "graphs": 1, "compiled": 1}, False))
    model = _Mlp().eval()
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(1), inp.Dim(256))),))
    work = Work(model, spec, "cpu", str(tmp_path), allowed=frozenset({"fp32", "int8"}))
    row = apply(quantize.QuantizeForDevice(), work, "LEVEL_O3")
    (base, trial), = timed
    assert base is not trial and type(base.up.weight) is torch.nn.Parameter  # a copy taken before quantizing
    assert type(trial.up.weight) is not torch.nn.Parameter  # torchao's int8 tensor subclass
    assert row["applied"] is kept, row["reason"]
    assert work.precision == ("int8" if kept else "fp32")
    assert (work.module is trial) is kept and (work.module is base) is not kept
    assert f"float32 {base_ms:.3f} -> int8_weight_only {trial_ms:.3f} ms" in row["reason"]
    if not kept:
        assert "measured no faster than float32, left unquantized" in row["reason"]


def test_quantization_says_when_it_was_not_measured(monkeypatch, tmp_path):
    monkeypatch.setattr(quantize, "_needs", lambda work, precision: None)
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(1), inp.Dim(256))),))
    work = Work(_Mlp().eval(), spec, "cpu", str(tmp_path), allowed=frozenset({"fp32", "int8"}))
    row = apply(quantize.QuantizeForDevice(), work, "LEVEL_O3")
    assert row["applied"] and row["reason"].endswith("not measured: no GPU"), row["reason"]
    assert work.precision == "int8"


def test_tokens_per_linear_and_hf_conv1d_become_linears():
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    gpt = GPT2Model(GPT2Config(n_embd=128, n_layer=1, n_head=4, vocab_size=300, n_positions=64)).eval()
    x = torch.randint(0, 300, (2, 24))
    with torch.inference_mode():
        before = gpt(x).last_hidden_state
    assert quantize.tokens_per_linear(gpt, (x,)) == 48
    assert len(quantize.linears(gpt)) == 4  # c_attn, c_proj, c_fc, mlp.c_proj: HF Conv1D swapped for nn.Linear
    with torch.inference_mode():
        torch.testing.assert_close(gpt(x).last_hidden_state, before, rtol=1e-5, atol=1e-5)


def test_int8_dynamic_leaves_layers_called_with_few_rows(monkeypatch, tmp_path):
    """BERT's pooler multiplies the batch's [CLS] rows only (4 here): torch._int_mm refuses 16 or fewer when the
    exported program runs eagerly, so that layer stays as it is and every other linear is quantized."""
    model, spec = tiny_bert(batch=4, seq=64)
    work = Work(model, spec, "cpu", str(tmp_path), allowed=frozenset({"fp32", "int8"}))
    pooler = model.model.pooler.dense
    rows = quantize.rows_per_linear(model, work.example())
    assert rows[id(pooler)] == [4] and all(calls == [256] for i, calls in rows.items() if i != id(pooler))
    monkeypatch.setattr(quantize, "_needs", lambda work, precision: None)  # the scheme's GPU check, on the CPU
    row = apply(quantize.Int8Dynamic(), work, "LEVEL_O3")
    assert row["applied"] and "1 kept (called with 4 rows (torch._int_mm takes more than 16))" in row["reason"], row
    assert type(model.model.pooler.dense.weight) is torch.nn.Parameter
    assert type(model.model.encoder.layer[0].output.dense.weight) is not torch.nn.Parameter  # quantized


def test_gpu_passes_on_cpu_say_why_they_do_nothing(tmp_path):
    model, spec = tiny_bert(batch=1, seq=8)
    work = Work(model, spec, "cpu", str(tmp_path))
    row = apply(passes.SdpaBackend(), work, "LEVEL_O1")
    assert not row["applied"] and "2 attention call" not in row["reason"] and "GPUs only" in row["reason"]
    row = apply(passes.ChannelsLast(), work, "LEVEL_O1")
    assert not row["applied"] and "no 2-D convolutions" in row["reason"]
    row = apply(passes.CustomKernels(), work, "LEVEL_O3")
    assert not row["applied"] and "custom kernels are tried on GPUs only" in row["reason"]
    row = apply(passes.CustomKernels(folder="no-such-kernels"), work, "LEVEL_O3")
    assert not row["applied"] and "no-such-kernels/ does not exist" in row["reason"]
    row = apply(quantize.Int8WeightOnly(), work, "LEVEL_O3")
    assert not row["applied"] and "GPUs only" in row["reason"]


_FAKE_KERNELS = """
import copy

def candidates(module, device, example):
    whole = getattr(module, "whole", False)  # like kernels/' decode layers: kept, the parts have nothing left
    found = [] if whole else [("whole", lambda m: _with(m, "whole"))]
    if not whole and not getattr(module, "part", False):
        found.append(("part", lambda m: _with(m, "part")))
    return found + [("other", lambda m: _with(m, "other"))]

def _with(m, name):
    m = copy.deepcopy(m)
    setattr(m, name, True)
    return m
"""


@pytest.mark.parametrize("whole_ms, tried", [(1.0, ["whole", "other"]), (3.0, ["whole", "part", "other"]),
                                             (None, ["whole", "part", "other"])])
def test_kernel_candidates_are_asked_again_after_each_trial(tmp_path, monkeypatch, whole_ms, tried):
    """A kept candidate can leave nothing for a later one: the pass asks kernels/ again after each trial and
    tries only what is still offered, each candidate once (times are given here: the GPU tests time them)."""
    folder = tmp_path / "fake_kernels"
    folder.mkdir()
    (folder / "__init__.py").write_text(_FAKE_KERNELS)
    timed = []

    def trial(kind, name, base, candidate, x, device):  # noqa: ANN001, ANN202
        timed.append(name)
        if whole_ms is None and name == "whole":
            raise RuntimeError("the candidate's kernel failed to compile")  # rejected, the others still tried
        return {"base_ms": 2.0, "trial_ms": whole_ms if name == "whole" else 2.5, "compiled": 1, "graphs": 1}, False

    monkeypatch.setattr(passes, "on_gpu", lambda work: True)
    monkeypatch.setattr(passes, "decided_trial", trial)
    work = Work(torch.nn.Linear(4, 4), inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(1), inp.Dim(4))),)),
                "cpu", str(tmp_path))
    row = apply(passes.CustomKernels(folder=str(folder)), work, "LEVEL_O3")
    kept = whole_ms is not None and whole_ms < 2.0
    assert timed == tried
    assert row["applied"] is kept and getattr(work.module, "whole", False) is kept
    assert not hasattr(work.module, "other"), row["reason"]
    assert ("whole failed: RuntimeError: the candidate's kernel failed to compile" in row["reason"]) is \
        (whole_ms is None), row["reason"]


def test_a_candidate_that_faults_the_gpu_fails_the_attempt_and_is_skipped_on_the_next(tmp_path, monkeypatch):
    """A kernel's illegal memory access loses the process's CUDA context: every later call fails, so the build
    cannot go on (the 1B Llama's O3 builds on the H200, 2026-12-05, when kpt_decode_prefetch faulted). The pass
    records the fault in the decision cache and ends the attempt with DeviceFault (retried in a fresh process);
    there the candidate is not tried again and the others are."""
    folder = tmp_path / "fake_kernels"
    folder.mkdir()
    (folder / "__init__.py").write_text(_FAKE_KERNELS)
    monkeypatch.setenv("KPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(passes, "on_gpu", lambda work: True)
    timed = []

    def time_trial(base, candidate, x):  # noqa: ANN001, ANN202
        name = "whole" if getattr(candidate, "whole", False) else "part" if getattr(candidate, "part", False) else "other"
        timed.append(name)
        if name == "whole":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return {"base_ms": 2.0, "trial_ms": 2.5, "compiled": 1, "graphs": 1}

    monkeypatch.setattr(passes, "time_trial", time_trial)
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(1), inp.Dim(4))),))
    work = Work(torch.nn.Linear(4, 4), spec, "cpu", str(tmp_path))
    with pytest.raises(DeviceFault, match="kernel candidate whole faulted the GPU") as caught:
        apply(passes.CustomKernels(folder=str(folder)), work, "LEVEL_O3")
    assert caught.value.retryable and caught.value.metadata == {"candidate": "whole"} and timed == ["whole"]
    work = Work(torch.nn.Linear(4, 4), spec, "cpu", str(tmp_path))  # the next attempt, in a fresh process
    row = apply(passes.CustomKernels(folder=str(folder)), work, "LEVEL_O3")
    assert timed == ["whole", "part", "other"]
    assert "whole not tried: it faulted the GPU in an earlier trial (RuntimeError: CUDA error: an illegal" in \
        row["reason"], row["reason"]
    # an error of one call is a failed candidate, not a fault
    assert not passes.gpu_fault(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert passes.gpu_fault(ValueError("x").with_traceback(None)) is False
    try:
        try:
            raise RuntimeError("CUDA driver error: an illegal memory access was encountered")
        except RuntimeError as inner:
            raise RuntimeError("graph capture failed") from inner
    except RuntimeError as outer:
        assert passes.gpu_fault(outer)


def test_first_cause_names_what_failed_before_the_error_raised():
    try:
        try:
            raise ValueError("operation not permitted when stream is capturing\nmore")
        except ValueError:  # handling it (the capture's end) raises another
            raise RuntimeError("operation failed due to a previous error during capture")  # noqa: B904
    except RuntimeError as e:
        assert first_cause(e, 40) == ("RuntimeError: operation failed due to a previous error (first: "
                                      "ValueError: operation not permitted when stream is c)")
    assert first_cause(KeyError("k")) == "KeyError: 'k'"  # no chain: cause() alone


def _host_sync() -> None:
    raise ValueError("operation not permitted when stream is capturing")


def test_first_frames_say_where_the_first_error_of_a_chain_was_raised():
    """The frames of the earliest exception (the call that broke a capture), innermost first, not the later one's."""
    try:
        try:
            _host_sync()
        except ValueError:
            raise RuntimeError("operation failed due to a previous error during capture")  # noqa: B904
    except RuntimeError as e:
        where = first_frames(e, frames=2)
    inner, outer = where.split(" <- ")
    assert inner.startswith("test_gpu_logic.py:") and " _host_sync: raise ValueError(" in inner
    assert " test_first_frames_say_where_the_first_error_of_a_chain_was_raised: _host_sync()" in outer
    assert first_frames(KeyError("k")) == ""  # never raised: no traceback


def _with_layers(module: torch.nn.Module) -> torch.nn.Module:
    out = copy.deepcopy(module)
    out.layers = True
    return out


@pytest.mark.parametrize("tokens, layers_ms, fits, kept", [(1, 1.0, True, False), (1, 3.0, True, True),
                                                           (128, 1.0, True, True), (1, 1.0, False, True)])
def test_weight_only_quantization_is_timed_against_the_kernels_it_forgoes(tmp_path, monkeypatch, tokens, layers_ms,
                                                                          fits, kept):
    """Where the linears are memory-bound, quantizing costs the kernels/ swaps that read plain weights (whole
    decode layers): the unquantized model is timed with them where a third copy of it fits (times given here:
    the GPU tests time them)."""
    def candidates(module, device, x):  # noqa: ANN001, ANN202 - kernels/' entry point, faked
        if getattr(module, "int8", False):
            return [("norms", lambda m: m)]
        return [("layers", _with_layers), ("norms", lambda m: m)]

    def int8(cfg, work):  # noqa: ANN001, ANN202 - the quantization itself, faked
        work.module.int8 = True
        return passes.Outcome(True, "int8 weights")

    timed = []

    def trial(kind, what, base, candidate, x, device):  # noqa: ANN001, ANN202
        timed.append((what, getattr(base, "layers", False)))
        return {"base_ms": layers_ms if getattr(base, "layers", False) else 2.5, "trial_ms": 2.0}, False

    monkeypatch.setattr(passes, "kernel_candidates", lambda folder="kernels": candidates)
    monkeypatch.setattr(passes, "decided_trial", trial)
    monkeypatch.setattr(quantize, "_unmeasured", lambda work: "")
    monkeypatch.setattr(quantize, "_free", lambda device: 2**40 if fits else 2**10)
    monkeypatch.setitem(quantize.REGISTRY, quantize.Int8WeightOnly, int8)
    monkeypatch.setitem(quantize.REGISTRY, quantize.Int8Dynamic, int8)
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(tokens), inp.Dim(256))),))
    work = Work(torch.nn.Sequential(torch.nn.Linear(256, 256)), spec, "cpu", str(tmp_path))
    row = apply(quantize.QuantizeForDevice(), work, "LEVEL_O3")
    assert row["applied"] is kept and getattr(work.module, "int8", False) is kept, row["reason"]
    assert not hasattr(work.module, "layers")  # the swap itself is the custom_kernels pass's to try
    rival = tokens == 1 and fits
    assert timed == ([("Int8WeightOnly() against layers", True)] if rival else
                     [("Int8WeightOnly()" if tokens == 1 else "Int8Dynamic()", False)])
    assert ("float32 with layers" in row["reason"]) is rival, row["reason"]


def test_bf16_on_an_uploaded_graph_only_where_it_runs(tmp_path):
    """An exported graph keeps the dtype conversions it was traced with: bf16 is kept where the graph runs in
    it (BERT) and refused with the reason where it hard-codes fp32 (the decode step's cache casts)."""
    for (model, spec), applied in ((tiny_bert(batch=1, seq=8), True), (tiny_llama_decode(context=16)[:2], False)):
        gm = export_module(model, spec).module()
        work = Work(gm, spec, "cpu", str(tmp_path), allowed=frozenset({"fp32", "bf16"}))
        row = apply(passes.ReducedPrecision("bf16"), work, "LEVEL_O2")
        assert row["applied"] is applied, row["reason"]
        assert work.precision == ("bf16" if applied else "fp32")
        if not applied:
            assert "hard-codes fp32" in row["reason"] and work.module is gm


def test_attention_recorder_sees_eager_and_exported_calls():
    model, spec = tiny_bert(batch=2, seq=8)
    x = inp.generate(spec, seed=0)
    for m in (model, export_module(model, spec).module()):
        rec = passes._RecordAttention()
        with rec, torch.inference_mode():
            m(*x)
        assert sum(c[3] for c in rec.calls.values()) == 2  # one per layer, same shapes


def test_levels_follow_the_precision_table():
    no_bf16 = levels.levels(Precisions(bf16=False))
    assert no_bf16["LEVEL_O2"][1].dtype == "fp16"
    o3 = levels.levels(Precisions(bf16=True, fp8="float8_e4m3fnuz", int4=True), int4_ntile=16)["LEVEL_O3"]
    q = next(c for c in o3 if isinstance(c, quantize.QuantizeForDevice))
    assert (q.fp8, q.int4, q.int4_ntile) == ("float8_e4m3fnuz", True, 16)
    assert [c.name for c in o3][-2:] == ["inductor_aot", "cuda_graphs"]


def test_package_key_depends_on_weights_options_and_attention():
    model, spec = tiny_bert(batch=1, seq=8)
    ep = export_module(model, spec)
    k = cache.package_key(ep, {"freezing": True}, (), "dev")
    assert k == cache.package_key(export_module(model, spec), {"freezing": True}, (), "dev")
    assert k != cache.package_key(ep, {"freezing": False}, (), "dev")
    assert k != cache.package_key(ep, {"freezing": True}, ("FLASH_ATTENTION",), "dev")
    with torch.no_grad():
        next(model.parameters())[0, 0] += 1e-3
    assert k != cache.package_key(export_module(model, spec), {"freezing": True}, (), "dev")


def test_cache_store_fetch_and_trim(tmp_path):
    pkg = tmp_path / "a.pt2"
    pkg.write_bytes(b"x" * 1000)
    cache.store(str(tmp_path / "c"), "k1", str(pkg))
    assert cache.fetch(str(tmp_path / "c"), "k1", str(tmp_path / "out" / "b.pt2"))
    assert (tmp_path / "out" / "b.pt2").read_bytes() == b"x" * 1000
    assert not cache.fetch(str(tmp_path / "c"), "k2", str(tmp_path / "out" / "c.pt2"))
    cache.trim(str(tmp_path / "c" / "aoti"), max_bytes=10)
    assert not cache.fetch(str(tmp_path / "c"), "k1", str(tmp_path / "out" / "d.pt2"))


def _decide_in_process(folder: str, key: str, log_path: str, value: int, out) -> None:  # noqa: ANN001
    import time as _time

    def measure() -> dict:
        with open(log_path, "a") as f:
            f.write(f"{value}\n")
        _time.sleep(0.3)  # long enough that the other process asks while this one measures
        return {"pick": value}

    out.put(cache.decided(folder, key, measure))


def test_decisions_taken_at_once_are_measured_once_and_agree(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    key = cache.choice_key("test", {"shape": [8, 384]})
    procs = [ctx.Process(target=_decide_in_process, args=(str(tmp_path), key, str(tmp_path / "measured"), i, q))
             for i in range(3)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert len((tmp_path / "measured").read_text().split()) == 1  # one process measured
    assert len({r[0]["pick"] for r in results}) == 1  # all three took its decision
    assert sorted(r[1] for r in results) == [False, True, True]
    assert cache.decided(str(tmp_path), key, lambda: {"pick": -1}) == (results[0][0], True)
    assert cache.decided(None, key, lambda: {"pick": -1}) == ({"pick": -1}, False)


def test_with_shape_sets_benchmark_sizes():
    _, spec = tiny_bert()
    s = models.with_shape(spec, {"input_ids": (8, 384), "attention_mask": (8, 384)})
    assert [d.size for d in s.tensors[0].dims] == [8, 384] and s.tensors[0].high == 1000


def test_compile_pass_builds_then_reuses_the_package(tmp_path, kpt_cache_dir):
    """The GPU compile pass end to end where it can run here (AOTInductor for the CPU): the second build of
    the same program is a cache copy, and both packages load and agree with eager."""
    from kpt.gpu.compile import GpuInductorAOT

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8)).eval()
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(4), inp.Dim(32))),))
    rows, paths = [], []
    for i in range(2):
        work = Work(model, spec, "cpu", str(tmp_path / f"w{i}"))
        rows.append(apply(GpuInductorAOT(max_autotune="off"), work, "LEVEL_O1"))
        paths.append(work.artifact.path)
    assert "compiled in" in rows[0]["reason"] and "reused from the cache" in rows[1]["reason"]
    assert rows[1]["seconds"] < rows[0]["seconds"] / 3
    x = inp.generate(spec, seed=5)
    for p in paths:
        with torch.inference_mode():
            torch.testing.assert_close(runtime.load_aoti(p)(*x), model(*x))
    # One load per package per process, whatever its path (the second is a copy out of the cache), and the
    # runtime record appended later does not make it another package.
    first, second = runtime.load_aoti(paths[0]), runtime.load_aoti(paths[1])
    assert first.runner is second.runner and first.lock is second.lock
    runtime.write_record(paths[1], cudagraphs=False)
    assert runtime.identity(paths[1]) == runtime.identity(paths[0])
    assert runtime.load_aoti(paths[1]).runner is first.runner


def test_fresh_process_check_passes_a_good_package_and_reports_a_broken_one(tmp_path):
    """The check the GPU compile pass runs on every new package, here on an AOTInductor package for the CPU."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(2), inp.Dim(16))),))
    path = str(tmp_path / "model.aoti.pt2")
    torch._inductor.aoti_compile_and_package(export_module(model, spec), package_path=path)
    x = inp.generate(spec, seed=0)
    assert runtime.check_in_fresh_process(path, x, "cpu") > 0
    broken = tmp_path / "broken.pt2"
    broken.write_bytes((tmp_path / "model.aoti.pt2").read_bytes()[:4096])
    with pytest.raises(Unsupported, match="failed in a fresh process .exit code 1. while loading the package"):
        runtime.check_in_fresh_process(str(broken), x, "cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pt2", "model.aoti.pt2"]  # inputs file removed


def test_tensorwise_fp8_leaves_128x128_weights_alone():
    assert quantize._tensorwise_fp8_misread(torch.nn.Linear(128, 128))
    assert not quantize._tensorwise_fp8_misread(torch.nn.Linear(128, 512))


def test_cast_down_keeps_rotary_frequencies_in_fp32():
    """bf16 inverse frequencies rotate a token at position 2000 by a wrong angle: the decode step cast whole
    fell to 13 dB SQNR against fp32 (3 dB for the 1B Llama on the H200); with them kept in fp32 it stays in bf16's
    bounds. HF's rotary buffers (inv_freq, original_inv_freq) stay fp32 the same way."""
    import copy

    from kpt.optimize import accuracy
    from kpt.optimize import inputs as inp
    from kpt.optimize.graph_passes import CastBoundary

    step, spec, lm = tiny_llama_decode(context=2048, layers=8)
    low = CastBoundary(copy.deepcopy(step), torch.bfloat16)
    assert low.inner.inv_freq.dtype == torch.float32 and low.inner.lm_head.weight.dtype == torch.bfloat16
    hf = CastBoundary(copy.deepcopy(lm), torch.bfloat16).inner.model.rotary_emb
    assert hf.inv_freq.dtype == hf.original_inv_freq.dtype == torch.float32
    x = inp.generate(spec, 1, "cpu")
    x[1].fill_(2000)
    with torch.inference_mode():
        ref = step(*x)
        kept = accuracy.compare(low(*x), ref)
        low.inner._buffers["inv_freq"] = step.inv_freq.to(torch.bfloat16)  # what module.to(bf16) made of it
        whole = accuracy.compare(low(*x), ref)
    assert kept.rel_l2 <= accuracy.DEFAULTS["bf16"].max_rel_l2 < whole.rel_l2


def test_attention_candidates_include_math_once():
    """The math backend is measured like the fused ones; chosen first it is listed once, left out it still comes
    last as the fallback, and the context built from either order runs attention."""
    from torch.nn.attention import SDPBackend

    assert passes.BACKENDS[-1] == "MATH" and passes.SdpaBackend().candidates == passes.BACKENDS
    assert passes.attention_backends(("MATH", "FLASH_ATTENTION")) == [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION]
    assert passes.attention_backends(("CUDNN_ATTENTION",)) == [SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]
    q = torch.randn(1, 2, 4, 8)
    mask = torch.ones(4, 4, dtype=torch.bool).tril()
    want = torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    for order in (("MATH", "FLASH_ATTENTION"), ("FLASH_ATTENTION",)):
        with passes.attention_context(order):  # on the CPU only math runs these
            got = torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)
        torch.testing.assert_close(got, want)


def test_compare_interleaves_with_a_rotating_order():
    from kpt.gpu import bench as gpu_bench

    calls = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    ms = {"a": [3.0, 1.0, 2.0], "b": [5.0, 5.0, 4.0], "c": [9.0, 7.0, 8.0]}
    got = gpu_bench.compare(fns, reps=3, warmup=1, timer=lambda fn: (fn(), ms[calls[-1]].pop(0))[1])
    assert got == {"a": 2.0, "b": 5.0, "c": 8.0}
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")  # warmups, then three rotated rounds
    with pytest.raises(ValueError):
        gpu_bench.compare({}, reps=3)


def test_attention_backends_timed_under_their_own_context():
    """Each backend's calls are timed with only that backend enabled (the context is entered around the timed
    call); one that cannot run a call is reported with the reason, and the totals weigh calls by their count."""
    q = torch.randn(1, 2, 4, 8)
    calls = [(torch.nn.functional.scaled_dot_product_attention, (q, q, q), {}, 3)]

    def timer(fn):  # 1 ms when only math is enabled, as the MATH context leaves it; 100 ms otherwise
        fn()
        alone = torch.backends.cuda.math_sdp_enabled() and not torch.backends.cuda.flash_sdp_enabled()
        return 1.0 if alone else 100.0

    got = passes.time_backends(("CUDNN_ATTENTION", "MATH"), calls, reps=4, timer=timer)
    assert got["MATH"] == 3.0 and got["CUDNN_ATTENTION"].startswith("not usable for [(1, 2, 4, 8)")


def test_a_boolean_mask_is_made_additive_as_the_compiled_graph_passes_it():
    """0 where attended, -inf elsewhere, in the query's dtype, by keyword or positionally; the attention's result is
    the boolean mask's. Other calls pass unchanged."""
    q = torch.randn(2, 2, 5, 8, dtype=torch.bfloat16)
    mask = torch.rand(2, 1, 5, 5) > 0.3
    mask[..., 0] = True  # no row without a key
    args, kwargs = passes.additive_mask((q, q, q), {"attn_mask": mask, "scale": 0.5})
    add = kwargs["attn_mask"]
    assert add.dtype == torch.bfloat16 and add.shape == mask.shape and kwargs["scale"] == 0.5
    assert torch.equal(add == 0, mask) and torch.isneginf(add[~mask]).all()
    sdpa = torch.nn.functional.scaled_dot_product_attention
    assert torch.equal(sdpa(*args, **kwargs), sdpa(q, q, q, attn_mask=mask, scale=0.5))
    pos_args, _ = passes.additive_mask((q, q, q, mask, 0.0, False), {})
    assert torch.equal(pos_args[3], add) and pos_args[4:] == (0.0, False)
    float_mask = torch.zeros(2, 1, 5, 5, dtype=torch.bfloat16)
    for call in (((q, q, q), {"is_causal": True}), ((q, q, q), {"attn_mask": float_mask})):
        assert passes.additive_mask(*call) == call


def test_attention_backends_are_timed_with_the_additive_mask():
    """What each backend is timed on (and tried for usability with) is the call with its mask made additive."""
    q = torch.randn(1, 2, 4, 8)
    seen = []

    def sdpa(*args, **kwargs):
        seen.append(kwargs["attn_mask"].dtype)
        return torch.nn.functional.scaled_dot_product_attention(*args, **kwargs)

    calls = [(sdpa, (q, q, q), {"attn_mask": torch.ones(1, 1, 4, 4, dtype=torch.bool)}, 2)]
    got = passes.time_backends(("MATH",), calls, reps=2, timer=lambda fn: (fn(), 1.5)[1])
    assert got == {"MATH": 3.0} and seen and set(seen) == {torch.float32}


def test_persistent_tma_rides_on_the_tuned_compile_and_needs_an_sm90_gpu(monkeypatch):
    table = Precisions(bf16=True, fp8="float8_e4m3fn", int4=True)
    for lvl, want in (("LEVEL_O1", None), ("LEVEL_O2", True), ("LEVEL_O3", True)):
        aot = [p for p in levels.levels(table, persistent_tma=True)[lvl] if isinstance(p, gcompile.GpuInductorAOT)]
        assert [p.persistent_tma for p in aot] == [want]
    monkeypatch.setenv("KPT_GPU_PERSISTENT_TMA", "1")
    monkeypatch.setattr(gcompile.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gcompile.torch.cuda, "get_device_capability", lambda *a: (8, 0))
    assert not gcompile._tma(gcompile.GpuInductorAOT())  # an A100: no TMA
    monkeypatch.setattr(gcompile.torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert gcompile._tma(gcompile.GpuInductorAOT())  # the setting
    assert not gcompile._tma(gcompile.GpuInductorAOT(persistent_tma=False))  # the pass's own choice first


def test_unfused_bias_rides_on_the_tuned_compile_and_the_pass_choice_beats_the_setting(monkeypatch):
    table = Precisions(bf16=True, fp8="float8_e4m3fn", int4=True)
    for lvl, want in (("LEVEL_O1", None), ("LEVEL_O2", True), ("LEVEL_O3", True)):
        aot = [p for p in levels.levels(table, unfused_bias=True)[lvl] if isinstance(p, gcompile.GpuInductorAOT)]
        assert [p.unfused_bias for p in aot] == [want]
    assert not gcompile._wanted(None, "KPT_GPU_UNFUSED_BIAS")  # off by default
    monkeypatch.setenv("KPT_GPU_UNFUSED_BIAS", "1")
    assert gcompile._wanted(None, "KPT_GPU_UNFUSED_BIAS")
    assert not gcompile._wanted(False, "KPT_GPU_UNFUSED_BIAS")


def test_realize_opcount_rides_on_the_tuned_compile():
    table = Precisions(bf16=True, fp8="float8_e4m3fn", int4=True)
    for lvl, want in (("LEVEL_O1", None), ("LEVEL_O2", 8), ("LEVEL_O3", 8)):
        aot = [p for p in levels.levels(table, realize_opcount=8)[lvl] if isinstance(p, gcompile.GpuInductorAOT)]
        assert [p.realize_opcount for p in aot] == [want]
    with pytest.raises(ValueError, match="realize_opcount"):
        gcompile.GpuInductorAOT(realize_opcount=0)


@pytest.mark.parametrize("rewritten", [True, False])
def test_a_failed_build_with_gemm_written_casts_is_built_again_without_them(tmp_path, kpt_cache_dir, monkeypatch,
                                                                             rewritten):
    """kpt.gpu.casts is judged supported from this torch's sources, not from a run: a build with the rewrite that
    fails is retried once without it, and says so. Here (AOTInductor for the CPU) the rewrite's report and the
    failure are stood in for; a build without the rewrite that fails is not retried."""
    from kpt.gpu import casts
    from kpt.gpu.compile import GpuInductorAOT

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 8)).eval()
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(4), inp.Dim(32))),))
    work = Work(model, spec, "cpu", str(tmp_path))
    real_export, real_aoti, asked = gcompile.export_for_compile, torch._inductor.aoti_compile_and_package, []

    def export(w, gemm_rewrites=True):
        ep, done = real_export(w, gemm_rewrites)
        asked.append(gemm_rewrites)
        return ep, (f"1 {casts.DONE}" if gemm_rewrites and rewritten else done)

    def aoti(ep, **kw):
        if asked[-1]:
            raise RuntimeError("no C shim for aten.mm.dtype\nsecond line")
        return real_aoti(ep, **kw)

    monkeypatch.setattr(gcompile, "export_for_compile", export)
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", aoti)
    if not rewritten:
        with pytest.raises(Unsupported, match="no C shim for aten.mm.dtype"):
            apply(GpuInductorAOT(max_autotune="off", cache=False), work, "LEVEL_O1")
        assert asked == [True]
        return
    row = apply(GpuInductorAOT(max_autotune="off", cache=False), work, "LEVEL_O1")
    assert asked == [True, False]
    assert row["reason"].endswith("output casts and GELUs left to their own kernels: the build with them done by the "
                                  "GEMM failed (RuntimeError: no C shim for aten.mm.dtype)"), row["reason"]
    x = inp.generate(spec, seed=1)
    with torch.inference_mode():
        torch.testing.assert_close(runtime.load_aoti(work.artifact.path)(*x), model(*x))


class _RowsTimesWeight(torch.nn.Module):
    """x [1, 256] -> [1, 256] with no aten GEMM (a product and a sum): as a base whose matrix-vector products are
    kernels/' custom ops looks to kpt.gpu.compile.trial_options."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(256, 256) / 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.unsqueeze(-1) * self.w).sum(-2)


def test_each_side_of_a_kernel_trial_compiles_with_its_own_options(monkeypatch):
    """A base without a one-row GEMM gets no coordinate-descent tuning; a trial with one does (the 1B decode
    step's int8 trial had its bf16 base's options: 17.473 ms untuned, H100, 2026-12-08)."""
    options = {}
    compile_ = torch.compile

    def spy(model, **kwargs):  # noqa: ANN001, ANN202 - records each side's options, compiles as asked
        options[type(model).__name__] = kwargs["options"]
        return compile_(model, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    monkeypatch.setattr(passes, "_timed_runners", lambda runners, x, waiting: {"base_ms": 1.0, "trial_ms": 1.0})
    x = (torch.randn(1, 256),)
    assert passes.time_trial(_RowsTimesWeight().eval(), _Mlp().eval(), x)["compiled"] == 1
    assert options == {"_RowsTimesWeight": {"freezing": True, "coordinate_descent_tuning": False},
                       "_Mlp": {"freezing": True, "coordinate_descent_tuning": True}}


def test_kernel_trials_compile_both_sides_first(monkeypatch):
    """time_trial's compile step on the CPU (its graph replay needs a GPU: tests/gpu/test_gpu_runtime.py)."""
    from kpt.gpu import graph_edges

    seen, waited = [], []

    def timed(runners, x, waiting):  # noqa: ANN001, ANN202 - stands in for the graph replay
        with torch.inference_mode():
            seen.append({n: (type(r).__name__, r(*x)) for n, r in runners.items()})
        waited.append(waiting)
        return {"base_ms": 1.0, "trial_ms": 1.0, "graphs": 1}

    monkeypatch.setattr(passes, "_timed_runners", timed)
    base, trial = _Mlp().eval(), _Mlp().eval()
    setattr(trial, graph_edges.ATTR, ("_gemv_kernel",))  # kernels/ asked its launches for PDL
    x = (torch.randn(2, 256),)
    assert passes.time_trial(base, trial, x)["compiled"] == 1
    assert passes.time_trial(base, trial, x, compiled=False)["compiled"] == 0
    # each side's graph is replayed as its package would be: the trial's edges into its waiting kernels programmatic
    assert waited == [{"base_ms": (), "trial_ms": ("_gemv_kernel",)}] * 2
    compiled, plain = seen
    assert {t for t, _ in compiled.values()} == {"OptimizedModule"} and {t for t, _ in plain.values()} == {"_Mlp"}
    for name in ("base_ms", "trial_ms"):
        torch.testing.assert_close(compiled[name][1], plain[name][1])
