"""H100 probe: does an AOTInductor CUDA package load in a fresh process, with and without kpt's link options?

Compiles Sequential(Linear, ReLU) on cuda:0 and loads the package in a new process. On the image's torch
2.11 the package without kpt.optimize.inductor.link_options() segfaulted on load (libstdc++ linked in
statically; see docs/benchmarks/h100-notes.md). Run: python3 scripts/aoti_probe.py plain|kpt

    python3 scripts/aoti_probe.py profile   the same package (kpt options) loaded twice in one fresh process
                                            under cProfile: where the first load's time goes (44 s for BERT
                                            O2 on the H100, the second under 2 s) -> $OUT/aoti-load-profile.txt
"""

import os
import subprocess
import sys

import torch

from kpt.optimize.inductor import link_options

out = os.environ.get("OUT", "/tmp")
tag = sys.argv[1]
options = link_options() if tag in ("kpt", "profile") else {}
m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU()).cuda().eval()
x = torch.randn(8, 64, device="cuda:0")
path = os.path.join(out, f"{tag}.pt2")
torch._inductor.aoti_compile_and_package(torch.export.export(m, (x,)), package_path=path, inductor_configs=options)
LOAD = ("import torch,sys; r=torch._inductor.aoti_load_package(sys.argv[1]); "
        "x=torch.randn(8,64,device='cuda:0'); print('ok', tuple(r(x).shape))")
PROFILE = r"""
import cProfile, io, pstats, shutil, sys, time
import torch
x = torch.randn(8, 64, device="cuda:0")
shutil.copy(sys.argv[1], sys.argv[1] + ".2.pt2")
for n, path in enumerate((sys.argv[1], sys.argv[1] + ".2.pt2")):
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    r = torch._inductor.aoti_load_package(path, run_single_threaded=True)
    r(x)
    torch.cuda.synchronize()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(40)
    print(f"load {n + 1}: {time.perf_counter() - t:.2f} s")
    print(s.getvalue())
"""
if tag == "profile":
    p = subprocess.run([sys.executable, "-c", PROFILE, path], capture_output=True, text=True)
    with open(os.path.join(out, "aoti-load-profile.txt"), "w") as f:
        f.write(p.stdout + "\n" + p.stderr[-5000:])
    print("profile rc", p.returncode, [line for line in p.stdout.splitlines() if line.startswith("load ")])
else:
    p = subprocess.run([sys.executable, "-c", LOAD, path], capture_output=True, text=True)
    print("case", tag, options, "rc", p.returncode, p.stdout.strip()[-200:], p.stderr.strip()[-300:])
