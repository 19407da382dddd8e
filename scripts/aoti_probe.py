"""H100 probe: does an AOTInductor CUDA package load in a fresh process, with and without kpt's link options?

Compiles Sequential(Linear, ReLU) on cuda:0 and loads the package in a new process. On the image's torch
2.11 the package without kpt.optimize.inductor.link_options() segfaulted on load (libstdc++ linked in
statically; see docs/benchmarks/h100-notes.md). Run: python3 scripts/aoti_probe.py plain|kpt
"""

import os
import subprocess
import sys

import torch

from kpt.optimize.inductor import link_options

out = os.environ.get("OUT", "/tmp")
tag = sys.argv[1]
options = link_options() if tag == "kpt" else {}
m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU()).cuda().eval()
x = torch.randn(8, 64, device="cuda:0")
path = os.path.join(out, f"{tag}.pt2")
torch._inductor.aoti_compile_and_package(torch.export.export(m, (x,)), package_path=path, inductor_configs=options)
LOAD = ("import torch,sys; r=torch._inductor.aoti_load_package(sys.argv[1]); "
        "x=torch.randn(8,64,device='cuda:0'); print('ok', tuple(r(x).shape))")
p = subprocess.run([sys.executable, "-c", LOAD, path], capture_output=True, text=True)
print("case", tag, options, "rc", p.returncode, p.stdout.strip()[-200:], p.stderr.strip()[-300:])
