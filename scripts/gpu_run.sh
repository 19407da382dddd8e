#!/usr/bin/env bash
# GPU phases of the nvidia service, for one device command each (each well under 10 minutes).
#
#   scripts/gpu_run.sh tests     GPU tests (pytest -m gpu tests/gpu, ~8 min)    -> $OUT/tests.log, tests-*.xml
#   scripts/gpu_run.sh basics    the device, contract and runtime tests (~2 min), the first half of tests
#   scripts/gpu_run.sh jobs      the optimize/export/benchmark job tests (~6 min), the second half
#   scripts/gpu_run.sh bench-a   bert-base (b8 s384), gpt2 (b8 s512)            -> $OUT/h100-a.json, h100-a.log
#   scripts/gpu_run.sh bench-b   llama-1b decode (b1, 2048 cache) and prefill   -> $OUT/h100-b.json, h100-b.log
#   scripts/gpu_run.sh bench-c   vit-b16, resnet50 (32 images)                  -> $OUT/h100-c.json, h100-c.log
#   scripts/gpu_run.sh model M   one model: its builds in parallel, then measured -> $OUT/h100-M.json, warm-M-*.log
#   scripts/gpu_run.sh kernels   kernels/ GPU tests + provider benchmark        -> $OUT/kernels-h100.json/.md
#   scripts/gpu_run.sh env       what the machine has (no GPU work)             -> $OUT/env.txt
# Afterwards, on any machine:  python3 bench/h100.py merge h100-*.json --docs docs/benchmarks
#
# The machine has python3 with torch 2.11 (CUDA 13.0), triton, transformers, onnx, onnxruntime, pytest,
# grpcio, protobuf, but no torchao, no nats-py and no internet. Wheels it lacks are carried in .whl/
# (git-ignored: pass it in the device command's carry list) and installed into /tmp/site; a wheel whose
# module the machine already has is skipped, so nothing preinstalled is shadowed. Fetch them with:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       torchao==0.18.0 onnxscript==0.7.2 onnx-ir==1.1.0
#
# torchao 0.18.0: its prebuilt kernels load on torch >= 2.11 (torchao/__init__.py checks the minimum) and
# its Python API is the one the CPU service and these tests use. onnxscript and onnx-ir (pure Python) are
# what torch.onnx's exporter needs; skipped if the machine has them.
set -euo pipefail
cd "$(dirname "$0")/.."
PHASE="${1:?usage: scripts/gpu_run.sh tests|basics|jobs|kernels|model M|bench-a|bench-b|bench-c|env}"
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
SITE=/tmp/site
mkdir -p "$SITE"

for whl in .whl/*.whl; do
    [ -e "$whl" ] || continue
    mod="$(basename "$whl" | cut -d- -f1 | tr 'A-Z-' 'a-z_')"
    if python3 -c "import $mod" 2>/dev/null; then
        echo "wheel $whl: $mod already importable, not installed"
        continue
    fi
    python3 -m pip install --quiet --no-index --no-deps --target "$SITE" "$whl"
done

export PYTHONPATH="$PWD:$PWD/shared:$PWD/services/nvidia:$PWD/services/amd:$SITE${PYTHONPATH:+:$PYTHONPATH}"
# Compiler caches live under the repository (git-ignored .kpt/) so a machine kept warm between phases reuses them.
export KPT_CACHE_DIR="${KPT_CACHE_DIR:-$PWD/.kpt/cache}"
export KPT_LOG_LEVEL="${KPT_LOG_LEVEL:-INFO}"
export TORCHINDUCTOR_COMPILE_THREADS="${TORCHINDUCTOR_COMPILE_THREADS:-$(nproc)}"
mkdir -p "$KPT_CACHE_DIR"

# Stop a little before the device command's 10-minute limit so logs and partial results are written.
LIMIT="${LIMIT:-570}"

bench() {
    local tag="$1" models="$2"
    timeout --signal=INT --kill-after=15 "$((LIMIT - SECONDS))" \
        python3 bench/h100.py run --phase "bench-$tag" --models "$models" --budget-s "${BUDGET:-500}" \
        --out "$OUT/h100-$tag.json" 2>&1 | tee "$OUT/h100-$tag.log"
}

# One model: every compiled variant built at once, one process each (16 cores; they share the GPU, so GEMM
# autotuning timings are taken under load: only the choice of kernel can suffer, never the measurement), then
# the measuring run, which finds each build in the caches. Cuts a model from ~14 minutes of serial builds on
# the H100 to about the longest single build.
model() {
    local key="$1" v pids=()
    for v in kpt_O1 kpt_O2 kpt_O3 compile_default compile_max_autotune; do
        timeout --signal=INT --kill-after=15 "$((LIMIT - 150))" \
            python3 bench/h100.py warm --model "$key" --variants "$v" > "$OUT/warm-$key-$v.log" 2>&1 &
        pids+=($!)
    done
    for v in "${pids[@]}"; do wait "$v" || echo "a warm build of $key failed: see $OUT/warm-$key-*.log"; done
    grep -h "warmed in" "$OUT"/warm-"$key"-*.log || true
    BUDGET="$((LIMIT - SECONDS - 20))" bench "$key" "$key"
}

case "$PHASE" in
    env)
        { nvidia-smi; python3 -c "import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda,
torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')";
          python3 -m pip list 2>/dev/null | grep -i -E "torch|triton|onnx|transformers|pytest|numpy"; } \
            > "$OUT/env.txt" 2>&1 || true
        cat "$OUT/env.txt" ;;
    tests|basics|jobs)
        # Two pytest runs, both under pytest-xdist where the machine has it: a test that crashes its process
        # (a segfault in a native library) is then reported as failed, with faulthandler's stack, and its
        # worker replaced, so the remaining tests still run (timeouts kill the worker the same way, so a hang
        # in native code cannot eat the phase). The device, contract and runtime tests run on one worker (the
        # device tests time the GPU); the job tests, mostly compiles, on two. Without xdist: one process each.
        : > "$OUT/tests.log"
        XDIST=0
        python3 -c "import xdist, execnet" 2>/dev/null && XDIST=1
        [ "$XDIST" = 1 ] || echo "pytest-xdist missing: a test that crashes its process ends its run" | tee -a "$OUT/tests.log"
        run_tests() {  # name workers seconds paths...
            local name="$1" workers="$2" seconds="$3" iso=()
            shift 3
            [ "$XDIST" = 1 ] && iso=(-n "$workers" --max-worker-restart=8 -o timeout_method=thread)
            timeout --signal=INT --kill-after=15 "$seconds" \
                python3 -m pytest -q -m gpu "$@" ${iso[@]+"${iso[@]}"} -p no:cacheprovider -rs --durations=25 \
                --junitxml="$OUT/tests-$name.xml" -o junit_family=xunit2 2>&1 | tee -a "$OUT/tests.log"
        }
        rc=0
        [ "$PHASE" = jobs ] || run_tests basics 1 200 tests/gpu --ignore=tests/gpu/test_gpu_jobs.py || rc=$?
        [ "$PHASE" = basics ] || run_tests jobs 3 "$((LIMIT - SECONDS))" tests/gpu/test_gpu_jobs.py --tb=short || rc=$?
        exit "$rc" ;;
    bench-a) bench a bert-base,gpt2 ;;
    bench-b) bench b llama-1b-decode,llama-1b-prefill ;;
    bench-c) bench c vit-b16,resnet50 ;;
    kernels)
        # kernels/: the GPU correctness suite, then the provider table (docs/benchmarks/kernels-h100.*).
        timeout --signal=INT --kill-after=15 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests/kernels \
            --junitxml="$OUT/tests-kernels.xml" 2>&1 | tee "$OUT/kernels-tests.log" || true
        timeout --signal=INT --kill-after=15 "$((LIMIT - SECONDS))" python3 -m kernels.bench --out "$OUT" 2>&1 \
            | tee "$OUT/kernels-bench.log" ;;
    model) model "${2:?usage: scripts/gpu_run.sh model <bert-base|gpt2|resnet50|vit-b16|llama-1b-prefill|llama-1b-decode>}" ;;
    *) echo "unknown phase $PHASE" >&2; exit 2 ;;
esac
