"""The GPU half of the optimization pipeline, shared by the NVIDIA and AMD services.

PyTorch's ROCm build answers the torch.cuda API and Triton targets both vendors, so everything
below runs unchanged on CUDA and ROCm; a service supplies only a Vendor (vendor.py): its precision
table, driver/clock queries, onnxruntime providers and runtime settings.

  slots      one worker per visible GPU, counted without torch (the service parent imports no torch)
  device     the GPU a job process sees (GpuInfo), or why it has none; DEVICE = "cuda:0"
  vendor     Vendor and Precisions: what a service plugs in
  capability TargetInfo of a worker: its device, or available=false with the reason
  env        the environment fingerprint with GPU, driver, runtime and clocks
  passes     channels_last, bf16/fp16, the fastest attention backend, the kernels/ hook
  quantize   torchao int8/int4 weight-only, fp8/int8 dynamic, and O3's choice among them
  compile    AOTInductor for the device: max-autotune within a budget, the package cache, the
             fresh-process load check of every new package
  graphs     the CUDA graphs pass (after compile, on the package)
  runtime    loading packages (once per process): CUDA graph replay, strict fp32; the hook into
             kpt.optimize.artifacts
  cache      compiler caches under KPT_CACHE_DIR, kept between jobs
  bench      the benchmark protocol with device events and rotating inputs; allocator peak memory
  variants   reference variants (eager, torch.compile) and measured rows
  export     onnx (validated on the vendor's onnxruntime provider), torchscript, exported_program
  models     GPU-only model entries (a Llama decode step with its KV cache as inputs)
  roofline   FLOPs and weight bytes per step, for fractions of peak
  levels     O0-O3 on a GPU
  jobs       run(vendor, job, model_path, workdir, emit): one job in the job process

Nothing here imports kpt.bus (the GPU hosts need no NATS client to run jobs or benchmarks).
"""
