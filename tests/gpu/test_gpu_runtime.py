"""On the GPU: an AOTInductor package replayed as CUDA graphs (per input shape, outputs not aliased,
same results as plain runs), and the attention backend chosen by measurement baked into the package."""

import copy
import zipfile

import pytest
import torch
import torch.nn.functional as F

from kpt.gpu import runtime
from kpt.gpu.compile import GpuInductorAOT
from kpt.gpu.device import DEVICE
from kpt.gpu.graphs import CudaGraphs
from kpt.gpu.passes import ReducedPrecision, SdpaBackend
from kpt.optimize import inputs as inp
from kpt.optimize.passes import Work, apply

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(240)]


def mlp_work(tmp_path) -> Work:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)).to(DEVICE).eval()
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(8, 1, 64, "batch"), inp.Dim(64))),))
    return Work(m, spec, DEVICE, str(tmp_path))


def test_package_replays_cuda_graphs_per_shape(tmp_path, kpt_cache_dir):
    work = mlp_work(tmp_path)
    reference = work.module
    loads = len(runtime._LOADED)
    rows = [apply(GpuInductorAOT(), work, "LEVEL_O2"), apply(CudaGraphs(min_speedup=0.0), work, "LEVEL_O2")]
    assert "loaded and run in a fresh process" in rows[0]["reason"], rows[0]["reason"]
    assert rows[1]["applied"], rows[1]["reason"]  # min_speedup 0: kept whenever capture is correct
    assert runtime.read_record(work.artifact.path)["cudagraphs"] is True
    loaded = runtime.load_aoti(work.artifact.path)
    assert isinstance(loaded, runtime.GraphedRunner)
    assert len(runtime._LOADED) == loads + 1  # the graphs pass and this load share one runner
    with torch.inference_mode():
        for batch in (8, 3, 8, 64):
            x = torch.randn(batch, 64, device=DEVICE)
            torch.testing.assert_close(loaded(x), reference(x), rtol=1e-5, atol=1e-5)
        assert len(loaded.graphs) == 3 and loaded.resident_bytes > 0
        first = loaded(torch.ones(8, 64, device=DEVICE))
        kept = first.clone()
        loaded(torch.zeros(8, 64, device=DEVICE))
        assert torch.equal(first, kept)  # an earlier result is not overwritten by the next replay


def test_large_inputs_are_read_in_place(tmp_path, kpt_cache_dir, monkeypatch):
    """An input of BIND_BYTES or more is not copied: the graph reads the caller's tensor (a change made in place
    shows in the next call), one graph per address up to BOUND_GRAPHS a shape, REBINDS new addresses more in the
    place of the least recently replayed, then that shape's copying graph (for the first ones too, dropped since);
    the shape's graphs share one memory pool; every result as the module's."""
    work = mlp_work(tmp_path)
    apply(GpuInductorAOT(), work, "LEVEL_O2")
    apply(CudaGraphs(min_speedup=0.0), work, "LEVEL_O2")
    monkeypatch.setattr(runtime, "BIND_BYTES", 1024)  # x [8, 64] fp32: 2 KB
    loaded = runtime.load_aoti(work.artifact.path)
    assert isinstance(loaded, runtime.GraphedRunner)
    xs = [torch.randn(8, 64, device=DEVICE) for _ in range(runtime.BOUND_GRAPHS + runtime.REBINDS + 1)]
    with torch.inference_mode():
        torch.testing.assert_close(loaded(xs[0]), work.module(xs[0]), rtol=1e-5, atol=1e-5)
        (key,) = loaded.graphs
        assert key[1] == (xs[0].data_ptr(),) and loaded.graphs[key].inputs == [None]  # no static copy
        xs[0].mul_(-3.0)  # changed where it is: the replay reads it
        torch.testing.assert_close(loaded(xs[0]), work.module(xs[0]), rtol=1e-5, atol=1e-5)
        for x in xs[1:] + xs[:2]:
            torch.testing.assert_close(loaded(x), work.module(x), rtol=1e-5, atol=1e-5)
    bound = [k for k in loaded.graphs if k[1]]
    assert len(bound) == runtime.BOUND_GRAPHS and len(loaded.graphs) == runtime.BOUND_GRAPHS + 1
    assert {k[1] for k in bound} == {(x.data_ptr(),) for x in xs[-runtime.BOUND_GRAPHS - 1:-1]}
    assert len(loaded.pools) == 1


def without_record(src: str, dst: str) -> str:
    """A copy of the package minus its runtime record (zip members copied as they are)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if not info.filename.endswith("/" + runtime.RECORD):
                zout.writestr(info, zin.read(info.filename))
    return dst


def test_package_without_record_runs_plain_in_strict_fp32(tmp_path, kpt_cache_dir):
    work = mlp_work(tmp_path)
    apply(GpuInductorAOT(), work, "LEVEL_O1")  # the cached package of the test above, record included
    path = without_record(work.artifact.path, str(tmp_path / "plain.pt2"))
    assert runtime.read_record(path) == {}
    loaded = runtime.load_aoti(path)
    assert isinstance(loaded, runtime.PlainRunner)
    torch.backends.cudnn.allow_tf32 = True
    try:
        with torch.inference_mode():
            x = torch.randn(5, 64, device=DEVICE)
            torch.testing.assert_close(loaded(x), work.module(x), rtol=1e-5, atol=1e-5)
        assert torch.backends.cudnn.allow_tf32  # restored after the call
    finally:
        torch.backends.cudnn.allow_tf32 = False


class Attention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(512, 3 * 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, 8, 64).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, 512)


FAMILY = {"FLASH_ATTENTION": ("flash",), "EFFICIENT_ATTENTION": ("fmha", "efficient", "attention_kernel"),
          "CUDNN_ATTENTION": ("cudnn",), "MATH": ()}  # math: matmuls and Inductor's fused softmax, no fused kernel


def test_attention_backends_are_timed_as_graph_replays():
    """On the GPU each backend's call is captured as a CUDA graph under that backend alone and the replays are
    timed (the device's work, not one eager call's dispatch); each usable backend gets a time, masked calls too."""
    from kpt.gpu import bench as gpu_bench
    from kpt.gpu import passes

    q = torch.randn(2, 4, 256, 64, device=DEVICE, dtype=torch.bfloat16)
    mask = torch.ones(2, 1, 256, 256, device=DEVICE, dtype=torch.bool).tril()
    calls = [(F.scaled_dot_product_attention, (q, q, q), {"attn_mask": mask}, 3)]
    timed = []

    def timer(fn):
        timed.append(type(getattr(fn, "__self__", None)))
        return gpu_bench.event_ms(fn)

    got = passes.time_backends(("EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"), calls, reps=3, timer=timer)
    usable = {b: t for b, t in got.items() if isinstance(t, float)}
    assert "EFFICIENT_ATTENTION" in usable and "MATH" in usable and all(t > 0 for t in usable.values()), got
    assert timed and set(timed) == {torch.cuda.CUDAGraph}


def test_fastest_attention_backend_is_the_one_compiled_in(tmp_path, kpt_cache_dir):
    torch.manual_seed(0)
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(4), inp.Dim(1024), inp.Dim(512))),))
    work = Work(Attention().to(DEVICE).eval(), spec, DEVICE, str(tmp_path))
    apply(ReducedPrecision("bf16"), work, "LEVEL_O2")
    row = apply(SdpaBackend(), work, "LEVEL_O2")
    assert row["applied"], row["reason"]
    chosen = next(b for b in FAMILY if f"{b.removesuffix('_ATTENTION').lower()} first" in row["reason"])
    apply(GpuInductorAOT(), work, "LEVEL_O2")
    package = runtime.load_aoti(work.artifact.path)
    x = inp.generate(spec, seed=1, device=DEVICE)
    with torch.inference_mode():
        package(*x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            package(*x)
            torch.cuda.synchronize()
    names = [e.name.lower() for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    others = [w for b, words in FAMILY.items() if b != chosen for w in words]
    if chosen == "MATH":
        assert not [n for n in names if any(w in n for w in others)], sorted(set(names))
        return
    hits = [n for n in names if any(w in n for w in FAMILY[chosen])
            and (chosen == "CUDNN_ATTENTION" or "cudnn" not in n)]
    assert hits, f"{chosen} chosen ({row['reason']}) but the package ran {sorted(set(names))}"
    assert not [n for n in names if any(w in n for w in others) and n not in hits], sorted(set(names))


class _Ffn(torch.nn.Module):
    """BERT-base's feed-forward block: the up-projection's GELU is what kpt.gpu.epilogues moves into the GEMM."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = torch.nn.Linear(768, 3072), torch.nn.Linear(3072, 768)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


def test_gelu_epilogue_trial_and_package(tmp_path, kpt_cache_dir):
    """The O3 pass times the rewritten graph against the plain one (kept here whatever it measures: min_speedup 0),
    the compile applies it, and the package calls aten._addmm_activation with the 1-D bias (cuBLASLt's GELU_BIAS
    epilogue, the tanh approximation): its results within bf16's bound of eager fp32's."""
    from kpt.gpu import epilogues

    torch.manual_seed(0)
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(8), inp.Dim(384), inp.Dim(768))),))
    model = _Ffn().to(DEVICE).eval()
    work = Work(copy.deepcopy(model), spec, DEVICE, str(tmp_path))
    apply(ReducedPrecision("bf16"), work, "LEVEL_O3")
    row = apply(epilogues.GeluEpilogue(min_speedup=0.0), work, "LEVEL_O3")
    assert row["applied"] and row["reason"].startswith(f"1 {epilogues.DONE}: "), row["reason"]
    row = apply(GpuInductorAOT(max_autotune="off"), work, "LEVEL_O3")
    assert epilogues.DONE in row["reason"], row["reason"]
    with zipfile.ZipFile(work.artifact.path) as z:
        wrapper = "".join(z.read(n).decode() for n in z.namelist() if n.endswith(".wrapper.cpp"))
    assert "aoti_torch_cuda__addmm_activation(" in wrapper
    x = inp.generate(spec, seed=1, device=DEVICE)
    with torch.inference_mode():
        got, want = runtime.load_aoti(work.artifact.path)(*x), model(*x)
    torch.testing.assert_close(got.float(), want, rtol=5e-2, atol=5e-2)


class _Layers(torch.nn.Module):
    """Many tiny kernels: eager time is the host's dispatch, replayed time the kernels'."""

    def __init__(self, sync: bool = False) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(64, 64) for _ in range(16))
        self.sync = sync

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.relu(layer(x))
        if self.sync:
            x = x * float(x.sum().item() != 0.0)  # a host sync: cannot be captured
        return x


def test_a_runner_captures_on_a_stream_of_its_own_and_a_failed_capture_leaves_the_callers_stream():
    """GraphedRunner captures on its own stream of its device (torch.cuda.graph's default is one stream for the
    process), and a capture that fails (a host sync) leaves the caller's stream current, not the capture stream;
    the good runner still replays after it."""
    x = torch.randn(4, 64, device=DEVICE)
    before = torch.cuda.current_stream()
    with torch.inference_mode():
        good = runtime.GraphedRunner(_Layers().to(DEVICE).eval())
        want = good(x)
        assert good.stream is not None and good.stream.device.type == "cuda" and good.stream != before
        assert torch.cuda.current_stream() == before
        bad = runtime.GraphedRunner(_Layers(sync=True).to(DEVICE).eval())
        with pytest.raises(RuntimeError):
            bad(x)
        assert torch.cuda.current_stream() == before
        torch.cuda.synchronize()
        assert torch.equal(good(x), want)


def test_a_failed_capture_leaves_no_allocator_routing_into_its_pool():
    """runtime.capturing on the device: torch's capture_end raises before it ends the caching allocator's routing
    into the graph's pool when the capture failed (here a host sync during it); capturing ends it, so the allocator
    no longer counts a capture underway, and the next captures and empty_cache run as before."""
    x = torch.randn(256, device=DEVICE)
    pool = torch.cuda.graph_pool_handle()
    kept = torch.cuda.CUDAGraph()
    with runtime.capturing(kept, pool=pool):
        y = x * 2
    with pytest.raises(RuntimeError), runtime.capturing(torch.cuda.CUDAGraph(), pool=pool):
        _ = x + 1
        torch.cuda.synchronize()  # not permitted while the stream captures
    with pytest.raises(RuntimeError, match="not currently recording"):
        torch._C._cuda_endAllocateToPool(torch.cuda.current_device(), pool)  # already ended
    torch.cuda.empty_cache()
    g = torch.cuda.CUDAGraph()
    with runtime.capturing(g):
        z = x * 3
    x.add_(1)
    kept.replay()
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, x * 2) and torch.equal(z, x * 3)
    # A runner whose second graph of a shape (another bound address) fails to capture: the shape's shared pool is
    # dropped from the runner (pinned memory may still be routed into it), and its next graph gets a pool of its own
    fails = {"now": False}

    def double(t: torch.Tensor) -> torch.Tensor:
        if fails["now"] and torch.cuda.is_current_stream_capturing():
            torch.cuda.synchronize()
        return t * 2

    run = runtime.GraphedRunner(double)
    first, second = (torch.randn(runtime.BIND_BYTES // 2, device=DEVICE) for _ in range(2))  # bound by address
    assert torch.equal(run(first), first * 2)
    shapes = runtime._key((first,))
    assert shapes in run.pools
    fails["now"] = True
    with pytest.raises(RuntimeError):
        run(second)
    assert shapes not in run.pools
    fails["now"] = False
    assert torch.equal(run(second), second * 2) and torch.equal(run(first), first * 2)
    assert shapes in run.pools and len(run.graphs) == 2


def test_a_failed_capture_leaves_the_random_generator_out_of_capture_mode():
    """runtime.capturing on the device: torch's capture_end takes the default CUDA generator out of capture mode only
    after cudaStreamEndCapture succeeds, so after a failed capture every random op of the device raised "Offset
    increment outside graph capture encountered unexpectedly" (H100, 2026-12-07); capturing ends that mode, and random
    ops captured later still draw new numbers on each replay."""
    x = torch.ones(16, device=DEVICE)
    with pytest.raises(RuntimeError), runtime.capturing(torch.cuda.CUDAGraph()):
        _ = x + 1
        torch.cuda.synchronize()  # not permitted while the stream captures
    assert torch.randn(16, device=DEVICE).shape == (16,)
    g = torch.cuda.CUDAGraph()
    with runtime.capturing(g):
        r = torch.rand(16, device=DEVICE)
    g.replay()
    first = r.clone()
    g.replay()
    torch.cuda.synchronize()
    assert not torch.equal(first, r)


def test_kernel_trials_are_timed_as_graph_replays_where_both_capture():
    from kpt.gpu.passes import time_trial

    x = (torch.randn(4, 64, device=DEVICE),)
    base, trial = _Layers().to(DEVICE).eval(), _Layers().to(DEVICE).eval()
    replayed = time_trial(base, trial, x)
    assert replayed["graphs"] == 1 and replayed["compiled"] == 1
    eager = time_trial(_Layers(sync=True).to(DEVICE).eval(), trial, x)  # compiles (around its graph break)
    assert eager["graphs"] == 0
    # After a trial that could not be captured (its graph's pool and Dynamo's dropped code left to the collector:
    # runtime.capturing), compiled trials are captured again: the 1B Llama's O3 build timed its kernel trials
    # eagerly after its int8 trial failed to capture (H100, 2026-12-06).
    again = time_trial(base, trial, x)
    assert again["graphs"] == 1 and again["compiled"] == 1
    uncompiled = time_trial(base, trial, x, compiled=False)
    assert uncompiled["graphs"] == 1 and uncompiled["compiled"] == 0
    assert all(t[k] > 0 for t in (replayed, eager, again, uncompiled) for k in ("base_ms", "trial_ms"))


def test_kernel_trials_of_an_int8_decode_step_compile(tmp_path, kpt_cache_dir):
    """An int8 (torchao) decode step's kernel trials are compiled and replayed. While the kernels/ registry's
    lookup ran under Dynamo, the 1B Llama's int8 step failed to compile in every trial (InternalTorchDynamoError,
    H200, 2026-12-04) and was timed eagerly."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    from kpt.gpu.passes import CustomKernels
    from tests.gpu.helpers import tiny_llama_decode

    step, spec, _ = tiny_llama_decode(context=64)
    work = Work(step.to(DEVICE).eval(), spec, DEVICE, str(tmp_path))
    apply(ReducedPrecision("bf16"), work, "LEVEL_O3")
    quantize_(work.module, Int8WeightOnlyConfig())
    row = apply(CustomKernels(), work, "LEVEL_O3")
    assert "kpt_decode_attention" in row["reason"] and "uncompiled" not in row["reason"], row["reason"]
    assert "kpt_attention" not in row["reason"]  # every SDPA call of the step has a cache mask: nothing to route


def test_kernel_trials_of_a_bf16_decode_step_try_whole_layers_first(tmp_path, kpt_cache_dir):
    """The bf16 decode step's first kernel trial is kernels/' whole decode layers, compiled; kept, it leaves the
    other swaps nothing to change, and only the layers' own refinements (L2 prefetch, programmatic dependent launch)
    are tried after it (the 1B Llama's O3 build took 293 s with the layers first where four trials had taken 637 s,
    H200, 2026-12-04)."""
    from kpt.gpu.passes import CustomKernels
    from tests.gpu.helpers import tiny_llama_decode

    step, spec, _ = tiny_llama_decode(context=64)
    work = Work(step.to(DEVICE).eval(), spec, DEVICE, str(tmp_path))
    apply(ReducedPrecision("bf16"), work, "LEVEL_O3")
    row = apply(CustomKernels(), work, "LEVEL_O3")
    measured = row["reason"].split(": ", 1)[-1]
    assert measured.startswith("kpt_decode_layers ") and "uncompiled" not in measured, row["reason"]
    if "kept kpt_decode_layers" in row["reason"]:
        import kernels

        later = (["kpt_decode_prefetch"] if kernels.DECODE_PREFETCH else []) + (
            ["kpt_decode_pdl"] if kernels.DECODE_PDL else [])
        assert [t.split(" ")[0] for t in measured.split("; ")] == ["kpt_decode_layers", *later], row["reason"]
        assert any(vars(m).get("decode_layer") is not None for m in work.module.modules())


def test_vit_package_runs_a_fused_attention_kernel(tmp_path, kpt_cache_dir):
    """transformers' ViT, exported, passes an all-true mask with a stride-0 last dimension that no fused backend
    takes: every compiled ViT-B/16 ran fp32 math attention on the H200 until kpt.gpu.masks dropped it."""
    from transformers import ViTConfig, ViTModel

    from kpt.optimize.zoo import HFTensors

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
                    attn_implementation="sdpa")
    model = HFTensors(ViTModel(cfg, add_pooling_layer=False), ("pixel_values",), ("last_hidden_state",))
    spec = inp.InputSpec((inp.TensorSpec("pixel_values", "float32", (inp.Dim(8), inp.Dim(3), inp.Dim(224),
                                                                     inp.Dim(224))),))
    work = Work(model.to(DEVICE).eval(), spec, DEVICE, str(tmp_path))
    apply(ReducedPrecision("bf16"), work, "LEVEL_O2")
    row = apply(SdpaBackend(), work, "LEVEL_O2")
    assert row["applied"] and "math first" not in row["reason"], row["reason"]
    row = apply(GpuInductorAOT(), work, "LEVEL_O2")
    assert "2 all-true mask(s) dropped" in row["reason"], row["reason"]
    package = runtime.load_aoti(work.artifact.path)
    x = inp.generate(spec, seed=1, device=DEVICE)
    with torch.inference_mode():
        out = package(*x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            package(*x)
            torch.cuda.synchronize()
        ref = work.module(*x)
    names = sorted({e.name.lower() for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})
    assert [n for n in names if any(w in n for w in ("flash", "fmha", "sdpa"))], names
    assert not [n for n in names if "safe_softmax" in n or "f32f32" in n], names
    out = out[0] if isinstance(out, (tuple, list)) else out
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    torch.testing.assert_close(out.float(), ref.float(), rtol=5e-2, atol=5e-2)


def test_lm_head_writes_fp32_logits_itself(tmp_path, kpt_cache_dir):
    """A bf16 candidate's fp32 interface cost GPT-2 a 0.305 ms cast kernel of its logits on the H200;
    kpt.gpu.casts makes the LM-head GEMM write fp32 (aten.mm.dtype). A vocabulary like GPT-2's that is not a
    multiple of 8 is padded for cuBLAS's aligned kernels, and the logits are a strided view of the wider result,
    not a copy."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from kpt.gpu import casts
    from kpt.optimize.zoo import HFTensors

    if not casts.supported():
        pytest.skip(f"torch {torch.__version__}'s Inductor does not lower mm's out_dtype: casts stay separate")
    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=256, n_layer=2, n_head=4, vocab_size=8003, n_positions=256, attn_implementation="sdpa",
                     use_cache=False, bos_token_id=0, eos_token_id=0)
    model = HFTensors(GPT2LMHeadModel(cfg), ("input_ids",), ("logits",))
    spec = inp.InputSpec((inp.TensorSpec("input_ids", "int64", (inp.Dim(4), inp.Dim(256)), 0, 8003),))
    work = Work(model.to(DEVICE).eval(), spec, DEVICE, str(tmp_path))
    apply(ReducedPrecision("bf16"), work, "LEVEL_O2")
    row = apply(GpuInductorAOT(), work, "LEVEL_O2")
    assert "1 fp32 output cast(s) done by their GEMM" in row["reason"], row["reason"]
    package = runtime.load_aoti(work.artifact.path)
    x = inp.generate(spec, seed=1, device=DEVICE)
    with torch.inference_mode():
        out, ref = package(*x), work.module(*x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    assert out.dtype == torch.float32 and out.shape == (4, 256, 8003)
    assert out.stride()[-2:] == (8008, 1), out.stride()  # the padded GEMM's own result, no copy after it
    torch.testing.assert_close(out, ref.float(), rtol=5e-2, atol=5e-2)


class Block(torch.nn.Module):
    """A transformer MLP with its residual: both linears' outputs go only to elementwise ops."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(256, 1024), torch.nn.Linear(1024, 256)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def wrapper_source(path: str) -> str:
    with zipfile.ZipFile(path) as z:
        sources = [z.read(n).decode() for n in z.namelist() if n.endswith(".cpp")]
    if not sources:
        pytest.fail(f"no generated C++ in {path}: the test reads the GEMM calls from it")
    return "\n".join(sources)


@pytest.mark.parametrize("unfused", [False, True])
def test_unfused_bias_leaves_plain_gemms_with_elementwise_users(tmp_path, kpt_cache_dir, unfused):
    """unfused_bias (the kpt_O2_unfused_bias experiment): the package calls mm, not addmm, for bf16 linears whose
    users are all elementwise; torch's default keeps addmm. Same results either way within bf16's tolerance."""
    if not hasattr(torch._inductor.config, "keep_addmm_fused_for_half_dtypes"):
        pytest.skip(f"torch {torch.__version__} has no keep_addmm_fused_for_half_dtypes: it always unfuses")
    torch.manual_seed(0)
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(512), inp.Dim(256))),))
    work = Work(Block().to(DEVICE).eval(), spec, DEVICE, str(tmp_path))
    apply(ReducedPrecision("bf16"), work, "LEVEL_O2")
    row = apply(GpuInductorAOT(unfused_bias=unfused), work, "LEVEL_O2")
    assert ("biases may join their elementwise users" in row["reason"]) is unfused, row["reason"]
    code = wrapper_source(work.artifact.path)
    # the GEMMs' C shim calls (kernel names may still say addmm: Inductor names them after their origins)
    assert ("aoti_torch_cuda_addmm_out" in code) is not unfused and ("aoti_torch_cuda_mm_out" in code) is unfused
    package = runtime.load_aoti(work.artifact.path)
    x = inp.generate(spec, seed=1, device=DEVICE)
    with torch.inference_mode():
        out, ref = package(*x), work.module(*x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    torch.testing.assert_close(out.float(), ref.float(), rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("threshold", [None, 8])
def test_realize_opcount_writes_silu_mul_once_before_the_down_projection(threshold):
    """compile.inductor_options(realize_opcount=8): under coordinate descent Inductor's mm decomposition makes a
    decode step's down projection a reduction whose loads recompute SiLU(gate)*up for every output block (by
    default: no (1, K) buffer); with the option that product is written once and read by the reduction."""
    from torch._inductor.utils import run_and_get_code

    g, u = (torch.randn(1, 512, device=DEVICE, dtype=torch.bfloat16) for _ in range(2))
    w = torch.randn(256, 512, device=DEVICE, dtype=torch.bfloat16)

    def down(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return F.linear(F.silu(g) * u, w)

    torch._dynamo.reset()
    # None: Inductor's default, left unpatched (torch 2.11 holds an int there and compares it; 2.13 accepts None)
    extra = {} if threshold is None else {"realize_opcount_threshold": threshold}
    with torch._inductor.config.patch(coordinate_descent_tuning=True, force_disable_caches=True, **extra):
        out, (code,) = run_and_get_code(torch.compile(down), g, u)
    torch._dynamo.reset()
    torch.testing.assert_close(out.float(), down(g, u).float(), rtol=3e-2, atol=3e-1)
    assert "extern_kernels.mm" not in code  # decomposed into a reduction, as in a decode build
    assert ("empty_strided_cuda((1, 512)" in code) is (threshold is not None), code
