"""PinnedUploader (pipeline/backends/pinned.py): values arrive intact through the rotating buffers; on
CUDA the upload does not wait for work already queued on the stream."""
import numpy as np
import pytest
import torch

from pipeline.backends.pinned import PinnedUploader


def test_cpu_uploads_are_copies_with_the_right_values():
    up = PinnedUploader("cpu", depth=2)
    a = np.arange(12, dtype=np.float64).reshape(4, 3)
    t = up.upload(a)
    a[0, 0] = 99
    assert t.dtype == torch.float32 and t.shape == (4, 3) and t[0, 0].item() == 0.0


@pytest.mark.gpu
def test_cuda_uploads_rotate_without_waiting_for_queued_work():
    up = PinnedUploader("cuda", depth=3)
    busy = torch.randn(8192, 8192, device="cuda")
    for _ in range(4):
        busy = busy @ busy / 8192.0          # tens of ms queued on the stream
    arrays = [np.full((5, 3), float(i), np.float32) for i in range(7)]   # more than depth: buffers reused
    outs = [up.upload(a) for a in arrays[:3]]
    assert not torch.cuda.current_stream().query(), "upload waited for the queued matmuls"
    outs += [up.upload(a) for a in arrays[3:]]
    torch.cuda.synchronize()
    for a, t in zip(arrays, outs):
        np.testing.assert_array_equal(t.cpu().numpy(), a)
