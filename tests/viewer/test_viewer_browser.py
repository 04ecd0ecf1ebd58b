"""The viewer in a real headless Chromium (system package) driven by Playwright.

Needs `/usr/bin/chromium` (Debian: `apt-get install -y chromium`) and the `playwright` Python
package; no Playwright browser download is used. Software WebGL (SwiftShader) is slow, so the
assertions are on content (scene nodes, panel values), never on render rate.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import threading
import time

import numpy as np
import pytest

from viewer_helpers import make_frame, make_person

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-gl=swiftshader", "--enable-unsafe-swiftshader",
]
SCREENSHOT_COPY = "/tmp/viewer_screenshot.png"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} missing: install the system browser (apt-get install -y chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="playwright missing: pip install playwright (never `playwright install`)"),
]


class Feeder(threading.Thread):
    """Two people, the first waving its left forearm, sent at a rate the test can change."""

    def __init__(self, sink):
        super().__init__(name="viewer-test-feeder", daemon=True)
        self.sink = sink
        self.hz = 25.0
        self.stop = threading.Event()
        self.image = np.full((480, 640, 3), 70, np.uint8)

    def run(self):
        i = 0
        while not self.stop.is_set():
            body_pose = np.zeros(69)
            body_pose[17 * 3 + 2] = 1.2 * np.sin(i / 8.0)  # left elbow about z
            persons = [make_person(1, transl=(-0.4, 0.0, 3.0), body_pose=body_pose),
                       make_person(2, transl=(0.6, 0.1, 3.5), box=(400, 60, 560, 460),
                                   uncertainty=np.full(24, 0.1, np.float32))]
            self.sink.send(make_frame(i, persons, latency_ms=30.0), self.image)
            i += 1
            self.stop.wait(1.0 / self.hz)


def _field(page, label: str) -> str:
    """Value of the panel input that follows a label (viser's text inputs are not linked to
    their <label> by id, so get_by_label cannot be used for them)."""
    return page.locator(f'label:text-is("{label}")').first.locator("xpath=following::input[1]").input_value()


def _number(page, label: str) -> float:
    return float(_field(page, label) or "nan")


def _poll(fn, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.25)
    return fn()


def test_viewer_in_headless_chromium(tmp_path, viewer_factory):
    from playwright.sync_api import sync_playwright

    records = []
    sink = viewer_factory(on_record=lambda cond, sec: records.append((cond, sec)) or f"recording {cond} {sec:g} s")
    sink.open()
    feeder = Feeder(sink)
    feeder.start()
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
                args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 800})
            try:
                page = context.new_page()
                page_errors = []
                page.on("pageerror", lambda exc: page_errors.append(str(exc)))
                page.goto(sink.url)
                page.locator('label:text-is("FPS")').wait_for(timeout=90_000)
                assert _poll(lambda: sink.stats()["clients"] >= 1), "browser never connected to the viewer"

                # Scene: one node per tracked person, on the server the browser is synced with.
                assert _poll(lambda: sink.person_node_names() == {"/persons/A/1", "/persons/A/2"})
                scene_names = set(sink.server.scene._handle_from_node_name)
                assert {"/persons/A/1/skeleton", "/persons/A/1/joints", "/persons/A/2/skeleton"} <= scene_names

                # Panel as the browser shows it.
                assert _poll(lambda: _number(page, "Persons") == 2)
                assert _poll(lambda: _number(page, "Latency p50 (ms)") == pytest.approx(30.0, abs=3.0))
                assert page.get_by_text("Untrained weights").is_visible()
                assert _field(page, "Model") == "poco-cliff / torch / fp32 / gen 0"

                # FPS follows the feed rate: high first, then low after slowing the feeder.
                assert _poll(lambda: _number(page, "FPS") > 12), f"FPS stuck at {_number(page, 'FPS')}"
                fast = _number(page, "FPS")
                page.screenshot(path=str(tmp_path / "viewer.png"))
                feeder.hz = 4.0
                assert _poll(lambda: _number(page, "FPS") < 7), f"FPS stuck at {_number(page, 'FPS')}"
                slow = _number(page, "FPS")
                assert fast - slow > 5

                # The record button reaches the callback and its reply shows in the panel.
                page.get_by_role("button", name="Record last 5 s").click()
                assert _poll(lambda: records == [("Optimal", 5.0)])
                assert _poll(lambda: _field(page, "Record status")
                             == "recording Optimal 5 s")
                assert page_errors == [], f"viewer page raised: {page_errors}"
            finally:
                context.close()
    finally:
        feeder.stop.set()
        feeder.join(timeout=5)
    shutil.copy(tmp_path / "viewer.png", SCREENSHOT_COPY)
    assert (tmp_path / "viewer.png").stat().st_size > 10_000
    assert sink.stats()["draw_errors"] == 0
