"""Build an engine ahead of time: `pipeline export --backend trt|onnx` (and tools/export.py).

    pipeline export --backend trt --model cliff --checkpoint data/poco_cliff.pt \
        --precision fp16 --max-persons 8
    pipeline export --backend onnx --model cliff

The engine lands in <data_dir>/engines/ with its key sidecar (data_dir: --cache-dir, else the
pipeline's default: $POSEPIPE_DATA_DIR or the repository's data/), exactly where the inference
worker of `pipeline start --backend trt|onnx` looks for it, so the first start does not build.
An existing matching engine is reused unless --force. Prints one JSON line with the result.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

EXPORTABLE = ("trt", "onnx")


class Progress:
    """Elapsed-time ticker on stderr while a long build runs (TensorRT builds take minutes)."""

    def __init__(self, label: str, every_s: float = 5.0, stream=sys.stderr):
        self.label, self.every_s, self.stream = label, every_s, stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def _tick(self):
        t0 = time.monotonic()
        while not self._stop.wait(self.every_s):
            print(f"  {self.label}: {time.monotonic() - t0:.0f} s ...", file=self.stream, flush=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def export_engine(backend: str, model: str = "cliff", checkpoint: str | None = None,
                  precision: str = "fp16", max_persons: int = 8, device: str = "cuda",
                  cache_dir: str | None = None, engine_path: str | None = None,
                  force: bool = False, options: dict | None = None) -> dict:
    """Build (or find) the engine and return the backend's info() (engine path, built, seconds)."""
    from pipeline.backends.base import BackendConfig
    if backend not in EXPORTABLE:
        raise ValueError(f"export supports --backend {' or '.join(EXPORTABLE)}, got {backend!r} "
                         f"(the compile backend caches its kernels on first start instead)")
    opts = dict(options or {})
    if engine_path:
        opts["engine_path"] = engine_path
    cfg = BackendConfig(model=model, checkpoint=checkpoint, device=device,
                        precision="fp32" if backend == "onnx" else precision,
                        max_batch=max_persons, cache_dir=cache_dir, options=opts)
    if backend == "trt":
        from pipeline.backends.trt import TrtBackend as cls
    else:
        from pipeline.backends.onnx import OnnxBackend as cls
    be = cls(cfg)
    if force:
        _remove_existing(be, cfg)
    t0 = time.perf_counter()
    with Progress(f"{backend} export"):
        be.load()
    info = be.info()
    info["export_s"] = round(time.perf_counter() - t0, 2)
    be.close()
    return info


def _remove_existing(be, cfg) -> None:
    if cfg.options.get("engine_path"):
        be.cache().remove(Path(cfg.options["engine_path"]))
    elif be.name == "onnx":
        cache = be.cache()
        cache.remove(cache.path_for(be.engine_key()))
    else:
        # The trt key needs the GPU name and TensorRT version, known only inside load();
        # remove every engine for this variant/precision so load() builds afresh.
        cache = be.cache()
        for old in cache.root.glob(f"poco-{cfg.model}-trt-{cfg.precision}-*.ep"):
            cache.remove(old)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Build a TensorRT engine or ONNX graph ahead of time.")
    p.add_argument("--backend", choices=EXPORTABLE, required=True)
    p.add_argument("--model", choices=("cliff", "pare"), default="cliff")
    p.add_argument("--checkpoint", default=None, help="POCO checkpoint (default: random weights, seed 0)")
    p.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    p.add_argument("--max-persons", type=int, default=8)
    p.add_argument("--device", default=None, help="default: cuda for trt, cpu for onnx")
    p.add_argument("--cache-dir", default=None,
                   help="the data folder (engines go to <it>/engines); default: the pipeline's data_dir")
    p.add_argument("--engine-path", default=None)
    p.add_argument("--allow-unsafe-checkpoint", action="store_true",
                   help="fully unpickle the checkpoint (it can run code: only for a file you trust)")
    p.add_argument("--force", action="store_true", help="rebuild even if a matching engine exists")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from pipeline.backends.base import BackendUnavailable
    try:
        info = export_engine(args.backend, args.model, args.checkpoint, args.precision, args.max_persons,
                             args.device or ("cuda" if args.backend == "trt" else "cpu"),
                             args.cache_dir, args.engine_path, args.force,
                             {"allow_unsafe_checkpoint": True} if args.allow_unsafe_checkpoint else None)
    except (BackendUnavailable, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _click_command():
    import click

    @click.command("export", context_settings={"ignore_unknown_options": True, "help_option_names": []},
                   add_help_option=False)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def export(args):
        """Build a TensorRT/ONNX engine ahead of time (pipeline export --help)."""
        raise SystemExit(main(list(args)))

    return export


export = _click_command()
