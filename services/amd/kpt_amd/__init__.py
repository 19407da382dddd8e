"""The AMD (ROCm) optimizer service: only what is AMD-specific lives here (vendor.py: gfx targets and
their precision table, ROCm runtime settings, rocm-smi queries, the MIGraphX/ROCm onnxruntime
providers); passes, compilation, graphs, benchmarks and jobs are kpt.gpu, shared with NVIDIA.

Not yet run on AMD hardware: see docs/gpu.md for what has and has not been.
"""
