"""`pipeline record` against a stand-in supervisor (a real ControlServer answering `set`)."""
import threading

import pytest
from click.testing import CliRunner

from pipeline.runtime.messages import Command, Reply
from pipeline.metrics.record_cmd import RecordError, build_request, record, send_record
from pipeline.metrics.seedcsv import MetricsCsvError


def test_build_request_resolves_paths(tmp_path):
    req = build_request("low light", None, 5, "out.csv", cwd=tmp_path)
    assert req == {"condition": "Low Light", "seconds": 5.0, "csv": str(tmp_path / "out.csv")}
    req = build_request("Custom", "dusk", 2, None, cwd=tmp_path)
    # no --csv: the worker writes the seed's file into the run's output folder, not a folder we name
    assert "directory" not in req and "csv" not in req and req["condition"] == "Custom: dusk"
    with pytest.raises(MetricsCsvError, match="allowed: Optimal"):
        build_request("Sunny", None, 5, None, cwd=tmp_path)
    with pytest.raises(MetricsCsvError, match="does not exist"):
        build_request("Optimal", None, 5, "missing/out.csv", cwd=tmp_path)
    with pytest.raises(RecordError, match="seconds"):
        build_request("Optimal", None, 0, None, cwd=tmp_path)


def test_record_with_nothing_running(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEPIPE_RUNTIME_DIR", str(tmp_path / "rt"))
    res = CliRunner().invoke(record, ["--condition", "Optimal"])
    assert res.exit_code != 0 and "no pipeline is running" in res.output
    res = CliRunner().invoke(record, ["--condition", "Darkness"])
    assert res.exit_code != 0 and "allowed: Optimal, Low Light" in res.output


def test_send_record_through_control_server(tmp_path):
    from pipeline.runtime.control import ControlServer

    server = ControlServer({"router": "tcp://127.0.0.1:*", "events": "tcp://127.0.0.1:*"}, "secret")
    seen = []
    done = threading.Event()

    def serve():
        while not done.is_set():
            for ident, msg in server.poll(0.05):
                if isinstance(msg, Command):
                    seen.append(msg)
                    server.send(ident, Reply(msg.id, True, {"key": "record", "value": {"path": "/x.csv",
                                                                                        "row": {"Condition": "Optimal"}}}))
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        reply = send_record({"condition": "Optimal", "seconds": 5.0}, endpoint=server.endpoints["router"],
                            token="secret")
    finally:
        done.set()
        t.join(2)
        server.close()
    assert reply["path"] == "/x.csv"
    assert seen[0].cmd == "set" and seen[0].args["worker"] == "metrics" and seen[0].args["key"] == "record"
