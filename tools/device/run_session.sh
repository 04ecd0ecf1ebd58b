#!/usr/bin/env bash
# On the GPU machine (Python 3.12, torch + CUDA, no network): the closing measurements of issues
# 16-22 in as few device calls as possible. Each step writes its log straight to $OUT (a call cut
# short still returns what it has). Needs .whl/ carried along (tools/device/NOTES.md).
#   STEPS="probe tests progress detect" bash tools/device/run_session.sh        (~8 min)
#   STEPS="e2e swap" bash tools/device/run_session.sh                           (~8 min)
#   STEPS="probe tests default" bash tools/device/run_session.sh                (~5 min)
#   STEPS="streams" bash tools/device/run_session.sh                            (~9 min)
#   STEPS="quality breakdown" bash tools/device/run_session.sh                  (~4 min)
#   env: TESTS_TIMEOUT TESTS_PATHS PROGRESS_SECONDS E2E_DETECTORS E2E_PERSONS SECONDS_PER_ROW
set -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/device}; mkdir -p "$OUT"
STEPS=${STEPS:-probe tests progress detect}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | tail -3 | tee "$OUT/pip.log"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 POSEPIPE_VIEWER=0 XDG_RUNTIME_DIR=/tmp
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False YOLO_CONFIG_DIR=/tmp/yolo-config GLOG_minloglevel=2
has() { case " $STEPS " in *" $1 "*) return 0;; *) return 1;; esac; }
step() { echo "=== $(date -u +%T) $*" | tee -a "$OUT/steps.log"; }

if has probe; then
  step probe
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import os, torch; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'cores', os.cpu_count())"
    for m in ultralytics ai_edge_litert zmq smplx msgpack click psutil yaml scipy prometheus_client pythonosc hypothesis pytest_timeout tensorrt torch_tensorrt pynvml; do
      python3 -c "import $m" 2>/dev/null && echo "$m OK" || echo "$m MISSING"; done
    command -v nvidia-cuda-mps-control >/dev/null && echo "nvidia-cuda-mps-control present" || echo "no MPS control"
    nvidia-smi --query-gpu=compute_mode --format=csv,noheader
  } 2>&1 | tee "$OUT/probe.log"
fi
if has tests; then
  step tests
  timeout ${TESTS_TIMEOUT:-220} python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" -rs ${TESTS_PATHS:-tests} \
      2>&1 | grep -v -E "warnings.warn|Warning:" | tee "$OUT/gpu_tests.log"
fi
if has progress; then
  step progress
  timeout ${PROGRESS_TIMEOUT:-200} python3 tools/bench_progress.py --device cuda --backend cudagraph \
      --scenarios default,fast-source --seconds ${PROGRESS_SECONDS:-12} --settle 3 --out /tmp/progress \
      2>&1 | tee "$OUT/progress.log"
  cp /tmp/progress/progress.json "$OUT/" 2>/dev/null
fi
if has detect; then
  step detect
  timeout ${DETECT_TIMEOUT:-90} python3 tools/bench_detect.py --devices cuda --threads 1 --frames 40 \
      2>&1 | tee "$OUT/bench_detect.log"
fi
if has quality; then
  # people found by the GPU path itself (torch on the device; its segmentation joins one frame late)
  step quality
  timeout ${QUALITY_TIMEOUT:-150} python3 tools/detect_quality.py --no-mediapipe --torch --device cuda --only torch \
      2>&1 | grep -v -E "^W0000|^INFO" | tee "$OUT/detect_quality_cuda.log"
fi
if has breakdown; then
  step breakdown
  timeout ${BREAKDOWN_TIMEOUT:-150} python3 tools/device/blazepose_breakdown.py --device cuda --persons ${BREAKDOWN_PERSONS:-1,5} \
      2>&1 | tee "$OUT/blazepose_breakdown.log"
fi
if has e2e; then
  step e2e
  timeout ${E2E_TIMEOUT:-330} python3 tools/bench_e2e.py --out /tmp/e2e --data-dir /tmp/posepipe-bench-data \
      --detectors ${E2E_DETECTORS:-fixed,blazepose,yolo} --backends ${E2E_BACKENDS:-cudagraph} \
      --persons ${E2E_PERSONS:-1} --seconds ${SECONDS_PER_ROW:-10} 2>&1 | tee "$OUT/e2e.log"
  cp /tmp/e2e/e2e.md /tmp/e2e/e2e.json "$OUT/" 2>/dev/null
fi
if has swap; then
  step swap
  timeout ${SWAP_TIMEOUT:-150} python3 tools/measure_swap.py --kills 2 --swaps 1 backend=torch \
      --start-arg=--backend=cudagraph --start-arg=--device=cuda --start-arg=metrics.prometheus_port=0 \
      2>&1 | tee "$OUT/swap.log"
fi
if has default; then
  # What `pipeline start` gives on this machine: the built-in sample at its own rate, defaults
  # (a fresh machine: landmarks-ik, no POCO weights), then POCO-CLIFF (random weights) on the
  # default backend. tools/measure_cpu.py's pipeline driving, without its CPU bare-model part.
  step default
  timeout ${DEFAULT_TIMEOUT:-200} python3 -c "
import sys; sys.path.insert(0, 'tools')
from measure_cpu import run_source
for extra in ([], ['inference.model=poco-cliff']):
    print('== pipeline start', *extra, flush=True)
    run_source(None, ${DEFAULT_SECONDS:-15}, 12, extra)
" 2>&1 | tee "$OUT/default.log"
fi
if has streams; then
  step streams
  [ -x tools/device/run_streams.sh ] && OUT=$OUT bash tools/device/run_streams.sh 2>&1 | tee "$OUT/streams_call.log"
fi
step done
exit 0
