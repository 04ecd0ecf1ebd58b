import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from pipeline.backends import batching
from pipeline.backends.network import FLAT_WIDTH, run_chunked


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 70), max_batch=st.integers(1, 16), spec=st.sampled_from(["all", "pow2"]))
def test_plan_covers_every_person_once_with_supported_sizes(n, max_batch, spec):
    sizes = batching.parse_sizes(spec, max_batch)
    chunks = batching.plan(n, sizes)
    assert chunks[0].start == 0 and chunks[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:]))
    for c in chunks:
        assert c.run_size in sizes and c.run_size >= c.count
        # padding only ever goes up to the next captured size
        assert not any(c.count <= s < c.run_size for s in sizes)


def test_sizes_parsing():
    assert batching.parse_sizes("pow2", 8) == (1, 2, 4, 8)
    assert batching.parse_sizes("pow2", 5) == (1, 2, 4, 5)
    assert batching.parse_sizes("all", 3) == (1, 2, 3)
    assert batching.parse_sizes("1,4", 6) == (1, 4, 6)
    with pytest.raises(ValueError, match="outside"):
        batching.parse_sizes([9], 8)
    with pytest.raises(ValueError, match="'all', 'pow2'"):
        batching.parse_sizes("some", 8)
    with pytest.raises(ValueError, match="at least one"):
        batching.plan(0, (1,))


def test_pad_rows_repeats_last_row():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    padded = batching.pad_rows(x, 4)
    assert padded.shape == (4, 3) and (padded[3] == x[1]).all()
    t = torch.arange(6.0).reshape(2, 3)
    assert torch.equal(batching.pad_rows(t, 3)[2], t[1])
    assert batching.pad_rows(t, 2) is t


def test_run_chunked_splits_pads_and_keeps_order():
    calls = []
    shared = torch.empty(8, FLAT_WIDTH)

    def fake_graph(img, bbox):
        # Returns the SAME buffer every call, like a CUDA-graph replay.
        calls.append(img.shape[0])
        shared[:img.shape[0]] = img[:, 0, 0, :1].expand(-1, FLAT_WIDTH)
        return shared[:img.shape[0]]

    n = 11
    img = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 3, 224, 224)
    flat, _ = run_chunked(fake_graph, img, torch.zeros(n, 3), (1, 2, 4), None)
    assert calls == [4, 4, 4]  # 4 + 4 + 3 (padded to 4)
    assert torch.equal(flat[:, 0], torch.arange(n, dtype=torch.float32))


def test_warm_sizes_are_the_sizes_the_first_batches_run_as():
    from pipeline.backends.batching import warm_sizes
    assert warm_sizes((1,), range(1, 9)) == (1,)
    assert warm_sizes((1, 3), range(1, 9)) == (1, 3)
    assert warm_sizes((0, 3), (1, 2, 4, 8)) == (1, 4)          # 0 persons: nothing beyond batch 1
    assert warm_sizes((11,), (1, 2, 4, 8)) == (1, 4, 8)        # 11 = 8 + 3 (padded to 4)
    assert warm_sizes((), (2, 4)) == (2,)                      # one person runs padded to 2
