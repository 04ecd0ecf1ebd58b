#!/usr/bin/env bash
# On the GPU machine (Python 3.12, torch + CUDA, no network): end-to-end pipeline benchmark,
# a profile of the compile configuration, and live swap torch -> compile timings.
# Needs .whl/ (pyzmq for Python 3.12) carried along. Results under $OUT (tarred: the device
# tool returns at most 8 files).
set -o pipefail
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 POSEPIPE_VIEWER=0 XDG_RUNTIME_DIR=/tmp
R=/tmp/results; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $R/gpu.txt
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a $R/gpu.txt
if [ "${BREAKDOWN:-0}" = 1 ]; then
  timeout ${BREAKDOWN_TIMEOUT:-150} python3 tools/device/infer_breakdown.py 2>&1 | tee $R/breakdown.txt
fi
if [ "${GPU_TESTS:-0}" = 1 ]; then
  timeout ${GPU_TESTS_TIMEOUT:-180} python3 -m pytest -q -m gpu -p no:cacheprovider tests/backends tests/models 2>&1 | tail -15 | tee $R/gpu_tests.txt
fi
timeout ${E2E_TIMEOUT:-420} python3 tools/bench_e2e.py --out $R/e2e --backends ${BACKENDS:-compile,torch} \
    --persons ${PERSONS:-1,5} --seconds ${SECONDS_PER_ROW:-15} --profile-dir $R/profile 2>&1 | tee $R/e2e.log
if [ "${SWAP:-1}" != 0 ]; then
  python3 tools/bench_e2e.py --help >/dev/null  # imports ok
  cp $R/e2e/cfg_torch_1p.yaml $R/swap_cfg.yaml 2>/dev/null || true
  [ -f $R/swap_cfg.yaml ] && timeout ${SWAP_TIMEOUT:-240} python3 tools/measure_swap.py --config $R/swap_cfg.yaml \
      --swaps 2 backend=compile precision=fp16 2>&1 | tee $R/swap.log
fi
tar czf $OUT/results.tgz -C $R . 2>/dev/null
cp $R/e2e/e2e.md $R/profile/summary.txt $R/swap.log $R/breakdown.txt $R/gpu_tests.txt $OUT/ 2>/dev/null
exit 0
