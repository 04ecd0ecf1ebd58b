#!/usr/bin/env bash
# On the GPU machine (Python 3.12, torch + CUDA, no network): end-to-end pipeline benchmark,
# a profile of one configuration, optional GPU tests and live swap timings.
# Needs .whl/ (pyzmq for Python 3.12) carried along. Logs go straight to $OUT (a run cut short
# still returns them); everything else is tarred at the end (the device tool returns at most
# 8 files).
#   env: BACKENDS PERSONS SECONDS_PER_ROW PROFILE=0|1 PROFILE_BACKEND E2E_TIMEOUT
#        GPU_TESTS=1 GPU_TESTS_PATHS GPU_TESTS_TIMEOUT   BREAKDOWN=1
#        SWAP=0|1 SWAP_SETTINGS SWAP_TIMEOUT
set -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/device}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 POSEPIPE_VIEWER=0 XDG_RUNTIME_DIR=/tmp
export YOLO_OFFLINE=1 YOLO_CONFIG_DIR=/tmp/yolo-config
R=/tmp/results; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $R/gpu.txt
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a $R/gpu.txt
if [ "${BREAKDOWN:-0}" = 1 ]; then
  timeout ${BREAKDOWN_TIMEOUT:-150} python3 tools/device/infer_breakdown.py 2>&1 | tee $OUT/breakdown.txt
fi
if [ "${GPU_TESTS:-0}" = 1 ]; then
  timeout ${GPU_TESTS_TIMEOUT:-180} python3 -m pytest -q -s -m gpu -p no:cacheprovider -o addopts="" -rs \
      ${GPU_TESTS_PATHS:-tests/backends tests/models} 2>&1 | grep -v -E "warnings.warn|Warning:" | tee $OUT/gpu_tests.txt
fi
PROFILE_ARGS="--profile-dir $R/profile ${PROFILE_BACKEND:+--profile-backend $PROFILE_BACKEND}"
[ "${PROFILE:-1}" = 0 ] && PROFILE_ARGS=""
timeout ${E2E_TIMEOUT:-420} python3 tools/bench_e2e.py --out $R/e2e --backends ${BACKENDS:-compile,torch} \
    --persons ${PERSONS:-1,5} --seconds ${SECONDS_PER_ROW:-15} $PROFILE_ARGS 2>&1 | tee $OUT/e2e.log
cp $R/e2e/e2e.md $R/profile/summary.txt $OUT/ 2>/dev/null
if [ "${SWAP:-1}" != 0 ]; then
  cp $R/e2e/cfg_torch_1p.yaml $R/swap_cfg.yaml 2>/dev/null || true
  [ -f $R/swap_cfg.yaml ] && timeout ${SWAP_TIMEOUT:-240} python3 tools/measure_swap.py --config $R/swap_cfg.yaml \
      --swaps 2 ${SWAP_SETTINGS:-backend=compile precision=fp16} 2>&1 | tee $OUT/swap.log
fi
tar czf $OUT/results.tgz -C $R . 2>/dev/null
exit 0
