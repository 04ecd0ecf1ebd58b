"""Security defaults (issue 9, architecture.md §12), each enforced here.

* Every listening socket of a running pipeline (supervisor, workers, sinks, Prometheus) is on
  loopback; an explicit non-loopback host is allowed but logged as a warning.
* No code path unpickles: a static `ast` scan of pipeline/, workers/ and tools/ finds every
  call that can run pickle (pickle/marshal/shelve/dill/joblib loads, torch.load, np.load with
  allow_pickle=True, yaml.load, smplx's model loader, torch-tensorrt's engine loader,
  ultralytics' `YOLO(file)`) and allows only the listed places, each with its reason.
* The runtime base dir and the run dir are 0700, ipc socket files and control.json 0600; the
  control token is never on a command line.
* The viewer's only inputs are the condition picker and the record button; nothing reads or
  writes a path.
"""
from __future__ import annotations

import ast
import logging
import os
import re
import stat
from pathlib import Path

import psutil
import pytest

from .conftest import make_config, report

pytestmark = [pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "::1"}

# file -> {unparsed call prefix: why it is acceptable}
ALLOWED_UNSAFE_LOADS = {
    "pipeline/models/checkpoint.py": {
        "torch.load(": "weights_only=True unless the user passes allow_unsafe_checkpoint=True "
                       "(--allow-unsafe-checkpoint); the refusal message explains the risk",
    },
    "pipeline/models/smpl.py": {
        "smplx.SMPL(": "the official SMPL_NEUTRAL.pkl is a pickle by format; it is a licensed file the "
                       "user places in data/smpl/ themselves, never from a socket",
    },
    "tools/export_bvh.py": {
        "smplx.create(": "rest joints from the user's own SMPL model file, given on the command line",
    },
    "pipeline/backends/trt.py": {
        "tt.load(": "a TensorRT engine this program exported itself into <data_dir>/engines/, keyed by "
                    "checkpoint hash and checked against its sidecar's sha256; never from a socket",
    },
    "pipeline/detectors/yolo_model.py": {
        "YOLO(": "only in load_yolo, after ultralytics' own safe loading is on (weights_only=True + its "
                 "layer allow-list) or the user passed --allow-unsafe-checkpoint; refused when neither",
    },
}
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "joblib", "cloudpickle"}
SAFE_PICKLE_ATTRS = {"dumps", "dump", "Pickler", "_Pickler", "UnpicklingError", "PicklingError",
                     "HIGHEST_PROTOCOL", "DEFAULT_PROTOCOL", "PickleError"}


def _source_files():
    for top in ("pipeline", "workers", "tools"):
        yield from sorted((REPO / top).rglob("*.py"))


def _risky_calls(tree: ast.AST):
    """(line, call text, why) for each call that may deserialize code."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                node.value.id in PICKLE_MODULES and node.attr not in SAFE_PICKLE_ATTRS and \
                not node.attr.isupper():  # opcode constants such as pickle.STACK_GLOBAL
            yield node.lineno, ast.unparse(node), f"{node.value.id}.{node.attr}"
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        kwargs = {k.arg: k.value for k in node.keywords if k.arg}
        text = ast.unparse(node)[:160]
        if name in ("torch.load", "torch.jit.load", "torch.export.load", "tt.load", "torch_tensorrt.load"):
            yield node.lineno, text, name
        elif name.endswith(("np.load", "numpy.load")):
            v = kwargs.get("allow_pickle")
            if v is not None and not (isinstance(v, ast.Constant) and v.value is False):
                yield node.lineno, text, "np.load(allow_pickle=...)"
        elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            yield node.lineno, text, name
        elif name.startswith("smplx.") and name.split(".")[-1] in ("SMPL", "SMPLX", "SMPLH", "create"):
            yield node.lineno, text, name
        elif name in ("eval", "exec"):
            yield node.lineno, text, name
        elif name == "YOLO" or name.endswith(".YOLO"):
            first = node.args[0] if node.args else kwargs.get("model")
            built = isinstance(first, ast.Constant) and str(first.value).endswith((".yaml", ".yml"))
            if not built:  # a .yaml is a model description (nothing loaded); anything else is a pickle
                yield node.lineno, text, "ultralytics YOLO(file)"


def test_no_unpickling_outside_the_allowed_places():
    found, allowed_hits = [], []
    for path in _source_files():
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(), filename=rel)
        for line, text, what in _risky_calls(tree):
            allow = ALLOWED_UNSAFE_LOADS.get(rel, {})
            if any(text.startswith(prefix) for prefix in allow):
                allowed_hits.append(f"{rel}:{line}")
                continue
            found.append(f"{rel}:{line}: {text} ({what})")
    assert not found, ("calls that can unpickle untrusted data; remove them or add them to "
                       "ALLOWED_UNSAFE_LOADS with the reason:\n" + "\n".join(found))
    report("static_pickle_scan", files=sum(1 for _ in _source_files()), allowed=allowed_hits)


def test_yolo_weights_are_loaded_only_through_the_safe_loader():
    tree = ast.parse((REPO / "pipeline/detectors/yolo_model.py").read_text())
    loader = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "load_yolo"), None)
    assert loader is not None, "pipeline/detectors/yolo_model.py has no load_yolo: YOLO weights may be unpickled"
    inside = {id(n) for n in ast.walk(loader)}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "YOLO"]
    assert calls and all(id(c) in inside for c in calls), "YOLO(...) called outside load_yolo"
    # the switch is set before ultralytics is imported inside the loader
    body = ast.unparse(loader)
    assert body.index("ULTRALYTICS_SAFE_LOAD") < body.index("from ultralytics import") or \
        body.index("SAFE_LOAD_ENV") < body.index("from ultralytics import")


def test_checkpoint_torch_load_is_weights_only_unless_opted_in():
    tree = ast.parse((REPO / "pipeline/models/checkpoint.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "torch.load"]
    assert calls, "checkpoint.py no longer calls torch.load: update ALLOWED_UNSAFE_LOADS"
    for call in calls:
        kw = {k.arg: ast.unparse(k.value) for k in call.keywords}
        assert kw.get("weights_only") == "not allow_unsafe_checkpoint", ast.unparse(call)
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "read_checkpoint")
    default = {a.arg: d for a, d in zip(fn.args.args[::-1], fn.args.defaults[::-1])}["allow_unsafe_checkpoint"]
    assert isinstance(default, ast.Constant) and default.value is False


def test_a_pickle_checkpoint_with_code_is_refused(tmp_path):
    import pickle

    from pipeline.models.checkpoint import CheckpointError, read_checkpoint

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    import torch

    torch.save({"model": Boom()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="allow_unsafe_checkpoint"):
        read_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_socket_decoders_use_no_pickle():
    for rel in ("pipeline/runtime/messages.py", "pipeline/runtime/control.py", "pipeline/client.py", "pipeline/sinks/native.py"):
        tree = ast.parse((REPO / rel).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                    for a in n.names} | {n.module.split(".")[0] for n in ast.walk(tree)
                                         if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & PICKLE_MODULES, f"{rel} imports {imported & PICKLE_MODULES}"


def _listening(pids):
    found = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.Error:
            continue
        found += [(pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


def test_running_pipeline_listens_on_loopback_only_and_files_are_private(live, tmp_path, pipeline_env):
    config = make_config(tmp_path / "sec.yaml")
    text = config.read_text().replace("sinks:\n", "sinks:\n  viewer: {port: 0, image_hz: 0}\n")
    config.write_text(text + "control: {transport: tcp}\n")
    p = live(config, "--viewer")  # the test env turns the viewer off (POSEPIPE_VIEWER=0); the flag wins
    status = p.status()
    pids = [status["pid"]] + [w["pid"] for w in status["workers"]]
    listening = _listening(pids)
    assert len(listening) >= 5, listening  # router + events PUB + native + viewer + Prometheus
    public = [x for x in listening if x[1] not in LOOPBACK]
    assert not public, f"listening beyond loopback: {public}"
    assert p.endpoints["router"].startswith("tcp://127.0.0.1:")
    # Files: 0700 dirs (also when the control plane is tcp), nothing group/world readable.
    base, run = p.run.path.parent, p.run.path
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert stat.S_IMODE((run / "control.json").stat().st_mode) == 0o600
    # The control token is in that private file and nowhere other users can read it (argv).
    token = p.endpoints["token"]
    assert len(token) >= 32
    for pid in pids:
        assert token not in " ".join(psutil.Process(pid).cmdline())
    assert p.stop().returncode == 0
    report("listening_sockets", sockets=[f"{ip}:{port}" for _, ip, port in listening])


def test_ipc_socket_files_are_0600(live, reliable_config):
    p = live(reliable_config)
    run = p.run.path
    socks = [s for s in run.iterdir() if s.is_socket()]
    assert len(socks) >= 2, list(run.iterdir())
    modes = {s.name: oct(stat.S_IMODE(s.stat().st_mode)) for s in socks}
    assert set(modes.values()) == {"0o600"}, modes
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    # No listening inet socket but the native stream (control is ipc here).
    status = p.status()
    listening = _listening([status["pid"]] + [w["pid"] for w in status["workers"]])
    assert all(ip in LOOPBACK for _, ip, _ in listening), listening
    assert p.stop().returncode == 0


@pytest.mark.parametrize("server", ["native", "viewer", "prometheus"])
def test_explicit_non_loopback_host_is_logged_as_a_warning(server, caplog):
    caplog.set_level(logging.WARNING)
    if server == "native":
        from pipeline.sinks.native import NativeSink

        sink = NativeSink("tcp://0.0.0.0:0")
        sink.open()
        sink.close()
    elif server == "viewer":
        from pipeline.sinks.viewer import ViewerSink

        sink = ViewerSink(host="0.0.0.0", port=0, image_hz=0)
        sink.open()
        sink.close()
    else:
        from pipeline.metrics.prometheus import PrometheusExporter

        exporter = PrometheusExporter()
        exporter.serve("0.0.0.0", 0)
        getattr(exporter, "close", lambda: None)()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("0.0.0.0" in m for m in warnings), warnings


def test_viewer_exposes_no_path_reading_or_writing_action():
    from pipeline.metrics.seedcsv import CONDITIONS as SEED_CONDITIONS  # noqa: F401
    from pipeline.sinks import viewer as viewer_mod
    from pipeline.sinks.viewer import CONDITIONS, ViewerSink

    calls = []
    sink = ViewerSink(host="127.0.0.1", port=0, image_hz=0, on_record=lambda c, s: calls.append((c, s)) or "ok")
    sink.open()
    try:
        handles = list(sink.server.gui._gui_input_handle_from_uuid.values())
        kinds = sorted({type(h).__name__ for h in handles})
        assert not [k for k in kinds if "Upload" in k or "File" in k], kinds
        editable = sorted(h.label for h in handles if not getattr(h, "disabled", False))
        assert editable == sorted(["Condition", "Record last 5 s"]), editable
        assert tuple(sink._gui["condition"].options) == tuple(CONDITIONS)
        # A client that forges the dropdown value cannot smuggle a path into the record request.
        sink._gui["condition"]._impl.value = "../../../tmp/evil.csv"
        assert sink.request_record().startswith("error: unknown condition")
        assert calls == []
        sink._gui["condition"].value = CONDITIONS[0]
        assert sink.request_record() == "ok" and calls == [(CONDITIONS[0], viewer_mod.RECORD_SECONDS)]
    finally:
        sink.close()
    # And no file access anywhere in the viewer modules.
    for rel in ("pipeline/sinks/viewer.py", "pipeline/sinks/viewer_scene.py"):
        tree = ast.parse((REPO / rel).read_text())
        touching = [ast.unparse(n)[:80] for n in ast.walk(tree) if isinstance(n, ast.Call) and
                    (ast.unparse(n.func) in ("open", "os.remove", "os.unlink", "shutil.rmtree", "np.save", "np.load")
                     or ast.unparse(n.func).endswith((".write_text", ".write_bytes", ".read_text", ".read_bytes",
                                                      ".unlink", ".open")))]
        assert not touching, f"{rel} touches files: {touching}"


# ------------------------------------------------------------------------------ --listen

def _cfg(tmp_path, text=""):
    from pipeline.config import load_config
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path if text else None, ())


def test_servers_of_the_default_config_are_all_on_loopback(tmp_path):
    from pipeline.cli.listen import refuse_non_loopback, servers
    cfg = _cfg(tmp_path, "sinks:\n  viewer: {port: 8080}\n")
    found = {s.what: s.host for s in servers(cfg)}
    assert found == {"native stream": "127.0.0.1", "viewer": "127.0.0.1", "Prometheus": "127.0.0.1"}
    refuse_non_loopback(cfg)  # no error


@pytest.mark.parametrize("text, key", [
    ("sinks:\n  native: {endpoint: 'tcp://0.0.0.0:5560'}\n", "sinks.native.endpoint"),
    ("sinks:\n  viewer: {host: 192.168.1.20}\n", "sinks.viewer.host"),
    ("workers:\n  metrics: {module: workers.metrics, params: {prometheus_host: 0.0.0.0}}\n",
     "workers.metrics.params.prometheus_host"),
    ("control: {transport: tcp, host: 10.0.0.5}\n", "control.host"),
])
def test_non_loopback_without_listen_is_refused_naming_key_and_flag(tmp_path, text, key):
    from pipeline.config import ConfigError
    from pipeline.cli.listen import refuse_non_loopback
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}.*--listen"):
        refuse_non_loopback(_cfg(tmp_path, text))


def test_listen_moves_every_server_and_keeps_ports(tmp_path):
    from pipeline.config import load_config
    from pipeline.cli.listen import check_host, listen_overrides, listen_warning, servers
    path = tmp_path / "c.yaml"
    path.write_text("sinks:\n  native: {endpoint: 'tcp://127.0.0.1:5999'}\n  viewer: {port: 8090}\n")
    cfg = load_config(path, ())
    moved = load_config(path, tuple(listen_overrides(cfg, check_host("0.0.0.0"))))
    got = {s.what: (s.host, str(s.port)) for s in servers(moved)}
    assert got == {"native stream": ("0.0.0.0", "5999"), "viewer": ("0.0.0.0", "8090"),
                   "Prometheus": ("0.0.0.0", "9100")}
    warning = listen_warning(moved, "0.0.0.0")
    assert "other machines" in warning and "control socket stays local" in warning
    six = load_config(path, tuple(listen_overrides(cfg, check_host("::"))))
    assert moved.sinks["native"]["endpoint"] == "tcp://0.0.0.0:5999"
    assert six.sinks["native"]["endpoint"] == "tcp://[::]:5999"


@pytest.mark.parametrize("bad", ["", "not a host!", "tcp://0.0.0.0", "-leading-dash"])
def test_listen_rejects_what_is_not_a_host(bad):
    from pipeline.config import ConfigError
    from pipeline.cli.listen import check_host
    with pytest.raises(ConfigError, match="--listen"):
        check_host(bad)


def test_start_refuses_a_public_config_and_listen_warns(run_cli, tmp_path, pipeline_env):
    config = tmp_path / "c.yaml"
    config.write_text("sinks:\n  native: {endpoint: 'tcp://0.0.0.0:0'}\n")
    proc = run_cli("start", "--config", config, "--seconds", "1", timeout=60)
    assert proc.returncode != 0 and "--listen 0.0.0.0" in proc.stderr, proc.stderr
    proc = run_cli("start", "--config", config, "--listen", "not a host!", "--seconds", "1", timeout=60)
    assert proc.returncode != 0 and "--listen 'not a host!'" in proc.stderr, proc.stderr
    # asked for: it starts, on every interface, and says so
    fast = make_config(tmp_path / "fast.yaml")
    proc = run_cli("start", "--config", fast, "--listen", "0.0.0.0", "--seconds", "3", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "warning: --listen 0.0.0.0: the native stream (0.0.0.0:" in proc.stderr, proc.stderr
