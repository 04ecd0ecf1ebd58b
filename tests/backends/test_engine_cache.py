import json

import pytest

from pipeline.backends.engine_cache import (EngineCache, EngineKey, checkpoint_identity,
                                            resolve_stale, sha256_file)


def key(**kw):
    base = dict(kind="trt", checkpoint="random-seed-0", variant="cliff", precision="fp16",
                min_batch=1, max_batch=8, device_name="NVIDIA H100 80GB HBM3",
                runtime_version="tensorrt-10.3.0/torch_tensorrt-2.4.0")
    base.update(kw)
    return EngineKey(**base)


def write(content: bytes):
    def _w(path):
        path.write_bytes(content)
    return _w


def test_checkpoint_identity_hashes_file_or_names_seed(tmp_path):
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"weights")
    assert checkpoint_identity(ckpt) == "sha256:" + sha256_file(ckpt)
    assert checkpoint_identity(None, seed=3) == "random-seed-3"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint_identity(tmp_path / "missing.pt")


@pytest.mark.parametrize("field,value", [
    ("checkpoint", "sha256:abc"), ("variant", "pare"), ("precision", "fp32"), ("max_batch", 4),
    ("device_name", "NVIDIA A100"), ("runtime_version", "tensorrt-10.4.0/torch_tensorrt-2.5.0"),
    ("min_batch", 2), ("extra", (("opt_batch", 2),)),
])
def test_every_key_field_changes_the_digest(field, value):
    assert key().digest() != key(**{field: value}).digest()
    assert key().digest() == key().digest()


def test_key_roundtrip_and_validation():
    k = key(extra=(("opset", 18),))
    assert EngineKey.from_dict(json.loads(json.dumps(k.as_dict()))) == k
    with pytest.raises(ValueError, match="precision"):
        key(precision="bf16")
    with pytest.raises(ValueError, match="batch range"):
        key(min_batch=5, max_batch=4)
    with pytest.raises(ValueError, match="unknown engine key fields"):
        EngineKey.from_dict({**k.as_dict(), "colour": "red"})


def test_miss_store_hit(tmp_path):
    cache = EngineCache(tmp_path, ext="ep")
    k = key()
    first = cache.lookup(k)
    assert first.status == "miss"
    path = cache.store(k, write(b"engine-bytes"))
    assert path == first.engine_path and path.read_bytes() == b"engine-bytes"
    sidecar = json.loads(cache.sidecar_for(path).read_text())
    assert sidecar["key"] == k.as_dict() and sidecar["engine_sha256"] == sha256_file(path)
    assert cache.lookup(k).status == "hit"
    assert cache.lookup(key(precision="fp32")).status == "miss"  # other key -> other file


def test_foreign_engine_is_stale_and_says_why(tmp_path):
    cache = EngineCache(tmp_path, ext="ep")
    built_on_a100 = key(device_name="NVIDIA A100")
    path = cache.store(built_on_a100, write(b"x"), engine_path=tmp_path / "mine.ep")
    found = cache.lookup(key(), engine_path=path)
    assert found.status == "stale"
    assert "device_name" in found.reason and "NVIDIA A100" in found.reason


def test_engine_without_sidecar_or_tampered_is_stale(tmp_path):
    cache = EngineCache(tmp_path, ext="ep")
    k = key()
    path = cache.store(k, write(b"good"))
    path.write_bytes(b"truncat")
    assert cache.lookup(k).status == "stale" and "hash" in cache.lookup(k).reason
    cache.sidecar_for(path).write_text("{not json")
    assert cache.lookup(k).status == "stale" and "unreadable" in cache.lookup(k).reason
    cache.sidecar_for(path).unlink()
    assert "no key sidecar" in cache.lookup(k).reason


def test_failed_build_leaves_nothing(tmp_path):
    cache = EngineCache(tmp_path, ext="ep")

    def boom(path):
        path.write_bytes(b"half")
        raise RuntimeError("builder crashed")

    with pytest.raises(RuntimeError, match="builder crashed"):
        cache.store(key(), boom)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="wrote nothing"):
        cache.store(key(), lambda p: None)
    assert list(tmp_path.iterdir()) == []


def test_stale_policy(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(key(device_name="other"), write(b"x"), engine_path=tmp_path / "e.engine")
    stale = cache.lookup(key(), engine_path=tmp_path / "e.engine")
    assert resolve_stale(stale, "rebuild") is True
    with pytest.raises(RuntimeError, match="refusing stale engine.*pipeline export"):
        resolve_stale(stale, "refuse")
    with pytest.raises(ValueError, match="on_stale"):
        resolve_stale(stale, "ignore")
