"""What BackendConfig the inference worker builds, without building the backend."""
from __future__ import annotations


class _Stop(Exception):
    pass


def inference_backend_config(data_dir, **params):
    """The BackendConfig `workers.inference` passes to its backend for `params` (a CPU device and
    a 2-person ring); setup() is stopped as soon as the backend is constructed."""
    import pipeline.backends as backends
    from pipeline.runtime.worker import WorkerContext
    from workers.inference import Inference, Params

    seen = []
    real = backends.get_backend

    def spy(name):
        class Probe(real(name)):      # the real class (its auto_device/auto_precision), stopped at __init__
            def __init__(self, config):
                seen.append(config)
                raise _Stop()
        return Probe

    class Out:
        class ring:
            dtype = {"boxes": type("Boxes", (), {"shape": (2, 4)})}

    backends.get_backend = spy
    try:
        worker = Inference(Params(**{"smpl": "off", "device": "cpu", **params}),
                           WorkerContext("inference", 1, {}, {"data_dir": str(data_dir)}))
        worker.out = Out()
        try:
            worker.setup()
        except _Stop:
            pass
    finally:
        backends.get_backend = real
    assert seen, "the inference worker did not build a backend"
    return seen[0]
