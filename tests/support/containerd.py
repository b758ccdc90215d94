"""Runs Debian's containerd 1.6 with its CRI plugin on private dirs, for side-by-side benchmarks.

    with Containerd(registry.host, pause_ref) as c:
        c.endpoint        # unix:///tmp/ctrdXXXX/containerd.sock, a CRI runtime.v1 server
        c.daemon_pid(), c.shim_pids()

Everything it writes lives under one temp dir: root and state, its own config.toml, socket,
runc root, netns pins (netns_mounts_under_state_dir), host-local leases, and a CNI bridge network
of its own (tests/support/benchnet: the benchmark's chain, on another bridge and subnet). Two
places are hard-wired in containerd 1.6 (the shims' sockets under /run/containerd/s, libcni's
result cache under /var/lib/cni): they get a tmpfs for the run, so it must run in the private
mount namespace of scripts/in-private-ns. Pulls from the test registry go over plain http via a
hosts.toml for it, so nothing is ever sent past 127.0.0.1. Plain Python: no generated API code.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import benchnet
from tests.support.daemon import READY_TIMEOUT, toml, version_ok
from tests.support.leftovers import cgroup_dirs, kill_and_unmount

BINARY = "/usr/bin/containerd"
SHIM = "containerd-shim-runc-v2"
CNI_BIN_DIR = "/usr/lib/cni"
BRIDGE = "ctrdbench0"
SUBNET = "10.77.0.0/16"  # cri-shim's embedded network is 10.88.0.0/16 on crishim0
HARD_WIRED_DIRS = (Path("/run/containerd"), Path("/var/lib/cni"))


class Containerd:
    """One containerd process, the tmpfs mounts it needs, and what its pods leave to clean."""

    def __init__(self, registry_host: str, sandbox_image: str, log_level: str = "warn", network: str = "embedded",
                 firewall: bool = True) -> None:
        if os.environ.get("CRI_SHIM_IN_PRIVATE_NS") != "1":
            raise RuntimeError("containerd needs the private mount namespace: run under scripts/in-private-ns")
        # A short path, as for cri-shim: unix sockets must fit in sun_path.
        self.dir = Path(tempfile.mkdtemp(prefix="ctrd", dir="/tmp"))
        self.socket = self.dir / "containerd.sock"
        self.log_path = self.dir / "containerd.log"
        self.cgroup_parent = f"/{self.dir.name}"
        self.conf_dir = self.dir / "net.d"
        self.config_path = self.dir / "config.toml"
        self.config_path.write_text(toml(self._config(sandbox_image, log_level)))
        self._network(network, firewall)
        self._registry(registry_host)
        self.proc: subprocess.Popen[bytes] | None = None
        self.mounted: list[Path] = []
        self.created: list[Path] = []

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def _config(self, sandbox_image: str, log_level: str) -> dict[str, object]:
        """config.toml v2: keys from containerd 1.6's docs/cri/config.md, paths all below self.dir."""
        cri = {
            "sandbox_image": sandbox_image,
            "disable_apparmor": True,
            # The pause container asks for oom_score_adj -998; this machine refuses lowering it.
            "restrict_oom_score_adj": True,
            "netns_mounts_under_state_dir": True,
            "stream_server_address": "127.0.0.1",
            "stream_server_port": "0",
            "containerd": {
                "snapshotter": "overlayfs",
                "default_runtime_name": "runc",
                "runtimes": {"runc": {"runtime_type": "io.containerd.runc.v2",
                                      "options": {"SystemdCgroup": False, "Root": str(self.dir / "runc")}}},
            },
            "cni": {"bin_dir": CNI_BIN_DIR, "conf_dir": str(self.conf_dir), "max_conf_num": 1},
            "registry": {"config_path": str(self.dir / "certs.d")},
        }
        return {
            "version": 2,
            "root": str(self.dir / "root"),
            "state": str(self.dir / "state"),
            "grpc": {"address": str(self.socket)},
            "debug": {"level": log_level},
            "plugins": {"io.containerd.grpc.v1.cri": cri, "io.containerd.internal.v1.opt": {"path": str(self.dir / "opt")}},
        }

    def _network(self, network: str, firewall: bool) -> None:
        """The benchmark network (benchnet) on our own bridge and subnet."""
        benchnet.install(self.conf_dir, network, BRIDGE, SUBNET, self.dir / "cni-state", "containerd-bench", firewall)

    def _registry(self, host: str) -> None:
        """The test registry, spoken to over http (containerd would try https for an IP host)."""
        d = self.dir / "certs.d" / host
        d.mkdir(parents=True)
        (d / "hosts.toml").write_text(toml({"server": f"http://{host}", "host": {f"http://{host}": {"capabilities": ["pull", "resolve"]}}}))

    def start(self) -> Containerd:
        for path in HARD_WIRED_DIRS:
            if not path.exists():
                path.mkdir(parents=True)
                self.created.append(path)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0711", "tmpfs", str(path)], check=True)
            self.mounted.append(path)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([BINARY, "--config", str(self.config_path)], stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.socket.exists() and version_ok(self.endpoint):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"containerd not ready after {READY_TIMEOUT}s:\n{self.log_tail()}")

    def daemon_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def shim_pids(self) -> list[int]:
        """Live containerd-shim-runc-v2 processes serving this containerd (their -address names our socket)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except (FileNotFoundError, ProcessLookupError):
                continue
            if argv and os.path.basename(argv[0]) == SHIM.encode() and str(self.socket).encode() in argv:
                pids.append(int(entry.name))
        return sorted(pids)

    def stop(self) -> None:
        """Ends containerd, then any shim it left (pods already removed leave none), by PID; unmounts
        and removes everything below the temp dir and the tmpfs mounts; removes its pods' cgroups."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        kill_and_unmount(self.shim_pids(), self.dir)
        for path in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(path)], check=False)
        for path in reversed(self.created):
            path.rmdir()
        self.mounted, self.created = [], []
        for d in sorted(cgroup_dirs(self.cgroup_parent), key=lambda p: p.count("/"), reverse=True):
            try:
                os.rmdir(d)
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
