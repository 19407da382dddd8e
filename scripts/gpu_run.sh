#!/usr/bin/env bash
# GPU phases of the nvidia service, for one device command each (each well under 10 minutes).
#
#   scripts/gpu_run.sh tests     GPU tests (pytest -m gpu tests/gpu, ~8 min)    -> $OUT/tests.log, tests-*.xml
#   scripts/gpu_run.sh basics    the device, contract and runtime tests (~5 min), the first half of tests
#   scripts/gpu_run.sh jobs      the optimize/export/benchmark job tests (~6 min), the second half
#   scripts/gpu_run.sh models A,B    models A and B (bench/h100.py MODELS): every compiled variant built at
#                                    once, one process each, then all measured -> h100-A_B.json, warm-*.log;
#                                    FG=kernel-tests runs the kernels/ GPU suite while the builds are waited for,
#                                    FG_TESTS="<pytest args>" those GPU tests; EXPERIMENTS=kpt_O2_tma also builds
#                                    and measures that experiment (bench/h100.py EXPERIMENTS), reported apart
#   scripts/gpu_run.sh builds G1 G2..  detached builds of model groups (a group: keys joined by commas, one process per
#                                    variant), outliving the command, beside FG (default kernel-tests; or tests,
#                                    basics, jobs, none); WAIT_S=570 waits for them until the command's 570th second
#   scripts/gpu_run.sh kernels   kernels/ GPU tests, then the provider benchmark -> kernels-h100.json/.md
#   scripts/gpu_run.sh kernel-tests   kernels/ GPU tests beside the job cache-reuse test (no benchmark)
#   scripts/gpu_run.sh kernels-quick  norm kernel at each fixed warp count vs autotuned, and decode attention
#                                    against copy+SDPA -> kernels-quick-<op>.json/.md (~2 min); KOPS="<op> ..."
#                                    runs other kernels.bench ops instead (e.g. attention-modes), one process each
#   scripts/gpu_run.sh decode-probe  the new decode kernels' GPU tests, then the step's kernel choices side by side
#                                    (bench/decode_mlp.py: PDL launches; the chains, the prefetch plan and the
#                                    compiled PDL step where their tests passed first,
#                                    DECODE_VARIANTS),
#                                    then LayerNorm's x loads if time is left (~9 min)
#   scripts/gpu_run.sh gluon     the Gluon warp-specialized kernels (attention_ws, attention_split, linear_ws): each
#                                    one's GPU test (time-limited), then, where it passed, kernels.bench --ops
#                                    attention-ws / linear-ws -> kernels-quick-<op>.json/.md (~9 min; GLUON=attention
#                                    or GLUON=linear for one of them)
#   scripts/gpu_run.sh reads     the decode step's launches as pure reads (bench/read_skeleton.py, PDL forms too) and
#                                    gemv.py config by config against pure reads (bench/gemv_configs.py) (~2 min)
#                                    -> read-skeleton.json, gemv-configs.json and their logs
#   scripts/gpu_run.sh ab        AB_PATCH (a patch, patch -p1, of a copy of this tree; or several, each on its own copy)
#                                    against this tree: bench/decode_mlp.py's AB_VARIANTS on this tree (A), on each
#                                    patched copy (B, or B1 B2 ..), on this tree again (A2), each in a process of its
#                                    own (~9 min) -> decode-mlp-{A,B..,A2}.json
#   scripts/gpu_run.sh gaps      the decode step's launch gaps and kernel nodes, uncompiled, compiled with the eager
#                                    picks and with Inductor's own (bench/graph_gaps.py) (~3 min) -> graph-gaps.json
#   scripts/gpu_run.sh pdl-trial the 1B Llama decode build's PDL trial alone, as its O3 build runs it after ~700 s
#                                    of other trials (bench/pdl_trial.py, ~4 min) -> pdl-trial.json, pdl-trial.log;
#                                    REPEAT=2 again over the first run's compile caches -> pdl-trial-2.json/.log;
#                                    TRIALS=2 times the trial twice in each process (the second over the caches)
#   scripts/gpu_run.sh captures  what a failed CUDA graph capture leaves: its GPU tests (kpt.gpu.runtime.capturing),
#                                    then bench/capture_probe.py (the build's trial order) (~4 min)
#                                    -> tests-captures.{log,xml}, capture-probe.json, capture-probe.log
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
#       torchao==0.18.0 onnxscript==0.7.2 onnx-ir==1.1.0 cuda-bindings==13.0.3 cuda-pathfinder==1.9.1
#
# torchao 0.18.0: its prebuilt kernels load on torch >= 2.11 (torchao/__init__.py checks the minimum) and
# its Python API is the one the CPU service and these tests use. onnxscript and onnx-ir (pure Python) are
# what torch.onnx's exporter needs; skipped if the machine has them. cuda-bindings (NVIDIA's driver API for
# Python, the 13.0 line of the machine's CUDA 13.0 driver) with its cuda-pathfinder: kpt.gpu.graph_edges.
set -euo pipefail
cd "$(dirname "$0")/.."
PHASE="${1:?usage: scripts/gpu_run.sh tests|basics|jobs|kernels|models A,B|env}"
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
# At most 8 files come back from the device machine: everything the phase wrote leaves as one archive.
trap 'cd "$OUT" && tar czf "../kpt-$PHASE-results.tgz" . 2>/dev/null && rm -rf ./* && mv "../kpt-$PHASE-results.tgz" results.tgz' EXIT
SITE=/tmp/site
mkdir -p "$SITE"

for whl in .whl/*.whl; do
    [ -e "$whl" ] || continue
    mod="$(basename "$whl" | cut -d- -f1 | tr 'A-Z-' 'a-z_')"
    case "$mod" in cuda_bindings|cuda_pathfinder) mod="cuda.${mod#cuda_}" ;; esac  # a namespace package's module
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

# Models: every compiled variant (kpt_O1..O3, torch.compile default and max-autotune) of every listed model is
# built at once, one `bench/h100.py warm` process each (16 cores; they share the GPU, so autotuning is timed under
# load: only the choice of kernel can suffer, never the measurement); the measuring run then loads each build back
# from the caches and times all variants of a model interleaved on the idle GPU. A build that has not finished
# when the measuring must start is reported as not built. The caches and the marks of finished builds stay on
# the machine (/tmp/kpt-cache-models) while it is held, so the same phase run again builds only what is still
# missing: a model whose slowest build did not fit one command is complete after the next. Serially one model's
# builds take ~14 minutes on the H100.
#
# Builds run detached (setsid, each in a session of its own), so they outlive the device command that started
# them and go on while the machine is held: `builds` starts those of several models and spends its own command on
# the kernels/ tests; a later `models` waits for its models' builds, pauses every other build (SIGSTOP to its
# session) while it measures on the idle machine, and lets them go on afterwards.
export KPT_CACHE_DIR_MODELS="${KPT_CACHE_DIR_MODELS:-/tmp/kpt-cache-models}"
BG="${KPT_BG:-/tmp/kpt-bg}"  # pid and log of each detached build: warm-<group>-<variant>.{pid,log}
# EXPERIMENTS="kpt_O2_tma": bench/h100.py EXPERIMENTS built and measured beside the variants, reported apart.
EXPERIMENTS="${EXPERIMENTS:-}"
VARIANTS="kpt_O1 kpt_O2 kpt_O3 compile_default compile_max_autotune compile_max_autotune_bf16 ${EXPERIMENTS//,/ }"

# start_builds "GROUPS" SECONDS: a detached `warm` per group and variant not yet built nor building. A group is
# one model key or several joined by commas, built in turn by one process per variant (the two Llama shapes share
# their 4.4 GB of fp32 weights that way; ten processes holding their own would not fit the GPU's memory).
start_builds() {
    local groups="$1" seconds="$2" group v threads k todo name
    local marks="$KPT_CACHE_DIR_MODELS/marks"
    mkdir -p "$marks" "$BG"
    for group in $groups; do
        for v in $VARIANTS; do
            todo=""
            for k in ${group//,/ }; do
                grep -q -E '"error": (null|"")' "$marks/$k.$v.json" 2>/dev/null || todo="${todo:+$todo,}$k"
            done
            name="warm-${group//,/+}-$v"
            [ -n "$todo" ] || continue
            if [ -e "$BG/$name.pid" ] && kill -0 "$(cat "$BG/$name.pid")" 2>/dev/null; then continue; fi
            case "$v" in kpt_O2*|kpt_O3|compile_max_autotune*) threads=6 ;; *) threads=2 ;; esac
            KPT_CACHE_DIR="$KPT_CACHE_DIR_MODELS" TORCHINDUCTOR_COMPILE_THREADS="$threads" setsid \
                timeout --signal=INT --kill-after=10 "$seconds" \
                python3 bench/h100.py warm --model "$todo" --variants "$v" --marks "$marks" \
                >> "$BG/$name.log" 2>&1 < /dev/null &
            echo $! > "$BG/$name.pid"
        done
    done
}

# The sessions of detached builds still running: all of them, or those of the groups given.
live_builds() {
    local f pid
    for f in "$BG"/warm-*.pid; do
        [ -e "$f" ] || continue
        if [ -n "${1:-}" ]; then
            local hit=0 g
            for g in $1; do case "$(basename "$f")" in "warm-${g//,/+}-"*) hit=1 ;; esac; done
            [ "$hit" = 1 ] || continue
        fi
        pid="$(cat "$f")"
        kill -0 "$pid" 2>/dev/null && echo "$pid"
    done
}

# signal_builds SIGNAL [GROUPS]: to every process of each live build's session (compile workers included).
signal_builds() {
    local sid
    for sid in $(live_builds "${2:-}"); do pkill "-$1" -s "$sid" || true; done
}

bg_logs() {
    mkdir -p "$OUT/warm"
    cp "$BG"/warm-*.log "$OUT/warm/" 2>/dev/null || true
    grep -h -E "warmed in" "$BG"/warm-*.log 2>/dev/null | cut -c1-300 || true
}

# The models' caches (with their marks) go when the disk that holds them has less than KPT_MIN_FREE_GB left.
check_disk() {
    local min_gb="${KPT_MIN_FREE_GB:-20}" dir
    dir="$(dirname "$KPT_CACHE_DIR_MODELS")"
    if [ "$(df --output=avail -k "$dir" | tail -n 1)" -lt $((min_gb << 20)) ]; then
        echo "less than $min_gb GB free under $dir: the earlier models' caches go"; rm -rf "$KPT_CACHE_DIR_MODELS"
    fi
}

models() {
    local list="$1"
    # The measuring run's share: loading every build back, the references, the interleaved timing and the profiles.
    # The 1B Llama needs more (its weights are built and cast per variant): 130 s cut four of its eight variants.
    local measure="${MEASURE_S:-200}"
    case "$list" in *llama*) measure="${MEASURE_S:-240}" ;; esac
    local build_until="$((LIMIT - measure))"
    local marks="$KPT_CACHE_DIR_MODELS/marks"
    check_disk
    local groups="${list//,/ }"
    [ "${SHARED:-0}" = 1 ] && groups="$list"
    signal_builds CONT  # a build paused by an earlier command that ended early
    start_builds "$groups" "$((build_until - SECONDS))"
    # FG=kernel-tests: the kernels/ GPU suite (results only) runs while the builds are waited for, and ends by then.
    local fg_pid="" fg_tests_pid=""
    if [ "${FG:-none}" = kernel-tests ]; then kernel_tests 4 "$((build_until - SECONDS))" & fg_pid=$!; fi
    # FG_TESTS="<pytest args>": those GPU tests (results only) run while the builds are waited for.
    if [ -n "${FG_TESTS:-}" ]; then
        # shellcheck disable=SC2086  # FG_TESTS is a list of pytest arguments
        timeout --signal=INT --kill-after=15 "$((build_until - SECONDS))" python3 -m pytest -q -p no:cacheprovider \
            -m gpu -rs $FG_TESTS --junitxml="$OUT/tests-fg.xml" > "$OUT/fg-tests.log" 2>&1 &
        fg_tests_pid=$!
    fi
    while [ -n "$(live_builds "$groups")" ] && [ "$SECONDS" -lt "$build_until" ]; do sleep 5; done
    if [ -n "$fg_tests_pid" ]; then
        wait "$fg_tests_pid" || true
        grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/fg-tests.log" | cut -c1-300 || true
    fi
    if [ -n "$fg_pid" ]; then
        wait "$fg_pid" || true
        grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/kernels-tests.log" | cut -c1-300 || true
    fi
    # Nothing else may use the machine while the GPU is timed: this list's unfinished builds end, the other
    # models' pause until the measuring is done.
    if [ -n "$(live_builds "$groups")" ]; then signal_builds INT "$groups"; sleep 5; signal_builds KILL "$groups"; fi
    signal_builds STOP
    sleep 2
    bg_logs
    echo "builds done at ${SECONDS}s; measuring"
    local tag="${list//,/_}"
    KPT_CACHE_DIR="$KPT_CACHE_DIR_MODELS" timeout --signal=INT --kill-after=15 "$((LIMIT - SECONDS))" \
        python3 bench/h100.py run --phase "models $list" --models "$list" --budget-s "$((LIMIT - SECONDS - 15))" \
        --warmed "$marks" --experiments "$EXPERIMENTS" --out "$OUT/h100-$tag.json" > "$OUT/h100-$tag.log" 2>&1 \
        || echo "measuring run: rc $?"
    signal_builds CONT
    grep -E "built in|skipped|wrote|Error" "$OUT/h100-$tag.log" | cut -c1-300 | tail -n 30 || true
    tail -n 2 "$OUT/h100-$tag.log" | cut -c1-300
    cp -r "$marks" "$OUT/marks"
    echo "still building: $(live_builds | wc -l)"
    du -sh "$KPT_CACHE_DIR_MODELS" 2>/dev/null; df -h /tmp | tail -n 1
}

# kernels/ GPU tests on N pytest-xdist workers (most of the suite is compiling Triton configs), for S seconds at
# most -> $OUT/kernels-tests.log, tests-kernels.xml
kernel_tests() {
    timeout --signal=INT --kill-after=15 "$2" python3 -m pytest -q -p no:cacheprovider -m gpu tests/kernels -n "$1" \
        --junitxml="$OUT/tests-kernels.xml" > "$OUT/kernels-tests.log" 2>&1 || true
}

# The GPU test suite (tests/gpu): "tests" runs both halves, "basics" the device, contract and runtime tests,
# "jobs" the optimize/export/benchmark job tests.
gpu_tests() {
    local which="$1"
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
    # basics: 19 tests, about 100 s for the first 11 and 130 s for the int8 decode step's trials alone on the H100
    # (2026-12-06: 330 s did not reach the last 7); jobs: 9 tests, 206 s on three workers. basics alone gets the
    # phase's whole limit.
    local basics_s=330
    [ "$which" = basics ] && basics_s="$((LIMIT - SECONDS - 10))"
    [ "$which" = jobs ] || run_tests basics 1 "$basics_s" tests/gpu --ignore=tests/gpu/test_gpu_jobs.py || rc=$?
    [ "$which" = basics ] || run_tests jobs 3 "$((LIMIT - SECONDS))" tests/gpu/test_gpu_jobs.py --tb=short || rc=$?
    return "$rc"
}

# The kernels/ GPU suite on N workers beside the O2 cache-reuse job test (both only check results, so they may
# share the card with other work) -> $OUT/kernels-tests.log, reuse-tests.log and their junit XML.
kernel_and_reuse_tests() {
    timeout --signal=INT --kill-after=15 "$((LIMIT - 20))" python3 -m pytest -q -p no:cacheprovider -m gpu \
        tests/gpu/test_gpu_jobs.py -k cache_reuse -s --junitxml="$OUT/tests-reuse.xml" > "$OUT/reuse-tests.log" 2>&1 &
    local reuse_pid=$!
    kernel_tests "$1" "$((LIMIT - 20))"
    wait "$reuse_pid" || true  # not a bare `wait`: detached builds are this shell's children too
    local f
    for f in kernels-tests.log reuse-tests.log; do grep -E "^(FAILED|ERROR)|passed|failed|O2 job:" "$OUT/$f" | cut -c1-300 || true; done
}

case "$PHASE" in
    env)
        { nvidia-smi; python3 -c "import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda,
torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')";
          python3 -m pip list 2>/dev/null | grep -i -E "torch|triton|onnx|transformers|pytest|numpy"; } \
            > "$OUT/env.txt" 2>&1 || true
        cat "$OUT/env.txt" ;;
    tests|basics|jobs) gpu_tests "$PHASE" || exit $? ;;
    reads)  # on an idle card: both time launches side by side
        for b in read_skeleton gemv_configs; do
            out="$OUT/${b//_/-}"
            timeout --signal=INT --kill-after=10 "$((LIMIT / 2))" python3 "bench/$b.py" > "$out.json" 2> "$out.log" \
                || echo "$b: rc $?"
            tail -n 3 "$out.log" | cut -c1-300
        done ;;
    ab)  # on an idle card: kernel changes measured against the tree they change, A B.. A (drift shows as A != A2)
        # AB_PATCH: one patch file or several (space-separated), each applied on its own to a copy of the tree.
        read -r -a patches <<< "${AB_PATCH:?AB_PATCH=<patch file(s), applied with patch -p1>}"
        copies="${KPT_AB_DIR:-/tmp/kpt-ab}" sides=(A)
        for i in "${!patches[@]}"; do
            side="B$((i + 1))"
            [ "${#patches[@]}" = 1 ] && side=B
            copy="$copies/$side"
            rm -rf "$copy" && mkdir -p "$copy"
            tar cf - --exclude=./.kpt --exclude=./out --exclude=./.whl --exclude=.venv --exclude=.git \
                --exclude=node_modules . | tar xf - -C "$copy"
            pf="$(realpath "${patches[$i]}")"
            (cd "$copy" && patch -p1 -s < "$pf")
            sides+=("$side")
        done
        sides+=(A2)
        each=$(((LIMIT - SECONDS - 15) / ${#sides[@]}))
        for side in "${sides[@]}"; do
            dir="$PWD" caches=()
            # A patched copy compiles into caches of its own: none of A's compiled code can stand in for B's.
            case "$side" in B*) dir="$copies/$side"
                caches=(TORCHINDUCTOR_CACHE_DIR="$dir/.kpt/inductor" TRITON_CACHE_DIR="$dir/.kpt/triton") ;; esac
            (cd "$dir" && env "${caches[@]}" PYTHONPATH="$dir:$dir/shared:$dir/services/nvidia:$dir/services/amd:$SITE" \
                timeout --signal=INT --kill-after=15 "$each" python3 bench/decode_mlp.py \
                --variants "${AB_VARIANTS:-fused_layers+eager,fused_layers+edges}" --budget-s "$((each - 25))") \
                > "$OUT/decode-mlp-$side.json" 2> "$OUT/decode-mlp-$side.log" || echo "$side: rc $?"
            echo "$side:"; grep -A 4 '"p50_ms"' "$OUT/decode-mlp-$side.json" || tail -n 3 "$OUT/decode-mlp-$side.log" | cut -c1-300
        done ;;
    pdl-trial)  # on an idle card (REPEAT, TRIALS: the header); later runs find the first one's compile caches
        for i in $(seq 1 "${REPEAT:-1}"); do
            sfx=$([ "$i" = 1 ] || echo "-$i")
            [ "$((LIMIT - SECONDS))" -gt 30 ] || { echo "pdl_trial $i: no time left"; break; }
            timeout --signal=INT --kill-after=10 "$((LIMIT - SECONDS))" python3 bench/pdl_trial.py \
                --out "$OUT/pdl-trial$sfx.json" ${TRIALS:+--repeat "$TRIALS"} > "$OUT/pdl-trial$sfx.log" 2>&1 \
                || echo "pdl_trial $i: rc $?"
            grep -E "graph_edges|pdl_trial" "$OUT/pdl-trial$sfx.log" | tail -n 8 | cut -c1-2000
        done ;;
    captures)
        timeout --signal=INT --kill-after=10 "$((LIMIT / 3))" python3 -m pytest -q -p no:cacheprovider -m gpu \
            tests/gpu/test_gpu_runtime.py -k "stream_of_its_own or no_allocator_routing or random_generator or kernel_trials_are_timed" \
            --junitxml "$OUT/tests-captures.xml" > "$OUT/tests-captures.log" 2>&1 || echo "capture tests: rc $?"
        tail -n 3 "$OUT/tests-captures.log" | cut -c1-300
        # PROBE_ARGS=--llama-1b: the 1B decode build's own passes up to quantize, then its step
        timeout --signal=INT --kill-after=10 "$((LIMIT - SECONDS))" python3 bench/capture_probe.py ${PROBE_ARGS:-} \
            --out "$OUT/capture-probe.json" > "$OUT/capture-probe.log" 2>&1 || echo "capture_probe: rc $?"
        grep -E "bench.capture_probe|timed eagerly|failed CUDA graph" "$OUT/capture-probe.log" | cut -c1-1500 ;;
    gaps)  # on an idle card
        timeout --signal=INT --kill-after=10 "$((LIMIT - SECONDS))" python3 bench/graph_gaps.py \
            --variants "${GAPS_VARIANTS:-eager,compiled,compiled_free}" > "$OUT/graph-gaps.json" \
            2> "$OUT/graph-gaps.log" || echo "graph_gaps: rc $?"
        tail -n 3 "$OUT/graph-gaps.log" | cut -c1-300 ;;
    kernels)
        # kernels/: the GPU correctness suite, then, on the idle GPU, the provider table
        # (docs/benchmarks/kernels-h100.*), rewritten after each op.
        kernel_tests 8 240
        tail -n 3 "$OUT/kernels-tests.log"
        grep -E "^(FAILED|ERROR)" "$OUT/kernels-tests.log" | cut -c1-300 || true
        timeout --signal=INT --kill-after=15 "$((LIMIT - SECONDS))" python3 -m kernels.bench --out "$OUT" \
            > "$OUT/kernels-bench.log" 2>&1 || echo "kernels.bench: rc $?"
        grep -c '"op"' "$OUT/kernels-bench.log" || true
        tail -n 3 "$OUT/kernels-bench.log" | cut -c1-300 ;;
    kernel-tests) kernel_and_reuse_tests 6 ;;  # without the benchmark
    kernels-quick)  # on an idle card: each fixed warp count of the norm kernel, and decode attention (~2 min)
        # One process per op (KOPS), so a kernel that faults the CUDA context costs only its own op's rows.
        for op in ${KOPS:-norm-warps decode}; do
            [ "$((LIMIT - SECONDS))" -gt 20 ] || { echo "kernels.bench $op: no time left"; continue; }
            timeout --signal=INT --kill-after=15 "$((LIMIT - SECONDS))" python3 -m kernels.bench --ops "$op" \
                --name "kernels-quick-$op" --out "$OUT" > "$OUT/kernels-quick-$op.log" 2>&1 || echo "kernels.bench $op: rc $?"
        done
        grep -h -A 20 "each kernel variant" "$OUT"/kernels-quick-*.md || true
        grep -h '"decode_attention"\|"attention"\|"linear_gelu"\|"swiglu"\|"gemv' "$OUT"/kernels-quick-*.log | cut -c1-200 || true ;;
    gluon)  # on an idle card: kernels/attention_ws.py, attention_split.py and linear_ws.py checked, then timed (~9 min)
        # Their barriers could hang on a card if a phase were wrong: each test runs its kernel in a process with a time
        # limit, and a kernel is timed only where its test passed.
        # GLUON: the kernels to take ("attention linear"; one each fits a call more easily: ~5 and ~4 min).
        # attention_split (the last wave split) first: where its test fails its providers are not timed.
        # linear_ws's cooperative tiles (COOP) likewise: their test first, kpt_ws_coop and gemm_ws_coop untimed where it fails.
        skip=""
        gate() {  # gate KERNEL NAME TEST PROVIDERS: where KERNEL is taken, TEST runs; where it fails, PROVIDERS are skipped
            case " ${GLUON:-attention linear} " in *" $1 "*)
                timeout --signal=INT --kill-after=15 300 python3 -m pytest -q -p no:cacheprovider -m gpu -rs \
                    tests/kernels/test_gpu.py -k "$3" --junitxml="$OUT/tests-$2.xml" > "$OUT/tests-$2.log" 2>&1 \
                    || { echo "$2 test: rc $?"; skip="${skip:+$skip,}$4"; } ;;
            esac
        }
        gate attention attention-split gluon_split_attention kpt_ws_split,kpt_ws_split_deep,kpt_ws_split_persist
        gate linear linear-coop gluon_coop_linear kpt_ws_coop,gemm_ws_coop
        for k in ${GLUON:-attention linear}; do
            op="$k-ws"
            # linear_ws's test compiles up to 88 forms on a fresh machine (past 240 s on the H100, 2026-12-06)
            if timeout --signal=INT --kill-after=15 500 python3 -m pytest -q -p no:cacheprovider -m gpu -rs \
                tests/kernels/test_gpu.py -k "gluon_$k" --junitxml="$OUT/tests-$op.xml" > "$OUT/tests-$op.log" 2>&1; then
                [ "$((LIMIT - SECONDS))" -gt 30 ] || { echo "kernels.bench $op: no time left"; continue; }
                timeout --signal=INT --kill-after=15 "$((LIMIT - SECONDS - 10))" python3 -m kernels.bench --ops "$op" \
                    --skip "$skip" --name "kernels-quick-$op" --out "$OUT" > "$OUT/kernels-quick-$op.log" 2>&1 \
                    || echo "kernels.bench $op: rc $?"
                grep -h '"kpt_ws\|"sdpa_cudnn"\|"cublas+act"' "$OUT/kernels-quick-$op.log" | cut -c1-250 || true
            else
                echo "$op test: rc $? (not timed)"; tail -n 30 "$OUT/tests-$op.log" | cut -c1-300
            fi
        done ;;
    decode-probe)  # on an idle card: the decode step's kernel choices side by side, then their tests (~9 min)
        # The other decode kernels' GPU tests run after the timing (TESTS_S kept for them; the probe holds every
        # variant's logits to the eager step's meanwhile), then LayerNorm's x loads if time is left. The step's
        # export/AOTInductor tests (-k decode_step, ~200 s) do not fit beside: run them on their own.
        # fused_layers, then in order of interest (the budget skips the last first): the step uncompiled (+eager,
        # the fastest on the H200, 2026-12-05) (DECODE_BASE: others); then each variant whose kernels can fault,
        # only where its tests passed first, each in a process of its own with a time limit (a fault ends the
        # process; a chain's wait that never ends would take the whole probe): the prefetch plan (+pf), the compiled
        # step with PDL asked for and its graph's edges made programmatic (+edges: the package's route,
        # kpt.gpu.graph_edges) (these two faulted or gave wrong values on the H200, 2026-12-05, while Inductor took
        # their kernels' operands as all written), the chains (+layer, +chain); then DECODE_VARIANTS: the step
        # uncompiled with its launches carrying the PDL attribute (+pdl; its Triton autotuners tune at the first
        # call, which Inductor's compile does in parallel), decode attention in one launch (+1), Inductor's own (inductor).
        variants="${DECODE_BASE:-fused_layers,fused_layers+eager}"
        # DECODE_GATES: the gating tests (test:variant) to run, "" for none (all passed on the H100, 2026-12-05: name
        # their variants in DECODE_VARIANTS instead and the probe's time goes to the timing)
        for gate in ${DECODE_GATES-prefetch_plan:pf programmatic:edges layer_chain:layer mlp_chain:chain}; do
            extra="${gate#*:}" gate="${gate%%:*}"
            if timeout --signal=INT --kill-after=15 150 python3 -m pytest -q -p no:cacheprovider -m gpu -rs -x \
                --tb=short tests/kernels/test_gpu.py -k "$gate" --junitxml="$OUT/tests-$gate.xml" \
                > "$OUT/tests-$gate.log" 2>&1
            then
                variants="$variants,fused_layers+$extra"
            else
                echo "$gate test: rc $? (not timed)"
            fi
        done
        variants="$variants,${DECODE_VARIANTS:-fused_layers+pdl,fused_layers+1,inductor}"
        tests_s="${TESTS_S:-90}"  # the decode tests below took 37 s on the H200 (2026-12-05)
        # Variants in order of interest: those not compiled when the budget's measuring share is reached are skipped.
        timeout --signal=INT --kill-after=15 "$((LIMIT - SECONDS - tests_s - 20))" python3 bench/decode_mlp.py \
            --variants "$variants" --budget-s "$((LIMIT - SECONDS - tests_s - 45))" > "$OUT/decode-mlp.json" \
            2> "$OUT/decode-mlp.log" || echo "decode_mlp: rc $?"
        grep -A 12 '"p50_ms"' "$OUT/decode-mlp.json" || tail -n 5 "$OUT/decode-mlp.log" | cut -c1-300
        timeout --signal=INT --kill-after=15 "$((LIMIT - SECONDS - 10))" python3 -m pytest -q -p no:cacheprovider \
            -m gpu -rs tests/kernels/test_gpu.py -k "${DECODE_TESTS:-one_launch or pdl_launches or x_past_l1}" \
            --junitxml="$OUT/tests-decode.xml" > "$OUT/tests-decode.log" 2>&1 || echo "decode tests: rc $?"
        tail -n 2 "$OUT"/tests-*.log | cut -c1-300
        if [ "$((LIMIT - SECONDS))" -gt 40 ]; then
            timeout --signal=INT --kill-after=10 "$((LIMIT - SECONDS))" python3 -m kernels.bench --ops norm-cache \
                --name kernels-quick-norm-cache --out "$OUT" > "$OUT/kernels-quick-norm-cache.log" 2>&1 \
                || echo "norm-cache: rc $?"
        fi
        grep -h -A 20 "each kernel variant" "$OUT"/kernels-quick-norm-cache.md 2>/dev/null || true ;;
    models) models "${2:?usage: scripts/gpu_run.sh models <comma-separated keys of bench/h100.py MODELS>}" ;;
    builds)
        # Detached builds of the groups given (BUILD_S seconds at most: they outlive this command), and beside
        # them FG: the kernels/ suite with the O2 cache-reuse test (default; both check results only, so the load
        # is harmless), the GPU test suite (FG=tests|basics|jobs, slower under the load), or nothing (FG=none).
        shift
        check_disk
        start_builds "$*" "${BUILD_S:-1500}"
        sleep 2
        echo "building: $(live_builds | wc -l) processes"
        case "${FG:-kernel-tests}" in  # what the command itself runs beside the builds
            tests|basics|jobs) gpu_tests "$FG" || echo "gpu tests: rc $?" ;;
            kernel-tests) kernel_and_reuse_tests 4 ;;
            none) ;;
            *) echo "unknown FG=$FG" >&2 ;;
        esac
        # WAIT_S: the command itself waits for the builds until then (seconds since it started), so the next call
        # finds them done where they finish in time.
        while [ -n "$(live_builds)" ] && [ "$SECONDS" -lt "${WAIT_S:-0}" ]; do sleep 5; done
        bg_logs
        echo "still building: $(live_builds | wc -l) at ${SECONDS}s" ;;
    *) echo "unknown phase $PHASE" >&2; exit 2 ;;
esac
