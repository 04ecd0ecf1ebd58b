"""Feed synthetic PosesFrames to the browser viewer, to look at it without the pipeline.

    python tools/viewer_demo.py                 # skeletons, http://127.0.0.1:8080
    python tools/viewer_demo.py --mesh boxes    # skinned box figure instead of skeletons
    python tools/viewer_demo.py --persons 3 --hz 20 --port 8090 --seconds 60

People walk slowly across the view waving their arms; one person leaves and comes back
every few seconds so track removal can be seen; per-joint uncertainty drifts so the joint
colours change. The "Record last 5 s" button answers with a message naming the request only.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.sinks import viewer_scene as vs  # noqa: E402
from pipeline.pose.frame import Person, PosesFrame  # noqa: E402
from pipeline.sinks.base import SinkError  # noqa: E402
from pipeline.sinks.viewer import SmplMeshData, ViewerSink  # noqa: E402

log = logging.getLogger("viewer_demo")

WIDTH, HEIGHT = 640, 480
FOCAL = float(np.hypot(WIDTH, HEIGHT))


def synthetic_person(track_id: int, t: float, n: int) -> Person:
    phase = track_id * 1.3
    body_pose = np.zeros(69, np.float32)
    swing = np.sin(2.0 * t + phase)
    body_pose[(16 - 1) * 3 + 2] = -0.9 + 0.5 * swing      # left shoulder down and up
    body_pose[(17 - 1) * 3 + 2] = 0.9 - 0.5 * swing       # right shoulder
    body_pose[(18 - 1) * 3 + 1] = -1.0 * (0.5 + 0.5 * swing)  # left elbow bend
    body_pose[(1 - 1) * 3 + 0] = -0.4 * swing             # hips swing
    body_pose[(2 - 1) * 3 + 0] = 0.4 * swing
    body_pose[(4 - 1) * 3 + 0] = 0.4 * (0.5 + 0.5 * swing)  # knee
    x = (track_id - (n - 1) / 2.0) * 1.0 + 0.3 * np.sin(0.3 * t + phase)
    transl = np.array([x, 0.1, 3.5 + 0.3 * track_id], np.float32)
    # Box: project a 1.7 m tall person with the full-image camera.
    cx = WIDTH / 2 + FOCAL * transl[0] / transl[2]
    half_h = 0.5 * FOCAL * 1.7 / transl[2]
    cy = HEIGHT / 2 + FOCAL * transl[1] / transl[2]
    box = np.array([cx - half_h * 0.4, cy - half_h, cx + half_h * 0.4, cy + half_h], np.float32)
    uncertainty = (0.5 + 0.5 * np.sin(t + np.arange(24) * 0.4 + phase)).astype(np.float32)
    return Person(track_id=track_id, box=box, score=0.9,
                  global_orient=np.array([np.pi, 0.0, 0.0], np.float32), body_pose=body_pose,
                  betas=np.zeros(10, np.float32), transl=transl,
                  pred_cam=np.array([1.0, 0.0, 0.0], np.float32), joint_uncertainty=uncertainty)


def synthetic_image(persons: list[Person], t: float) -> np.ndarray:
    image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    image[:] = (40, 60 + int(20 * np.sin(t)), 90)
    for p in persons:
        x1, y1, x2, y2 = np.clip(p.box, 0, [WIDTH - 1, HEIGHT - 1, WIDTH - 1, HEIGHT - 1]).astype(int)
        image[y1:y2, x1:x2] = (150, 120, 100)
    return image


def run(args) -> int:
    smpl = None
    if args.mesh == "boxes":
        verts, faces, weights, joints = vs.box_figure_mesh()
        smpl = SmplMeshData(vertices=verts, faces=faces, skin_weights=weights, rest_joints=joints)

    def on_record(condition: str, seconds: float) -> str:
        return f"demo: would record {seconds:g} s of '{condition}' (no pipeline attached)"

    sink = ViewerSink(host=args.host, port=args.port, smpl=smpl, on_record=on_record)
    try:
        sink.open()
    except SinkError as exc:
        log.error("%s", exc)
        return 2
    log.info("viewer demo at %s (Ctrl-C to stop)", sink.url)
    start = time.monotonic()
    frame_id = 0
    try:
        while args.seconds <= 0 or time.monotonic() - start < args.seconds:
            t = time.monotonic() - start
            capture = time.monotonic_ns()
            ids = [i for i in range(args.persons) if not (i == args.persons - 1 and int(t / 4) % 3 == 2)]
            persons = [synthetic_person(i, t, args.persons) for i in ids]
            # Pretend the pipeline took 25-45 ms from capture to publish.
            publish = capture + int((35 + 10 * np.sin(t)) * 1e6)
            frame = PosesFrame(frame_id=frame_id, t_capture_ns=capture, generation=0, source_epoch=0,
                               frame_height=HEIGHT, frame_width=WIDTH, model="synthetic", backend="demo",
                               precision="fp32", untrained=args.untrained, n_found=len(persons),
                               stamps_ns={"capture": capture, "publish": publish}, persons=persons)
            sink.send(frame, synthetic_image(persons, t))
            frame_id += 1
            time.sleep(1.0 / args.hz)
    except KeyboardInterrupt:
        pass
    finally:
        log.info("stats: %s", sink.stats())
        sink.close()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--persons", type=int, default=2, choices=range(1, 9), metavar="1..8")
    parser.add_argument("--hz", type=float, default=30.0, help="frames per second fed to the viewer")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0 = until Ctrl-C)")
    parser.add_argument("--mesh", choices=("none", "boxes"), default="none",
                        help="'boxes': a skinned box figure, to see the skinned-mesh path without SMPL files")
    parser.add_argument("--untrained", action="store_true", help="show the untrained-weights warning")
    args = parser.parse_args(argv)
    if not 0.5 <= args.hz <= 240:
        parser.error("--hz must be in 0.5..240")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
