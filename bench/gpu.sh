#!/usr/bin/env bash
# The GPU machine's script: build, occupancy facts, GPU tests, compute-sanitizer, FlashRNN warm-up, benchmarks, in two
# calls that each fit a short device-tool call (stage limits add up to at most 330 s per call).
#
# Usage (from anywhere; it runs in the repository root):
#   bash bench/gpu.sh call1    # build, facts, cuda-tests, gpu-tests            (limits 120 + 20 + 150 + 40 = 330 s)
#   bash bench/gpu.sh call2    # build, memcheck, flashrnn, bench               (limits 120 + 50 + 80 + 80 = 330 s)
#   bash bench/gpu.sh STAGE... # any stages in this order, e.g. `build racecheck`, `build sweep`, `build lm`
# Device-tool calls (README "GPU run"): call1 needs no carry; call2 wants carry=["bench/wheels"] (FlashRNN's wheel,
# fetched here beforehand with `make wheels`; without it the summary says FlashRNN could not run). On a machine still
# warm from call1 the build of call2 is an up-to-date check of a few seconds; on a fresh one it builds again.
#
# Stages: build (pip install -e ., CUDA part required, no emulator), facts (bench/gpu_facts.py: which kernel each
# headline shape gets and whether its CTAs / clusters are all resident at once), cuda-tests (tests/test_gpu_cuda.py),
# gpu-tests (tests/test_triton.py and tests/test_step_graph.py on the GPU; tests/test_cuda_build.py stays CI's),
# memcheck and racecheck (compute-sanitizer on bench/sanitize_small.py, instrumenting only lstmkern's kernels),
# flashrnn (install FlashRNN from bench/wheels and warm its JIT build: bench/flashrnn_warm.py), bench (bench_kernels, default configs), sweep (H and G
# sweeps), biglstm (the LSTMP configs of f-lm's BIGLSTM shape vs nn.LSTM(proj_size)), lm (the language-model
# benchmark's GPU preset; a call of its own). Old names: tests = cuda-tests gpu-tests,
# sanitize = memcheck racecheck.
#
# Everything goes to $OUT (default ./gpu-out): one log per stage (build.log, facts.log, cuda-tests.log, ...), bench.md
# (the printed table), the benchmark json (+ plots, also kept under bench/results/), nvidia-smi.txt and summary.txt,
# which is printed last; beyond 8 files the logs are packed into logs.tar.gz (the device tool returns 8 files). A
# failing stage does not stop the later ones; exit status 1 if any stage failed.
#
# Time limits per stage (seconds): T_BUILD=120 T_FACTS=20 T_CUDA_TESTS=150 T_GPU_TESTS=40 T_MEMCHECK=50
# T_RACECHECK=60 T_FLASHRNN=80 T_BENCH=80 T_SWEEP=300 T_BIGLSTM=120 T_LM=380. The benchmark also gets --time-budget (T_BENCH - 20):
# it stops starting new cases in time to write its json, most telling implementations first (IMPL_TIERS).
# Other knobs: PYTHON (default python3, the GPU image's interpreter), BENCH_ARGS (extra bench_kernels arguments),
# SWEEP_IMPLS, LM_ARGS, PYTEST_ARGS (extra pytest arguments), FLASHRNN_WHEELS (default bench/wheels),
# LSTMKERN_NO_WERROR (default 1 here: a host compiler that differs from CI's may warn where CI's does not, and a GPU
# call is too scarce to lose to that; CI keeps -Werror; the summary counts the warnings), LSTMKERN_CUDA_ARCHS (default
# 90a on a compute capability 9.x GPU: no compute_80 PTX, half the device compile), MAX_JOBS (default: the CPU count).
set -uo pipefail
export PYTHONUNBUFFERED=1

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
REPO=$(pwd)
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

T_BUILD=${T_BUILD:-120}
T_FACTS=${T_FACTS:-20}
T_CUDA_TESTS=${T_CUDA_TESTS:-150}
T_GPU_TESTS=${T_GPU_TESTS:-40}
T_MEMCHECK=${T_MEMCHECK:-50}
T_RACECHECK=${T_RACECHECK:-60}
T_FLASHRNN=${T_FLASHRNN:-80}
T_BENCH=${T_BENCH:-80}
T_SWEEP=${T_SWEEP:-300}
T_BIGLSTM=${T_BIGLSTM:-120}
T_LM=${T_LM:-380}
BENCH_ARGS=${BENCH_ARGS:-}
LM_ARGS=${LM_ARGS:-}
PYTEST_ARGS=${PYTEST_ARGS:-}
SWEEP_IMPLS=${SWEEP_IMPLS:-lstmkern-cuda,lstmkern-triton,cudnn,flashrnn}
WHEELS=${FLASHRNN_WHEELS:-bench/wheels}
FLASHRNN_SITE=${FLASHRNN_SITE:-/tmp/lstmkern-flashrnn-site}
# Test files with GPU tests besides tests/test_gpu_cuda.py (which has a stage of its own): the Triton kernels on the
# GPU. The other test files run on the CPU even here (CI runs them); tests/test_cuda_build.py is CI's too.
# A knob too (space-separated):
read -r -a GPU_TEST_FILES <<< "${GPU_TEST_FILES:-tests/test_triton.py tests/test_step_graph.py}"

usage() { sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

STAGES=()
for arg in "$@"; do
    case $arg in
    call1) STAGES+=(build facts cuda-tests gpu-tests) ;;
    call2) STAGES+=(build memcheck flashrnn bench) ;;
    tests) STAGES+=(cuda-tests gpu-tests) ;;
    sanitize) STAGES+=(memcheck racecheck) ;;
    -h | --help) usage; exit 0 ;;
    *) STAGES+=("$arg") ;;
    esac
done
if [ ${#STAGES[@]} -eq 0 ]; then
    usage
    exit 2
fi

SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
STATUS=0
FLASHRNN_STATE=""  # "ok" or "failed" once the flashrnn stage ran; the bench leaves FlashRNN out when it failed

note() { echo "$*" | tee -a "$SUMMARY"; }

# record NAME RC T0 LIMIT LOG: one summary line for a finished stage (and the log's tail when it failed).
record() {
    local name=$1 rc=$2 t0=$3 limit=$4 log=$5
    if [ "$rc" -eq 0 ]; then
        note "$name: ok ($((SECONDS - t0)) s)"
    else
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            note "$name: TIMED OUT after ${limit}s (log $log)"
        else
            note "$name: FAILED rc=$rc after $((SECONDS - t0)) s (log $log)"
        fi
        tail -n 30 "$log"
        STATUS=1
    fi
}

# run_stage NAME LIMIT LOG CMD...: CMD under `timeout LIMIT`, stdout and stderr to LOG; returns CMD's status.
run_stage() {
    local name=$1 limit=$2 log=$3 t0=$SECONDS rc
    shift 3
    echo ">>> $name (limit ${limit}s, log $log)"
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
    rc=$?
    record "$name" "$rc" "$t0" "$limit" "$log"
    return "$rc"
}

# run_pytest NAME LIMIT FILES...: pytest with the slowest tests listed (to size the next run's limits).
run_pytest() {
    local name=$1 limit=$2
    shift 2
    # --maxfail rather than -x, so a first GPU run shows every failing kernel, not just the first.
    # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words on purpose
    run_stage "$name" "$limit" "$OUT/$name.log" "$PYTHON" -m pytest -q -rs --maxfail=25 --durations=15 \
        -p no:cacheprovider "$@" $PYTEST_ARGS
    local counts
    counts=$(grep -E '^[0-9]+ (passed|failed|skipped|errors?|deselected)|^=+ .*[0-9]+ (passed|failed|skipped|errors?)' \
        "$OUT/$name.log" | tail -n 1)
    note "$name: ${counts:-no pytest summary line (killed?)}"
}

# run_bench NAME LIMIT ARGS...: bench_kernels under `timeout LIMIT` with a --time-budget that leaves time to write the
# json; the table (stdout) goes to $OUT/NAME.md and is shown, the progress (stderr) to $OUT/NAME.log.
run_bench() {
    local name=$1 limit=$2 t0=$SECONDS
    shift 2
    echo ">>> $name (limit ${limit}s, log $OUT/$name.log)"
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of words on purpose
    timeout --kill-after=10 "$limit" "$PYTHON" -m bench.bench_kernels --time-budget $((limit - 20)) "$@" $BENCH_ARGS \
        > "$OUT/$name.md" 2> "$OUT/$name.log"
    record "$name" $? "$t0" "$limit" "$OUT/$name.log"
    cat "$OUT/$name.md"
}

# The bench's --impls without FlashRNN where its stage ran and failed (else nothing: the default set).
bench_impls() {
    [ "$FLASHRNN_STATE" = failed ] || return 0
    "$PYTHON" -c 'from bench.bench_kernels import IMPL_NAMES; print(",".join(n for n in IMPL_NAMES if n != "flashrnn"))'
}

find_sanitizer() {
    command -v compute-sanitizer 2>/dev/null && return
    local d exe
    for d in "${CUDA_HOME:-}" /usr/local/cuda /opt/cuda; do
        [ -n "$d" ] || continue
        for exe in "$d/bin/compute-sanitizer" "$d/compute-sanitizer/compute-sanitizer"; do
            [ -x "$exe" ] && { echo "$exe"; return; }
        done
    done
}

# run_sanitizer TOOL LIMIT: compute-sanitizer TOOL on bench/sanitize_small.py, instrumenting only lstmkern's kernels
# (their mangled names hold "lstmkern"; cuBLAS and PyTorch's kernels run uninstrumented). PyTorch's caching allocator is
# off (PYTORCH_NO_CUDA_MEMORY_CACHING=1): out-of-bounds accesses into a pooled block would not be seen. Hosts where the
# sanitizer cannot attach ("Device not supported", seen on gVisor machines) give SKIPPED, not FAILED.
run_sanitizer() {
    local tool=$1 limit=$2 san log t0=$SECONDS rc
    log="$OUT/$tool.log"
    san=$(find_sanitizer)
    if [ -z "$san" ]; then
        note "$tool: SKIPPED (compute-sanitizer not found on PATH or under CUDA_HOME)"
        return
    fi
    echo ">>> $tool (limit ${limit}s, log $log)"
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout --kill-after=10 "$limit" "$san" --tool "$tool" --error-exitcode 1 \
        --kernel-name kns=lstmkern --print-limit 50 "$PYTHON" bench/sanitize_small.py > "$log" 2>&1
    rc=$?
    if [ "$rc" -ne 0 ] && grep -qiE 'device not supported|^=+ .*not supported' "$log"; then
        note "$tool: SKIPPED (compute-sanitizer cannot run on this host: $(grep -iE -m1 'not supported' "$log"))"
        return
    fi
    record "$tool" "$rc" "$t0" "$limit" "$log"
    grep -E '^=+ ERROR SUMMARY' "$log" | tail -n 1 | sed "s/^/$tool: /" | tee -a "$SUMMARY"
}

# Install FlashRNN (pure Python) from the wheel carried in bench/wheels into FLASHRNN_SITE, with einops only where the
# image lacks it, then warm its JIT build. Sets FLASHRNN_STATE and puts FLASHRNN_SITE on PYTHONPATH.
flashrnn_stage() {
    local wheel einops_wheel
    FLASHRNN_STATE=failed
    wheel=$(find "$WHEELS" -maxdepth 1 -name 'flashrnn-*.whl' 2>/dev/null | sort | tail -n 1)
    if [ -z "$wheel" ]; then
        note "flashrnn: COULD NOT RUN (no flashrnn wheel under $WHEELS: run 'make wheels' on a networked machine and" \
            "pass carry=[\"$WHEELS\"]); the benchmark leaves FlashRNN out"
        return
    fi
    local install=("$wheel")
    if ! "$PYTHON" -c 'import einops' > /dev/null 2>&1; then
        einops_wheel=$(find "$WHEELS" -maxdepth 1 -name 'einops-*.whl' | sort | tail -n 1)
        if [ -z "$einops_wheel" ]; then
            note "flashrnn: COULD NOT RUN (einops is missing here and no einops wheel under $WHEELS)"
            return
        fi
        install+=("$einops_wheel")
    fi
    # The install's log is kept only when it fails (the device tool returns few files).
    if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$FLASHRNN_SITE" --upgrade \
        "${install[@]}" > "$OUT/flashrnn-install.log" 2>&1; then
        note "flashrnn: COULD NOT RUN (pip install of ${install[*]} failed, log $OUT/flashrnn-install.log)"
        STATUS=1
        return
    fi
    rm -f "$OUT/flashrnn-install.log"
    export PYTHONPATH="$PYTHONPATH:$FLASHRNN_SITE"
    if run_stage flashrnn "$T_FLASHRNN" "$OUT/flashrnn.log" "$PYTHON" -m bench.flashrnn_warm; then
        FLASHRNN_STATE=ok
        grep -E '^flashrnn_warm: ' "$OUT/flashrnn.log" | tail -n 1 | tee -a "$SUMMARY"
    else
        note "flashrnn: COULD NOT RUN ($(grep -E '^flashrnn_warm: ' "$OUT/flashrnn.log" | tail -n 1)); the" \
            "benchmark leaves FlashRNN out"
    fi
}

# Copy the benchmark outputs newer than the marker file from bench/results/ to $OUT.
collect_results() {
    local marker=$1
    find bench/results -maxdepth 1 -type f -newer "$marker" \( -name '*.json' -o -name '*.png' \) \
        -exec cp {} "$OUT/" \; -exec echo "copied {} to $OUT" \;
}

# The device tool brings back at most 8 files of $OUT: where there are more, every file but the summary, the benchmark
# table and json goes into one logs.tar.gz (tar -xzf it here). GPU_SH_MAX_FILES=0 never packs.
pack_outputs() {
    local max=${GPU_SH_MAX_FILES:-8} files=()
    [ "$max" -gt 0 ] || return 0
    [ "$(find "$OUT" -maxdepth 1 -type f | wc -l)" -gt "$max" ] || return 0
    mapfile -t files < <(find "$OUT" -maxdepth 1 -type f ! -name summary.txt ! -name bench.md ! -name '*.json' \
        ! -name logs.tar.gz -printf '%f\n' | sort)
    tar -czf "$OUT/logs.tar.gz" -C "$OUT" "${files[@]}" && (cd "$OUT" && rm -f -- "${files[@]}") &&
        note "outputs: ${#files[@]} logs packed into $OUT/logs.tar.gz (the device tool returns at most $max files)"
}

{ nvidia-smi || echo "nvidia-smi not available"; } > "$OUT/nvidia-smi.txt" 2>&1
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
GPU_CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1)
note "gpu.sh stages: ${STAGES[*]} | $(date -u +%Y-%m-%dT%H:%M:%SZ) | GPU: ${GPU_NAME:-none found} (cc ${GPU_CC:-?})"

for stage in "${STAGES[@]}"; do
    case $stage in
    build)
        if [[ ${GPU_CC:-} == 9.* ]]; then
            export LSTMKERN_CUDA_ARCHS=${LSTMKERN_CUDA_ARCHS:-90a}
        fi
        # The variables go to the build only (bash passes a function call's assignments to its environment).
        LSTMKERN_NO_WERROR=${LSTMKERN_NO_WERROR:-1} LSTMKERN_REQUIRE_CUDA=1 LSTMKERN_SKIP_EMU=1 \
            MAX_JOBS=${MAX_JOBS:-$(nproc)} run_stage build "$T_BUILD" "$OUT/build.log" \
            "$PYTHON" -m pip install --no-build-isolation --no-deps -v -e .
        note "build: $(grep -cE 'warning( #[0-9A-Z-]+)?:' "$OUT/build.log") compiler warning lines (log $OUT/build.log)"
        ;;
    facts)
        run_stage facts "$T_FACTS" "$OUT/facts.log" "$PYTHON" -m bench.gpu_facts
        sed 's/^/facts: /' "$OUT/facts.log" | tee -a "$SUMMARY" > /dev/null
        ;;
    cuda-tests)
        run_pytest cuda-tests "$T_CUDA_TESTS" tests/test_gpu_cuda.py
        ;;
    gpu-tests)
        run_pytest gpu-tests "$T_GPU_TESTS" "${GPU_TEST_FILES[@]}"
        ;;
    memcheck)
        run_sanitizer memcheck "$T_MEMCHECK"
        ;;
    racecheck)
        run_sanitizer racecheck "$T_RACECHECK"
        ;;
    flashrnn)
        flashrnn_stage
        ;;
    bench)
        marker=$(mktemp)
        impls=$(bench_impls)
        if [ -n "$impls" ]; then
            run_bench bench "$T_BENCH" --impls "$impls"
        else
            run_bench bench "$T_BENCH"
        fi
        collect_results "$marker"
        rm -f "$marker"
        ;;
    biglstm)
        # Issue 13's comparison: f-lm's BIGLSTM shape (LSTMP H 4096 -> P 1024) as G-LSTM G4 / F-LSTM R512 vs
        # nn.LSTM(proj_size=1024).
        marker=$(mktemp)
        run_bench biglstm "$T_BIGLSTM" --configs biglstm --impls lstmkern-cuda,lstmkern-triton,cudnn,cudnn-sameparams
        collect_results "$marker"
        rm -f "$marker"
        ;;
    sweep)
        marker=$(mktemp)
        half=$((T_SWEEP / 2))
        run_bench sweep-H "$half" --sweep H --base glstm-infer --impls "$SWEEP_IMPLS"
        run_bench sweep-G "$half" --sweep G --base glstm-infer --impls "$SWEEP_IMPLS"
        collect_results "$marker"
        rm -f "$marker"
        ;;
    lm)
        # bench.lm.train writes its json, png and log under bench/results/ (copied to $OUT below).
        marker=$(mktemp)
        # shellcheck disable=SC2086  # LM_ARGS is a list of words on purpose (e.g. LM_ARGS="--models lstm,glstm4")
        run_stage lm "$T_LM" "$OUT/lm.log" "$PYTHON" -m bench.lm.train --preset gpu $LM_ARGS
        tail -n 15 "$OUT/lm.log"
        collect_results "$marker"
        rm -f "$marker"
        ;;
    *)
        note "unknown stage '$stage' (expected call1, call2, build, facts, cuda-tests, gpu-tests, tests, memcheck," \
            "racecheck, sanitize, flashrnn, bench, biglstm, sweep, lm)"
        STATUS=1
        ;;
    esac
done

note "gpu.sh done: $([ $STATUS -eq 0 ] && echo 'all stages ok' || echo 'SOME STAGES FAILED') | outputs in $OUT"
pack_outputs
echo "===== summary ($SUMMARY) ====="
cat "$SUMMARY"
exit $STATUS
