from pathlib import Path

import pytest

from standin import standin_factory

from pipeline.backends import export as export_tool


def test_export_onnx_builds_then_reuses_then_forces(shared_cache):
    # Same key as the other tests' shared engine (stand-in, seed 0, max 4): built at most once.
    kw = dict(model="cliff", device="cpu", max_persons=4, cache_dir=str(shared_cache),
              options={"network_factory": standin_factory})
    first = export_tool.export_engine("onnx", **kw)
    assert Path(first["engine"]).exists()
    assert Path(first["engine"] + ".json").exists()
    assert not export_tool.export_engine("onnx", **kw)["engine_built"]
    assert export_tool.export_engine("onnx", force=True, **kw)["engine_built"]


def test_export_cli_errors_are_one_line(capsys):
    assert export_tool.main(["--backend", "trt", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("export failed: backend 'trt' cannot run here")
    with pytest.raises(ValueError, match="compile backend caches"):
        export_tool.export_engine("compile")
