"""Fit any number of persons onto the batch sizes a backend was built for.

Compiled graphs and engines accept a fixed set of batch sizes. A frame with B persons is
split into chunks of at most the largest size, and each chunk is padded up to the next
supported size (padding repeats the chunk's last row so it is always a valid input).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Chunk:
    start: int      # first person of the chunk
    stop: int       # one past the last person
    run_size: int   # batch size actually executed (>= stop - start)

    @property
    def count(self) -> int:
        return self.stop - self.start

    @property
    def padding(self) -> int:
        return self.run_size - self.count


def normalise_sizes(sizes: Iterable[int], max_batch: int) -> tuple[int, ...]:
    """Sorted unique sizes within 1..max_batch; max_batch itself is always included so
    every batch up to it needs no split."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    out = set()
    for s in sizes:
        s = int(s)
        if not 1 <= s <= max_batch:
            raise ValueError(f"batch size {s} is outside 1..max_batch={max_batch}")
        out.add(s)
    out.add(max_batch)
    return tuple(sorted(out))


def powers_of_two(max_batch: int) -> tuple[int, ...]:
    sizes, s = [], 1
    while s < max_batch:
        sizes.append(s)
        s *= 2
    return normalise_sizes(sizes, max_batch)


def parse_sizes(spec, max_batch: int) -> tuple[int, ...]:
    """`"all"` (every size), `"pow2"` (1,2,4,..,max) or an explicit list / "1,2,4"."""
    if spec in (None, "all"):
        return tuple(range(1, max_batch + 1))
    if spec == "pow2":
        return powers_of_two(max_batch)
    if isinstance(spec, str):
        try:
            spec = [int(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"batch sizes must be 'all', 'pow2' or a list like '1,2,4', "
                             f"got {spec!r}") from None
    return normalise_sizes(spec, max_batch)


def plan(n: int, sizes: Sequence[int]) -> list[Chunk]:
    """Chunks that cover n persons using only `sizes` (sorted ascending)."""
    if n < 1:
        raise ValueError(f"batch must hold at least one person, got {n}")
    if not sizes:
        raise ValueError("no batch sizes to plan with")
    biggest = sizes[-1]
    chunks, start = [], 0
    while start < n:
        count = min(biggest, n - start)
        run = next(s for s in sizes if s >= count)
        chunks.append(Chunk(start, start + count, run))
        start += count
    return chunks


def pad_rows(x, run_size: int):
    """Pad a (count, ...) torch tensor or numpy array to run_size rows by repeating its last row."""
    count = x.shape[0]
    if count == run_size:
        return x
    if count > run_size:
        raise ValueError(f"cannot pad {count} rows down to {run_size}")
    reps = run_size - count
    if hasattr(x, "expand"):  # torch
        import torch
        return torch.cat([x, x[-1:].expand(reps, *x.shape[1:])], dim=0)
    import numpy as np
    return np.concatenate([x, np.repeat(x[-1:], reps, axis=0)], axis=0)


def warm_sizes(wanted: Iterable[int], sizes: Sequence[int]) -> tuple[int, ...]:
    """The supported sizes that batches of `wanted` persons (and of one person) run as: what a
    backend prepares before `ready`; the rest of `sizes` can wait until they are needed."""
    out = set()
    for n in {1, *(int(w) for w in wanted if int(w) >= 1)}:
        out.update(c.run_size for c in plan(n, sizes))
    return tuple(sorted(out))
