#!/usr/bin/env bash
# On the GPU machine (Python 3.12, torch + CUDA, no network): several streams in one pipeline
# (issue 20), tools/bench_streams.py for N = 1, 4, 8 generated 1080p30 streams, POCO-CLIFF on the
# cudagraph backend, fixed boxes and the real default detector. Needs .whl/ carried along
# (tools/device/NOTES.md). The log goes straight to $OUT (a run cut short still returns it).
#   env: STREAMS (1,4,8) DETECTORS (fixed,auto) SIZE (1920x1080) FPS (30) SECONDS_PER_ROW (15)
#        BACKEND (cudagraph) DEVICE (cuda) STREAMS_TIMEOUT (540)
set -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/device}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | tail -3 | tee "$OUT/pip.log"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 POSEPIPE_VIEWER=0 XDG_RUNTIME_DIR=/tmp
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False YOLO_CONFIG_DIR=/tmp/yolo-config GLOG_minloglevel=2
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import os, torch; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'cores', os.cpu_count())"
} 2>&1 | tee "$OUT/probe.log"
timeout ${STREAMS_TIMEOUT:-540} python3 tools/bench_streams.py --out /tmp/streams --streams ${STREAMS:-1,4,8} \
    --detectors ${DETECTORS:-fixed,auto} --size ${SIZE:-1920x1080} --fps ${FPS:-30} \
    --backend ${BACKEND:-cudagraph} --device ${DEVICE:-cuda} --model poco-cliff --seconds ${SECONDS_PER_ROW:-15} \
    --ready-timeout 240 2>&1 | tee "$OUT/streams.log"
cp /tmp/streams/streams.md /tmp/streams/streams.json "$OUT/" 2>/dev/null
exit 0
