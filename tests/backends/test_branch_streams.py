"""Stream planning for the cudagraph backend (CPU: the plan and the serial fallback)."""
import pytest

torch = pytest.importorskip("torch")

from pipeline.backends.base import BackendConfig, BackendUnavailable  # noqa: E402
from pipeline.backends.branch_streams import StreamedGraph, plan_streams  # noqa: E402


class TwoChains(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Sequential(*[torch.nn.Conv2d(4, 4, 3, padding=1) for _ in range(5)])
        self.b = torch.nn.Sequential(*[torch.nn.Conv2d(4, 4, 3, padding=1) for _ in range(5)])

    def forward(self, x):
        return self.a(x) + self.b(x)


def check_plan(graph, plan, k):
    nodes = {n.name: n for n in graph.nodes}
    assert set(plan.stream_of.values()) == set(range(plan.streams_used)) and plan.streams_used <= k
    for name, producers in plan.waits.items():
        inputs = {p.name for p in nodes[name].all_input_nodes}
        for p in producers:
            assert p in inputs and plan.stream_of[p] != plan.stream_of[name]
    # every cross-stream input of a node is waited for
    for name, s in plan.stream_of.items():
        for p in nodes[name].all_input_nodes:
            if p.name in plan.stream_of and plan.stream_of[p.name] != s:
                assert p.name in plan.waits.get(name, ())


def test_independent_chains_go_to_different_streams():
    gm = torch.fx.symbolic_trace(TwoChains())
    plan = plan_streams(gm.graph, 2)
    check_plan(gm.graph, plan, 2)
    streams_a = {plan.stream_of[n.name] for n in gm.graph.nodes if n.name.startswith("a_")}
    streams_b = {plan.stream_of[n.name] for n in gm.graph.nodes if n.name.startswith("b_")}
    assert len(streams_a) == 1 and len(streams_b) == 1 and streams_a != streams_b
    assert plan.nodes == 11 and plan.depth == 6       # 5 convs in parallel with 5, then the add
    serial = plan_streams(gm.graph, 1)
    assert serial.depth == serial.nodes == 11 and not serial.waits and serial.streams_used == 1


def test_streams_must_be_positive():
    gm = torch.fx.symbolic_trace(TwoChains())
    with pytest.raises(ValueError, match="streams must be >= 1"):
        plan_streams(gm.graph, 0)


@pytest.mark.parametrize("variant", ["cliff", "pare"])
def test_hrnet_branches_shorten_the_critical_path(variant):
    from pipeline.backends import network as net
    model = net.build_network(BackendConfig(model=variant))
    gm = net.prepare_network(model, "fp32", False, fold_bn=True, cudnn_fusion=True).module.backbone
    assert isinstance(gm, torch.fx.GraphModule)
    plans = {k: plan_streams(gm.graph, k) for k in (1, 4, 8)}
    for k, plan in plans.items():
        check_plan(gm.graph, plan, k)
    assert plans[1].depth == plans[1].nodes
    # HRNet runs up to four branches side by side: the longest path is well under half
    assert plans[4].depth < 0.5 * plans[1].depth
    assert plans[8].depth <= plans[4].depth
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(StreamedGraph(gm, 4)(x), gm(x))   # CPU: runs the graph as is


def test_streamed_graph_needs_an_fx_graph():
    with pytest.raises(TypeError, match="GraphModule"):
        StreamedGraph(TwoChains(), 4)


def test_cudagraph_backend_refuses_cpu_with_a_hint():
    from pipeline.backends import get_backend
    cls = get_backend("cudagraph")
    with pytest.raises(BackendUnavailable, match="needs a CUDA GPU.*onnx"):
        cls(BackendConfig(model="cliff", device="cpu")).load()


def test_cudagraph_backend_checks_streams_option():
    from pipeline.backends.cudagraph import CudaGraphBackend
    for device in ("cpu", "cuda"):
        with pytest.raises(ValueError, match="streams must be in 1..16"):
            CudaGraphBackend(BackendConfig(model="cliff", device=device, options={"streams": 0})).load()
