"""Independent parts of a torch.fx graph on parallel CUDA streams.

At batch 1 HRNet's kernels are small: one 56x56 convolution leaves most of an H100's SMs idle,
yet the network runs its four resolution branches (and the up/down paths of every fusion
layer) one kernel after the other. Those chains do not depend on each other, so they can run
at the same time on separate streams. `plan_streams` assigns every node of a graph to one of
`max_streams` streams (a consumer continues its first producer's chain; a producer's further
consumers open new chains on the least recently used stream) and lists the cross-stream
waits. `StreamedGraph` runs a GraphModule by that plan. It is meant to be captured once into a
CUDA graph: the events become edges of the captured graph, so a replay costs no Python and no
event calls, and the critical path shrinks from the sum of all branches to the longest one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

# Nodes that launch no work of their own are still placed (their outputs carry the stream).
_RUN_OPS = ("call_function", "call_method", "call_module")


@dataclass
class StreamPlan:
    stream_of: dict[str, int]                  # node name -> stream index (0: the caller's)
    waits: dict[str, tuple[str, ...]]          # node name -> producers on other streams
    streams_used: int
    chains: int                                # how many chains were opened (incl. the first)
    cross_edges: int = 0
    nodes: int = 0                             # nodes that may launch work
    depth: int = 0                             # those on the longest path, streams and waits counted


def plan_streams(graph: fx.Graph, max_streams: int) -> StreamPlan:
    """Assign nodes to streams in topological (= program) order.

    A node continues the stream of its first producer whose stream no earlier consumer has
    taken over; otherwise it opens a chain on the stream that was used least recently, so
    parallel chains spread over the streams. Placeholders live on stream 0."""
    if int(max_streams) < 1:
        raise ValueError(f"streams must be >= 1, got {max_streams}")
    k = int(max_streams)
    stream_of: dict[str, int] = {}
    last_use = [-1] * k                 # program position of the last node placed on a stream
    handed_on: set[str] = set()         # producers whose stream a consumer has continued
    waits: dict[str, tuple[str, ...]] = {}
    chains, cross = 1, 0
    # Unit-cost schedule: a node starts after its producers and after the previous node of
    # its stream; `depth` is the finish of the last node (= nodes when everything is serial).
    finish: dict[str, int] = {}
    stream_end = [0] * k
    for pos, node in enumerate(graph.nodes):
        if node.op == "placeholder":
            stream_of[node.name] = 0
            last_use[0] = pos
            continue
        if node.op not in _RUN_OPS:
            continue
        producers = [p for p in node.all_input_nodes if p.name in stream_of]
        chosen = None
        for p in producers:
            if p.name not in handed_on:
                handed_on.add(p.name)
                chosen = stream_of[p.name]
                break
        if chosen is None:
            chosen = min(range(k), key=lambda s: last_use[s])
            chains += 1
        stream_of[node.name] = chosen
        last_use[chosen] = pos
        others = tuple(dict.fromkeys(p.name for p in producers if stream_of[p.name] != chosen))
        if others:
            waits[node.name] = others
            cross += len(others)
        start = max([stream_end[chosen]] + [finish.get(p.name, 0) for p in producers])
        finish[node.name] = stream_end[chosen] = start + 1
    used = len(set(stream_of.values())) if stream_of else 1
    return StreamPlan(stream_of, waits, used, chains, cross, nodes=len(finish),
                      depth=max(stream_end))


class _StreamInterpreter(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, plan: StreamPlan, streams: list):
        super().__init__(gm, garbage_collect_values=True)
        self.plan, self.streams = plan, streams
        self.events: dict[str, torch.cuda.Event] = {}
        self.need_event = {p for ps in plan.waits.values() for p in ps}

    def run_node(self, n: fx.Node):
        s = self.plan.stream_of.get(n.name)
        if s is None:                                   # get_attr / output: no kernels
            return super().run_node(n)
        stream = self.streams[s]
        for p in self.plan.waits.get(n.name, ()):
            event = self.events.get(p)
            if event is not None:
                stream.wait_event(event)
        with torch.cuda.stream(stream):
            out = super().run_node(n)
        if n.name in self.need_event:
            # The consumers run on other streams: the allocator must not hand this memory to
            # this stream again before they are done with it.
            consumers = {self.plan.stream_of[u.name] for u in n.users if u.name in self.plan.stream_of}
            for t in _tensors(out):
                for c in consumers - {s}:
                    t.record_stream(self.streams[c])
            event = torch.cuda.Event()
            event.record(stream)
            self.events[n.name] = event
        return out


class StreamedGraph(nn.Module):
    """A GraphModule that runs on `max_streams` CUDA streams by `plan_streams` (CUDA only;
    elsewhere, or with one stream, it simply calls the graph)."""

    def __init__(self, gm: fx.GraphModule, max_streams: int):
        super().__init__()
        if not isinstance(gm, fx.GraphModule):
            raise TypeError(f"StreamedGraph needs a torch.fx.GraphModule, got {type(gm).__name__}")
        self.gm = gm
        self.plan = plan_streams(gm.graph, max_streams)
        self._side: dict = {}   # device -> side streams (created once: capture reuses them)

    def forward(self, *args):
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if self.plan.streams_used <= 1 or first is None or not first.is_cuda:
            return self.gm(*args)
        main = torch.cuda.current_stream(first.device)
        side = self._side.get(first.device)
        if side is None:
            side = [torch.cuda.Stream(first.device) for _ in range(self.plan.streams_used - 1)]
            self._side[first.device] = side
        streams = [main] + side
        for s in side:
            s.wait_stream(main)         # fork: the inputs were written on the caller's stream
        out = _StreamInterpreter(self.gm, self.plan, streams).run(*args)
        for s in side:
            main.wait_stream(s)         # join: every chain ends before the caller reads
        for t in _tensors(out):
            t.record_stream(main)
        return out


def _tensors(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []
