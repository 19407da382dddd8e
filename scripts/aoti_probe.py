"""H100 probe: does a plain AOTInductor CUDA package load, and does appending a zip member break it?"""

import os
import shutil
import subprocess
import sys
import zipfile

import torch

out = os.environ.get("OUT", "/tmp")
m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU()).cuda().eval()
x = torch.randn(8, 64, device="cuda:0")
ep = torch.export.export(m, (x,))
plain = os.path.join(out, "plain.pt2")
torch._inductor.aoti_compile_and_package(ep, package_path=plain)
appended = os.path.join(out, "appended.pt2")
shutil.copy(plain, appended)
with zipfile.ZipFile(appended, "a") as z:
    z.writestr(next(n for n in z.namelist() if "/" in n).split("/")[0] + "/extra/kpt_runtime.json", "{}")
for path in (plain, appended):
    code = ("import torch,sys; r=torch._inductor.aoti_load_package(sys.argv[1]); "
            "x=torch.randn(8,64,device='cuda:0'); print(r(x).shape)")
    p = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True)
    print(os.path.basename(path), "rc", p.returncode, p.stdout.strip()[-200:], p.stderr.strip()[-300:])
