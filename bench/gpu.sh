#!/usr/bin/env bash
# One script for the GPU machine: build, GPU test suite, compute-sanitizer, default benchmarks.
#
# Usage (from anywhere; it runs in the repository root):
#   bash bench/gpu.sh                       # all default stages: build tests sanitize bench
#   bash bench/gpu.sh build bench           # only these stages, in this order
#   bash bench/gpu.sh build sweep           # the optional H and G sweeps (speed-up plots)
#   bash bench/gpu.sh build lm              # the language-model benchmark's GPU preset (H = 1024), a call of its own
#
# Everything it produces goes to $OUT (default ./gpu-out): build.log, tests.log, memcheck.log, racecheck.log,
# bench.md (the printed table), bench.log (progress), the benchmark json (+ plots), nvidia-smi.txt, summary.txt.
# The json is also kept under bench/results/.
#
# Time limits per stage (seconds; the defaults add up to < 600 so the default run fits one 10-minute call):
#   T_BUILD=200 T_TESTS=150 T_MEMCHECK=40 T_RACECHECK=40 T_BENCH=150 T_SWEEP=300 T_LM=380
# The benchmark also gets --time-budget (T_BENCH - 25): it stops starting new cases in time to write its json, and
# runs the most telling implementations first (see IMPL_TIERS in bench_kernels.py). For the full default set give the
# bench a call of its own:  T_BENCH=560 bash bench/gpu.sh bench
# Other knobs: PYTHON (default python), BENCH_ARGS (extra bench_kernels arguments), SWEEP_IMPLS, LM_ARGS (extra
# bench.lm.train arguments; the lm stage writes its json only at the end, so give it fewer --models if it runs long).
#
# A failing stage does not stop the later ones (each is logged); the exit status is 1 if any stage failed.
set -uo pipefail
export PYTHONUNBUFFERED=1

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PYTHON=${PYTHON:-python}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

T_BUILD=${T_BUILD:-200}
T_TESTS=${T_TESTS:-150}
T_MEMCHECK=${T_MEMCHECK:-40}
T_RACECHECK=${T_RACECHECK:-40}
T_BENCH=${T_BENCH:-150}
T_SWEEP=${T_SWEEP:-300}
T_LM=${T_LM:-380}
BENCH_ARGS=${BENCH_ARGS:-}
LM_ARGS=${LM_ARGS:-}
SWEEP_IMPLS=${SWEEP_IMPLS:-lstmkern-cuda,lstmkern-triton,cudnn,flashrnn}

STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(build tests sanitize bench)

SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
STATUS=0

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

# run_stage NAME LIMIT LOG CMD...: CMD under `timeout LIMIT`, stdout and stderr to LOG.
run_stage() {
    local name=$1 limit=$2 log=$3 t0=$SECONDS
    shift 3
    echo ">>> $name (limit ${limit}s, log $log)"
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
    record "$name" $? "$t0" "$limit" "$log"
}

# run_bench NAME LIMIT ARGS...: bench_kernels under `timeout LIMIT` with a --time-budget that leaves time to write the
# json; the table (stdout) goes to $OUT/NAME.md and is shown, the progress (stderr) to $OUT/NAME.log.
run_bench() {
    local name=$1 limit=$2 t0=$SECONDS
    shift 2
    echo ">>> $name (limit ${limit}s, log $OUT/$name.log)"
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of words on purpose
    timeout --kill-after=10 "$limit" "$PYTHON" -m bench.bench_kernels --time-budget $((limit - 25)) "$@" $BENCH_ARGS \
        > "$OUT/$name.md" 2> "$OUT/$name.log"
    record "$name" $? "$t0" "$limit" "$OUT/$name.log"
    cat "$OUT/$name.md"
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

# Copy the benchmark outputs newer than the marker file from bench/results/ to $OUT.
collect_results() {
    local marker=$1
    find bench/results -maxdepth 1 -type f -newer "$marker" \( -name '*.json' -o -name '*.png' \) \
        -exec cp {} "$OUT/" \; -exec echo "copied {} to $OUT" \;
}

{ nvidia-smi || echo "nvidia-smi not available"; } > "$OUT/nvidia-smi.txt" 2>&1
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
note "gpu.sh stages: ${STAGES[*]} | $(date -u +%Y-%m-%dT%H:%M:%SZ) | GPU: ${GPU_NAME:-none found}"

for stage in "${STAGES[@]}"; do
    case $stage in
    build)
        run_stage build "$T_BUILD" "$OUT/build.log" \
            "$PYTHON" -m pip install --no-build-isolation --no-deps -v -e .
        ;;
    tests)
        # The files whose tests use the GPU, most important first (pytest keeps this order); the CPU-only rest is CI's.
        # --maxfail rather than -x, so a first GPU run shows every failing kernel, not just the first.
        run_stage tests "$T_TESTS" "$OUT/tests.log" "$PYTHON" -m pytest -q -rs --maxfail=25 tests/test_gpu_cuda.py \
            tests/test_triton.py tests/test_ops.py tests/test_modules.py tests/test_cuda_build.py
        ;;
    sanitize)
        SAN=$(find_sanitizer)
        if [ ! -f bench/sanitize_small.py ]; then
            note "sanitize: skipped (bench/sanitize_small.py not there)"
        elif [ -z "$SAN" ]; then
            note "sanitize: skipped (compute-sanitizer not found on PATH or under CUDA_HOME)"
        else
            run_stage memcheck "$T_MEMCHECK" "$OUT/memcheck.log" \
                "$SAN" --tool memcheck --error-exitcode 1 "$PYTHON" bench/sanitize_small.py
            run_stage racecheck "$T_RACECHECK" "$OUT/racecheck.log" \
                "$SAN" --tool racecheck --error-exitcode 1 "$PYTHON" bench/sanitize_small.py
        fi
        ;;
    bench)
        marker=$(mktemp)
        run_bench bench "$T_BENCH"
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
        note "unknown stage '$stage' (expected build, tests, sanitize, bench, sweep, lm)"
        STATUS=1
        ;;
    esac
done

note "gpu.sh done: $([ $STATUS -eq 0 ] && echo 'all stages ok' || echo 'SOME STAGES FAILED') | outputs in $OUT"
exit $STATUS
