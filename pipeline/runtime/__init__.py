"""The shared-memory runtime: how worker processes are started, fed and watched.

Owns the data plane (`ring`: single-writer multi-reader seqlock rings in shared memory;
`records`: the record layout of every ring), the control plane (`messages`: typed msgpack
messages; `control`: ZeroMQ sockets), the worker contract (`worker`: the `Worker` base class;
`runner`: the one loop every worker process runs), the private run directory (`rundir`) and
the `supervisor` package that starts, watches, restarts and swaps workers.

May import: numpy, pyzmq, msgpack, psutil and `pipeline.config`. Never models, backends,
detectors, sources, sinks, metrics or the CLI: workers are loaded by module name at run time.
"""
