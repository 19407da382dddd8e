"""KernelPyTorch Mesh Intel optimizer service: IPEX 2.8 on the CPU (fp32/bf16/int8 TorchScript), OpenVINO IR,
XPU devices reported when torch.xpu has them."""
