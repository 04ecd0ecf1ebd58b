#!/usr/bin/env bash
# On the GPU machine: the same e2e rows without and with an MPS server (a private one, its pipe
# and log folders under /tmp, stopped at the end), to see what two processes time-slicing one
# GPU cost the detector-in-the-loop rows. Needs .whl/ carried (tools/device/NOTES.md).
#   env: E2E_DETECTORS MPS_DETECTORS E2E_PERSONS SECONDS_PER_ROW E2E_TIMEOUT
set -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/device}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | tail -3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 POSEPIPE_VIEWER=0 XDG_RUNTIME_DIR=/tmp
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False YOLO_CONFIG_DIR=/tmp/yolo-config GLOG_minloglevel=2
e2e() {  # $1: name
  timeout ${E2E_TIMEOUT:-200} python3 tools/bench_e2e.py --out /tmp/e2e-$1 --data-dir /tmp/posepipe-bench-data \
      --detectors ${E2E_DETECTORS:-fixed,yolo} --backends cudagraph --persons ${E2E_PERSONS:-1,5} \
      --seconds ${SECONDS_PER_ROW:-6} 2>&1 | tee "$OUT/e2e_$1.log"
  python3 -m pipeline.cli stop >/dev/null 2>&1   # a row cut by the timeout leaves its pipeline up
  cp /tmp/e2e-$1/e2e.md "$OUT/e2e_$1.md"; cp /tmp/e2e-$1/e2e.json "$OUT/e2e_$1.json"
}
echo "=== $(date -u +%T) without MPS"
e2e plain
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
if nvidia-cuda-mps-control -d; then
  echo "=== $(date -u +%T) with MPS"
  E2E_DETECTORS=${MPS_DETECTORS:-$E2E_DETECTORS} e2e mps
  echo quit | nvidia-cuda-mps-control
  cat $CUDA_MPS_LOG_DIRECTORY/*.log > "$OUT/mps_logs.txt" 2>/dev/null
else
  echo "MPS daemon did not start"
fi
echo "=== $(date -u +%T) done"
