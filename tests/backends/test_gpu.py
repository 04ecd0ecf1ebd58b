"""CUDA-only checks (skipped without a GPU; run by tools/device/run_bench.sh on the device machine).

Agreement is measured on a calibrated random POCO-CLIFF checkpoint against eager fp32 with
TF32 off, as max abs difference of rotation-matrix entries. Two bounds:
- ROT_TOL_FP16 = 3e-2, issue 11's requirement on fp16, where fp16 itself is what is tested
  (the eager fp16 island) and for trt, which has never run anywhere yet;
- ROT_TOL_BACKEND_FP16 = 2e-3 where the point is that a backend runs the same network (compile,
  cuDNN fusion, cudagraph on 1..8 streams, batch splits): measured 6.5e-4 .. 7.1e-4 on an H100
  (tools/device/results/h100_gpu_tests_run2.log, h100_gpu_tests_run3_full.log), so a wrong
  fusion or a missing stream wait cannot hide under the fp16 allowance.
fp32 backends are held to ROT_TOL_FP32.
"""
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.backends.base import BackendConfig, BackendUnavailable  # noqa: E402

pytestmark = pytest.mark.gpu
ROT_TOL_FP16 = 3e-2
ROT_TOL_BACKEND_FP16 = 2e-3
ROT_TOL_FP32 = 1e-4


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return Path(os.environ.get("POSEPIPE_CACHE_DIR") or tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def cliff_checkpoint(cache_dir):
    from pipeline.testing import make_checkpoint
    path = cache_dir / "poco_cliff_random_calibrated.pt"  # same name as tools/bench.py: made once
    if not path.exists():
        make_checkpoint("cliff", path, calibrate_bn=True, seed=0)
    return path


def crops(n, seed=0):
    from pipeline.models.preprocess import normalise
    from pipeline.testing.checkpoints import synthetic_images
    img = torch.from_numpy(normalise(synthetic_images(n, seed=seed)))
    rng = np.random.default_rng(seed)
    return img, torch.from_numpy((rng.standard_normal((n, 3)) * 0.3).astype(np.float32))


def eager_fp32(checkpoint, img, bbox):
    from pipeline.models import load_poco
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model = load_poco("cliff", checkpoint, "cuda")
    with torch.inference_mode():
        out = model(img.cuda(), bbox.cuda())
    return {k: v.float().cpu().numpy() for k, v in out.items()}


def warmed(backend_cls, cfg):
    be = backend_cls(cfg)
    be.load()
    be.warmup()
    return be, be.info()


def max_diff(a, b, key):
    d = np.abs(a[key].astype(np.float64) - b[key])
    assert np.isfinite(d).all(), f"{key} has NaN/inf"
    return float(d.max())


def assert_agrees(be, checkpoint, img, bbox, label, note="", tol=ROT_TOL_BACKEND_FP16):
    """`be`'s outputs for these crops against eager fp32, within `tol`; returns them."""
    ref = eager_fp32(checkpoint, img, bbox)
    got = be.infer(img.cuda(), bbox.cuda())
    rot = max_diff(got, ref, "pred_pose")
    print(f"{label} vs eager fp32: rotmat {rot:.3e}, betas {max_diff(got, ref, 'pred_shape'):.3e}{note}")
    assert rot <= tol, f"{label}: rotmat {rot:.3e} > {tol:.0e}"
    return got


def test_compile_fp16_agrees_with_eager_fp32_and_splits(cliff_checkpoint, cache_dir):
    from pipeline.backends.compile import CompileBackend
    cfg = BackendConfig(model="cliff", checkpoint=str(cliff_checkpoint), device="cuda", precision="fp16",
                        max_batch=2, cache_dir=str(cache_dir))
    be, info = warmed(CompileBackend, cfg)
    assert info["warmed_up"] and info["batch_sizes"] == [1, 2] and info["precision"] == "fp16"
    img, bbox = crops(5)  # 5 > max_batch: split 2+2+1
    got = assert_agrees(be, cliff_checkpoint, img, bbox, "compile fp16", f", warm-up {info['warmup_s']} s")
    # numpy input and batch 1 give the same rows
    one = be.infer(img[:1].numpy(), bbox[:1].numpy())
    assert np.abs(one["pred_pose"] - got["pred_pose"][:1]).max() <= ROT_TOL_BACKEND_FP16
    be.close()


def test_compile_fp32_runs_fp32(cliff_checkpoint, cache_dir):
    # issue 22 item 7: precision=fp32 is honoured (it used to become fp16 silently)
    from pipeline.backends.compile import CompileBackend
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    cfg = BackendConfig(model="cliff", checkpoint=str(cliff_checkpoint), device="cuda", precision="fp32",
                        max_batch=1, cache_dir=str(cache_dir))
    be, info = warmed(CompileBackend, cfg)
    assert info["precision"] == "fp32" and info["precision_detail"] == "fp32", info
    assert info["bn_folded"] == 325 and info["bn_left"] == 0, info
    img, bbox = crops(1, seed=3)
    assert_agrees(be, cliff_checkpoint, img, bbox, "compile fp32", tol=ROT_TOL_FP32)
    be.close()


def test_eager_fp16_island_agrees(cliff_checkpoint):
    from pipeline.backends import network as net
    from pipeline.models import load_poco
    img, bbox = crops(4, seed=1)
    ref = eager_fp32(cliff_checkpoint, img, bbox)
    prepared = net.prepare_network(load_poco("cliff", cliff_checkpoint, "cuda"), "fp16", channels_last=True)
    with torch.inference_mode():
        flat = net.FlatNetwork(prepared.module, channels_last=True)(img.cuda(), bbox.cuda())
    got = net.split_flat(flat.cpu().numpy())
    assert max_diff(got, ref, "pred_pose") <= ROT_TOL_FP16   # issue 11's fp16 requirement


def test_oom_at_warmup_names_what_to_lower(tmp_path):
    from pipeline.backends.compile import CompileBackend
    from standin import standin_factory
    cfg = BackendConfig(model="cliff", device="cuda", precision="fp16", max_batch=3,
                        cache_dir=str(tmp_path), options={"network_factory": standin_factory})
    be = CompileBackend(cfg)
    be.load()

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    be._run = oom
    with pytest.raises(RuntimeError, match=r"max_persons.*now 3"):
        be.warmup()


def test_compile_standin_every_batch_size_matches_eager(tmp_path):
    from pipeline.backends.compile import CompileBackend
    from standin import make_standin, standin_factory
    cfg = BackendConfig(model="cliff", device="cuda", max_batch=4, cache_dir=str(tmp_path),
                        options={"network_factory": standin_factory,
                                 "batch_sizes": "pow2"})
    be = CompileBackend(cfg)
    be.load()
    be.warmup()
    model = make_standin(0).cuda()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for n in (1, 3, 4, 7):
        img, bbox = crops(n, seed=n)
        with torch.inference_mode():
            ref = {k: v.cpu().numpy() for k, v in model(img.cuda(), bbox.cuda()).items()}
        got = be.infer(img.cuda(), bbox.cuda())
        assert max_diff(got, ref, "pred_pose") < 1e-3, n


def test_trt_agrees_or_says_what_is_missing(cliff_checkpoint, cache_dir):
    from pipeline.backends.trt import TrtBackend
    cfg = BackendConfig(model="cliff", checkpoint=str(cliff_checkpoint), device="cuda", precision="fp16",
                        max_batch=2, cache_dir=str(cache_dir))
    be = TrtBackend(cfg)
    try:
        be.load()
    except BackendUnavailable as exc:
        assert "posepipe[trt]" in str(exc)
        pytest.skip(f"TensorRT not installed on this GPU machine: {exc}")
    be.warmup()
    img, bbox = crops(3, seed=2)  # 3 > max_batch=2: split
    assert_agrees(be, cliff_checkpoint, img, bbox, "trt fp16", tol=ROT_TOL_FP16)  # never run yet: tighten after
    again = TrtBackend(cfg)
    again.load()
    assert again.info()["engine_built"] is False


def test_compile_with_cudnn_fusion_agrees(cliff_checkpoint, cache_dir):
    from pipeline.backends.compile import CompileBackend
    cfg = BackendConfig(model="cliff", checkpoint=str(cliff_checkpoint), device="cuda", precision="fp16",
                        max_batch=2, cache_dir=str(cache_dir), options={"cudnn_fusion": True})
    be = CompileBackend(cfg)
    be.load()
    be.warmup()
    fused = be.info()["cudnn_fusion"]
    assert fused["conv_relu"] > 100 and fused["conv_add_relu"] > 100
    img, bbox = crops(3, seed=4)
    assert_agrees(be, cliff_checkpoint, img, bbox, "compile fp16 + cuDNN fusion")
    be.close()


def test_submit_returns_early_and_results_come_back_in_order(tmp_path):
    from pipeline.backends.compile import CompileBackend
    from standin import standin_factory
    cfg = BackendConfig(model="cliff", device="cuda", max_batch=2, cache_dir=str(tmp_path),
                        options={"network_factory": standin_factory})
    be = CompileBackend(cfg)
    be.load()
    be.warmup()
    assert be.asynchronous
    batches = [crops(n, seed=10 + n) for n in (1, 2, 1)]
    want = [be.infer(img.cuda(), bbox.cuda()) for img, bbox in batches]
    jobs = [be.submit(img.cuda(), bbox.cuda()) for img, bbox in batches[:2]]
    got0 = jobs[0].result()            # two in flight, read in order
    jobs.append(be.submit(*(t.cuda() for t in batches[2])))
    for got, ref in zip([got0, jobs[1].result(), jobs[2].result()], want):
        assert max_diff(got, ref, "pred_pose") < 1e-5
    stale = be.submit(*(t.cuda() for t in batches[0]))
    for _ in range(3):                 # its host buffer is reused by three later batches
        be.submit(*(t.cuda() for t in batches[1])).result()
    with pytest.raises(RuntimeError, match="reused"):
        stale.result()
    be.close()


@pytest.mark.parametrize("streams", [8, 1])
def test_cudagraph_agrees_with_eager_fp32_and_splits(cliff_checkpoint, streams):
    from pipeline.backends.cudagraph import CudaGraphBackend
    cfg = BackendConfig(model="cliff", checkpoint=str(cliff_checkpoint), device="cuda", precision="fp16",
                        max_batch=2, options={"streams": streams})
    be = CudaGraphBackend(cfg)
    be.load()
    be.warmup()
    assert be.wait_background(120), "background captures did not finish"   # deterministic replays below
    info = be.info()
    assert info["warmed_up"] and info["batch_sizes"] == [1, 2] and info["streams"] == streams
    assert info["captured"] == [1, 2] and "background_error" not in info
    assert info["cudnn_fusion"]["conv_relu"] > 100
    img, bbox = crops(5, seed=7)  # 5 > max_batch: split 2+2+1
    got = assert_agrees(be, cliff_checkpoint, img, bbox, f"cudagraph ({streams} streams) fp16",
                        f", warm-up {info['warmup_s']} s, plan {info['stream_plan']}")
    again = be.infer(img.numpy(), bbox.numpy())   # replays are deterministic
    assert max_diff(again, got, "pred_pose") <= 1e-5
    jobs = [be.submit(img[:1].cuda(), bbox[:1].cuda()), be.submit(img[1:3].cuda(), bbox[1:3].cuda())]
    assert max_diff(jobs[0].result(), {k: v[:1] for k, v in got.items()}, "pred_pose") <= ROT_TOL_BACKEND_FP16
    assert max_diff(jobs[1].result(), {k: v[1:3] for k, v in got.items()}, "pred_pose") <= ROT_TOL_BACKEND_FP16
    be.close()


def test_streamed_graph_replays_exactly_like_the_serial_graph():
    """Two independent conv chains joined by an add, run on 3 streams inside a CUDA graph."""
    from pipeline.backends.branch_streams import StreamedGraph

    class TwoChains(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Sequential(*[torch.nn.Conv2d(16, 16, 3, padding=1) for _ in range(6)])
            self.b = torch.nn.Sequential(*[torch.nn.Conv2d(16, 16, 3, padding=1) for _ in range(6)])

        def forward(self, x):
            return torch.relu(self.a(x)) + self.b(x * 2)

    gm = torch.fx.symbolic_trace(TwoChains().cuda().eval())
    streamed = StreamedGraph(gm, 3)
    assert streamed.plan.streams_used >= 2 and streamed.plan.depth < streamed.plan.nodes
    x = torch.randn(2, 16, 64, 64, device="cuda")
    with torch.inference_mode():
        want = gm(x)
        assert torch.equal(streamed(x), want)
        graph = torch.cuda.CUDAGraph()
        static = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            streamed(static)
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph):
            out = streamed(static)
        for seed in range(3):
            static.copy_(torch.randn(2, 16, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(seed)))
            graph.replay()
            assert torch.equal(out, gm(static))


def test_cudagraph_captures_what_the_first_frames_need_and_the_rest_in_the_background(cliff_checkpoint):
    """Issue 18: `ready` after batch 1 (and the persons in view), not after every size; a batch
    of a size not captured yet runs at once as chunks of captured sizes, with the same result."""
    import time

    from pipeline.backends.cudagraph import CudaGraphBackend
    cfg = BackendConfig(model="cliff", checkpoint=str(cliff_checkpoint), device="cuda", precision="fp16",
                        max_batch=8, warm_batches=(1, 3))
    be = CudaGraphBackend(cfg)
    be.load()
    t0 = time.perf_counter()
    be.warmup()
    warm_s = time.perf_counter() - t0
    first = be.info()
    assert set(first["warmup_per_size_s"]) >= {1, 3} and 1 in first["captured"] and 3 in first["captured"]
    img, bbox = crops(5, seed=11)
    early = be.infer(img.numpy(), bbox.numpy())     # 5 not captured yet (unless the thread was quick)
    assert be.wait_background(300), "background captures did not finish"
    info = be.info()
    assert info["captured"] == list(range(1, 9)) and info["background_pending"] == []
    late = be.infer(img.numpy(), bbox.numpy())      # now one graph of 5
    assert max_diff(late, early, "pred_pose") <= ROT_TOL_BACKEND_FP16
    assert_agrees(be, cliff_checkpoint, img, bbox, "cudagraph lazy capture",
                  f", ready after {warm_s:.1f} s (sizes {first['captured']}), all 8 sizes after "
                  f"{sum(info['warmup_per_size_s'].values()):.1f} s of captures")
    be.close()


def test_cudagraph_without_background_capture_captures_every_size_before_ready(cliff_checkpoint):
    from pipeline.backends.cudagraph import CudaGraphBackend
    cfg = BackendConfig(model="cliff", checkpoint=str(cliff_checkpoint), device="cuda", precision="fp16",
                        max_batch=3, options={"background_capture": False})
    be = CudaGraphBackend(cfg)
    be.load()
    be.warmup()
    assert be.info()["captured"] == [1, 2, 3] and be.info()["background_pending"] == []
    be.close()
