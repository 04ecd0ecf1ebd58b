#!/usr/bin/env bash
# Run on the device machine (GPU): environment/TensorRT probe, GPU tests, per-crop benchmark.
# Everything is written under $OUT as it goes, so a run cut short still returns its logs.
#   usage: bash tools/device/run_bench.sh [bench args...]   (e.g. --variant cliff --batches 1,2,4,8)
set -u
OUT=${OUT:-runs/device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export POSEPIPE_CACHE_DIR=${POSEPIPE_CACHE_DIR:-/tmp/posepipe-data/engines}   # shared by the GPU tests and the bench (compile cache hits)
export YOLO_OFFLINE=1 YOLO_CONFIG_DIR=/tmp/yolo-config
PY=${PY:-python3}

{
  echo "== probe $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  $PY - <<'PYEOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0))
for mod in ("tensorrt", "torch_tensorrt", "onnxruntime"):
    try:
        m = importlib.import_module(mod)
        print(mod, "OK", getattr(m, "__version__", "?"))
    except Exception as exc:
        print(mod, "MISSING:", type(exc).__name__, exc)
try:
    import onnxruntime as ort
    print("onnxruntime providers", ort.get_available_providers())
except Exception:
    pass
PYEOF
  $PY -m pip list 2>/dev/null | grep -i -E "tensorrt|nvinfer|onnxruntime|^torch " || echo "pip list: no tensorrt/nvinfer packages"
  ldconfig -p | grep -i nvinfer || echo "ldconfig: no libnvinfer"
  find /usr /opt -maxdepth 6 -name 'libnvinfer*' 2>/dev/null | head -5 || true
  echo "(end probe)"
} 2>&1 | tee "$OUT/probe.log"

if [ -z "${SKIP_TESTS:-}" ]; then
  echo "== GPU tests $(date -u +%T)"
  timeout ${TESTS_TIMEOUT:-270} $PY -m pytest -m gpu tests/backends -q -s -p no:cacheprovider -o addopts="" -rs \
      ${GPU_TESTS_K:+-k "$GPU_TESTS_K"} 2>&1 | tee "$OUT/gpu_tests.log"
fi

echo "== bench $(date -u +%T)"
timeout ${BENCH_TIMEOUT:-330} $PY tools/bench.py --out "$OUT" "$@" 2>&1 | grep -v -E "initializer_deduplication|UserWarning" | tee "$OUT/bench.log"
echo "== done $(date -u +%T)"
