"""The NVIDIA optimizer service: only what is NVIDIA-specific lives here (vendor.py: precision table
by compute capability, nvidia-smi queries, the CUDA onnxruntime provider); passes, compilation, CUDA
graphs, benchmarks and jobs are kpt.gpu, shared with the AMD service.

service.py starts one worker per visible GPU; jobs.run runs one job in a worker's job process;
capability.capability describes the worker's GPU (or says why it has none).
"""
