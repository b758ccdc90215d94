"""The runtime's configuration: one TOML file, every key documented and defaulted here.

The dataclasses below are the single source of truth: `cri-shim config` renders them (with
their docs) as the default TOML file, and load() reads a file against them, refusing unknown
keys so that a typo is an error at start rather than a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from cri_shim.cgroups.paths import CgroupPathError, normalize_parent
from cri_shim.network import subnets
from cri_shim.runtime.logjoin import LINE_SIZE_CAP

MIB = 1024 * 1024

# Keys SIGHUP applies to the running daemon (cri_shim.reload); a change to any other key needs a restart.
LIVE_KEYS = (
    "server.log_level",
    "images.mirrors",
    "images.insecure_registries",
    "images.auth_file",
    "images.pinned_images",
    "network.conf_dir",
)


def _doc(text: str, default: typing.Any = dataclasses.MISSING, factory: typing.Any = dataclasses.MISSING) -> typing.Any:
    """A dataclass field carrying its documentation for the rendered default file."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass
class ServerConfig:
    socket: str = _doc("Unix socket the CRI gRPC server listens on.", "/run/cri-shim/cri-shim.sock")
    socket_mode: int = _doc("Permission bits of the socket.", 0o660)
    socket_group: str = _doc("Group owning the socket; empty keeps root's.", "")
    max_message_bytes: int = _doc("Largest gRPC message in either direction (kubelet uses 16 MiB).", 16 * MIB)
    log_level: str = _doc("debug, info, warning or error.", "info")
    log_format: str = _doc("json (one object a line) or text.", "json")


@dataclass
class PathsConfig:
    state_dir: str = _doc("Durable records, image store and CNI result cache.", "/var/lib/cri-shim")
    run_dir: str = _doc("Volatile state: namespace pins, bundles, exit files, sockets.", "/run/cri-shim")


@dataclass
class HandlerConfig:
    path: str = _doc("OCI runtime binary (name looked up in PATH, or absolute).", "runc")
    root: str = _doc("The runtime's --root state directory; empty: <run_dir>/<handler name>.", "")


@dataclass
class RuntimeConfig:
    default_handler: str = _doc(
        "Handler used when a pod names none (RuntimeHandler \"\"); empty: the first of crun and runc that passes "
        "the start-up self-check (see cri_shim/runtime/handlers.py), logged and shown in verbose Status.", ""
    )
    handlers: dict[str, HandlerConfig] = _doc(
        "OCI runtimes by RuntimeHandler name; runc and crun are always offered.",
        factory=lambda: {"runc": HandlerConfig(), "crun": HandlerConfig(path="crun")},
    )
    conmon: str = _doc("conmon binary, the per-container monitor.", "conmon")
    infra: str = _doc(
        "Statically linked binary run with -P as PID 1 of a pod-level PID namespace, in a confined container of "
        "the pod's handler whose root holds nothing else.", "catatonit"
    )
    cgroup_driver: str = _doc(
        "cgroupfs or systemd; reported to kubelet by RuntimeConfig. With systemd, pod cgroup parents are "
        "slices, and systemd makes (over D-Bus) a scope in the pod's slice for each container and infra "
        "process (runc --systemd-cgroup) and for each conmon (systemd-run --scope).", "cgroupfs")
    default_cgroup_parent: str = _doc(
        "Pod cgroup parent when a pod names none (a slice such as cri-shim.slice with the systemd driver).", "/cri-shim"
    )
    pod_shm_size_bytes: int = _doc("Size of each pod's /dev/shm tmpfs (not made when the pod uses the host IPC).", 64 * MIB)
    seccomp_default_profile: str = _doc("RuntimeDefault seccomp profile (JSON); empty: the shipped one.", "")
    seccomp_default_when_unset: bool = _doc(
        "Give a container whose config names no seccomp profile at all the RuntimeDefault one (kubelet's "
        "--seccomp-default, CRI-O's seccomp_use_default_when_empty); an explicit Unconfined stays unconfined, "
        "privileged containers get none. Off, as kubelet's SeccompDefault is.", False
    )
    default_pids_limit: int = _doc(
        "Most processes a container may have (linux.resources.pids) unless its config sets pids.max (cgroup v2 "
        "unified); -1 (CRI-O's pids_limit default) or 0: unlimited. kubelet's --pod-pids-limit bounds the whole pod.", -1
    )
    log_size_max_bytes: int = _doc(
        "A container log reaching this size is started afresh, its content dropped (CRI-O's log_size_max, "
        "conmon's --log-size-max): a new file is made as <log>.tmp and renamed over the log; -1: unlimited, "
        "otherwise at least 8192. kubelet's containerLogMaxSize rotation keeps old content and is the usual limit.", -1
    )
    max_container_log_line_size: int = _doc(
        "Longest line of a container log (containerd's max_container_log_line_size): what a container writes "
        "is joined into one record per line however it was written, and a longer line is split into P records "
        "of this many bytes and a final F. -1: containerd's unlimited, which here is 1 MiB, because the daemon "
        "holds each stream's unfinished line in memory; otherwise 1 to 1048576.", 16384
    )
    drain_exec_sync_io_timeout_ms: int = _doc(
        "After an exec'd command exits (ExecSync, streaming Exec), how long its output is still read while a "
        "background child it left holds the pipes, before the exit code and the output so far are reported "
        "(containerd's drain_exec_sync_io_timeout); never past an ExecSync's own timeout. 0: until the pipes "
        "close, containerd's default, which makes an exec probe whose command leaves a child run into its timeout.",
        500,
    )
    cdi_spec_dirs: list[str] = _doc(
        "Directories of CDI spec files (.json, .yaml) describing the devices containers may ask for by name "
        "(ContainerConfig.CDI_devices, cdi.k8s.io/* annotations), as containerd's and CRI-O's cdi_spec_dirs: a device "
        "in a later directory overrides the same device in an earlier one; absolute paths.",
        factory=lambda: ["/etc/cdi", "/var/run/cdi"],
    )
    warm_cgroup_migrations: bool = _doc(
        "While a container is created, keep the kernel's cgroup migration lock warm, so that runc's moves of the "
        "container into its cgroups wait no RCU grace period (see cri_shim/cgroups/migration.py).", True
    )


@dataclass
class NetworkConfig:
    conf_dir: str = _doc("Directory of CNI network configurations (.conflist/.conf).", "/etc/cni/net.d")
    bin_dirs: list[str] = _doc("Where CNI plugins are looked up, in order.", factory=lambda: ["/opt/cni/bin", "/usr/lib/cni"])
    network: str = _doc("Name of the network to use; empty: the first file in conf_dir.", "")
    default_subnet: str = _doc(
        "Pod subnet of the embedded bridge network used when conf_dir is empty (until kubelet names a pod CIDR); "
        "dual-stack: an IPv4 and an IPv6 CIDR separated by a comma. Masqueraded by one node chain "
        "(CRI-SHIM-MASQ-<hash of default_bridge>) where iptables allows, else per pod by the bridge plugin.",
        "10.88.0.0/16",
    )
    default_bridge: str = _doc("Bridge device of the embedded network.", "crishim0")
    plugin_timeout_seconds: int = _doc("A CNI plugin call (ADD, DEL, CHECK) that runs longer is killed and fails.", 120)


@dataclass
class StreamingConfig:
    address: str = _doc(
        "Address the Exec/Attach/PortForward HTTP server binds (as containerd: loopback, which is all kubelet needs; "
        "any local user can connect, the one-time tokens in the URLs guard it); URLs of a wildcard bind name loopback.",
        "127.0.0.1",
    )
    port: int = _doc("Port of that server; 0 picks a free one.", 0)
    max_connections: int = _doc(
        "Streaming connections open at once. At the cap a new one replaces the oldest still sending its request head, "
        "or is reset unread; lowered at start to keep them within half the open-file limit.", 256
    )
    head_timeout_seconds: int = _doc(
        "A streaming connection that has not sent its whole request head this long after connecting is closed.", 5
    )
    token_ttl_seconds: int = _doc("How long an Exec/Attach/PortForward URL stays valid.", 60)
    max_tokens: int = _doc("Outstanding URLs allowed at once.", 1000)
    stream_creation_timeout_seconds: int = _doc(
        "How long a client has to open all the streams of an exec/attach, or both of a port-forward.", 30
    )
    idle_timeout_seconds: int = _doc("A streaming connection with no traffic this long is closed.", 4 * 3600)


PATH_STYLES = ("prefix", "override", "namespace")


@dataclass
class RegistryHostConfig:
    path_style: str = _doc(
        "What the path of a mirror URL on this host means: prefix (containerd's default: <url>/v2/<repo>), "
        "override (containerd's hosts.toml override_path: the path replaces /v2, <url>/<repo>, as Harbor's "
        "https://harbor.example/v2/k8s-proxy) or namespace (CRI-O's location = \"host/namespace\": "
        "<host>/v2/<path>/<repo>). A mirror URL without a path is always <url>/v2/<repo>.", "prefix"
    )
    ca_file: str = _doc("PEM CA bundle trusted for this host, besides the system's.", "")
    client_cert: str = _doc("PEM client certificate presented to this host (with client_key).", "")
    client_key: str = _doc("PEM private key of client_cert; empty: the key is in client_cert's file.", "")
    skip_verify: bool = _doc("Accept any certificate from this host (no verification at all).", False)
    upstream_credentials: bool = _doc(
        "For a mirror: send it the credentials of the registry it mirrors (those of the pull request, or of the "
        "auth file for that registry) instead of its own entry in the auth file.", False
    )


@dataclass
class ImagesConfig:
    mirrors: dict[str, list[str]] = _doc(
        "Registry host to mirror endpoints tried first, e.g. \"registry.k8s.io\" = [\"http://127.0.0.1:5000\"]; "
        "what a path in a mirror URL means is the host's path_style in [images.hosts].",
        factory=dict,
    )
    insecure_registries: list[str] = _doc("Registry hosts reached over plain http.", factory=list)
    auth_file: str = _doc(
        "Docker-style config.json with registry credentials (auths, and credHelpers/credsStore naming a "
        "docker-credential-<name> program looked up in PATH); empty: none.", ""
    )
    hosts: dict[str, RegistryHostConfig] = _doc(
        "Settings of a registry or mirror host, by \"host\" or \"host:port\" as the image or mirror URL names it "
        "(host:port wins): [images.hosts.\"harbor.example\"].", factory=dict
    )
    pull_progress_timeout_seconds: int = _doc("A pull that makes no progress this long fails.", 300)
    pinned_images: list[str] = _doc("Images reported as pinned (never garbage-collected).", factory=list)


@dataclass
class MetricsConfig:
    address: str = _doc(
        "host:port of a Prometheus /metrics HTTP endpoint (RPC counts and latencies, pod start, pulls, containers by "
        "state, CNI calls, recovery), e.g. \"127.0.0.1:9090\"; empty: none, no port is opened. Nothing guards it "
        "but the address: keep it on loopback or a node-local interface.", ""
    )


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    @property
    def state_dir(self) -> Path:
        return Path(self.paths.state_dir)

    @property
    def run_dir(self) -> Path:
        return Path(self.paths.run_dir)


class ConfigError(ValueError):
    """The configuration file is unreadable or names an unknown key or a wrong type."""


def _build(cls: type, data: dict[str, typing.Any], where: str) -> typing.Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown key(s) in [{where}]: {', '.join(sorted(unknown))}")
    values = {}
    for name, value in data.items():
        values[name] = _convert(hints[name], value, f"{where}.{name}" if where else name)
    return cls(**values)


def _convert(hint: typing.Any, value: typing.Any, where: str) -> typing.Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table")
        return _build(hint, value, where)
    if origin is dict:
        _, vtype = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table")
        return {k: _convert(vtype, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (itype,) = typing.get_args(hint)
        if not isinstance(value, list) or not all(isinstance(v, itype) for v in value):
            raise ConfigError(f"{where} must be a list of {itype.__name__}")
        return list(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{where} must be of type {hint.__name__}, not {type(value).__name__}")
    return value


def _validate(cfg: Config) -> None:
    if cfg.runtime.cgroup_driver not in ("cgroupfs", "systemd"):
        raise ConfigError("runtime.cgroup_driver must be cgroupfs or systemd")
    try:
        normalize_parent(cfg.runtime.cgroup_driver, cfg.runtime.default_cgroup_parent)
    except CgroupPathError as exc:
        raise ConfigError(f"runtime.default_cgroup_parent: {exc}") from None
    if cfg.runtime.default_handler and cfg.runtime.default_handler not in cfg.runtime.handlers:
        raise ConfigError(f"runtime.default_handler {cfg.runtime.default_handler!r} is not in runtime.handlers")
    if cfg.runtime.default_pids_limit < -1:
        raise ConfigError("runtime.default_pids_limit must be -1, 0 (unlimited) or a positive number")
    if cfg.runtime.log_size_max_bytes != -1 and cfg.runtime.log_size_max_bytes < 8192:
        raise ConfigError("runtime.log_size_max_bytes must be -1 (unlimited) or at least 8192")
    if cfg.runtime.max_container_log_line_size != -1 and not 1 <= cfg.runtime.max_container_log_line_size <= LINE_SIZE_CAP:
        raise ConfigError(f"runtime.max_container_log_line_size must be -1 (up to 1 MiB) or 1 to {LINE_SIZE_CAP}")
    if cfg.runtime.drain_exec_sync_io_timeout_ms < 0:
        raise ConfigError("runtime.drain_exec_sync_io_timeout_ms must be 0 (until the pipes close) or positive")
    if not all(d.startswith("/") for d in cfg.runtime.cdi_spec_dirs):
        raise ConfigError("runtime.cdi_spec_dirs must be absolute paths")
    for host, settings in cfg.images.hosts.items():
        if settings.path_style not in PATH_STYLES:
            raise ConfigError(f"images.hosts.{host}.path_style must be one of {', '.join(PATH_STYLES)}")
        if settings.client_key and not settings.client_cert:
            raise ConfigError(f"images.hosts.{host}.client_key needs client_cert")
    try:
        subnets.parse(cfg.network.default_subnet)
    except ValueError as exc:
        raise ConfigError(f"network.default_subnet: {exc}") from None
    if cfg.server.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("server.log_level must be debug, info, warning or error")
    if cfg.server.log_format not in ("json", "text"):
        raise ConfigError("server.log_format must be json or text")
    if cfg.metrics.address:
        host, sep, port = cfg.metrics.address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"metrics.address {cfg.metrics.address!r} must be host:port (empty: no endpoint)")
    st = cfg.streaming
    if not 0 <= st.port <= 65535:
        raise ConfigError("streaming.port must be 0-65535")
    positive = ("token_ttl_seconds", "max_tokens", "max_connections", "head_timeout_seconds", "stream_creation_timeout_seconds", "idle_timeout_seconds")
    for key in positive:
        if getattr(st, key) <= 0:
            raise ConfigError(f"streaming.{key} must be positive")


def load(path: str | Path | None) -> Config:
    """The configuration from a TOML file, or the embedded defaults when path is None."""
    if path is None:
        cfg = Config()
    else:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        cfg = _build(Config, data, "")
        # Handlers named in the file come on top of the built-in runc and crun, which stay available.
        cfg.runtime.handlers = {**RuntimeConfig().handlers, **cfg.runtime.handlers}
    for name, handler in cfg.runtime.handlers.items():
        if not handler.root:
            handler.root = str(cfg.run_dir / name)
    _validate(cfg)
    return cfg


def _toml_value(value: typing.Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def render_defaults() -> str:
    """The default configuration as a commented TOML file (`cri-shim config`)."""
    lines: list[str] = [
        "# cri-shim configuration; every key is optional and shown with its default.",
        "# SIGHUP (systemctl reload cri-shim) re-reads this file and applies the keys marked live;",
        "# a change to any other key is logged and waits for a restart.",
        "",
    ]

    def table(obj: typing.Any, name: str) -> None:
        lines.append(f"[{name}]")
        nested = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name in ("handlers", "hosts"):
                nested.append((f, value))
                continue
            live = " (live: applied on SIGHUP)" if f"{name}.{f.name}" in LIVE_KEYS else ""
            lines.append(f"# {f.metadata['doc']}{live}")
            shown = f"0o{value:o}" if f.name == "socket_mode" else _toml_value(value)
            lines.append(f"{f.name} = {shown}")
        lines.append("")
        for f, handlers in nested:
            lines.append(f"# {f.metadata['doc']}")
            for hname, handler in handlers.items():
                table(handler, f"{name}.{f.name}.{hname}")
            if f.name == "hosts":
                # None by default: the keys of one, commented out.
                lines.extend(f"# {line}" if line else "" for line in _example(f"{name}.hosts.\"registry.example\"", RegistryHostConfig()))

    def _example(title: str, obj: typing.Any) -> list[str]:
        shown = [f"[{title}]"]
        for f in dataclasses.fields(obj):
            shown += [f"# {f.metadata['doc']}", f"{f.name} = {_toml_value(getattr(obj, f.name))}"]
        return shown + [""]

    cfg = Config()
    for f in dataclasses.fields(cfg):
        table(getattr(cfg, f.name), f.name)
    return "\n".join(lines).rstrip() + "\n"
