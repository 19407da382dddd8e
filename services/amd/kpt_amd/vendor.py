"""What is AMD-specific: the precision table by gfx target, ROCm runtime settings, rocm-smi queries and
the MIGraphX/ROCm onnxruntime providers. Everything else is kpt.gpu, shared with the NVIDIA service.

Not yet run on AMD hardware (docs/gpu.md): this module is unit-tested on tables and sample tool output.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from typing import TYPE_CHECKING, Callable

from kpt.gpu.vendor import Precisions, Vendor

if TYPE_CHECKING:  # torch-free at import: the service parent imports this module
    from kpt.gpu.device import GpuInfo

log = logging.getLogger(__name__)
Run = Callable[..., subprocess.CompletedProcess]

# gfx target -> (bf16, int4 tinygemm, fp8 dtype, product family). From the ISA of each generation:
# MFMA/WMMA bf16 from CDNA1 (gfx908) and RDNA3 (gfx11); fp8 MFMA in the FNUZ encoding on CDNA3
# (MI300, gfx940-942) and in the OCP encoding (e4m3fn, what NVIDIA uses) on CDNA4 (gfx950) and RDNA4
# (gfx12); PyTorch's int4 tinygemm (aten._weight_int4pack_mm) is built for CDNA2+ on ROCm.
GFX: dict[str, tuple[bool, bool, str, str]] = {
    "gfx906": (False, False, "", "MI50/MI60 (Vega 20)"),
    "gfx908": (True, False, "", "MI100 (CDNA1)"),
    "gfx90a": (True, True, "", "MI200 (CDNA2)"),
    "gfx940": (True, True, "float8_e4m3fnuz", "MI300 (CDNA3)"),
    "gfx941": (True, True, "float8_e4m3fnuz", "MI300 (CDNA3)"),
    "gfx942": (True, True, "float8_e4m3fnuz", "MI300X/MI300A/MI325X (CDNA3)"),
    "gfx950": (True, True, "float8_e4m3fn", "MI350/MI355X (CDNA4)"),
    "gfx1100": (True, False, "", "Radeon RX 7900 / PRO W7900 (RDNA3)"),
    "gfx1101": (True, False, "", "Radeon RX 7800/7700 (RDNA3)"),
    "gfx1200": (True, False, "float8_e4m3fn", "Radeon RX 9060 (RDNA4)"),
    "gfx1201": (True, False, "float8_e4m3fn", "Radeon RX 9070 / AI PRO R9700 (RDNA4)"),
}
HIPBLASLT = ("gfx90a", "gfx940", "gfx941", "gfx942", "gfx950", "gfx1200", "gfx1201")

# Environment of every AMD job process, set by the service parent in each worker slot because HIP reads
# it when it initialises (before any job code runs). Kernel arguments in device memory: lower launch
# latency on MI300 (AMD's MI300X inference tuning guide).
SLOT_ENV = {"HIP_FORCE_DEV_KERNARG": "1"}
# TunableOp: time the GEMM libraries' kernels once per shape, keep the winners in KPT_CACHE_DIR.
TUNABLEOP_MAX_TUNING_MS = 30  # per GEMM shape; PyTorch's documented knob, bounded to keep first jobs short


def precisions(gfx: str) -> Precisions:
    known = GFX.get(gfx)
    if known is None:
        return Precisions(bf16=False, fp16=True, int8=True, int4=False, fp8="",
                          why=(f"gfx target {gfx!r} is not in this service's table: only fp16 and int8 are assumed",))
    bf16, int4, fp8, family = known
    why = []
    if not bf16:
        why.append(f"{family} has no bf16 matrix instructions")
    if not fp8:
        why.append(f"{family} has no fp8 matrix instructions")
    if not int4:
        why.append(f"PyTorch's int4 tinygemm kernels are not built for {gfx}")
    return Precisions(bf16=bf16, fp16=True, int8=True, int4=int4, fp8=fp8, why=tuple(why))


def configure(cache_dir: str, info: GpuInfo) -> list[str]:
    """ROCm settings of a job process: MIOpen's find-db and kernel cache and TunableOp's GEMM results kept
    under KPT_CACHE_DIR (reused by later jobs), hipBLASLt where it is the faster GEMM library."""
    import torch

    done = []
    miopen = os.path.join(cache_dir, "miopen")
    for var, sub in (("MIOPEN_USER_DB_PATH", "db"), ("MIOPEN_CUSTOM_CACHE_DIR", "kernels")):
        path = os.environ.get(var) or os.path.join(miopen, sub)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:  # the caches are an optimization: MIOpen keeps its own default
            log.warning("%s: %s cannot be created, not kept between jobs: %s", var, path, e)
            continue
        os.environ[var] = path
        done.append(f"{var}={path}")
    if info.arch in HIPBLASLT:
        torch.backends.cuda.preferred_blas_library("hipblaslt")
        done.append("BLAS: hipBLASLt")
    tunable = os.path.join(cache_dir, "tunableop")
    torch.cuda.tunable.enable(True)
    torch.cuda.tunable.tuning_enable(True)
    torch.cuda.tunable.set_max_tuning_duration(TUNABLEOP_MAX_TUNING_MS)
    try:
        os.makedirs(tunable, exist_ok=True)
    except OSError as e:
        log.warning("TunableOp results not kept between jobs: %s cannot be created: %s", tunable, e)
        done.append(f"TunableOp results not kept ({tunable} cannot be created)")
        return done
    # one results file per worker slot: job processes of different GPUs exit (and write) concurrently
    slot = os.environ.get("ROCR_VISIBLE_DEVICES", "") or "all"
    torch.cuda.tunable.set_filename(os.path.join(tunable, f"results_{info.arch}_{slot}.csv"))
    done.append(f"TunableOp results in {tunable}")
    return done


def parse_rocm_smi(text: str) -> dict[str, dict[str, str]]:
    """rocm-smi --json output: {"card0": {field: value}} (field names vary across ROCm releases)."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict):  # another tool's or release's shape: nothing to match
        return {}
    return {k: {str(f): str(v) for f, v in d.items()} for k, d in data.items() if isinstance(d, dict)}


def _first(fields: dict[str, str], *names: str) -> str:
    for key, value in fields.items():
        if any(n.lower() in key.lower() for n in names):
            return value
    return ""


def versions(info: GpuInfo, run: Run = subprocess.run, module_version: str = "/sys/module/amdgpu/version") -> dict:
    out: dict[str, str] = {"gfx": info.arch}
    try:
        with open(module_version) as f:
            out["driver"] = f.read().strip()
    except OSError:
        pass  # an in-tree amdgpu has no module version; rocm-smi reports the kernel's
    try:
        res = run(["rocm-smi", "--showdriverversion", "--showclocks", "--showmaxpower", "--showvbios", "--json"],
                  capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        out.setdefault("driver", f"unknown (rocm-smi: {e.__class__.__name__})")
        return out
    cards = parse_rocm_smi(res.stdout)
    system = cards.pop("system", {})
    out.setdefault("driver", _first(system, "driver version") or "unknown")
    # The job process sees one GPU through ROCR_VISIBLE_DEVICES; rocm-smi lists all of them.
    visible = os.environ.get("ROCR_VISIBLE_DEVICES", "")
    card = cards.get(f"card{visible}") if visible.isdigit() else (next(iter(cards.values())) if len(cards) == 1 else None)
    if card is None:
        out["clocks"] = "unmatched GPU"
        return out
    for key, names in (("vbios", ("vbios",)), ("clocks_sm_mhz", ("sclk",)), ("clocks_mem_mhz", ("mclk",)),
                       ("power_limit_w", ("max graphics package power",))):
        value = _first(card, *names)
        if value:
            out[key] = value.strip("()").replace("Mhz", "").strip()
    return out


VENDOR = Vendor(name="amd", target="TARGET_AMD", kind="rocm", precisions=lambda info: precisions(info.arch),
                versions=versions, onnx_providers=("MIGraphXExecutionProvider", "ROCMExecutionProvider"),
                configure=configure)
