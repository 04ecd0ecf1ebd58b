import numpy as np
import pytest
import torch

from pipeline.backends.gpu_preprocess import GpuCropper
from pipeline.models.preprocess import crop_torch


def frame(h=240, w=320, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def reference(f, centres, sides):
    t = torch.from_numpy(f).permute(2, 0, 1)
    return crop_torch(t, centres, sides)


def test_batched_single_grid_matches_crop_torch():
    f = frame()
    centres = np.array([[160, 120], [30, 20], [300, 230]], dtype=np.float64)  # 2 boxes hang off the frame
    sides = np.array([100, 80, 150], dtype=np.float64)
    got = GpuCropper("cpu", 480, 640).crops(f, centres, sides)
    ref = reference(f, centres, sides)
    assert got.shape == (3, 3, 224, 224) and got.dtype == torch.float32
    assert (got - ref).abs().max().item() < 1e-3


def test_staging_reused_for_smaller_frames_and_bad_input():
    cropper = GpuCropper("cpu", 480, 640)
    big, small = frame(480, 640, 1), frame(100, 50, 2)
    cropper.crops(big, [[320, 240]], [200])
    got = cropper.crops(small, [[25, 50]], [60])
    assert (got - reference(small, [[25, 50]], [60])).abs().max().item() < 1e-3
    with pytest.raises(ValueError, match="larger than"):
        cropper.crops(frame(481, 10), [[1, 1]], [5])
    with pytest.raises(ValueError, match="uint8"):
        cropper.crops(small.astype(np.float32), [[1, 1]], [5])
    with pytest.raises(ValueError, match="sides > 0"):
        cropper.crops(small, [[1, 1]], [0])
    with pytest.raises(ValueError, match="N>=1"):
        cropper.crops(small, np.zeros((0, 2)), [])


@pytest.mark.gpu
def test_cuda_cropper_matches_cpu():
    f = frame(1080, 1920, 3)
    centres, sides = np.array([[900, 500], [200, 300]]), np.array([600, 300])
    gpu = GpuCropper("cuda", 1080, 1920).crops(f, centres, sides).cpu()
    cpu = GpuCropper("cpu", 1080, 1920).crops(f, centres, sides)
    assert (gpu - cpu).abs().max().item() < 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("registered", [False, True])
def test_cuda_crops_stay_right_while_compute_is_queued(registered):
    """Frames N and N+1 are cropped while a long kernel still occupies the compute stream (as
    the previous frame's network does in the pipelined inference worker): the uploads must not
    wait for it, nor overwrite a frame buffer a queued crop has yet to read."""
    h, w = 1080, 1920
    frames = np.stack([frame(h, w, seed) for seed in (4, 5, 6)])  # one block, like a ring
    cropper = GpuCropper("cuda", h, w)
    if registered:
        assert cropper.register_host(frames.ctypes.data, frames.nbytes)
    centres, sides = np.array([[900, 500], [200, 300]]), np.array([600, 300])
    try:
        busy = torch.randn(8192, 8192, device="cuda")
        outs = []
        for f in frames:
            busy = busy @ busy / 8192.0  # ~10 ms of queued compute before each crop
            outs.append(cropper.crops(f, centres, sides))
        # crops() returned while the matmuls still run: it waited for its own upload only
        assert not torch.cuda.current_stream().query()
        torch.cuda.synchronize()
        for f, got in zip(frames, outs):
            ref = GpuCropper("cpu", h, w).crops(f, centres, sides)
            assert (got.cpu() - ref).abs().max().item() < 1e-3
    finally:
        cropper.unregister_host()
