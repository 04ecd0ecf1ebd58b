"""The real Publisher worker in-process, for sink tests that need the publisher itself."""


class InProcessPublisher:
    """The real Publisher worker on real rings (poses, published, frames), no runner: tests
    drive `pub.process(...)` themselves. `close()` stops it and removes the rings."""

    def __init__(self, sinks: dict):
        import uuid

        import workers.publisher as publisher_module
        from pipeline.runtime.records import frames_dtype, poses_dtype
        from pipeline.runtime.ring import Ring
        from pipeline.runtime.worker import Output, WorkerContext

        self.run = "t" + uuid.uuid4().hex[:10]
        self.rings = {"poses": Ring.create("poses", poses_dtype(2), 8, self.run),
                      "published": Ring.create("published", poses_dtype(2), 8, self.run),
                      "frames": Ring.create("frames", frames_dtype(8, 8), 2, self.run)}
        ctx = WorkerContext("publisher", 1, self.rings, {"sinks": sinks, "run_id": self.run})
        self.pub = publisher_module.Publisher(publisher_module.Params(), ctx)
        self.rings["published"].set_owner(1)
        self.pub.out = Output(self.rings["published"], 1)

    def close(self, extra_rings=()):
        self.pub.stop()
        for ring in list(self.rings.values()) + list(extra_rings):
            ring.close()
            ring.unlink()
