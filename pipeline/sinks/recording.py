"""Recording sink: every published frame to one `.npz` file, for offline use (architecture.md §7).

Frames are buffered and every `chunk_frames` frames become a chunk file
`<path>.parts/chunk_000000.npz` (written to a temp name, fsynced, then renamed), so a crash
loses at most the frames of the unfinished chunk. `load_recording` reads either the final file
or, after a crash, the parts folder.

The publisher's thread only appends frames to a list: serialising and writing a chunk happen
on the sink's own writer thread, in order. When the disk fails (full, gone read-only), the
writer keeps the chunk it serialised once and retries those bytes with exponential back-off
(`retry_initial` .. `retry_max` seconds), while new chunks wait in a queue of at most
`max_pending_chunks`; beyond that the oldest waiting chunk is dropped and counted
(`dropped`), so memory stays bounded and the publisher never waits for the disk. `close()`
writes the last chunk, waits up to `close_timeout` seconds for the writer, then streams the
chunks into `<path>` one array of one chunk at a time (never the whole recording in memory)
and removes the parts folder; if the disk is still failing the parts folder stays, readable.

Layout (all plain arrays, no pickle; N frames, M person rows over all frames):

    frame arrays (N,...): frame_id, t_capture_ns, generation, source_epoch, frame_height,
        frame_width, n_found, n_persons, stamps_ns (N, len(stage_names)), model, backend,
        precision, untrained
    person arrays (M,...): person_frame (index into the frame arrays), track_id, box,
        score, global_orient, body_pose, betas, transl, pred_cam, joint_uncertainty,
        joints (M, 24, 3; NaN where has_joints is False), has_joints
    stage_names, format_version
"""
from __future__ import annotations

import collections
import io
import json
import logging
import os
import shutil
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.pose.frame import Person, PosesFrame
from pipeline.runtime.records import NUM_BETAS, NUM_JOINTS, STAGES
from pipeline.sinks.base import Sink, SinkError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

FRAME_FIELDS = {
    "frame_id": np.int64, "t_capture_ns": np.int64, "generation": np.int32,
    "source_epoch": np.int32, "frame_height": np.int32, "frame_width": np.int32,
    "n_found": np.int32, "n_persons": np.int32, "untrained": np.bool_,
    "model": "U24", "backend": "U24", "precision": "U8",
    "stream": "U24",   # the source's name (several sources in one pipeline); absent in older files
}
OPTIONAL_FRAME_FIELDS = ("stream",)   # a recording without them still loads (stream: main)
PERSON_FIELDS = {
    "track_id": (np.int32, ()), "box": (np.float32, (4,)), "score": (np.float32, ()),
    "global_orient": (np.float32, (3,)), "body_pose": (np.float32, (69,)),
    "betas": (np.float32, (NUM_BETAS,)), "transl": (np.float32, (3,)),
    "pred_cam": (np.float32, (3,)), "joint_uncertainty": (np.float32, (NUM_JOINTS,)),
}
ONCE_FIELDS = ("stage_names", "format_version")   # the same in every chunk; written once


def parts_dir(path: Path) -> Path:
    return path.with_name(path.name + ".parts")


class RecordingSink(Sink):
    name = "recording"

    def __init__(self, path, chunk_frames: int = 100, overwrite: bool = False, max_pending_chunks: int = 10,
                 retry_initial: float = 0.2, retry_max: float = 5.0, close_timeout: float = 10.0):
        self.path = Path(path)
        self.chunk_frames = chunk_frames
        self.overwrite = overwrite
        self.max_pending_chunks = max_pending_chunks
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self.close_timeout = close_timeout
        self._parts: Path | None = None
        self._buf_frames: list[PosesFrame] = []
        self._pending: collections.deque[list[PosesFrame]] = collections.deque()   # chunks for the writer
        self._cv = threading.Condition()
        self._writer: threading.Thread | None = None
        self._stopping = self._give_up = False
        self._in_flight = 0           # frames of the chunk the writer is on
        self._frames_written = 0      # writer thread only, after open()
        self._chunk_index = 0
        self._counts = dict(frames=0, chunks=0, write_errors=0, dropped=0)
        self._closed = False

    def open(self) -> None:
        path = self.path
        if path.suffix != ".npz":
            raise SinkError(f"recording: path must end in .npz, got {str(path)!r} (set sinks.recording.path)")
        for key in ("chunk_frames", "max_pending_chunks"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SinkError(f"recording: {key} must be a positive integer, got {value!r}")
        for key in ("retry_initial", "retry_max", "close_timeout"):
            if not getattr(self, key) > 0:
                raise SinkError(f"recording: {key} must be > 0 seconds, got {getattr(self, key)!r}")
        if not path.parent.is_dir():
            raise SinkError(f"recording: folder {str(path.parent)!r} does not exist or is not a folder; "
                            f"create it or choose another sinks.recording.path")
        if path.exists() and not self.overwrite:
            raise SinkError(f"recording: {str(path)!r} already exists; choose a new path or set "
                            f"sinks.recording.overwrite=true")
        parts = parts_dir(path)
        if parts.exists():
            if not _restarted_writer(parts):
                raise SinkError(f"recording: {str(parts)!r} is left from an interrupted recording; read it with "
                                f"load_recording({str(path)!r}) or delete it, then start again")
            self._resume(parts)
        else:
            try:
                parts.mkdir()
                meta = parts / "meta.json"
                with open(meta, "w") as f:  # proves the folder is writable now, not mid-run
                    json.dump({"format_version": FORMAT_VERSION, "started_unix": time.time(),
                               "writer": _process_id(os.getpid()), "parent": _process_id(os.getppid())}, f)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                shutil.rmtree(parts, ignore_errors=True)
                raise SinkError(f"recording: cannot write in {str(path.parent)!r} ({e.strerror or e}); "
                                f"choose a writable sinks.recording.path") from None
        self._parts = parts
        self._closed = self._stopping = self._give_up = False
        self._writer = threading.Thread(target=self._write_loop, name="recording-writer", daemon=True)
        self._writer.start()
        log.info("recording to %s (chunks of %d frames in %s)", path, self.chunk_frames, parts)

    def _resume(self, parts: Path) -> None:
        """Continue the recording of a writer that crashed under the same supervisor (the
        publisher was restarted): keep its chunks, append after them, consolidate at close."""
        for tmp in parts.glob("*.tmp"):  # a chunk the crashed writer did not finish
            tmp.unlink(missing_ok=True)
        chunks = _chunk_files(parts)
        self._chunk_index = 1 + max((int(c.stem.split("_")[1]) for c in chunks), default=-1)
        self._frames_written = sum(_chunk_counts(c)[0] for c in chunks)
        meta = parts / "meta.json"
        info = json.loads(meta.read_text())
        info["writer"] = _process_id(os.getpid())
        meta.write_text(json.dumps(info))
        log.warning("recording: resuming %s after the publisher restarted; the %d frames saved before are kept",
                    parts, self._frames_written)

    # --- the publisher's side: never touches the disk -----------------------------------------
    def send(self, frame: PosesFrame, image=None) -> None:
        if self._parts is None or self._closed:
            raise SinkError("recording: send() before open() or after close()")
        self._buf_frames.append(frame)
        self._counts["frames"] += 1
        if len(self._buf_frames) >= self.chunk_frames:
            self._hand_over()

    def _hand_over(self) -> None:
        if not self._buf_frames:
            return
        with self._cv:
            self._pending.append(self._buf_frames)
            while len(self._pending) > self.max_pending_chunks:
                self._counts["dropped"] += len(self._pending.popleft())   # the disk is failing
            self._cv.notify()
        self._buf_frames = []

    # --- the writer thread --------------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._stopping:
                    self._cv.wait()
                if not self._pending:
                    return
                chunk = self._pending.popleft()
                self._in_flight = len(chunk)
            # Serialised once: a retry writes the same bytes again.
            try:
                data = _npz_bytes(frames_to_arrays(chunk, first_frame_index=self._frames_written))
            except Exception:   # a bug must not silently stop the recording thread
                log.exception("recording: could not serialise %d frames; they are dropped", len(chunk))
                with self._cv:
                    self._counts["dropped"] += len(chunk)
                    self._in_flight = 0
                    self._cv.notify_all()
                continue
            final = self._parts / f"chunk_{self._chunk_index:06d}.npz"
            delay = self.retry_initial
            while not self._write_file(final, data):
                with self._cv:
                    if self._give_up:   # close() stopped waiting for the disk
                        self._counts["dropped"] += len(chunk) + sum(len(c) for c in self._pending)
                        self._pending.clear()
                        self._in_flight = 0
                        return
                    self._cv.wait(delay)
                delay = min(delay * 2, self.retry_max)
            self._frames_written += len(chunk)
            self._chunk_index += 1
            with self._cv:
                self._counts["chunks"] += 1
                self._in_flight = 0
                self._cv.notify_all()

    def _write_file(self, final: Path, data: bytes) -> bool:
        tmp = final.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            return True
        except OSError as e:
            self._counts["write_errors"] += 1
            if self._counts["write_errors"] == 1 or self._counts["write_errors"] % 50 == 0:
                log.error("recording: writing %s failed (%s); keeping the frames in memory to retry "
                          "(%d failures so far)", final, e, self._counts["write_errors"])
            return False

    def wait_written(self, timeout: float) -> bool:
        """True once every chunk handed to the writer is on disk (frames of the unfinished
        chunk stay buffered); False after `timeout` seconds."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._pending and not self._in_flight, timeout=timeout)

    # --- closing ------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed or self._parts is None:
            return
        self._closed = True
        self._hand_over()
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        drained = self.wait_written(self.close_timeout)
        with self._cv:
            self._give_up = True
            self._cv.notify_all()
        self._writer.join(timeout=1.0)
        if not drained:
            log.error("recording: the disk did not take the last %d frames within %g s; %s keeps what was saved",
                      self.stats()["buffered"], self.close_timeout, self._parts)
            return
        try:
            frames = _consolidate(self._parts, self.path)
        except OSError as e:
            log.error("recording: consolidating into %s failed (%s); the chunks stay in %s", self.path, e, self._parts)
            return
        shutil.rmtree(self._parts, ignore_errors=True)
        log.info("recording: %d frames saved to %s", frames, self.path)

    def stats(self) -> dict:
        with self._cv:
            waiting = sum(len(c) for c in self._pending) + self._in_flight
        return dict(self._counts, buffered=len(self._buf_frames) + waiting)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _chunk_files(parts: Path) -> list[Path]:
    return sorted(parts.glob("chunk_*.npz"))


def _chunk_counts(chunk: Path) -> tuple[int, int]:
    """(frames, person rows) of one chunk, reading only two small arrays."""
    with np.load(chunk, allow_pickle=False) as z:
        return len(z["frame_id"]), len(z["person_frame"])


def _consolidate(parts: Path, path: Path) -> int:
    """Concatenate the chunks into one .npz at `path`, streaming: for each array, its .npy
    header with the total length, then each chunk's rows in turn (an .npy body is the C-order
    bytes, so concatenation along the first axis is concatenation of bodies). Returns frames."""
    chunks = _chunk_files(parts)
    if not chunks:
        arrays = frames_to_arrays([])
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(_npz_bytes(arrays))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return 0
    counts = [_chunk_counts(c) for c in chunks]
    totals = {"frames": sum(n for n, _ in counts), "persons": sum(m for _, m in counts)}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with np.load(chunks[0], allow_pickle=False) as first:
            keys = list(first.files)
            for key in ONCE_FIELDS:
                with zf.open(f"{key}.npy", "w", force_zip64=True) as out:
                    np.lib.format.write_array(out, first[key], allow_pickle=False)
        for key in keys:
            if key in ONCE_FIELDS:
                continue
            rows = totals["frames"] if key in FRAME_FIELDS or key == "stamps_ns" else totals["persons"]
            with zf.open(f"{key}.npy", "w", force_zip64=True) as out:
                header = None
                for chunk in chunks:
                    with np.load(chunk, allow_pickle=False) as z:
                        arr = np.ascontiguousarray(z[key])
                    if header is None:
                        header = {"descr": np.lib.format.dtype_to_descr(arr.dtype), "fortran_order": False,
                                  "shape": (rows,) + arr.shape[1:]}
                        np.lib.format.write_array_header_1_0(out, header)
                    out.write(arr.tobytes())
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, path)
    return totals["frames"]


def _process_id(pid: int) -> list:
    """[pid, start time]: a pid alone may be reused by another process later."""
    import psutil

    try:
        return [pid, psutil.Process(pid).create_time()]
    except psutil.Error:
        return [pid, 0.0]


def _restarted_writer(parts: Path) -> bool:
    """True when `parts` belongs to a writer that died while its parent (the pipeline's
    supervisor) lives on and is our parent: a restarted publisher, not a new recording."""
    import psutil

    try:
        info = json.loads((parts / "meta.json").read_text())
        writer, parent = info["writer"], info["parent"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if list(parent) != _process_id(os.getppid()) or parent[0] in (0, 1):
        return False
    try:
        alive = psutil.Process(writer[0]).create_time() == writer[1]
    except psutil.Error:
        alive = False
    return not alive


def frames_to_arrays(frames: list[PosesFrame], first_frame_index: int = 0) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, dtype in FRAME_FIELDS.items():
        if name == "n_persons":
            values = [len(f.persons) for f in frames]
        else:
            values = [getattr(f, name) for f in frames]
        out[name] = np.array(values, dtype=dtype).reshape(len(frames))
    out["stamps_ns"] = np.array([[f.stamps_ns.get(s, 0) for s in STAGES] for f in frames],
                                dtype=np.int64).reshape(len(frames), len(STAGES))
    persons = [(first_frame_index + i, p) for i, f in enumerate(frames) for p in f.persons]
    out["person_frame"] = np.array([i for i, _ in persons], dtype=np.int64)
    for name, (dtype, shape) in PERSON_FIELDS.items():
        out[name] = np.array([getattr(p, name) for _, p in persons], dtype=dtype).reshape((len(persons),) + shape)
    joints = np.full((len(persons), NUM_JOINTS, 3), np.nan, np.float32)
    has = np.zeros(len(persons), bool)
    for k, (_, p) in enumerate(persons):
        if p.joints is not None:
            joints[k] = p.joints
            has[k] = True
    out["joints"], out["has_joints"] = joints, has
    out["stage_names"] = np.array(STAGES, dtype="U16")
    out["format_version"] = np.array(FORMAT_VERSION)
    return out


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _load_parts(parts: Path) -> dict[str, np.ndarray]:
    chunks = sorted(parts.glob("chunk_*.npz"))
    if not chunks:
        return frames_to_arrays([])
    loaded = [_load_npz(c) for c in chunks]
    out = {}
    for key in loaded[0]:
        if key in ("stage_names", "format_version"):
            out[key] = loaded[0][key]
        else:
            out[key] = np.concatenate([c[key] for c in loaded])
    return out


@dataclass
class Recording:
    """A loaded recording: the arrays of the module docstring, plus convenient views."""
    arrays: dict[str, np.ndarray]
    path: Path
    complete: bool  # False when read from the parts of an interrupted recording

    def __len__(self) -> int:
        return int(self.arrays["frame_id"].shape[0])

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def track_ids(self) -> list[int]:
        return sorted(int(t) for t in np.unique(self.arrays["track_id"]))

    def frame(self, i: int) -> PosesFrame:
        a = self.arrays
        stages = [str(s) for s in a["stage_names"]]
        rows = np.nonzero(a["person_frame"] == i)[0]
        persons = [
            Person(**{name: (a[name][r].item() if a[name][r].ndim == 0 else a[name][r].copy())
                      for name in PERSON_FIELDS},
                   joints=a["joints"][r].copy() if a["has_joints"][r] else None)
            for r in rows
        ]
        return PosesFrame(
            frame_id=int(a["frame_id"][i]), t_capture_ns=int(a["t_capture_ns"][i]),
            generation=int(a["generation"][i]), source_epoch=int(a["source_epoch"][i]),
            frame_height=int(a["frame_height"][i]), frame_width=int(a["frame_width"][i]),
            model=str(a["model"][i]), backend=str(a["backend"][i]), precision=str(a["precision"][i]),
            untrained=bool(a["untrained"][i]), n_found=int(a["n_found"][i]),
            stamps_ns={s: int(v) for s, v in zip(stages, a["stamps_ns"][i]) if v},
            persons=persons, stream=str(a["stream"][i]) if "stream" in a else "main",
        )

    def frames(self):
        for i in range(len(self)):
            yield self.frame(i)

    def track(self, track_id: int) -> dict[str, np.ndarray]:
        """Every row of one track, in frame order, with its frame's id and capture time."""
        a = self.arrays
        rows = np.nonzero(a["track_id"] == track_id)[0]
        out = {name: a[name][rows] for name in list(PERSON_FIELDS) + ["joints", "has_joints", "person_frame"]}
        out["frame_id"] = a["frame_id"][a["person_frame"][rows]]
        out["t_capture_ns"] = a["t_capture_ns"][a["person_frame"][rows]]
        return out


def load_recording(path) -> Recording:
    """Read a recording written by RecordingSink (or the chunks an interrupted one left)."""
    path = Path(path)
    if path.is_file():
        try:
            arrays = _load_npz(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{str(path)!r} is not a readable posepipe recording ({e})") from None
        complete = True
    elif parts_dir(path).is_dir():
        log.warning("recording %s was not closed; reading the chunks in %s", path, parts_dir(path))
        arrays, complete = _load_parts(parts_dir(path)), False
    else:
        raise FileNotFoundError(f"no recording at {str(path)!r} (nor an interrupted one at {str(parts_dir(path))!r})")
    missing = [k for k in list(FRAME_FIELDS) + list(PERSON_FIELDS) + ["person_frame", "stamps_ns"]
               if k not in arrays and k not in OPTIONAL_FRAME_FIELDS]
    if missing:
        raise ValueError(f"{str(path)!r} is not a posepipe recording: missing arrays {missing}")
    return Recording(arrays=arrays, path=path, complete=complete)
