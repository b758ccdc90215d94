"""cri-shim side by side with containerd 1.6 (Debian): one workload, both runtimes, one run.

Run through scripts/bench (it installs containerd and enters the private namespaces):
    scripts/bench [--iterations N] [--parallel-pods N] [--concurrency N] [--containers N] [--pulls N]
                  [--network embedded|bridge|both] [--pid container|pod] [--handlers crun,runc]
                  [--userns N] [--infra N] [--concurrency-only]

A registry on 127.0.0.1 serves the images this builds: a one-layer busybox for the pods, a
three-layer busybox for the pull figures, and a pause image for containerd's sandboxes (Debian's
static catatonit in its pause mode). For each network in turn (both by default: see
tests/support/benchnet.py), containerd and one cri-shim for each handler measured (crun and runc
by default, each the daemon's default handler, each on its own bridge and subnet) are started on
private dirs and driven with the same client code over gRPC, taking turns (never two at once), so
that whatever else the machine is doing weighs on all alike; then emptied and stopped. What each
runtime's network ran is read back from it after its first pod (cri-shim's CNI attachment cache
and Status verbose, containerd's only conflist) and printed above its table. Measured for each:

- PullImage of the three-layer image absent (cold; RemoveImage before each) and present (warm),
  on the first network only (the network plays no part);
- pod start: RunPodSandbox + CreateContainer + StartContainer, the image cached, one at a time
  and with --concurrency in flight; the full cycle adds StopContainer, RemoveContainer,
  StopPodSandbox, RemovePodSandbox; pods per second are full cycles at that concurrency, each
  client starting its next pod as soon as it tore the last one down (so pod start at concurrency
  is timed beside other pods' teardown, as on a busy node); with --concurrency-only, only these;
- memory, on the first network only: the daemon's RSS just after start-up, idle after the latency
  runs, and with --containers running containers (one a pod); the monitors (conmon,
  containerd-shim) and the sandbox holders (containerd's pause containers; cri-shim pins
  namespaces instead) apart;
- cri-shim alone, on the first network: --userns pods in a user namespace of their own (hostUsers:
  false, each its own 65536 host ids) taking turns with as many without, on the first handler
  that offers them here (containerd 1.6 has none); and for every handler --infra pods with one PID
  namespace for the pod (pid=POD, as shareProcessNamespace asks: cri-shim runs its confined infra
  process for them) taking turns with as many with one per container (no infra process), for what
  the infra process adds (containerd runs its pause container for every pod, so it has no pair).

Pods are configured as kubelet does by default: their own network on the runtime's CNI bridge, a
container PID namespace (with --pid pod, one PID namespace for the pod: cri-shim then runs its
confined infra container, containerd its pause container as always), a cgroup parent per pod.
Every ratio against containerd reads the same way: above 1, cri-shim did better (tests/bench/tables.py).
A runtime that answers ListContainers with UNIMPLEMENTED gets the sandbox-only workload (and so
does the other, to keep the columns alike), with a note saying so. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc

from cri_shim import config as cri_shim_config
from cri_shim.network import forward
from cri_shim.network.pod import PodNetwork
from tests.bench.tables import HIGHER, LOWER, RATIO_NOTE, Row, comparison, cycles, p50, p99, paired, ratio, starts
from tests.support import benchnet
from tests.support.client import Cri, api
from tests.support.containerd import Containerd
from tests.support.daemon import Daemon
from tests.support.images import Pusher, build_image, busybox_layers, dir_layer
from tests.support.leftovers import infra_processes, release_leftovers
from tests.support.registry import Registry
from tests.support.userns import RANGE, userns

PAUSE_BINARY = Path("/usr/bin/catatonit")  # static; `catatonit -P` is a pause process
# Honours SIGTERM at once, and says so in its log (PID 1 of its PID namespace ignores signals it has no handler for).
CONTAINER_COMMAND = ["sh", "-c", "trap 'exit 0' TERM; echo ready; sleep 86400 & wait"]
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10
PID_MODES = {"container": api.CONTAINER, "pod": api.POD}
SETTLE_SECONDS = 3.0  # after the last start, before memory is read
PARALLEL_ROUND = 3  # concurrent pods go in turns of this many times the concurrency
T = TypeVar("T")


@dataclass
class Images:
    pod: str  # one layer, cached before the pod runs
    pull: str  # three layers, for the pull figures
    pause: str  # containerd's sandbox_image


def publish_images(registry: Registry, workdir: Path) -> Images:
    """Builds the three images from Debian's busybox and catatonit and pushes them."""
    pusher = Pusher(registry.url)
    env = {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}
    pusher.push(build_image(busybox_layers(workdir / "pod", 1), {"Cmd": ["sh"], **env}), "bench/busybox", "1")
    pusher.push(build_image(busybox_layers(workdir / "pull", 3), {"Cmd": ["sh"], **env}), "bench/layered", "1")
    root = workdir / "pause"
    root.mkdir()
    shutil.copy2(PAUSE_BINARY, root / "pause")
    pusher.push(build_image([dir_layer(root)], {"Entrypoint": ["/pause", "-P"]}), "bench/pause", "1")
    return Images(f"{registry.host}/bench/busybox:1", f"{registry.host}/bench/layered:1", f"{registry.host}/bench/pause:1")


@dataclass
class Procs:
    """What one runtime runs, found by PID: the daemon, its per-pod monitors, its sandbox holders."""

    daemon: Callable[[], int]
    monitors: Callable[[], list[int]]
    holders: Callable[[], list[int]]


@dataclass
class Runtime:
    name: str
    endpoint: str
    dir: Path  # log directories and cgroup parents are named after it
    procs: Procs
    chain: Callable[[str], str]  # what the network ran for the pod with this sandbox id, in one line


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _conmons(directory: Path) -> list[int]:
    """cri-shim's monitors: conmon processes whose command line names the daemon's directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _comm(int(entry.name)) == "conmon":
            try:
                if f"{directory}/".encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return found


def _children(parents: list[int], comm: str) -> list[int]:
    """Live processes named comm whose parent is one of parents."""
    wanted = set(parents)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[1]) in wanted and _comm(int(entry.name)) == comm:
            found.append(int(entry.name))
    return found


def cri_shim_chain(d: Daemon, sandbox_id: str) -> str:
    """The chain cri-shim ran for the pod, read back from its CNI attachment cache (so whatever its
    embedded default is today), and what its Status verbose says of its network."""
    entry = PodNetwork(cri_shim_config.load(d.config_path)).cache.load(sandbox_id)
    ran = f"{benchnet.describe(entry.conflist)} ({entry.source})" if entry else "no CNI attachment cached"
    cri = Cri(d.endpoint)
    try:
        info = cri.runtime.Status(api.StatusRequest(verbose=True)).info.get("network", "{}")
    finally:
        cri.close()
    return f"{ran}; Status verbose network: {json.dumps(json.loads(info), separators=(',', ':'))}"


@contextmanager
def cri_shim_runtime(registry: Registry, network: str, handler: str, index: int, firewall: bool) -> Iterator[Runtime]:
    """cri-shim with handler as its default, on a bridge and subnet of its own (the index-th), set
    through its config for its embedded chain (conf_dir left empty, its own state dir) or in the
    bench's file; firewall says whether that file has the firewall plugin."""
    bridge, subnet = f"crishim{index}", f"10.{88 + index}.0.0/16"
    d = Daemon({"server": {"log_level": "warning"}, "images": {"insecure_registries": [registry.host]},
                "runtime": {"default_handler": handler}, "network": {"default_bridge": bridge, "default_subnet": subnet}})
    if network != "embedded":
        benchnet.install(Path(d.config["network"]["conf_dir"]), network, bridge, subnet, d.dir / "bench-ipam",
                         "cri-shim-bench", firewall)
    d.start()
    assert d.proc is not None
    pid = d.proc.pid
    try:
        yield Runtime(f"cri-shim/{handler}", d.endpoint, d.dir,
                      Procs(lambda: pid, lambda: _conmons(d.dir), lambda: infra_processes(d)),
                      lambda sandbox_id: cri_shim_chain(d, sandbox_id))
    finally:
        d.stop()
        release_leftovers(d)
        shutil.rmtree(d.dir, ignore_errors=True)


@contextmanager
def containerd_runtime(images: Images, registry: Registry, network: str, firewall: bool) -> Iterator[Runtime]:
    c = Containerd(registry.host, images.pause, network=network, firewall=firewall)
    c.start()
    try:
        yield Runtime("containerd", c.endpoint, c.dir, Procs(c.daemon_pid, c.shim_pids, lambda: _children(c.shim_pids(), "pause")),
                      lambda _: f"{benchnet.describe(benchnet.installed(c.conf_dir))} ({c.conf_dir / benchnet.CONF_FILE})")
    finally:
        c.stop()


def serves_containers(runtime: Runtime) -> bool:
    cri = Cri(runtime.endpoint)
    try:
        cri.runtime.ListContainers(api.ListContainersRequest())
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            return False
        raise
    finally:
        cri.close()
    return True


class Laps:
    """Milliseconds each call of one pod took, by RPC name, in call order."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._last = time.perf_counter()

    def skip(self) -> None:
        """Leaves the time since the last call out of every lap."""
        self._last = time.perf_counter()

    def __call__(self, rpc: str, answer: T) -> T:
        """Records the call that just returned answer (so: laps("Rpc", stub.Rpc(request)))."""
        now = time.perf_counter()
        self.ms[rpc] = (now - self._last) * 1000
        self._last = now
        return answer


@dataclass
class Pod:
    laps: Laps
    sandbox_id: str = ""
    container_id: str = ""
    log: Path | None = None


class Workload:
    """The kubelet-like calls for one pod, the same for every runtime."""

    def __init__(self, cri: Cri, runtime: Runtime, image: str, containers: bool, pid: int) -> None:
        self.cri = cri
        self.runtime = runtime
        self.image = image
        self.containers = containers
        self.pid = pid
        self.logs = runtime.dir / "pods"

    def sandbox_config(self, name: str, userns: api.NamespaceOption | None = None, pid: int | None = None) -> api.PodSandboxConfig:
        """As kubelet makes it, log directory included (kubelet creates it before RunPodSandbox);
        in the workload's PID namespace mode unless pid names another."""
        uid = f"uid-{name}"
        log_directory = self.logs / f"bench_{name}_{uid}"
        log_directory.mkdir(parents=True, exist_ok=True)
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, namespace="bench", uid=uid),
            hostname=name,
            log_directory=str(log_directory),
            linux=api.LinuxPodSandboxConfig(cgroup_parent=f"/{self.runtime.dir.name}/pod{uid}"),
        )
        if userns is not None:
            config.linux.security_context.namespace_options.CopyFrom(userns)
        config.linux.security_context.namespace_options.pid = self.pid if pid is None else pid
        return config

    def start(self, name: str, userns: api.NamespaceOption | None = None, pid: int | None = None) -> Pod:
        """RunPodSandbox, then (in the container workload) CreateContainer and StartContainer of one
        container whose image is cached; in a user namespace with those options, in PID namespace mode pid."""
        config = self.sandbox_config(name, userns, pid)
        container = api.ContainerConfig(metadata=api.ContainerMetadata(name="app"), image=api.ImageSpec(image=self.image),
                                        command=CONTAINER_COMMAND, log_path="app.log")
        container.linux.security_context.namespace_options.CopyFrom(config.linux.security_context.namespace_options)
        rt = self.cri.runtime
        pod = Pod(Laps(), log=Path(config.log_directory) / container.log_path)
        pod.sandbox_id = pod.laps("RunPodSandbox", rt.RunPodSandbox(api.RunPodSandboxRequest(config=config))).pod_sandbox_id
        if self.containers:
            pod.container_id = pod.laps("CreateContainer", rt.CreateContainer(api.CreateContainerRequest(
                pod_sandbox_id=pod.sandbox_id, config=container, sandbox_config=config))).container_id
            pod.laps("StartContainer", rt.StartContainer(api.StartContainerRequest(container_id=pod.container_id)))
        return pod

    def stop(self, pod: Pod) -> None:
        """As kubelet tears a pod down: the container stopped (SIGTERM) and removed, then the sandbox."""
        rt = self.cri.runtime
        if pod.container_id:
            self.wait_ready(pod)
            pod.laps("StopContainer", rt.StopContainer(api.StopContainerRequest(container_id=pod.container_id,
                                                                                timeout=STOP_TIMEOUT)))
            pod.laps("RemoveContainer", rt.RemoveContainer(api.RemoveContainerRequest(container_id=pod.container_id)))
        pod.laps("StopPodSandbox", rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod.sandbox_id)))
        pod.laps("RemovePodSandbox", rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod.sandbox_id)))

    def wait_ready(self, pod: Pod) -> None:
        """Until the container's log says it handles SIGTERM, as kubelet stops what it saw ready: so
        StopContainer measures a graceful stop, not the timeout of a shell still starting. Not timed."""
        assert pod.log is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while not (pod.log.exists() and b"ready" in pod.log.read_bytes()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pod.log}: no 'ready' after {READY_TIMEOUT}s")
            time.sleep(0.005)
        pod.laps.skip()

    def cycle(self, name: str, userns: api.NamespaceOption | None = None, pid: int | None = None) -> dict[str, float]:
        """One pod started and torn down: ms by RPC."""
        pod = self.start(name, userns, pid)
        self.stop(pod)
        return pod.laps.ms

    def remove_everything(self) -> None:
        """Whatever pods remain (after a failure midway), so that nothing outlives the run."""
        for sandbox in self.cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items:
            self.stop(Pod(Laps(), sandbox.id))


@dataclass
class Memory:
    """kB, RSS and PSS summed over processes."""

    rss: int = 0
    pss: int = 0
    count: int = 0


def memory_of(pids: list[int]) -> Memory:
    total = Memory()
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:]}
        total.rss += fields["Rss"]
        total.pss += fields["Pss"]
        total.count += 1
    return total


@dataclass
class Results:
    cold_pull: list[float] = field(default_factory=list)
    warm_pull: list[float] = field(default_factory=list)
    serial: list[dict[str, float]] = field(default_factory=list)  # ms by RPC, one dict a pod
    parallel: list[dict[str, float]] = field(default_factory=list)
    parallel_seconds: float = 0.0  # wall time of the concurrent rounds
    rss_started: Memory = field(default_factory=Memory)
    rss_idle: Memory = field(default_factory=Memory)
    rss_loaded: Memory = field(default_factory=Memory)
    monitors: Memory = field(default_factory=Memory)
    holders: Memory = field(default_factory=Memory)
    userns: list[dict[str, float]] = field(default_factory=list)  # in a user namespace, taking turns with
    plain: list[dict[str, float]] = field(default_factory=list)  # these without
    infra: list[dict[str, float]] = field(default_factory=list)  # a PID namespace for the pod, taking turns with
    no_infra: list[dict[str, float]] = field(default_factory=list)  # these with one per container
    infra_processes: tuple[int, int] = (0, 0)  # infra processes while one pod of each kind ran


def timed(call: Callable[[], object]) -> float:
    t = time.perf_counter()
    call()
    return (time.perf_counter() - t) * 1000


@dataclass
class Side:
    """One runtime under the workload: its client, its pods and what was measured."""

    runtime: Runtime
    cri: Cri
    work: Workload
    results: Results
    chain: str = ""  # what its network ran, read back after the first pod


@contextmanager
def side(runtime: Runtime, pod_image: str, containers: bool, pid: int) -> Iterator[Side]:
    """A client on a just started runtime; on the way out, whatever pods remain are removed."""
    cri = Cri(runtime.endpoint)
    s = Side(runtime, cri, Workload(cri, runtime, pod_image, containers, pid), Results(rss_started=memory_of([runtime.procs.daemon()])))
    try:
        yield s
    finally:
        s.work.remove_everything()
        cri.close()


def measure(sides: list[Side], images: Images, args: argparse.Namespace, full: bool) -> None:
    """The workload against every runtime, taking turns (pull by pull, pod by pod, round by round of
    concurrent pods), so that whatever else the machine is doing weighs on all of them alike; the
    pulls and the memory figures only when full."""
    pull = api.PullImageRequest(image=api.ImageSpec(image=images.pull))
    pulls = args.pulls if full and not args.concurrency_only else 0
    print(f"pulls: {pulls} cold, {pulls} warm", flush=True)
    for _ in range(pulls):
        for s in sides:
            s.cri.image.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=images.pull)))
            s.results.cold_pull.append(timed(lambda: s.cri.image.PullImage(pull)))
    for _ in range(pulls):
        for s in sides:
            s.results.warm_pull.append(timed(lambda: s.cri.image.PullImage(pull)))
    for s in sides:  # a first pod, not counted: the network it ran is read back meanwhile
        s.cri.image.PullImage(api.PullImageRequest(image=api.ImageSpec(image=images.pod)))
        pod = s.work.start("warmup")
        s.chain = s.runtime.chain(pod.sandbox_id)
        s.work.stop(pod)
    if args.concurrency_only:
        with ThreadPoolExecutor(args.concurrency) as pool:
            measure_parallel(sides, pool, args)
        return
    print(f"pods one at a time: {args.iterations}", flush=True)
    for i in range(args.iterations):
        for s in sides:
            s.results.serial.append(s.work.cycle(f"serial-{i}"))
    with ThreadPoolExecutor(args.concurrency) as pool:
        measure_parallel(sides, pool, args)
        for s in sides if full else []:  # one runtime at a time: the other ones idle meanwhile
            print(f"memory: {s.runtime.name} with {args.containers}", flush=True)
            r = s.results
            r.rss_idle = memory_of([s.runtime.procs.daemon()])
            pods = list(pool.map(s.work.start, [f"mem-{i}" for i in range(args.containers)]))
            time.sleep(SETTLE_SECONDS)
            r.rss_loaded = memory_of([s.runtime.procs.daemon()])
            r.monitors = memory_of(s.runtime.procs.monitors())
            r.holders = memory_of(s.runtime.procs.holders())
            list(pool.map(s.work.stop, pods))


def measure_parallel(sides: list[Side], pool: ThreadPoolExecutor, args: argparse.Namespace) -> None:
    """Full pod cycles, --concurrency clients at once, in rounds the runtimes take turns at; the
    wall time of every round is summed for the pods per second."""
    print(f"pods {args.concurrency} at a time: {args.parallel_pods}", flush=True)
    names = [f"parallel-{i}" for i in range(args.parallel_pods)]
    per_round = PARALLEL_ROUND * args.concurrency
    for first in range(0, len(names), per_round):
        for s in sides:
            t = time.perf_counter()
            s.results.parallel += pool.map(s.work.cycle, names[first:first + per_round])
            s.results.parallel_seconds += time.perf_counter() - t


def pods_per_second(r: Results) -> float:
    return len(r.parallel) / r.parallel_seconds


def measure_userns(ours: Side, count: int) -> bool:
    """cri-shim's pods with a user namespace taking turns with pods without; False, with nothing
    measured, when the handler offers no user namespaces on this host."""
    print(f"{ours.runtime.name} pods with and without a user namespace: {count} each", flush=True)
    try:
        ours.work.cycle("userns-probe", userns(RANGE))
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        print(f"  {ours.runtime.name}: {exc.details()}", flush=True)
        return False
    for i in range(count):
        ours.results.userns.append(ours.work.cycle(f"userns-{i}", userns(RANGE * (i + 1))))
        ours.results.plain.append(ours.work.cycle(f"plain-{i}"))
    return True


def measure_infra(ours: Side, count: int) -> None:
    """cri-shim's pods with one PID namespace for the pod (its confined infra process runs) taking
    turns with pods with one per container (none runs); first one of each, not timed, for the
    number of infra processes it runs."""
    print(f"{ours.runtime.name} pods with pid=POD and pid=CONTAINER: {count} each", flush=True)
    seen = []
    for mode in (api.POD, api.CONTAINER):
        pod = ours.work.start(f"infra-probe-{mode}", pid=mode)
        seen.append(len(ours.runtime.procs.holders()))
        ours.work.stop(pod)
    ours.results.infra_processes = (seen[0], seen[1])
    for i in range(count):
        ours.results.infra.append(ours.work.cycle(f"infra-{i}", pid=api.POD))
        ours.results.no_infra.append(ours.work.cycle(f"no-infra-{i}", pid=api.CONTAINER))


@dataclass
class Run:
    """One network's measurements: every runtime's side (containerd's last) and what else it holds."""

    network: str
    sides: list[Side]
    containers: bool  # the container workload (else sandboxes only)
    full: bool  # pulls and memory measured too

    @property
    def ours(self) -> list[Side]:
        return self.sides[:-1]

    @property
    def theirs(self) -> Side:
        return self.sides[-1]


def report_chains(run: Run, firewall: forward.FirewallDecision) -> None:
    print(f"\n=== network {run.network}: {benchnet.NETWORKS[run.network]}")
    for s in run.sides:
        print(f"  {s.runtime.name} ran: {s.chain}")
    print(f"  firewall decision (cri_shim.network.forward, in the bench's namespace): "
          f"{'needed' if firewall.needed else 'not needed'}: {firewall.reason}")


def report(run: Run, args: argparse.Namespace) -> None:
    """One column per cri-shim handler and containerd's, then one ratio per handler (RATIO_NOTE)."""
    c = args.concurrency
    n = args.containers
    unit = "containers" if run.containers else "pods"
    mb = 1024.0
    picks: list[tuple[str, Callable[[Results], float], str]] = []
    if run.full and args.pulls:
        picks += [(f"cold pull, 3 layers, p50 ms (n={args.pulls})", lambda r: p50(r.cold_pull), LOWER),
                  (f"warm re-pull p50 ms (n={args.pulls})", lambda r: p50(r.warm_pull), LOWER)]
    for label, pick, which, count in [("pod start, concurrency 1", starts, "serial", args.iterations),
                                      (f"pod start, concurrency {c}", starts, "parallel", args.parallel_pods),
                                      ("full pod cycle, concurrency 1", cycles, "serial", args.iterations),
                                      (f"full pod cycle, concurrency {c}", cycles, "parallel", args.parallel_pods)]:
        picks.append((f"{label}, p50 ms (n={count})", lambda r, pick=pick, w=which: p50(pick(getattr(r, w))), LOWER))
        picks.append((f"{label}, p99 ms", lambda r, pick=pick, w=which: p99(pick(getattr(r, w))), LOWER))
    for rpc in run.ours[0].results.serial[0]:
        picks.append((f"  {rpc}, concurrency 1, p50 ms", lambda r, rpc=rpc: p50([laps[rpc] for laps in r.serial]), LOWER))
    picks.append((f"pods per second (full cycles, concurrency {c}, n={args.parallel_pods})", pods_per_second, HIGHER))
    if run.full:
        picks += [
            ("daemon RSS just started, MB", lambda r: r.rss_started.rss / mb, LOWER),
            ("daemon RSS idle after the runs, MB", lambda r: r.rss_idle.rss / mb, LOWER),
            (f"daemon RSS with {n} {unit}, MB", lambda r: r.rss_loaded.rss / mb, LOWER),
            (f"monitors' RSS total with {n} {unit}, MB", lambda r: r.monitors.rss / mb, LOWER),
            (f"monitors' PSS total with {n} {unit}, MB", lambda r: r.monitors.pss / mb, LOWER),
            (f"sandbox holders' RSS total with {n} {unit}, MB", lambda r: r.holders.rss / mb, LOWER),
            (f"memory per {unit[:-1]} (daemon RSS growth + monitor and holder PSS), MB",
             lambda r: (r.rss_loaded.rss - r.rss_idle.rss + r.monitors.pss + r.holders.pss) / n / mb, LOWER),
        ]
    rows = [Row(label, [value(s.results) for s in run.ours], value(run.theirs.results), better)
            for label, value, better in picks]
    print(f"\n{RATIO_NOTE}")
    print("\n".join(comparison([s.runtime.name for s in run.ours], run.theirs.runtime.name, rows)))
    if not run.full:
        print(f"(pulls and memory are measured on the first network only: {args.networks[0]})")
    t = run.theirs.results
    for s in run.ours if run.full else []:
        r = s.results
        print(f"processes with {n} {unit}: {s.runtime.name} {r.monitors.count} conmon, {r.holders.count} infra; "
              f"containerd {t.monitors.count} shims, {t.holders.count} pause")
    if not run.containers:
        print("NOTE: cri-shim answered ListContainers with UNIMPLEMENTED, so both runtimes ran the sandbox-only\n"
              "workload: pod start is RunPodSandbox, the cycle Stop+RemovePodSandbox, memory is with pods.")


def report_concurrency(run: Run, args: argparse.Namespace) -> None:
    """The concurrency goal: pods per second (full cycles, --concurrency clients each starting and
    tearing down pods one after another) against containerd's, and the spread of pod start under
    that load, p99 over p50."""
    print(f"\nconcurrency {args.concurrency} (n={args.parallel_pods}){'':18}  {'pods/s':>8}  {'start p50':>10}  "
          f"{'start p99':>10}  {'p99/p50':>8}  {'ratio pods/s':>12}")
    theirs_rate = pods_per_second(run.theirs.results)
    for s in run.sides:
        r = s.results
        rate, a, b = pods_per_second(r), p50(starts(r.parallel)), p99(starts(r.parallel))
        mine = ratio(rate, theirs_rate, HIGHER)
        print(f"{s.runtime.name:40}  {rate:8.2f}  {a:10.1f}  {b:10.1f}  {b / a:8.2f}  {'-' if mine is None else f'{mine:.2f}':>12}")


def goals(run: Run, args: argparse.Namespace) -> list[str]:
    """The issue's goal lines for every cri-shim handler on this network."""
    start = "RunPodSandbox+CreateContainer+StartContainer" if run.containers else "RunPodSandbox"
    unit = "containers" if run.containers else "pods"
    t = run.theirs.results
    lines = []
    for s in run.ours:
        r = s.results
        where = f"{run.network}, {s.runtime.name}"
        if r.serial:
            lines.append(f"goal ({where}): pod start ({start}) and cycle at least 2.5x faster than containerd: "
                         f"{p50(starts(t.serial)) / p50(starts(r.serial)):.2f}x and {p50(cycles(t.serial)) / p50(cycles(r.serial)):.2f}x "
                         f"at p50, concurrency 1 (n={len(r.serial)})")
        lines.append(f"goal ({where}): {args.concurrency} at a time, pods per second at least 2x containerd's and pod start "
                     f"p99 under 2x its p50: {pods_per_second(r) / pods_per_second(t):.2f}x and "
                     f"{p99(starts(r.parallel)) / p50(starts(r.parallel)):.2f} (n={len(r.parallel)})")
        if run.full and not args.concurrency_only:
            lines.append(f"goal ({where}): daemon under 60 MB RSS with {args.containers} {unit}, monitors excluded: "
                         f"{r.rss_loaded.rss / 1024:.1f} MB")
    return lines


def report_userns(s: Side) -> None:
    r = s.results
    print()
    print("\n".join(paired(f"{s.runtime.name}, one at a time (n={len(r.userns)} each)", ("userns", "no userns"),
                           r.userns, r.plain, list(r.userns[0]))))
    print(f"goal: pod start in a user namespace within 1.3x of one without: {p50(starts(r.userns)) / p50(starts(r.plain)):.2f}x at p50")


def report_infra(s: Side) -> None:
    r = s.results
    print()
    print("\n".join(paired(f"{s.runtime.name}, one at a time (n={len(r.infra)} each)", ("pid=POD", "pid=CONTAINER"),
                           r.infra, r.no_infra, ["RunPodSandbox", "StopPodSandbox"])))
    print(f"infra processes while one pod ran: {r.infra_processes[0]} with pid=POD, {r.infra_processes[1]} with pid=CONTAINER; "
          f"pod start cost of the infra process at p50: {p50(starts(r.infra)) - p50(starts(r.no_infra)):+.1f} ms")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=30, help="pods started and torn down one at a time")
    parser.add_argument("--parallel-pods", type=int, default=60, help="pods started and torn down with --concurrency in flight")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--containers", type=int, default=100, help="running containers (one a pod) for the memory figures")
    parser.add_argument("--pulls", type=int, default=5, help="cold pulls, then as many warm re-pulls")
    parser.add_argument("--network", choices=[*benchnet.NETWORKS, "both"], default="both",
                        help="the pods' CNI network (tests/support/benchnet.py): both in turn (the default), or one")
    parser.add_argument("--handlers", default="crun,runc",
                        help="cri-shim's runtime handlers to measure, comma-separated: one daemon each, as its default")
    parser.add_argument("--pid", choices=list(PID_MODES), default="container",
                        help="the pods' PID namespace: one per container (kubelet's default) or one for the pod")
    parser.add_argument("--userns", type=int, default=20,
                        help="cri-shim pods in a user namespace, taking turns with as many without (0: none)")
    parser.add_argument("--infra", type=int, default=20,
                        help="cri-shim pods with pid=POD (an infra process), taking turns with as many pid=CONTAINER (0: none)")
    parser.add_argument("--concurrency-only", action="store_true",
                        help="only the pods --concurrency at a time: pods per second and pod start p50/p99")
    args = parser.parse_args()
    args.networks = list(benchnet.NETWORKS) if args.network == "both" else [args.network]
    return args


def measure_network(stack: ExitStack, registry: Registry, images: Images, network: str, k: int,
                    firewall: forward.FirewallDecision, args: argparse.Namespace) -> Run:
    """Every runtime started on the network (cri-shim's bridges numbered after the ones of the
    networks before it) and measured; the first network measured in full, with the cri-shim-only
    tables; they are stopped when stack unwinds."""
    handlers = args.handlers.split(",")
    ours = [stack.enter_context(cri_shim_runtime(registry, network, handler, k * len(handlers) + i, firewall.needed))
            for i, handler in enumerate(handlers)]
    containers = serves_containers(ours[0])
    theirs = stack.enter_context(containerd_runtime(images, registry, network, firewall.needed))
    sides = [stack.enter_context(side(rt, images.pod, containers, PID_MODES[args.pid])) for rt in (*ours, theirs)]
    run = Run(network, sides, containers, full=k == 0)
    print(f"network {network}", flush=True)
    measure(sides, images, args, run.full)
    if run.full and containers and not args.concurrency_only:
        for s in run.ours if args.userns else []:  # on the first handler that offers user namespaces here
            if measure_userns(s, args.userns):
                break
    if run.full and not args.concurrency_only:
        for s in run.ours if args.infra else []:
            measure_infra(s, args.infra)
    return run


def main() -> None:
    args = parse_args()
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    firewall = forward.decide()  # as cri-shim decides it for its embedded chain, here
    runs = []
    try:
        with ExitStack() as stack:  # unwinds: the registry stopped
            registry = stack.enter_context(Registry())
            images = publish_images(registry, workdir)
            for k, network in enumerate(args.networks):
                with ExitStack() as runtimes:  # unwinds: pods removed, containerd and cri-shim stopped
                    runs.append(measure_network(runtimes, registry, images, network, k, firewall, args))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, measured in {time.monotonic() - began:.0f} s; "
          f"cri-shim on {args.handlers} vs containerd 1.6 (Debian) on runc, a PID namespace per {args.pid}; "
          f"networks in turn: {', '.join(args.networks)}")
    for run in runs:
        report_chains(run, firewall)
        if not args.concurrency_only:
            report(run, args)
        report_concurrency(run, args)
    first = runs[0]
    if any(s.results.userns for s in first.ours) or any(s.results.infra for s in first.ours):
        print(f"\n=== cri-shim alone, on network {first.network} (cost ratio: the first column over the second, "
              "above 1 the first cost more)")
    for s in first.ours:
        if s.results.userns:
            report_userns(s)
    for s in first.ours:
        if s.results.infra:
            report_infra(s)
    print("\n=== goals, for every network and handler")
    for run in runs:
        print("\n".join(goals(run, args)))


if __name__ == "__main__":
    main()
