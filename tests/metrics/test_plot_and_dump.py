import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.metrics.dump import FrameDump
from pipeline.metrics.engine import MetricsEngine
from pipeline.metrics.seedcsv import append_row, build_row
from pipeline.metrics.window import WindowSummary

REPO = Path(__file__).resolve().parents[2]


def _load_tool(name):
    # Loaded by path: tools/ is not a package, and keeping it off sys.path means no tool's name
    # can shadow a standard-library module for every later test.
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"posepipe_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plot_metrics = _load_tool("plot_metrics")


def test_dump_and_plot_run(tmp_path, make_frame, make_person):
    dump = FrameDump(tmp_path / "frames.csv", flush_every=3)
    eng = MetricsEngine(dump=dump)
    for i in range(20):
        eng.observe(make_frame(i, [make_person()] if i % 3 else []))
    dump.close()
    assert len((tmp_path / "frames.csv").read_text().splitlines()) == 21
    out = plot_metrics.plot_run(tmp_path / "frames.csv", tmp_path / "lat.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_csv_bars(tmp_path):
    path = tmp_path / "m.csv"
    for cond, backend, fps in (("Optimal", "torch", 5.0), ("Low Light", "torch", 4.0), ("Optimal", "trt", 30.0)):
        s = WindowSummary(seconds=5, frames=10, fps=fps, end_to_end_ms=10, pose_change=float("nan"),
                          translation_change_mm=1, joint_change_mm=float("nan"), shape_variance=0.1,
                          detection_rate=100, backend=backend)
        append_row(path, build_row(s, cond))
    out = plot_metrics.plot_csv(path, tmp_path / "bars.png")
    assert out.stat().st_size > 1000


def test_cli_bad_inputs(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    r = subprocess.run([sys.executable, str(REPO / "tools" / "plot_metrics.py"), "csv", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a metrics CSV" in r.stderr
    r = subprocess.run([sys.executable, str(REPO / "tools" / "plot_metrics.py"), "run", str(tmp_path / "none.csv")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "does not exist" in r.stderr
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FrameDump(tmp_path / "missing" / "f.csv")
