"""The seed's overlay, run by the publisher: `--display` (an OpenCV window) and `--output out.mp4`.

Both draw the same picture with one `OverlayComposer` (the renderer and the SMPL layer are
created once, never per frame): each person's projected SMPL mesh when the SMPL files exist
(`load_smpl`), the 24-joint skeleton otherwise, boxes with track ids, and the seed's text
`FPS: x.xx`, `Latency: x.x ms`, red `(No Detections)`.

`DisplaySink` (config ``sinks.display``) owns its window on its own thread: `send()` only keeps
the newest frame (older ones are dropped and counted), so drawing never slows the publisher,
and nothing here runs in the inference process. Keys (the seed's): `q` stops the pipeline
through the control plane, `r` asks the metrics worker for a row averaging the last 5 s (same
as the viewer's "Record last 5 s" button). Without a graphical display it refuses to start with a clear message.

`VideoSink` (config ``sinks.video``, `--output out.mp4`) writes the overlay of every published
frame to an mp4 at the source's frame rate. With a file source its `stats()` carry the file's
frame count, which the CLI turns into a progress bar (`pipeline.cli.progress.ProgressLine`).

`ControlActions` is how both (and the viewer's button) talk to the supervisor: a fresh
control client per request, so it is safe from any thread.
"""
from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from pipeline.pose.frame import PosesFrame
from pipeline.sinks.base import Sink, SinkError

log = logging.getLogger(__name__)

RECORD_SECONDS = 5.0
NO_DISPLAY_MESSAGE = ("--display needs a graphical display, but neither DISPLAY nor WAYLAND_DISPLAY is set "
                      "(no display: use --output out.mp4 to write the overlay to a video file instead)")


# ---------------------------------------------------------------------------- control plane

class ControlActions:
    """Requests a sink may send to the running pipeline (record metrics, stop)."""

    def __init__(self, endpoint: str | None, token: str = "", metrics_worker: str = "metrics"):
        self.endpoint = endpoint
        self.token = token
        self.metrics_worker = metrics_worker

    def record(self, condition: str, seconds: float = RECORD_SECONDS) -> str:
        """Ask the metrics worker for a trailing-window row; returns the text for the user."""
        from pipeline.metrics.record_cmd import RecordError, build_request, send_record
        from pipeline.metrics.seedcsv import MetricsCsvError

        if not self.endpoint:
            return "error: not connected to the pipeline's control plane"
        try:
            reply = send_record(build_request(condition, None, seconds, None), self.metrics_worker,
                                endpoint=self.endpoint, token=self.token, timeout_s=seconds + 5.0)
        except (RecordError, MetricsCsvError) as exc:
            text = str(exc)
            if "unknown worker" in text:
                text += (f" (no `{self.metrics_worker}` worker runs: add workers.{self.metrics_worker}"
                         f".module=workers.metrics to the config)")
            return f"error: {text}"
        return f"recorded {condition} (average of the last {seconds:g} s): appended to {reply.get('path')}"

    def stop(self) -> None:
        """Ask the supervisor to stop the pipeline (returns at once; the reply is not awaited)."""
        if not self.endpoint:
            log.warning("cannot stop the pipeline: not connected to its control plane")
            return

        def request():
            from pipeline.runtime.control import ControlClient, ControlError

            try:
                with ControlClient(self.endpoint, self.token) as client:
                    client.request("stop", timeout_s=5.0)
            except ControlError as exc:
                log.warning("stop request failed: %s", exc)

        # The supervisor stops the publisher (and so this sink) while answering: never wait here.
        threading.Thread(target=request, name="stop-request", daemon=True).start()


# ---------------------------------------------------------------------------- drawing

class OverlayComposer:
    """One renderer (+ optional SMPL layer) for every frame of a display or video."""

    def __init__(self, mesh: bool = True, data_dir: str | os.PathLike | None = None):
        from pipeline.sinks.overlay import OverlayRenderer

        self.renderer = OverlayRenderer(rgb=True)
        self.smpl = None
        if mesh:
            from pipeline.models.smpl import load_smpl

            try:
                from pipeline.config import default_data_dir

                self.smpl = load_smpl(data_dir or default_data_dir())  # None (said once) when absent
            except (ValueError, ImportError) as exc:
                log.warning("overlay: drawing skeletons, the SMPL model is unusable: %s", exc)
        self._arrivals: collections.deque[int] = collections.deque(maxlen=64)
        self.status_text = ""
        self.status_until = 0.0

    @property
    def draws_mesh(self) -> bool:
        return self.smpl is not None

    def fps(self) -> float | None:
        """Published frames per second over the last ~64 frames (capture clock)."""
        if len(self._arrivals) < 2 or self._arrivals[-1] <= self._arrivals[0]:
            return None
        return (len(self._arrivals) - 1) * 1e9 / (self._arrivals[-1] - self._arrivals[0])

    def note(self, frame: PosesFrame) -> None:
        if not self._arrivals or frame.t_capture_ns > self._arrivals[-1]:
            self._arrivals.append(frame.t_capture_ns)

    def compose(self, frame: PosesFrame, image: np.ndarray) -> np.ndarray:
        pub = frame.stamps_ns.get("publish", 0)
        latency = (pub - frame.t_capture_ns) / 1e6 if pub and pub >= frame.t_capture_ns > 0 else None
        vertices = faces = None
        if self.smpl is not None and frame.persons:
            ps = frame.persons
            vertices = list(self.smpl.vertices({
                "global_orient": np.stack([p.global_orient for p in ps]),
                "body_pose": np.stack([p.body_pose for p in ps]),
                "betas": np.stack([p.betas for p in ps]),
                "transl": np.stack([p.transl for p in ps]),
            }))
            faces = self.smpl.faces
        out = self.renderer.draw(image, frame, fps=self.fps(), latency_ms=latency, vertices=vertices, faces=faces)
        if self.status_text and time.monotonic() < self.status_until:
            import cv2

            cv2.putText(out, self.status_text[:90], (10, out.shape[0] - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (255, 255, 0), 1, cv2.LINE_AA)
        return out

    def show_status(self, text: str, seconds: float = 4.0) -> None:
        self.status_text, self.status_until = text, time.monotonic() + seconds


def display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or sys.platform in ("darwin", "win32")


# ---------------------------------------------------------------------------- window

class DisplaySink(Sink):
    """`--display`: the overlay in an OpenCV window on its own thread."""

    name = "display"
    wants_image = True

    def __init__(self, title: str = "posepipe", mesh: bool = True, max_hz: float = 30.0, data_dir: str = ""):
        if not 0 < max_hz <= 240:
            raise SinkError(f"sinks.display.max_hz must be in (0, 240], got {max_hz!r}")
        self.title, self.mesh, self.max_hz, self.data_dir = str(title), bool(mesh), float(max_hz), data_dir
        self.actions = ControlActions(None)   # the publisher connects it to the control plane
        self.composer: OverlayComposer | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending: tuple[PosesFrame, np.ndarray] | None = None
        self._thread: threading.Thread | None = None
        self._counts = collections.Counter()
        self._window_error: str | None = None

    def open(self) -> None:
        if not display_available():
            raise SinkError(NO_DISPLAY_MESSAGE)
        self.composer = OverlayComposer(self.mesh, self.data_dir or None)
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="display", daemon=True)
        self._thread.start()
        ready.wait(10.0)
        if self._window_error:
            self.close()
            raise SinkError(f"--display could not open a window: {self._window_error} "
                            f"(use --output out.mp4 instead)")

    def send(self, frame: PosesFrame, image=None) -> None:
        with self._lock:
            self.composer.note(frame)
            if image is None:
                self._counts["no_image"] += 1
                return
            if self._pending is not None:
                self._counts["dropped"] += 1
            # The publisher hands us its own copy of the pixels: keep the reference, no copy.
            self._pending = (frame, image)
        self._wake.set()

    def _run(self, ready: threading.Event) -> None:
        import cv2

        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            self._window_error = str(exc).strip().splitlines()[-1] if str(exc).strip() else "cv2.error"
            ready.set()
            return
        ready.set()
        interval = 1.0 / self.max_hz
        try:
            while not self._stop.is_set():
                self._wake.wait(interval)
                self._wake.clear()
                with self._lock:
                    pending, self._pending = self._pending, None
                if pending is not None:
                    try:
                        cv2.imshow(self.title, cv2.cvtColor(self.composer.compose(*pending), cv2.COLOR_RGB2BGR))
                        self._counts["shown"] += 1
                    except Exception as exc:  # one bad frame must not close the window
                        self._counts["errors"] += 1
                        if self._counts["errors"] in (1, 10, 100):
                            log.warning("display: frame not drawn (%s)", exc)
                self._key(cv2.waitKey(1) & 0xFF)
        finally:
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass

    def _key(self, key: int) -> None:
        if key == ord("q"):
            log.info("display: 'q' pressed, stopping the pipeline")
            self.composer.show_status("stopping...")
            self.actions.stop()
        elif key == ord("r"):
            self.composer.show_status(f"recording metrics for {RECORD_SECONDS:g} s...", RECORD_SECONDS + 5)

            def record():
                text = self.actions.record("Optimal", RECORD_SECONDS)
                log.info("display: %s", text)
                self.composer.show_status(text)

            threading.Thread(target=record, name="display-record", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def stats(self) -> dict:
        return {"shown": self._counts["shown"], "dropped": self._counts["dropped"],
                "no_image": self._counts["no_image"], "errors": self._counts["errors"],
                "mesh": self.composer is not None and self.composer.draws_mesh}


# ---------------------------------------------------------------------------- video file

def source_video_info(source: dict | None) -> tuple[float | None, int | None]:
    """(fps, frame count) of a video-file source, else (None, None)."""
    spec = (source or {}).get("spec")
    if not isinstance(spec, str) or not os.path.isfile(spec):
        return None, None
    import cv2

    cap = cv2.VideoCapture(spec)
    try:
        if not cap.isOpened():
            return None, None
        fps = cap.get(cv2.CAP_PROP_FPS)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    return (float(fps) if fps and 0 < fps <= 1000 else None), (count if count > 0 else None)


class VideoSink(Sink):
    """`--output out.mp4`: the overlay of every published frame into a video file."""

    name = "video"
    wants_image = True

    def __init__(self, path: str, fps: float | None = None, mesh: bool = True, data_dir: str = "",
                 total_frames: int | None = None):
        if not isinstance(path, str) or not path:
            raise SinkError(f"sinks.video.path must be a file name such as out.mp4, got {path!r}")
        if fps is not None and not 0 < fps <= 1000:
            raise SinkError(f"sinks.video.fps must be in (0, 1000], got {fps!r}")
        self.path, self.fps, self.mesh, self.data_dir = path, fps, bool(mesh), data_dir
        self.total_frames = total_frames
        self.composer: OverlayComposer | None = None
        self.writer = None
        self._counts = collections.Counter()

    def use_source(self, source: dict | None) -> None:
        """Take the frame rate and frame count of a file source (the publisher calls this)."""
        fps, count = source_video_info(source)
        if self.fps is None and fps:
            self.fps = fps
        if self.total_frames is None and count and (source or {}).get("at_end") == "stop":
            self.total_frames = count

    def open(self) -> None:
        from pipeline.sinks.overlay import OverlayVideoWriter

        path = Path(self.path).expanduser()
        if path.suffix.lower() != ".mp4":
            raise SinkError(f"--output {self.path!r}: the overlay video is written as .mp4; name it e.g. out.mp4")
        try:
            self.writer = OverlayVideoWriter(path, self.fps or 30.0)
        except (OSError, ValueError) as exc:
            raise SinkError(f"--output: {exc}") from None
        if not os.access(path.parent, os.W_OK):
            raise SinkError(f"--output {self.path!r}: folder {str(path.parent)!r} is not writable")
        self.composer = OverlayComposer(self.mesh, self.data_dir or None)

    def send(self, frame: PosesFrame, image=None) -> None:
        self.composer.note(frame)
        if image is None:  # the frames ring already reused the slot: nothing to draw on
            self._counts["no_image"] += 1
            return
        try:
            self.writer.write(self.composer.compose(frame, image))
            self._counts["frames"] += 1
        except (OSError, ValueError) as exc:
            self._counts["errors"] += 1
            if self._counts["errors"] == 1:
                log.error("--output: frame not written (%s)", exc)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def stats(self) -> dict:
        out = {"frames": self._counts["frames"], "no_image": self._counts["no_image"],
               "errors": self._counts["errors"], "path": str(self.path)}
        if self.total_frames:
            out["total"] = self.total_frames
        return out
