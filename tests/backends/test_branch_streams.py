"""Stream planning for the cudagraph backend: the plan (CPU) and the streamed HRNet run (GPU)."""
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


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["cliff", "pare"])
def test_hrnet_on_streams_matches_the_serial_graph_on_cuda(variant):
    # On CUDA StreamedGraph really forks the branches onto side streams; a missing wait reads
    # a half-written tensor, which shows as a large difference, not a rounding one.
    from pipeline.backends import network as net
    model = net.build_network(BackendConfig(model=variant), "cuda")
    gm = net.prepare_network(model, "fp32", True, fold_bn=True, cudnn_fusion=True).module.backbone
    streamed = StreamedGraph(gm, 4)
    assert streamed.plan.streams_used > 1
    x = torch.randn(2, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = gm(x)
        for _ in range(3):
            torch.testing.assert_close(streamed(x), want, atol=1e-5, rtol=1e-5)
    assert len(streamed._side[x.device]) == streamed.plan.streams_used - 1


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
