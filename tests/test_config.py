"""Config: defaults == configs/default.yaml, validation errors name key/value/allowed, overrides, flags."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import pytest
import yaml

from pipeline.config import (DEFAULT_CONFIG_PATH, DEFAULTS, ConfigError, build_dataclass, load_config,
                             parse_override)


def test_default_yaml_matches_builtin_defaults():
    assert yaml.safe_load(DEFAULT_CONFIG_PATH.read_text()) == DEFAULTS


def test_defaults_validate_and_start_consumers_first():
    cfg = load_config()
    assert list(cfg.workers) == ["metrics", "publisher", "inference", "detection", "capture"]
    w = cfg.workers
    assert (w["capture"].input, w["capture"].output) == (None, "frames")
    assert (w["detection"].input, w["detection"].output, w["detection"].policy) == ("frames", "detections", "latest")
    assert (w["inference"].reads, w["publisher"].policy) == (("frames",), "next")
    assert cfg.source.spec == "sample" and cfg.sinks == {"native": {"endpoint": "tcp://127.0.0.1:5560"}}


@pytest.mark.parametrize("override, message", [
    ("workers.capture.restart=sometimes",
     "config error: workers.capture.restart = 'sometimes' — allowed: never, on-failure, always"),
    ("foo.bar=1", "config error: foo is not a known key — allowed: source, rings, workers, sinks, control, "
                  "supervisor, cpu, data_dir, output_dir"),
    ("rings.frames.slots=1", "config error: rings.frames.slots = 1 — must be >= 2"),
    ("rings.max_persons=100", "rings.max_persons = 100 — must be in 1..64"),
    ("source.at_end=rewind", "source.at_end = 'rewind' — allowed: stop, loop"),
    ("control.transport=udp", "control.transport = 'udp' — allowed: ipc, tcp"),
    ("workers.capture.enabled=yes please", "workers.capture.enabled = 'yes please' — expected true or false"),
    ("workers.capture.max_restarts=1.5", "workers.capture.max_restarts = 1.5 — expected an integer"),
    ("supervisor.seconds=soon", "supervisor.seconds = 'soon' — expected a number"),
    ("workers.x.module=no.such.module", "workers.x.module = 'no.such.module' cannot be imported"),
    ("workers.capture.input=pixels", "workers.capture.input = 'pixels' — allowed: frames, detections"),
    ("sinks.native.port=5", "sinks.native.port is not a known key — allowed: endpoint, hwm"),
    ("inference.threads=fast", "workers.inference.params.threads = 'fast' — expected an integer"),
    ("inference.model=poco-hmr", "workers.inference.params.model = 'poco-hmr' — allowed: poco-cliff, poco-pare"),
    ("detection.kind=yolov3", "workers.detection.params.kind = 'yolov3' — allowed: auto, yolo, blazepose, mediapipe, center"),
    ("novalue", "override 'novalue' must look like key.sub=value"),
])
def test_errors_name_key_value_and_allowed(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert message in str(err.value)
    assert str(err.value).startswith("config error: ")


def test_overrides_are_yaml_typed_and_worker_shorthand():
    cfg = load_config(overrides=["inference.threads=2", "source.spec=0", "rings.frames.max_width=640",
                                 "source.options={width: 640, realtime: false}", "capture.restart=never",
                                 "supervisor.seconds=2.5"])
    assert cfg.workers["inference"].params_obj.threads == 2
    assert cfg.source.spec == 0 and cfg.source.options == {"width": 640, "realtime": False}
    assert cfg.rings.frames.max_width == 640
    assert cfg.workers["capture"].restart == "never"
    assert cfg.supervisor.seconds == 2.5


def test_flags_map_onto_keys():
    cfg = load_config(flags={"source": "clip.mp4", "seconds": 3.0, "backend": None, "model": None})
    assert cfg.source.spec == "clip.mp4" and cfg.supervisor.seconds == 3.0
    cfg = load_config(flags={"model": "poco-pare", "backend": "onnx", "checkpoint": "w.pt", "device": "cpu",
                             "detector": "center"})
    p = cfg.workers["inference"].params_obj
    assert (p.model, p.backend, p.checkpoint, p.device) == ("poco-pare", "onnx", "w.pt", "cpu")
    assert cfg.workers["detection"].params_obj.kind == "center"
    with pytest.raises(ConfigError, match="--model poco-pare: workers.inference runs workers.capture"):
        load_config(overrides=["workers.inference.module=workers.capture"], flags={"model": "poco-pare"})
    with pytest.raises(ConfigError, match="allowed: auto, yolo, blazepose, mediapipe, center"):
        load_config(flags={"detector": "hog"})


def test_yaml_file_is_merged_over_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("source: {spec: 'frames/*.png'}\nworkers:\n  detection: {enabled: false}\n")
    cfg = load_config(path)
    assert cfg.source.spec == "frames/*.png" and cfg.source.at_end == "loop"
    assert "detection" not in cfg.enabled_workers() and "capture" in cfg.enabled_workers()
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(path)


def test_worker_params_validated_against_any_params_dataclass():
    @dataclass
    class Params:
        threshold: float = 0.5
        mode: Literal["fast", "exact"] = "fast"
        name: Optional[str] = None
        sizes: list = None

    assert build_dataclass(Params, {"threshold": 1, "mode": "exact"}, "p").threshold == 1.0
    with pytest.raises(ConfigError, match=r"p.mode = 'slow' — allowed: fast, exact"):
        build_dataclass(Params, {"mode": "slow"}, "p")
    with pytest.raises(ConfigError, match=r"p.threshold = True — expected a number"):
        build_dataclass(Params, {"threshold": True}, "p")
    with pytest.raises(ConfigError, match=r"p.other is not a known key — allowed: threshold, mode, name, sizes"):
        build_dataclass(Params, {"other": 1}, "p")


def test_parse_override():
    assert parse_override("a.b=1") == ("a.b", 1)
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a.b=null") == ("a.b", None)
    assert parse_override("a.b=x=y") == ("a.b", "x=y")


# ---------------------------------------------------------------------------- issue 21

def test_data_and_output_dirs_are_resolved_once_to_absolute_paths(tmp_path, monkeypatch):
    from pipeline.config import REPO_DATA_DIR, validate

    monkeypatch.delenv("POSEPIPE_DATA_DIR", raising=False)
    monkeypatch.delenv("POSEPIPE_OUTPUT_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data_dir=mydata", "output_dir=out"])
    assert (cfg.data_dir, cfg.output_dir) == (str(tmp_path / "mydata"), str(tmp_path / "out"))
    assert (cfg.raw["data_dir"], cfg.raw["output_dir"]) == (cfg.data_dir, cfg.output_dir)  # what spawns get
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)               # the detached supervisor validates again: same folders
    again = validate(dict(cfg.raw))
    assert (again.data_dir, again.output_dir) == (cfg.data_dir, cfg.output_dir)
    default = load_config()
    assert default.data_dir == str(REPO_DATA_DIR) and default.output_dir == str(elsewhere)
    monkeypatch.setenv("POSEPIPE_DATA_DIR", "rel-data")
    assert load_config().data_dir == str(elsewhere / "rel-data")


def test_a_worker_data_dir_points_to_the_one_top_level_key():
    with pytest.raises(ConfigError, match="workers.inference.params.data_dir.*top-level data_dir"):
        load_config(None, ["inference.data_dir=/somewhere"])


def test_allow_unsafe_checkpoint_reaches_every_worker_that_loads_weights():
    safe = load_config()
    assert not any(w.params.get("allow_unsafe_checkpoint") for w in safe.workers.values())
    assert not safe.workers["inference"].params_obj.allow_unsafe_checkpoint
    cfg = load_config(None, (), flags={"allow_unsafe_checkpoint": True})
    opted = {n for n, w in cfg.workers.items() if w.params.get("allow_unsafe_checkpoint") is True}
    assert opted == {"inference", "detection"}
    assert cfg.workers["inference"].params_obj.allow_unsafe_checkpoint is True
    assert cfg.workers["detection"].params_obj.allow_unsafe_checkpoint is True


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "example.com", "::"])
def test_the_control_host_is_always_loopback(host):
    with pytest.raises(ConfigError, match="control.host.*always stays on loopback.*also with --listen"):
        load_config(None, ["control.transport=tcp", f"control.host={host!r}"])
    for ok in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert load_config(None, ["control.transport=tcp", f"control.host={ok!r}"]).control.host == ok
