#!/usr/bin/env bash
# On the GPU machine: YOLO's GPU tests, then the 1-person pipeline rows (fixed boxes, YOLO cudagraph and
# compile, alternating) with per-frame stamps, then the same YOLO row with detection's demand lead
# (runner._lead_ns: how early an on-demand worker starts before its consumer wants the next record)
# cut from 1.5 x its p50 + 5 ms to LEADS' factors x its p50 (an experiment: the file is edited in the
# device's copy only). Needs .whl/ carried; everything lands in $OUT as it goes.
set -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/device}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 POSEPIPE_VIEWER=0 XDG_RUNTIME_DIR=/tmp
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False YOLO_CONFIG_DIR=/tmp/yc GLOG_minloglevel=2
nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/gpu.txt
if [ "${GPU_TESTS:-1}" = 1 ]; then
  timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" -rs --tb=short -W ignore \
      tests/detectors/test_yolo.py > $OUT/gpu_tests.log 2>&1
fi
row() {  # name detectors timeout
  rm -rf /tmp/e2e
  timeout $3 python3 tools/bench_e2e.py --out /tmp/e2e --stamps --data-dir /tmp/posepipe-bench-data \
      --detectors $2 --backends cudagraph --persons 1 --seconds ${SECONDS_PER_ROW:-6} > $OUT/e2e_$1.log 2>&1
  cp /tmp/e2e/e2e.md $OUT/e2e_$1.md; cp /tmp/e2e/e2e.json $OUT/e2e_$1.json
  (cd /tmp/e2e && tar czf $OUT/stamps_$1.tgz stamps_*)
}
row base ${DETECTORS:-fixed,yolo-cudagraph,yolo-compile,yolo-cudagraph,yolo-compile} ${BASE_TIMEOUT:-280}
cp pipeline/runtime/runner.py /tmp/runner.py.orig
for f in ${LEADS:-0.5}; do
  sed "s/(1.5 \* self.expected_ms + 5.0)/($f * self.expected_ms)/" /tmp/runner.py.orig > pipeline/runtime/runner.py
  grep -q "($f \* self.expected_ms)" pipeline/runtime/runner.py || { echo "lead edit failed" > $OUT/e2e_lead$f.log; continue; }
  row lead$f ${LEAD_DETECTORS:-yolo-cudagraph} ${LEAD_TIMEOUT:-120}
done
cp /tmp/runner.py.orig pipeline/runtime/runner.py
grep -h "^|" $OUT/e2e_*.md
