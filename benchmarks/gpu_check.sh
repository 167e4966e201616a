#!/usr/bin/env bash
# Real-GPU check of tinycnn's CUDA backend, run from anywhere on a machine with an NVIDIA GPU:
#
#   1. the environment: GPU, driver, Python, numba, numba-cuda, torch versions     -> $OUT/env.txt
#   2. a smoke test: a few training steps of a small net, cuda against the CPU     -> $OUT/smoke.txt
#      (if it fails with the installed numba-cuda and a numba-cuda wheel sits in .whl/, retry with that)
#   3. the benchmark: benchmarks/gpu_bench.py all (tinycnn on cuda, with numba-cuda's allocator and with
#      tinycnn's caching allocator, each in its own process, vs PyTorch vs tinycnn on 2 CPU threads)
#                                                                                   -> $OUT/bench.txt, bench.json
#   4. the CUDA tests for real, no simulator: TINYCNN_REAL_CUDA=1 pytest tests/test_cuda_*.py (numba-cuda's
#      allocator)                                                                   -> $OUT/tests.txt
#   5. the same with the caching allocator (TINYCNN_CUDA_POOL=1, chosen at start-up: a process of its own):
#      its own test on the GPU, and the training tests                              -> $OUT/tests_pool.txt
#
# OUT defaults to /tmp/tinycnn_gpu_check. The time limits of the steps (seconds) can be set with SMOKE_TIMEOUT,
# BENCH_TIMEOUT, CONFIG_TIMEOUT (per benchmark configuration), TEST_TIMEOUT and POOL_TEST_TIMEOUT; they add
# up to under 8 min.
# BENCH_ONLY="torch-fp32 tinycnn-cuda ..." runs only those benchmark configurations.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/tinycnn_gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
unset NUMBA_ENABLE_CUDASIM
T0=$(date +%s)
elapsed() { echo "[$(( $(date +%s) - T0 )) s]"; }

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  $PY -c "import sys; print('python', sys.version.split()[0])"
  $PY - <<'EOF'
import importlib.metadata as m
for p in ("numpy", "numba", "numba-cuda", "cuda-bindings", "cuda-core", "torch", "pytest", "hypothesis"):
    try:
        print(p, m.version(p))
    except m.PackageNotFoundError:
        print(p, "-")
EOF
  nproc
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== smoke $(elapsed)"
timeout "${SMOKE_TIMEOUT:-60}" $PY benchmarks/gpu_bench.py smoke > "$OUT/smoke.txt" 2>&1
rc=$?
# rc 1: the losses differ; 124: timed out. Anything else (an import or compile error): try the carried wheel.
if [ $rc -ne 0 ] && [ $rc -ne 1 ] && [ $rc -ne 124 ] && ls .whl/numba_cuda-*.whl > /dev/null 2>&1; then
  echo "smoke failed (rc=$rc) with the installed numba-cuda; retrying with the carried wheel" | tee -a "$OUT/smoke.txt"
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/numba_cuda-*.whl >> "$OUT/smoke.txt" 2>&1 \
    && export PYTHONPATH=/tmp/site:$PYTHONPATH
  timeout "${SMOKE_TIMEOUT:-60}" $PY benchmarks/gpu_bench.py smoke >> "$OUT/smoke.txt" 2>&1
  rc=$?
fi
echo "smoke rc=$rc"; tail -n 15 "$OUT/smoke.txt"

echo "== bench $(elapsed)"
timeout "${BENCH_TIMEOUT:-200}" $PY benchmarks/gpu_bench.py all --out "$OUT" --timeout "${CONFIG_TIMEOUT:-80}" \
  ${BENCH_ONLY:+--only $BENCH_ONLY} > "$OUT/bench.txt" 2>&1
echo "bench rc=$?"; grep -v '^tinycnn\|^torch' "$OUT/bench.txt" | tail -n 45
echo "== tests $(elapsed)"
TINYCNN_REAL_CUDA=1 timeout "${TEST_TIMEOUT:-140}" $PY -m pytest -v -p no:cacheprovider -rfE --durations=8 \
  tests/test_cuda_basic.py tests/test_cuda_conv.py tests/test_cuda_nn.py tests/test_cuda_train.py > "$OUT/tests.txt" 2>&1
echo "tests rc=$?"; tail -n 30 "$OUT/tests.txt"
echo "== tests with the caching allocator $(elapsed)"
TINYCNN_REAL_CUDA=1 TINYCNN_CUDA_POOL=1 timeout "${POOL_TEST_TIMEOUT:-60}" $PY -m pytest -v -p no:cacheprovider -rfEs \
  tests/test_cuda_pool.py tests/test_cuda_train.py > "$OUT/tests_pool.txt" 2>&1
echo "pool tests rc=$?"; tail -n 20 "$OUT/tests_pool.txt"

echo "== done $(elapsed)"
