#!/usr/bin/env bash
# GPU check: build the CUDA backend for the local GPU, run the CUDA tests against the CPU
# backend, run one test under compute-sanitizer, then the GPU benchmarks side by side with
# PyTorch. Logs, a JSON summary and markdown tables (report.md) go to REPORT_DIR; a short table
# is printed last.
#
#   scripts/gpu-check.sh REPORT_DIR            (needs nvcc, cmake, a CUDA device; python3 + torch
#                                               for the baselines; optional .node/node.xz, the
#                                               addon (.node/elmo.node.xz or build/Release) and
#                                               dist/ for a Node smoke run: scripts/gpu-pack-node.sh)
# Order: device, build, CUDA tests, benchmarks, Node smoke, compute-sanitizer, summary (the
# table, then each opt-in kernel: its tests and its speed against the default kernel).
# Environment: GPU_CHECK_SANITIZE="cuda_test_x ..." (default: every CUDA test),
#   GPU_CHECK_SANITIZE_TIMEOUT (s per test, default 180), GPU_CHECK_BERT_ARGS (bench_bert
#   flags), GPU_CHECK_CPU_BERT_ARGS (host CPU fp32 vs bf16), GPU_CHECK_ARCH (default 90),
#   GPU_CHECK_SKIP_BENCH=1, GPU_CHECK_JOBS, GPU_CHECK_BUILD=DIR (build directory, default
#   build-gpu), GPU_CHECK_PREBUILT=1 (DIR already holds the executables, e.g. built elsewhere
#   with -DCMAKE_CUDA_ARCHITECTURES=90: skip the build), GPU_CHECK_BUDGET (s, default 450): the
#   compute-sanitizer runs get only what is left of it, so that the summary is always printed
#   within the budget plus a few seconds.
set -uo pipefail
REPORT_DIR=${1:?usage: scripts/gpu-check.sh REPORT_DIR}
mkdir -p "$REPORT_DIR"
REPORT_DIR=$(cd "$REPORT_DIR" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ARCH=${GPU_CHECK_ARCH:-90}
JOBS=${GPU_CHECK_JOBS:-$(nproc)}
BUILD=${GPU_CHECK_BUILD:-build-gpu}
BENCH="$REPORT_DIR/bench.jsonl"
: >"$BENCH"
declare -A STEP
# The forced wgmma kernels by name (gemm_kernel_name in cuda/src/gemm.cu), each tested and timed
# on its own.
WGMMA_KERNELS=$(grep -o 'return "wgmma[0-9a-z]*"' cuda/src/gemm.cu | cut -d'"' -f2 | tr '\n' ' ')
t0=$(date +%s)
step() { echo "== $1 ($(($(date +%s) - t0)) s)"; }
left() { echo $((${GPU_CHECK_BUDGET:-450} - ($(date +%s) - t0))); }  # seconds of the budget left

step "device"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv; nvcc --version | tail -2; } \
  >"$REPORT_DIR/device.txt" 2>&1
cat "$REPORT_DIR/device.txt"

step "build (sm_$ARCH)"
GEN=""
if [ -n "${GPU_CHECK_PREBUILT:-}" ]; then
  echo "prebuilt executables in $BUILD" >"$REPORT_DIR/build.log"
  chmod +x "$BUILD"/cuda_* "$BUILD"/test_* "$BUILD"/bench_* 2>/dev/null
  STEP[build]=ok
else
  if command -v ninja >/dev/null; then GEN="-G Ninja"; fi
  if cmake -S . -B "$BUILD" $GEN -DELMO_ADDON=OFF -DELMO_CUDA=ON -DELMO_WERROR=ON \
       -DCMAKE_CUDA_ARCHITECTURES="$ARCH" >"$REPORT_DIR/build.log" 2>&1 &&
     cmake --build "$BUILD" -j "$JOBS" >>"$REPORT_DIR/build.log" 2>&1; then
    STEP[build]=ok
  else
    STEP[build]=failed
    tail -40 "$REPORT_DIR/build.log"
  fi
fi
grep -E "spill|Used [0-9]+ registers" "$REPORT_DIR/build.log" | grep -v " 0 bytes spill" | sort | uniq -c | sort -rn | head -5
# The Hopper GEMM must assemble to HGMMA (wgmma) fed by UTMALDG (TMA), not to HMMA.
SM90A_OBJ=$(find "$BUILD" -name 'gemm_sm90a.cu.o' 2>/dev/null | head -1)
if [ -n "$SM90A_OBJ" ] && command -v cuobjdump >/dev/null; then
  cuobjdump -sass "$SM90A_OBJ" >"$REPORT_DIR/gemm_sm90a.sass" 2>&1
  echo "gemm_sm90a SASS: $(grep -c HGMMA "$REPORT_DIR/gemm_sm90a.sass") HGMMA, $(grep -c UTMALDG "$REPORT_DIR/gemm_sm90a.sass") UTMALDG, $(grep -c -E '\bHMMA' "$REPORT_DIR/gemm_sm90a.sass") HMMA, $(grep -c -E '\b(LDL|STL)' "$REPORT_DIR/gemm_sm90a.sass") LDL/STL"
fi

step "tests"
if [ "${STEP[build]}" = ok ]; then
  if [ -f "$BUILD/CTestTestfile.cmake" ] && [ -z "${GPU_CHECK_PREBUILT:-}" ]; then
    # The CPU tests; the CUDA ones run below, each once.
    (cd "$BUILD" && ctest --output-on-failure -j 4 --timeout 300 -E '^cuda_') >"$REPORT_DIR/tests.log" 2>&1 && STEP[tests]=ok || STEP[tests]=failed
  else
    STEP[tests]=ok
    : >"$REPORT_DIR/tests.log"
  fi
  # test_gemm_bf16 runs here too, whatever ctest did: GPU hosts usually have AVX512_BF16, and its
  # output says which bf16 GEMM kernels ran (or SKIP, naming the CPU) where ctest would hide it.
  # cuda_test_gemm runs first without the wgmma kernels, then once per wgmma kernel in a process
  # of its own: a kernel that traps or faults takes the CUDA context down with it, and must not
  # hide how the others did ("--- cuda_test_gemm wgmma=NAME" sections, read by the summary).
  run_test() {  # label, then the command
    local label=$1; shift
    echo "--- $label" >>"$REPORT_DIR/tests.log"
    ELMO_FIXTURES="$ROOT/test/fixtures" timeout 120 "$@" >>"$REPORT_DIR/tests.log" 2>&1
    local rc=$?
    echo "exit $rc" >>"$REPORT_DIR/tests.log"
    [ "$rc" = 0 ] || [ "$rc" = 77 ] || STEP[tests]=failed
  }
  for t in "$BUILD"/cuda_test_* "$BUILD"/test_gemm_bf16; do
    [ -x "$t" ] || continue
    if [ "$(basename "$t")" = cuda_test_gemm ]; then
      ELMO_TEST_WGMMA=none run_test cuda_test_gemm "$t"
      for k in $WGMMA_KERNELS; do
        ELMO_TEST_WGMMA=$k ELMO_TEST_CASES=gemm_wgmma_occupancy,gemm_wgmma_operand_layout,gemm_nt_bf16_wgmma,gemm_nt_f16_wgmma \
          run_test "cuda_test_gemm wgmma=$k" "$t"
      done
    else
      run_test "$(basename "$t")" "$t"
    fi
  done
  # The whole model again with the opt-in kernels: the Hopper wgmma GEMM on every NT product (a
  # no-op on other GPUs) and attention with 32 query rows per warp (the fixtures' head size is
  # 32). cuda_test_gemm and cuda_test_ops above test each against references on its own.
  if [ -x "$BUILD/cuda_test_bert" ]; then
    ELMO_CUDA_WGMMA=force ELMO_CUDA_ATTN_ROWS=32 \
      run_test "cuda_test_bert (ELMO_CUDA_WGMMA=force ELMO_CUDA_ATTN_ROWS=32)" "$BUILD/cuda_test_bert"
  fi
  grep -E "^---|tests passed|tests failed|^FAIL|SKIP|kernel path|exit [1-9]" "$REPORT_DIR/tests.log" | head -40
fi

step "benchmarks"
if [ "${STEP[build]}" = ok ] && [ -z "${GPU_CHECK_SKIP_BENCH:-}" ]; then
  # cuda_bench_gemm: mma.sync first, then each wgmma kernel in a process of its own
  # (ELMO_BENCH_WGMMA), so that one that faults costs only its own rows.
  for b in "$BUILD"/cuda_bench_*; do
    [ -x "$b" ] || continue
    if [ "$(basename "$b")" = cuda_bench_gemm ]; then
      for k in none $WGMMA_KERNELS; do
        ELMO_BENCH_WGMMA=$k timeout 120 "$b" >>"$BENCH" 2>>"$REPORT_DIR/bench.err" ||
          echo "{\"bench\":\"cuda_bench_gemm:$k\",\"error\":$?}" >>"$BENCH"
      done
    else
      timeout 120 "$b" >>"$BENCH" 2>>"$REPORT_DIR/bench.err" || { rc=$?; echo "{\"bench\":\"$(basename "$b")\",\"error\":$rc}" >>"$BENCH"; }
    fi
  done
  [ -x "$BUILD/bench_bert" ] && { timeout 180 "$BUILD/bench_bert" --device cuda \
    ${GPU_CHECK_BERT_ARGS:---precision bf16 --models base,mini,small --batches 1,32,256 --seqs 128 --chat-batch 256 --min-ms 200} >>"$BENCH" 2>>"$REPORT_DIR/bench.err" || echo '{"bench":"bert","error":1}' >>"$BENCH"; }
  # BERT-base again with the wgmma GEMM where it fills the GPU (ELMO_CUDA_WGMMA=1: a block per
  # tile; batch 1 stays on mma.sync, too small to fill the GPU), and with the wgmma kernel that
  # was fastest above (the best geometric mean over the NT rows at T >= 4096, among the kernels
  # whose tests passed) if that is another one; tagged "variant".
  BEST=$(python3 scripts/gpu_report.py best "$REPORT_DIR")
  # Last, the fastest of those with bf16 hidden states too (ELMO_CUDA_BF16_HIDDEN=1, opt-in).
  for variant in 1 $BEST ${BEST:-1}+hidden; do
    [ -x "$BUILD/bench_bert" ] || break
    ELMO_CUDA_WGMMA=${variant%+hidden} ELMO_CUDA_BF16_HIDDEN=$([ "${variant%+hidden}" != "$variant" ] && echo 1 || echo 0) \
      timeout 120 "$BUILD/bench_bert" --device cuda \
      --precision bf16 --models base --batches 1,32,256 --seqs 128 --chat-batch 256 --min-ms 200 2>>"$REPORT_DIR/bench.err" |
      sed "s/^{/{\"variant\":\"wgmma:$variant\",/" >>"$BENCH" || echo "{\"bench\":\"bert-wgmma:$variant\",\"error\":1}" >>"$BENCH"
  done
  # The host CPU, fp32 beside bf16 (AVX512_BF16 on most GPU hosts: the vdpbf16ps GEMM).
  if [ -x "$BUILD/bench_bert" ]; then
    for prec in fp32 bf16; do
      timeout 120 "$BUILD/bench_bert" --device cpu --precision "$prec" \
        ${GPU_CHECK_CPU_BERT_ARGS:---models base --batches 1,32 --seqs 128 --no-chat --min-ms 300} >>"$BENCH" \
        2>>"$REPORT_DIR/bench.err" || echo "{\"bench\":\"bert-cpu-$prec\",\"error\":1}" >>"$BENCH"
    done
  fi
  for py in scripts/bench_torch_gemm_gpu.py scripts/bench_torch_attention_gpu.py scripts/bench_torch_bert_gpu.py; do
    [ -f "$py" ] && { PYTHONUNBUFFERED=1 timeout 180 python3 "$py" >>"$BENCH" 2>>"$REPORT_DIR/bench.err" || echo "{\"bench\":\"$py\",\"error\":$?}" >>"$BENCH"; }
  done
  STEP[bench]=ok
fi

step "node"
# The addon: one built with the CUDA backend next to the executables, else .node/elmo.node.xz
# (scripts/gpu-pack-node.sh), else build/Release's as it is.
if [ -f "$BUILD/elmo.node" ]; then mkdir -p build/Release && cp "$BUILD/elmo.node" build/Release/elmo.node
elif [ -f .node/elmo.node.xz ]; then mkdir -p build/Release && xz -dc .node/elmo.node.xz >build/Release/elmo.node; fi
if [ -f .node/node.xz ] && [ -f build/Release/elmo.node ] && [ -d dist ]; then
  mkdir -p /tmp/elmo-node && xz -dc .node/node.xz >/tmp/elmo-node/node && chmod +x /tmp/elmo-node/node
  if [ -f scripts/gpu-node-smoke.js ]; then
    timeout 300 /tmp/elmo-node/node scripts/gpu-node-smoke.js >"$REPORT_DIR/node.log" 2>&1 && STEP[node]=ok || STEP[node]=failed
  else
    /tmp/elmo-node/node -e "console.log(JSON.stringify(require('./dist').devices(), null, 1))" >"$REPORT_DIR/node.log" 2>&1 \
      && STEP[node]=ok || STEP[node]=failed
  fi
  tail -20 "$REPORT_DIR/node.log"
fi

step "compute-sanitizer"
if [ "${STEP[build]}" = ok ] && command -v compute-sanitizer >/dev/null; then
  STEP[sanitizer]=ok
  : >"$REPORT_DIR/sanitizer.log"
  for t in ${GPU_CHECK_SANITIZE:-$(cd "$BUILD" && ls cuda_test_*)}; do
    echo "--- $t" >>"$REPORT_DIR/sanitizer.log"
    limit=$(left)
    [ "$limit" -gt "${GPU_CHECK_SANITIZE_TIMEOUT:-180}" ] && limit=${GPU_CHECK_SANITIZE_TIMEOUT:-180}
    if [ "$limit" -lt 10 ]; then
      echo "skipped: the budget (GPU_CHECK_BUDGET) is spent" >>"$REPORT_DIR/sanitizer.log"
      STEP[sanitizer]="partial(budget)"
      continue
    fi
    ELMO_TEST_QUICK=1 ELMO_FIXTURES="$ROOT/test/fixtures" timeout "$limit" \
      compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 "$BUILD/$t" \
      >>"$REPORT_DIR/sanitizer.log" 2>&1 || STEP[sanitizer]="failed($?)"
  done
  grep -E "ERROR SUMMARY|^---" "$REPORT_DIR/sanitizer.log"
fi

step "summary"
python3 scripts/gpu_report.py summary "$REPORT_DIR" "${STEP[build]:-}" "${STEP[tests]:-}" "${STEP[sanitizer]:-}" \
  "${STEP[node]:-}"
# The same rows as markdown tables in the layout of docs/benchmarks-gpu.md.
python3 scripts/gpu_report.py markdown "$REPORT_DIR" >"$REPORT_DIR/report.md" 2>>"$REPORT_DIR/bench.err" &&
  echo "tables for docs/benchmarks-gpu.md: $REPORT_DIR/report.md"
echo "total $(($(date +%s) - t0)) s"
