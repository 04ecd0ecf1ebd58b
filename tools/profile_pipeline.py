#!/usr/bin/env python
"""Profile a posepipe pipeline: per-worker CPU/GPU timelines, a Chrome trace of frames, plots and a
bottleneck summary. Same as `pipeline profile`; see `python tools/profile_pipeline.py --help`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.profiling.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
