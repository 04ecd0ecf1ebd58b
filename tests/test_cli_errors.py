"""Bad input at the CLI: one clear error line on stderr, a non-zero exit, nothing left running
(the pipeline_env fixture checks processes, rings, sockets and run directories)."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.timeout(60)]


def _one_error(proc, *needles):
    assert proc.returncode != 0, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("args, needles", [
    (["bogus.key=1"], ["bogus is not a known key", "allowed: source, rings"]),
    (["workers.capture.restart=sometimes"], ["workers.capture.restart = 'sometimes'",
                                             "allowed: never, on-failure, always"]),
    (["rings.max_persons=abc"], ["rings.max_persons = 'abc'", "expected an integer"]),
    (["workers.capture.health_timeout=-1"], ["workers.capture.health_timeout", "must be > 0"]),
    (["inference.bogus=3"], ["workers.inference.params.bogus is not a known key", "allowed: model, checkpoint, backend"]),
    (["sinks.nosuch.x=1"], ["sinks.nosuch is not a known sink"]),
    (["--model", "poco-hmr"], ["workers.inference.params.model = 'poco-hmr'", "allowed: poco-cliff, poco-pare"]),
    (["--detector", "hog"], ["workers.detection.params.kind = 'hog'", "allowed: auto, yolo"]),
    (["--config", "/nonexistent.yaml"], ["/nonexistent.yaml", "does not exist"]),
    (["--source", "/nonexistent/clip.mp4"], ["/nonexistent/clip.mp4", "no such file"]),
    (["--source", "99"], ["camera 99"]),
    (["--source", "rtsp://127.0.0.1:9/x", "source.options={retries: 2, open_timeout: 1, backoff: 0.1}"],
     ["rtsp://127.0.0.1:9/x", "after 2 attempts"]),
])
def test_start_rejects_bad_input(run_cli, args, needles):
    _one_error(run_cli("start", "--seconds", "2", *args), *needles)


def test_unreadable_image_folder(run_cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    _one_error(run_cli("start", "--seconds", "2", "--source", empty), str(empty))


def test_bad_yaml_file(run_cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: [unclosed\n")
    _one_error(run_cli("start", "--config", bad), "not valid YAML")
    bad.write_text("rings:\n  frames: {slots: many}\n")
    _one_error(run_cli("start", "--config", bad), "rings.frames.slots = 'many'", "expected an integer")


@pytest.mark.parametrize("cmd", [["stop"], ["status"], ["set", "inference", "profile=1"], ["pause", "capture"]])
def test_commands_with_nothing_running(run_cli, cmd):
    _one_error(run_cli(*cmd), "no pipeline is running")


def test_watch_with_nothing_publishing(run_cli):
    _one_error(run_cli("watch", "--endpoint", "tcp://127.0.0.1:9", "--timeout", "0.5"), "nothing arrived")


def test_worker_setup_failure_is_one_line_and_cleans_up(run_cli, tmp_path):
    # A source that passes the early check but fails in the worker (checks skipped on purpose).
    _one_error(run_cli("start", "--no-check", "--seconds", "5", "--source", "/nonexistent/clip.mp4"),
               "worker capture", "could not start", "no such file")


def test_doctor_runs_without_weights(run_cli):
    proc = run_cli("doctor")
    assert proc.returncode == 0, proc.stderr
    for needle in ("python", "torch", "cuda", "poco_cliff.pt", "backends", "detectors"):
        assert needle in proc.stdout


@pytest.mark.parametrize("cmd", ["start", "swap", "export"])
def test_allow_unsafe_checkpoint_is_a_real_flag(run_cli, cmd):
    proc = run_cli(cmd, "--help")
    assert proc.returncode == 0 and "--allow-unsafe-checkpoint" in proc.stdout, proc.stdout + proc.stderr


def test_a_public_control_host_is_refused_even_with_listen(run_cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("control: {transport: tcp, host: 0.0.0.0}\n")
    for extra in ((), ("--listen", "0.0.0.0")):
        _one_error(run_cli("start", "--config", config, *extra, "--seconds", "1"), "control.host", "loopback")
