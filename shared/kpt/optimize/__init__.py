"""The generic optimization pipeline every optimizer service reuses (cpu now, nvidia/amd later).

Device-parametrized: functions take a device string ("cpu", "cuda", ...). One concern per module:

  jobspec       a kpt.v1.JobSpec dict (protobuf JSON form) parsed into one validated dataclass
  inputs        InputSpec as typed dataclasses: parse, validate, generate tensors, dynamic dims
  loading       opening UNTRUSTED uploads (ExportedProgram .pt2, ONNX) without running their pickles
  source        the model of a job: eager fp32 reference, ExportedProgram, InputSpec (derived/checked)
  zoo           models built from configs (no downloads), each with its default InputSpec
  passes        the pass registry (frozen config dataclass -> registered function) and Work
  graph_passes  conv+bn folding, the SDPA report, precision casts, saving the exported program
  inductor      AOTInductor packaging, max-autotune kept only when it measures faster
  quantize      int8 dynamic linear layers (torchao)
  accuracy      error metrics against eager fp32 on fresh inputs, per-precision tolerances
  bench         the interleaved benchmark protocol, latency statistics, peak memory
  variants      measured variants (references and kpt levels) as VariantMetrics rows
  export        onnx / torchscript / exported_program exporters, each checked after loading back
  artifacts     the public loader: load(path, format) -> callable on torch tensors
  ort           onnxruntime sessions on torch tensors
  pipeline      the guarded level ladder and the optimize job built on it
  env           environment fingerprint (host CPU, flags, threads, toolchain)

Everything here imports torch: it is used only inside service environments, never by the gateway.
"""
