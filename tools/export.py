"""Build a TensorRT/ONNX engine ahead of time; same as `pipeline export` (see
pipeline/backends/export.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.backends.export import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
