"""What BackendConfig the inference worker builds, without building the backend."""
from __future__ import annotations


class _Stop(Exception):
    pass


def inference_backend_config(data_dir, **params):
    """The BackendConfig `workers.inference` passes to its backend for `params` (a CPU device and
    a 2-person ring); setup() is stopped right there."""
    import pipeline.backends as backends
    from pipeline.runtime.worker import WorkerContext
    from workers.inference import Inference, Params

    seen = []

    class Out:
        class ring:
            dtype = {"boxes": type("Boxes", (), {"shape": (2, 4)})}

    def spy(name):
        backends.get_backend.__wrapped__(name)  # the name must still be a real backend

        def make(config):
            seen.append(config)
            raise _Stop()
        return make

    real = backends.get_backend
    spy.__wrapped__ = real
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
