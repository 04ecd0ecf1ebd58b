#!/usr/bin/env bash
# On the GPU machine: YOLO's GPU tests, then the 1-person pipeline rows (fixed boxes, YOLO cudagraph and
# compile, alternating) with per-frame stamps, then YOLO rows with detection.lead (how early, in
# multiples of detection's p50, it starts a frame before inference wants it; default 1.5 x + 5 ms) set
# to each of LEADS. Needs .whl/ carried; everything lands in $OUT as it goes.
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
row() {  # name detectors timeout [bench_e2e args]
  local name=$1 dets=$2 limit=$3; shift 3
  rm -rf /tmp/e2e
  timeout $limit python3 tools/bench_e2e.py --out /tmp/e2e --stamps --data-dir /tmp/posepipe-bench-data \
      --detectors $dets --backends cudagraph --persons 1 --seconds ${SECONDS_PER_ROW:-6} "$@" > $OUT/e2e_$name.log 2>&1
  cp /tmp/e2e/e2e.md $OUT/e2e_$name.md; cp /tmp/e2e/e2e.json $OUT/e2e_$name.json
  (cd /tmp/e2e && tar czf $OUT/stamps_$name.tgz stamps_*)
}
row base ${DETECTORS:-fixed,yolo-cudagraph,yolo-compile,yolo-cudagraph,yolo-compile} ${BASE_TIMEOUT:-280}
for f in ${LEADS:-0.5}; do
  row lead$f ${LEAD_DETECTORS:-yolo-cudagraph} ${LEAD_TIMEOUT:-90} --lead $f
done
grep -h "^|" $OUT/e2e_*.md
