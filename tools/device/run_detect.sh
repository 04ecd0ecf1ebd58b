#!/usr/bin/env bash
# On the GPU machine (Python 3.12, torch + CUDA, no network): which detector packages import,
# the detector GPU tests, standalone detection speed (CPU and GPU, batch 1), detection quality
# on the shipped photos and the sample clip, and the end-to-end pipeline with each detector
# beside fixed boxes (same run). Issue 17. A device call lasts at most 10 minutes, so two calls:
#   STEPS="probe tests detect quality" bash tools/device/run_detect.sh     (~7 min)
#   STEPS=e2e bash tools/device/run_detect.sh                             (~9 min, 8 rows)
# Needs .whl/ carried along with the Python 3.12 wheels listed in tools/device/NOTES.md
# ("Detection (issue 17)"). Logs go straight to $OUT (a run cut short still returns them).
#   env: STEPS="probe tests detect quality e2e" (any subset, in this order)
#        E2E_DETECTORS E2E_BACKENDS E2E_PERSONS SECONDS_PER_ROW E2E_TIMEOUT
#        DETECT_FRAMES QUALITY_TIMEOUT TESTS_TIMEOUT YOLO (weights file; default: untrained yolo11n)
set -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/device}; mkdir -p "$OUT"
STEPS=${STEPS:-probe tests detect quality e2e}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | tail -3 | tee "$OUT/pip.log"
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 POSEPIPE_VIEWER=0 XDG_RUNTIME_DIR=/tmp
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False YOLO_CONFIG_DIR=/tmp/yolo-config GLOG_minloglevel=2
YOLO_ARG=${YOLO:+--yolo $YOLO}

has() { case " $STEPS " in *" $1 "*) return 0;; *) return 1;; esac; }

if has probe; then
  {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 - <<'PYEOF'
import importlib, os
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0), "cores", os.cpu_count())
for mod in ("torchvision", "ultralytics", "lap", "ai_edge_litert.interpreter", "mediapipe", "tensorrt",
            "matplotlib", "PIL", "yaml", "google.protobuf", "absl", "attr", "flatbuffers", "polars"):
    try:
        m = importlib.import_module(mod)
        print(f"{mod:<28} OK {getattr(m, '__version__', '')}")
    except Exception as exc:
        print(f"{mod:<28} MISSING: {type(exc).__name__}: {exc}")
PYEOF
  } 2>&1 | tee "$OUT/detect_probe.log"
fi

if has tests; then
  timeout ${TESTS_TIMEOUT:-150} python3 -m pytest -q -s -m gpu -p no:cacheprovider -o addopts="" -rs \
      tests/detectors 2>&1 | grep -v -E "warnings.warn|Warning:" | tee "$OUT/detect_gpu_tests.log"
fi

if has detect; then
  timeout ${DETECT_TIMEOUT:-180} python3 tools/bench_detect.py --devices cpu,cuda --threads 1,2 \
      --frames ${DETECT_FRAMES:-60} $YOLO_ARG 2>&1 | tee "$OUT/bench_detect.log"
fi

if has quality; then
  timeout ${QUALITY_TIMEOUT:-120} python3 tools/detect_quality.py --device cuda --yolo-random $YOLO_ARG \
      2>&1 | tee "$OUT/detect_quality.log"
fi

if has e2e; then
  timeout ${E2E_TIMEOUT:-560} python3 tools/bench_e2e.py --out /tmp/e2e-detect --data-dir /tmp/posepipe-bench-data \
      --detectors ${E2E_DETECTORS:-fixed,blazepose,blazepose-cpu,yolo} --backends ${E2E_BACKENDS:-cudagraph} \
      --persons ${E2E_PERSONS:-1,5} --seconds ${SECONDS_PER_ROW:-10} $YOLO_ARG 2>&1 | tee "$OUT/e2e_detect.log"
  cp /tmp/e2e-detect/e2e.md "$OUT/e2e_detect.md" 2>/dev/null
  cp /tmp/e2e-detect/e2e.json "$OUT/e2e_detect.json" 2>/dev/null
fi
exit 0
