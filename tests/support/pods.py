"""Pod helpers for sandbox tests: configs, running commands in pod namespaces, and leak snapshots.

Everything here acts inside the private namespaces scripts/test provides, on paths derived from
the test daemon's own directory, so parallel runs never meet.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.leftovers import cgroup_dirs, container_processes, infra_processes

BUSYBOX = "/bin/busybox"


def pod_config(name: str = "pod", uid: str | None = None, attempt: int = 0, **fields: Any) -> api.PodSandboxConfig:
    """A PodSandboxConfig with metadata filled in; keyword fields are passed to the message."""
    meta = api.PodSandboxMetadata(name=name, namespace="test-ns", uid=uid or f"uid-{name}", attempt=attempt)
    return api.PodSandboxConfig(metadata=meta, **fields)


def run_pod(cri: Cri, config: api.PodSandboxConfig, handler: str = "") -> str:
    return cri.runtime.RunPodSandbox(api.RunPodSandboxRequest(config=config, runtime_handler=handler)).pod_sandbox_id


def status(cri: Cri, sandbox_id: str) -> tuple[api.PodSandboxStatus, dict[str, Any]]:
    """The status and the verbose info object of a sandbox."""
    answer = cri.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True))
    return answer.status, json.loads(answer.info["info"])


def stop_pod(cri: Cri, sandbox_id: str) -> None:
    cri.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))


def remove_pod(cri: Cri, sandbox_id: str) -> None:
    cri.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))


def in_pod(info: dict[str, Any], *argv: str, kinds: tuple[str, ...] = ("net", "ipc", "uts"), timeout: float = 10) -> str:
    """Runs argv in the pod's pinned namespaces (nsenter); its stdout."""
    flags = [f"--{'net' if k == 'net' else k}={info['namespaces'][k]}" for k in kinds]
    out = subprocess.run(["nsenter", *flags, "--", *argv], check=True, capture_output=True, text=True, timeout=timeout)
    return out.stdout


def serve_http(netns: str, port: int, root: Path) -> subprocess.Popen[bytes]:
    """busybox httpd serving root on port inside a pod network namespace; the caller kills it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_text("hello from the pod\n")
    proc = subprocess.Popen(["nsenter", f"--net={netns}", "--", BUSYBOX, "httpd", "-f", "-p", str(port), "-h", str(root)])
    return proc


def http_get(host: str, port: int, netns: str | None = None, attempts: int = 50) -> str:
    """The body of GET / from host:port, from the test's network namespace or from a pod's (busybox nc)."""
    request = b"GET /index.html HTTP/1.0\r\n\r\n"
    last: Exception | None = None
    for _ in range(attempts):  # the server may still be binding its socket
        try:
            if netns is None:
                with socket.create_connection((host, port), timeout=5) as s:
                    s.sendall(request)
                    data = b"".join(iter(lambda: s.recv(65536), b""))
            else:
                data = subprocess.run(
                    ["nsenter", f"--net={netns}", "--", BUSYBOX, "nc", "-w", "5", host, str(port)],
                    input=request, capture_output=True, check=True, timeout=10,
                ).stdout
            if data:
                return data.decode(errors="replace").split("\r\n\r\n", 1)[-1]
        except (OSError, subprocess.CalledProcessError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"no answer from {host}:{port}: {last}")


def iptables_rules() -> Counter[str]:
    """The rules and chains of iptables-save (timestamps and counters dropped)."""
    out = subprocess.run(["iptables-save"], check=True, capture_output=True, text=True).stdout
    return Counter(line for line in out.splitlines() if line.startswith(("-A", ":")) and not line.startswith("#"))


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def mounts() -> Counter[str]:
    """Mount points with their types in this mount namespace."""
    with open("/proc/self/mountinfo") as f:
        return Counter(" ".join((l.split()[4], l.split()[l.split().index("-", 6) + 1])) for l in f)


def links() -> list[str]:
    """Network interfaces of the test's namespace (asked of the kernel: /sys/class/net here is the
    sysfs of the namespace that mounted it, the host's)."""
    return sorted(name for _, name in socket.if_nameindex())


def bridge_ports(bridge: str) -> list[str]:
    """The interfaces attached to a bridge of the test's namespace (none when it does not exist)."""
    out = subprocess.run(["ip", "-j", "link", "show", "master", bridge], capture_output=True, text=True)
    return sorted(link["ifname"] for link in json.loads(out.stdout or "[]")) if out.returncode == 0 else []


# How long a stopped pod's veth may take to go: the kernel deletes it with the pod's network
# namespace, in its own cleanup work after StopPodSandbox answered (cri_shim.network.pod).
VETH_SETTLE_SECONDS = 10.0


def settled_links(daemon: Daemon) -> list[str]:
    """links(), once the daemon's bridge has no more ports than its pods hold address leases: a
    port beyond them is a stopped pod's veth the kernel is still deleting (bounded wait; a veth
    that stays is then reported as the leak it is)."""
    bridge = daemon.config.get("network", {}).get("default_bridge", "crishim0")
    leases = Path(daemon.config["paths"]["state_dir"]) / "cni" / "ipam"
    deadline = time.monotonic() + VETH_SETTLE_SECONDS
    while time.monotonic() < deadline:
        ports = len(bridge_ports(bridge))
        held = sum(1 for p in leases.rglob("*") if p.is_file() and not p.name.startswith(("last_reserved_ip", "lock")))
        if ports <= held:
            break
        time.sleep(0.05)
    return links()


def snapshot(daemon: Daemon) -> dict[str, Any]:
    """Everything a sandbox or container can leave behind, for before/after comparison: records
    and rootfs dirs of the state dir; runc state, bundles and exit files of the run dir; overlay
    and namespace mounts; cgroups; infra, monitor and container processes; iptables rules; links."""
    state = Path(daemon.config["paths"]["state_dir"])
    run = Path(daemon.config["paths"]["run_dir"])
    return {
        "state files": files_under(state),
        "run files": files_under(run),
        "mounts": mounts(),
        "cgroups": cgroup_dirs(daemon.config["runtime"]["default_cgroup_parent"]),
        "iptables": iptables_rules(),
        "infra": infra_processes(daemon),
        "monitors and containers": container_processes(daemon),
        "links": settled_links(daemon),
    }


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    """What differs between two snapshots, by key: entries added and entries gone. Empty when
    nothing differs; short enough to read in a failure, where the snapshots themselves are not."""
    out = {}
    for key in before.keys() | after.keys():
        old, new = Counter(before.get(key, [])), Counter(after.get(key, []))
        if old != new:
            out[key] = {"added": sorted((new - old).elements(), key=str), "gone": sorted((old - new).elements(), key=str)}
    return out


def remove_all_pods(cri: Cri) -> None:
    """Removes every pod the daemon lists, after a test that may have failed: through the runtime,
    so CNI DEL drops the pods' iptables rules, which outlive the daemon."""
    for pod in cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items:
        remove_pod(cri, pod.id)


def default_handler(cri: Cri) -> str:
    """The handler the daemon runs pods that name none with (verbose Status)."""
    info = cri.runtime.Status(api.StatusRequest(verbose=True)).info
    return str(json.loads(info["runtimeHandlers"])["default"])


def warm_up(cri: Cri) -> None:
    """Runs and removes one pod with a host port, so that what outlives pods by design (the bridge,
    the plugins' shared iptables chains, IPAM's lock files) exists before a leak snapshot."""
    remove_pod(cri, run_pod(cri, pod_config("warmup", port_mappings=[api.PortMapping(container_port=80, host_port=18000)])))
