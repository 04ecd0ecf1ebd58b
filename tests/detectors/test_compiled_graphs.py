"""CompiledGraphs: the YOLO `compile` engine's builds on a thread of their own, handed over between
frames. Plain callables stand in for Inductor here; tests/detectors/test_yolo.py runs the real one
on a GPU."""
import importlib.util
import threading
import time

import pytest

from pipeline.detectors.yolo_runner import CompiledGraphs


def _until(cond, timeout=5.0):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.01)


def test_a_size_is_built_once_on_its_own_thread_and_handed_over_once():
    calls, threads = [], []

    def build(size):
        calls.append(size)
        threads.append(threading.current_thread().name)
        return ("graph", size)
    graphs = CompiledGraphs(build)
    graphs.request((1080, 1920))
    graphs.request((1080, 1920))
    assert graphs.wait(5.0)
    assert calls == [(1080, 1920)] and threads == ["yolo-compile"]
    assert graphs.state() == {"compiled": ["1920x1080"], "compiling": []}
    assert graphs.take() == {(1080, 1920): ("graph", (1080, 1920))}
    assert graphs.take() == {}
    graphs.close()


def test_while_a_build_runs_the_size_is_reported_as_compiling():
    release = threading.Event()

    def build(size):
        release.wait(5.0)
        return size
    graphs = CompiledGraphs(build)
    graphs.request((720, 1280))
    graphs.request((1080, 1920))
    assert graphs.state()["compiling"] == ["1280x720", "1920x1080"]
    assert not graphs.wait(0.05)
    release.set()
    assert graphs.wait(5.0)
    assert graphs.state() == {"compiled": ["1280x720", "1920x1080"], "compiling": []}
    assert set(graphs.take()) == {(720, 1280), (1080, 1920)}
    graphs.close()


def test_a_failed_build_is_reported_and_later_sizes_still_build():
    def build(size):
        if size == (1, 1):
            raise RuntimeError("inductor said no")
        return size
    graphs = CompiledGraphs(build)
    graphs.request((1, 1))
    graphs.request((2, 2))
    assert graphs.wait(5.0)
    state = graphs.state()
    assert state["compiled"] == ["2x2"] and state["compiling"] == []
    assert state["compile_error"] == "1x1: RuntimeError: inductor said no"
    assert graphs.take() == {(2, 2): (2, 2)}
    graphs.close()


def test_close_starts_no_new_build_and_hands_over_nothing():
    started, release = threading.Event(), threading.Event()
    calls = []

    def build(size):
        calls.append(size)
        started.set()
        release.wait(5.0)
        return size
    graphs = CompiledGraphs(build, close_wait_s=0.05)
    graphs.request((1, 1))
    graphs.request((2, 2))
    assert started.wait(5.0)
    graphs.close()            # the running build cannot be stopped; it is not waited for long
    release.set()
    assert graphs.wait(5.0)
    assert calls == [(1, 1)] and graphs.take() == {}
    graphs.request((3, 3))    # closed: nothing more
    assert graphs.wait(1.0) and calls == [(1, 1)]


def test_a_forgotten_size_is_built_again_when_asked_again():
    calls = []
    graphs = CompiledGraphs(lambda size: calls.append(size) or size)
    graphs.request((1, 1))
    assert graphs.wait(5.0)
    graphs.forget((1, 1))
    assert graphs.state()["compiled"] == [] and graphs.take() == {}
    graphs.request((1, 1))
    assert graphs.wait(5.0)
    assert calls == [(1, 1), (1, 1)]
    graphs.close()


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None, reason="ultralytics is not installed")
def test_the_compile_engine_on_a_cpu_is_refused(tmp_path):
    from pipeline.detectors import DetectorError, make_detector
    from pipeline.detectors.yolo_model import build_untrained
    path = build_untrained("yolo11n.yaml", tmp_path / "yolo.pt")
    with pytest.raises(DetectorError, match="engine 'compile' needs a CUDA device"):
        make_detector("yolo", model=path, device="cpu", engine="compile", warmup=False).setup()
