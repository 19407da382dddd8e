"""scripts/gpu_run.sh's detached builds, on the CPU: the script runs for real (bash, setsid, timeout, pkill),
with `python3` on its PATH replaced by a stub that stands for bench/h100.py and pytest. What is checked is the
script's own logic: builds outlive the command that starts them, a finished build (mark with "error": "") is
not started again, and `models` pauses every other model's build while it measures, then resumes it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time

import pytest

from tests.gpu.helpers import REPO

# The variants gpu_run.sh builds per model group (its VARIANTS line: every compiled variant of bench/h100.py,
# then the EXPERIMENTS asked for, none by default).
N = len(re.findall(r"\b\w+\b", next(line for line in (REPO / "scripts" / "gpu_run.sh").read_text().splitlines()
                                      if line.startswith("VARIANTS=")).split("=", 1)[1].split("$")[0]))

pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in ("bash", "setsid", "timeout", "pkill")),
                                reason="needs bash, setsid, timeout and pkill")

# `bench/h100.py warm --model M --variants V --marks D`: sleeps STUB_WARM_<M> seconds (model key with - as _),
# then writes the mark as bench/h100.py does. `bench/h100.py run ... --out F`: records the call and the state of
# every other build's process (T = stopped) into F. `-m pytest`: records the call. `-c`: the wheel loop's probe.
# `bench/decode_mlp.py --variants V ...`: records where it ran, its PYTHONPATH's first entry, whether the tree holds
# the ab test's patched-in file, its Triton cache if one is set, and V. `bench/pdl_trial.py --out F`: records the
# call, writes F and logs the graph's edges as kpt.gpu.graph_edges does. `bench/capture_probe.py --out F`: the same,
# with a step's line as it logs one.
STUB = r"""#!/usr/bin/env bash
case "$1" in
  -c) exit 0 ;;
  -m) echo "$*" >> "$STUB_LOG"; exit 0 ;;
  bench/decode_mlp.py) echo "decode_mlp $PWD ${PYTHONPATH%%:*} $([ -e ab-marker ] && echo patched) ${TRITON_CACHE_DIR:-} $3" \
    >> "$STUB_LOG"
    echo '{"p50_ms": {}}'; exit 0 ;;
  bench/capture_probe.py) echo "capture_probe ${*:2}" >> "$STUB_LOG"; echo '{"steps": []}' > "$3"
    echo "bench.capture_probe decode plain after it: {\"times\": {\"graphs\": 1}}"; exit 0 ;;
  bench/pdl_trial.py) echo "pdl_trial ${*:2}" >> "$STUB_LOG"; echo '{"times": {"trial_edges": 13}}' > "$3"
    echo "kpt.gpu.graph_edges 13 of the graph's 13 edges made programmatic (14 kernel nodes)"; exit 0 ;;
esac
shift
verb="$1"; shift
declare -A a
while [ $# -gt 0 ]; do a["$1"]="$2"; shift 2; done
if [ "$verb" = warm ]; then
  echo "warm ${a[--model]} ${a[--variants]}" >> "$STUB_LOG"
  for m in ${a[--model]//,/ }; do
    var="STUB_WARM_${m//-/_}"; sleep "${!var:-0}"
    echo '{"model": "'$m'", "variant": "'${a[--variants]}'", "build_s": 1.0, "compile_s": 0.5, "error": ""}' \
      > "${a[--marks]}/$m.${a[--variants]}.json"
  done
else
  echo "run ${a[--models]}${a[--experiments]:+ experiments ${a[--experiments]}}" >> "$STUB_LOG"
  states=""
  for f in "$KPT_BG"/warm-*.pid; do
    states="$states $(basename "$f" .pid)=$(awk '{print $3}' /proc/$(cat "$f")/stat 2>/dev/null)"
  done
  echo "$states" > "${a[--out]}"
fi
"""


@pytest.fixture
def script_env(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "python3"
    stub.write_text(STUB)
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KPT_", "PYTHON"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", KPT_BG=str(tmp_path / "bg"), KPT_CACHE_DIR_MODELS=str(tmp_path / "cache"),
               STUB_LOG=str(tmp_path / "calls.log"), LIMIT="60", MEASURE_S="30", BUILD_S="120",
               KPT_MIN_FREE_GB="0")  # the caches' disk check is tested on its own (the CI's disk may be small)
    yield env, tmp_path
    for pid_file in (tmp_path / "bg").glob("*.pid"):  # the detached builds left running
        subprocess.run(["pkill", "-KILL", "-s", pid_file.read_text().strip()], check=False)


def run(env: dict, tmp_path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    out = tmp_path / f"out-{args[0]}-{len(list(tmp_path.glob('out-*')))}"
    out.mkdir()
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=90, env=env | {"OUT": str(out)} | extra, check=True)


def process_state(pid: str) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1].split()[0]


def test_builds_outlive_the_command_and_models_pauses_the_others(script_env):
    env, tmp = script_env
    t0 = time.monotonic()
    run(env, tmp, "builds", "resnet50", "llama-1b-prefill,llama-1b-decode", STUB_WARM_resnet50="2",
        STUB_WARM_llama_1b_prefill="60")
    assert time.monotonic() - t0 < 30  # it did not wait for the builds
    pids = {p.stem: p.read_text().strip() for p in (tmp / "bg").glob("*.pid")}
    assert len(pids) == 2 * N  # N variants x 2 groups, the Llama shapes sharing one process per variant
    llama = [pid for name, pid in pids.items() if name.startswith("warm-llama-1b-prefill+llama-1b-decode-")]
    assert len(llama) == N and all(process_state(p) != "Z" for p in llama)  # still building after the command
    assert "-m pytest" in (tmp / "calls.log").read_text()  # the kernels/ and reuse tests ran beside them

    run(env, tmp, "models", "resnet50", STUB_WARM_resnet50="2", STUB_WARM_llama_1b_prefill="60")
    measured = next(tmp.glob("out-models-*/results.tgz"))
    subprocess.run(["tar", "xzf", str(measured), "-C", str(measured.parent)], check=True)
    states = dict(s.split("=") for s in (measured.parent / "h100-resnet50.json").read_text().split())
    assert all(states[f"warm-llama-1b-prefill+llama-1b-decode-{v}"] == "T"  # paused while measuring
               for v in ("kpt_O1", "kpt_O2", "kpt_O3", "compile_default", "compile_max_autotune"))
    assert all(process_state(p) in "SR" for p in llama)  # and going on afterwards
    marks = sorted(p.name for p in (tmp / "cache" / "marks").glob("resnet50.*.json"))
    assert len(marks) == N and json.loads((tmp / "cache" / "marks" / marks[0]).read_text())["error"] == ""

    # ResNet-50's builds are marked finished ("error": ""): running the phase again starts none of them.
    calls = (tmp / "calls.log").read_text().count("warm resnet50")
    run(env, tmp, "models", "resnet50", STUB_WARM_resnet50="2", STUB_WARM_llama_1b_prefill="60")
    assert (tmp / "calls.log").read_text().count("warm resnet50") == calls == N
    for p in llama:
        os.kill(int(p), signal.SIGCONT)


def test_models_runs_the_kernel_tests_while_it_waits_for_builds(script_env):
    env, tmp = script_env
    run(env, tmp, "models", "resnet50", FG="kernel-tests", STUB_WARM_resnet50="3")
    calls = (tmp / "calls.log").read_text().splitlines()
    tests = [i for i, c in enumerate(calls) if c.startswith("-m pytest") and "tests/kernels" in c]
    assert len(tests) == 1 and tests[0] < calls.index("run resnet50")  # once, before the measuring
    run(env, tmp, "models", "resnet50")  # without FG: no tests
    assert sum("tests/kernels" in c for c in (tmp / "calls.log").read_text().splitlines()) == 1


def test_models_drops_the_caches_when_their_disk_is_short(script_env):
    env, tmp = script_env
    run(env, tmp, "models", "resnet50")
    run(env, tmp, "models", "resnet50")
    assert (tmp / "calls.log").read_text().count("warm resnet50") == N  # built once, then found marked
    short = run(env, tmp, "models", "resnet50", KPT_MIN_FREE_GB=str(1 << 30))  # more than any disk has
    assert "the earlier models' caches go" in short.stdout
    assert (tmp / "calls.log").read_text().count("warm resnet50") == 2 * N  # marks gone with the caches: built again


def test_experiments_are_built_and_measured_beside_the_variants(script_env):
    env, tmp = script_env
    run(env, tmp, "models", "resnet50", EXPERIMENTS="kpt_O2_tma")
    calls = (tmp / "calls.log").read_text().splitlines()
    assert "warm resnet50 kpt_O2_tma" in calls and sum(c.startswith("warm resnet50") for c in calls) == N + 1
    assert calls[-1] == "run resnet50 experiments kpt_O2_tma"
    run(env, tmp, "models", "resnet50")  # without: the experiment's mark stays, nothing is built, none measured
    assert (tmp / "calls.log").read_text().splitlines()[-1] == "run resnet50"


def test_ab_times_the_tree_then_each_patched_copy_then_the_tree_again(script_env):
    env, tmp = script_env
    patches = []
    for name in ("ab-marker", "other-marker"):
        patches.append(tmp / f"{name}.patch")
        patches[-1].write_text(f"--- /dev/null\n+++ b/{name}\n@@ -0,0 +1 @@\n+patched\n")
    copies = tmp / "ab"
    repo, v = str(REPO), "fused_layers+edges"

    def runs() -> list[list[str]]:
        return [c.split()[1:] for c in (tmp / "calls.log").read_text().splitlines() if c.startswith("decode_mlp")]

    out = run(env, tmp, "ab", AB_PATCH=str(patches[0]), KPT_AB_DIR=str(copies), AB_VARIANTS=v, TRITON_CACHE_DIR="")
    b = copies / "B"
    assert runs() == [[repo, repo, v], [str(b), str(b), "patched", f"{b}/.kpt/triton", v], [repo, repo, v]], out.stdout
    assert not (REPO / "ab-marker").exists() and (b / "kernels" / "gemv.py").exists()
    assert not (b / ".venv").exists() and not (b / ".git").exists()

    (tmp / "calls.log").unlink()
    run(env, tmp, "ab", AB_PATCH=" ".join(map(str, patches)), KPT_AB_DIR=str(copies), AB_VARIANTS=v,
        TRITON_CACHE_DIR="")
    b1, b2 = copies / "B1", copies / "B2"
    assert [r[0] for r in runs()] == [repo, str(b1), str(b2), repo]
    assert runs()[1][2] == "patched" and not (b1 / "other-marker").exists()  # each patch on a copy of its own
    assert (b2 / "other-marker").exists() and not (b2 / "ab-marker").exists()


def test_pdl_trial_runs_the_probe_and_brings_back_its_json_and_log(script_env):
    env, tmp_path = script_env
    done = run(env, tmp_path, "pdl-trial")
    out = next(tmp_path.glob("out-pdl-trial-*"))
    assert "13 of the graph's 13 edges made programmatic" in done.stdout  # the log's edge lines, shown
    assert (tmp_path / "calls.log").read_text().split() == ["pdl_trial", "--out", str(out / "pdl-trial.json")]
    with tarfile.open(out / "results.tgz") as tgz:  # everything written leaves as one archive
        names = {n.removeprefix("./") for n in tgz.getnames()}
        assert {"pdl-trial.json", "pdl-trial.log"} <= names
        assert json.load(tgz.extractfile("./pdl-trial.json"))["times"]["trial_edges"] == 13


def test_pdl_trial_repeated_runs_it_again_in_a_new_process_with_its_own_files(script_env):
    env, tmp_path = script_env
    done = run(env, tmp_path, "pdl-trial", REPEAT="2")
    out = next(tmp_path.glob("out-pdl-trial-*"))
    calls = (tmp_path / "calls.log").read_text().split()
    assert calls == ["pdl_trial", "--out", str(out / "pdl-trial.json"), "pdl_trial", "--out", str(out / "pdl-trial-2.json")]
    assert done.stdout.count("13 of the graph's 13 edges made programmatic") == 2
    with tarfile.open(out / "results.tgz") as tgz:
        names = {n.removeprefix("./") for n in tgz.getnames()}
        assert {"pdl-trial.json", "pdl-trial.log", "pdl-trial-2.json", "pdl-trial-2.log"} <= names


def test_pdl_trial_trials_times_it_again_in_the_same_process(script_env):
    env, tmp_path = script_env
    run(env, tmp_path, "pdl-trial", TRIALS="2")
    out = next(tmp_path.glob("out-pdl-trial-*"))
    assert (tmp_path / "calls.log").read_text().split() == ["pdl_trial", "--out", str(out / "pdl-trial.json"),
                                                            "--repeat", "2"]


def test_captures_runs_the_capture_tests_then_the_probe_and_brings_back_both(script_env):
    env, tmp_path = script_env
    done = run(env, tmp_path, "captures")
    out = next(tmp_path.glob("out-captures-*"))
    pytest_call, probe_call = (tmp_path / "calls.log").read_text().splitlines()
    assert pytest_call.startswith("-m pytest") and "no_allocator_routing" in pytest_call
    assert f"--junitxml {out / 'tests-captures.xml'}" in pytest_call
    assert probe_call.split() == ["capture_probe", "--out", str(out / "capture-probe.json")]
    assert "decode plain after it" in done.stdout  # the probe's step lines, shown
    with tarfile.open(out / "results.tgz") as tgz:
        names = {n.removeprefix("./") for n in tgz.getnames()}
        assert {"tests-captures.log", "capture-probe.json", "capture-probe.log"} <= names
