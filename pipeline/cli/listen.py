"""Where posepipe's servers listen (architecture.md §12): 127.0.0.1 unless `pipeline start --listen HOST`.

The servers a pipeline opens to other programs are the native pose stream (a ZeroMQ PUB on
tcp), the browser viewer and the Prometheus exporter. Without `--listen`, a config that puts
any of them on another address is refused, naming the setting and the flag; with `--listen
HOST` all three move to HOST and a warning says who can now reach what. The control socket is
never moved: it accepts commands (stop, swap, set), so it stays an ipc socket in the private
run directory, or tcp on loopback when `control.transport: tcp` asks for it; the config refuses
any other `control.host`, with or without --listen.
"""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass

from pipeline.config import ConfigError, is_loopback, load_config

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


@dataclass
class Server:
    what: str        # "native stream", "viewer", "Prometheus"
    key: str         # the config key that sets its host
    host: str
    port: int | str


def check_host(host: str) -> str:
    """A literal IP address or a host name, else ConfigError."""
    text = str(host).strip().strip("[]")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if _HOSTNAME.match(text):
        return text
    raise ConfigError(f"--listen {host!r} — give an IP address of this machine (e.g. 0.0.0.0 for all, "
                      f"192.168.1.20) or its host name")


def servers(cfg) -> list[Server]:
    """The network servers this config opens, with their hosts."""
    out = []
    native = cfg.sinks.get("native")
    if isinstance(native, dict):
        endpoint = str(native.get("endpoint", "tcp://127.0.0.1:5560"))
        if endpoint.startswith("tcp://"):
            host, _, port = endpoint[len("tcp://"):].rpartition(":")
            out.append(Server("native stream", "sinks.native.endpoint", host.strip("[]"), port))
    viewer = cfg.sinks.get("viewer")
    if isinstance(viewer, dict):
        out.append(Server("viewer", "sinks.viewer.host", str(viewer.get("host", "127.0.0.1")),
                          viewer.get("port", 8080)))
    for name, worker in cfg.enabled_workers().items():
        if worker.module == "workers.metrics" and worker.params.get("prometheus", True):
            out.append(Server("Prometheus", f"workers.{name}.params.prometheus_host",
                              str(worker.params.get("prometheus_host", "127.0.0.1")),
                              worker.params.get("prometheus_port", 9100)))
    return out


def refuse_non_loopback(cfg) -> None:
    """Without --listen every server must be on loopback (the control socket always is: the
    config refuses any other control.host)."""
    public = [s for s in servers(cfg) if not is_loopback(s.host)]
    if public:
        s = public[0]
        raise ConfigError(f"{s.key} puts the {s.what} on {s.host}, reachable from other machines; posepipe "
                          f"servers listen on 127.0.0.1 unless you ask: start with --listen {s.host} to allow it")


def listen_overrides(cfg, host: str) -> list[str]:
    """Dotted overrides that move every server of `cfg` to `host`."""
    out = []
    for s in servers(cfg):
        if s.key == "sinks.native.endpoint":
            shown = f"[{host}]" if ":" in host else host
            out.append(f"sinks.native.endpoint={json.dumps(f'tcp://{shown}:{s.port}')}")
        else:
            out.append(f"{s.key}={json.dumps(host)}")
    return out


def listen_warning(cfg, host: str) -> str:
    parts = [f"the {s.what} ({s.host}:{s.port})" for s in servers(cfg)]
    return (f"warning: --listen {host}: {', '.join(parts) or 'no server'} can be reached from other "
            f"machines; anyone who can connect reads the poses (and the viewer's camera images). "
            f"The control socket stays local.")


def load_start_config(config_path, overrides, flags: dict, listen: str | None, warn):
    """The config `pipeline start` (local or --ray) runs: without --listen, one with a public
    server is refused; with it, the config again with every server on HOST, and `warn(text)`
    told who can reach what. ConfigError for the caller to report."""
    cfg = load_config(config_path, overrides, flags=flags)
    if listen is None:
        refuse_non_loopback(cfg)
        return cfg
    host = check_host(listen)
    cfg = load_config(config_path, (*overrides, *listen_overrides(cfg, host)), flags=flags)
    warn(listen_warning(cfg, host))
    return cfg
