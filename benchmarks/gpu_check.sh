#!/usr/bin/env bash
# The GPU check, offline, in well under 5 minutes on one CUDA GPU:
#   1. the device tests (tests/test_training_cuda.py, -k <device>: sparse TopK gradients against dense autograd,
#      training with and without work buffers, a bfloat16 run),
#   2. the TopK step at d_in 768 and 2304 with 32k and 128k latents (saelab vs sparsify if installed vs dense
#      torch; fp32 and bf16) and caching on the GPT-2-small-shaped random model (benchmarks/bench_gpu.py),
# writing a BENCHMARKS.md section to benchmarks/results/gpu_check.md (the coordinator pastes it).
#
#   bash benchmarks/gpu_check.sh                          # on a CUDA machine
#   bash benchmarks/gpu_check.sh --device cpu --small     # reduced sizes on a CPU: shows the check runs
# PYTHON selects the interpreter (default: python); OUT the results file.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-benchmarks/results/gpu_check.md}
DEVICE=cuda
SMALL=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --small) SMALL=(--small); shift ;;
    *) echo "gpu_check.sh: unknown argument $1 (use --device DEV, --small)" >&2; exit 2 ;;
  esac
done
# On a GPU the parts are bounded to keep the whole check under 5 minutes; a CPU run (--small) only shows that it
# works, and on a shared CPU it may take longer.
if [[ $DEVICE == cuda* ]]; then TESTS_LIMIT=100 BENCH_LIMIT=190; else TESTS_LIMIT=1200 BENCH_LIMIT=2400; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
start=$(date +%s)
"$PYTHON" -c "import torch, sys; d='$DEVICE'; sys.exit(0 if not d.startswith('cuda') or torch.cuda.is_available() else 'gpu_check.sh: torch sees no CUDA device; use --device cpu --small')"
echo "== device tests (-k ${DEVICE%%:*})"
tests_log=$(mktemp)
set +e
timeout "$TESTS_LIMIT" "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_training_cuda.py -k "${DEVICE%%:*}" 2>&1 | tee "$tests_log"
tests_status=${PIPESTATUS[0]}
set -e
echo "== benchmarks"
timeout "$BENCH_LIMIT" "$PYTHON" benchmarks/bench_gpu.py --device "$DEVICE" "${SMALL[@]}" --out "$OUT"
{
  echo
  echo "Device tests (\`pytest tests/test_training_cuda.py -k ${DEVICE%%:*}\`, exit status $tests_status): $(tail -n 1 "$tests_log")"
  echo
  echo "Whole check: $(( $(date +%s) - start )) s."
} >> "$OUT"
rm -f "$tests_log"
echo "wrote $OUT"
exit "$tests_status"
