"""Keeps the profiler's own CPU cost under its budget (issue 8: < 2 % of one core).

The costly parts of a sample scale with the host, not with the profiler: per-thread CPU reads
grow with the thread count of the workers (a decoder on a 16-core host runs dozens), NVML's
per-process and PCIe queries take milliseconds on some drivers. The governor watches the
profiler's CPU time over the last few samples and reads those details only every k-th sample
(k doubles while the cost is over budget, halves again once it is well under), so the cost
stays bounded on any machine. Process CPU, memory, GPU utilisation and the per-frame stamps are
read on every sample regardless.
"""
from __future__ import annotations

import collections

DEFAULT_BUDGET_PERCENT = 1.5   # of one core; leaves a margin under the 2 % promise
MAX_EVERY = 16


class CostGovernor:
    def __init__(self, budget_percent: float = DEFAULT_BUDGET_PERCENT, window: int = 8,
                 max_every: int = MAX_EVERY):
        self.budget = float(budget_percent)
        self.max_every = int(max_every)
        self.every = 1
        self.highest = 1
        self._n = 0
        self._window = max(3, int(window))
        self._history: collections.deque = collections.deque(maxlen=self._span())

    def detail_now(self) -> bool:
        """Read the costly details on this sample?"""
        return self._n % self.every == 0

    def after_sample(self, t: float, cpu_s: float) -> None:
        """Record the profiler's CPU seconds at monotonic time t, after a sample."""
        self._n += 1
        self._history.append((t, cpu_s))
        if len(self._history) < self._history.maxlen:
            return
        (t0, c0), (t1, c1) = self._history[0], self._history[-1]
        if t1 <= t0:
            return
        percent = 100.0 * (c1 - c0) / (t1 - t0)
        if percent > self.budget and self.every < self.max_every:
            self._change(self.every * 2)
        elif percent < self.budget / 3 and self.every > 1:
            self._change(self.every // 2)

    def _span(self) -> int:
        # judge over whole detail cycles, or one costly sample more or less decides
        return max(self._window, 2 * self.every) + 1

    def _change(self, every: int) -> None:
        self.every = every
        self.highest = max(self.highest, every)
        self._n = 0
        last = self._history[-1]
        # judge the new setting on its own samples
        self._history = collections.deque([last], maxlen=self._span())

    def describe(self) -> str:
        if self.highest == 1:
            return "details (per-thread CPU, USS, NVML per process and PCIe) read on every sample"
        return (f"to stay under {self.budget:g} % the details (per-thread CPU, USS, NVML per process "
                f"and PCIe) were read every {self.highest}th sample at most (every {self.every}th at the end)")
