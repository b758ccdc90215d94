"""Container records, the CRI log parser, cgroup stats readers and the exit watcher."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.cgroups import oomwatch, stats
from cri_shim.runtime import containers, exits
from cri_shim.runtime.exits import ExitWatcher
from cri_shim.runtime.record import (CONTAINER_CREATED, CONTAINER_EXITED, CONTAINER_RUNNING, CONTAINER_UNKNOWN,
                                     ContainerRecord)
from cri_shim.store import atomic
from cri_shim.store.records import RecordStore
from tests.support import crilog

pytestmark = pytest.mark.unit


def record(**kw: object) -> ContainerRecord:
    kw.setdefault("config", api.ContainerConfig(metadata=api.ContainerMetadata(name="m")))
    return ContainerRecord(id="c1", name="n", sandbox_id="s", image="i", image_ref="r",
                           image_id="id", runtime_handler="runc", bundle="/b", **kw)  # type: ignore[arg-type]


def test_state_is_derived_from_timestamps() -> None:
    assert (CONTAINER_CREATED, CONTAINER_RUNNING, CONTAINER_EXITED, CONTAINER_UNKNOWN) == (
        api.CONTAINER_CREATED, api.CONTAINER_RUNNING, api.CONTAINER_EXITED, api.CONTAINER_UNKNOWN)
    assert record().state == CONTAINER_UNKNOWN
    assert record(created_at=1).state == CONTAINER_CREATED
    assert record(created_at=1, started_at=2).state == CONTAINER_RUNNING
    assert record(created_at=1, started_at=2, finished_at=3).state == CONTAINER_EXITED
    assert record(created_at=1, finished_at=3).state == CONTAINER_EXITED


def test_record_round_trips_through_the_store(tmp_path: Path) -> None:
    store: RecordStore[ContainerRecord] = RecordStore("container", tmp_path, ContainerRecord)
    config = api.ContainerConfig(metadata=api.ContainerMetadata(name="m"), mounts=[api.Mount(container_path="/m", readonly=True)])
    rec = record(created_at=5, config=config, user={"uid": 1, "gid": 2, "supplemental_groups": [2]})
    store.save(rec)
    again: RecordStore[ContainerRecord] = RecordStore("container", tmp_path, ContainerRecord)
    assert again.load() == [] and again.get("c1") == rec


# A container record as the version before the whole config was kept wrote it (schema 1).
EARLIER_RECORD = {
    "id": "c2", "name": "web_pod_ns_uid_1", "sandbox_id": "s", "metadata_name": "web", "attempt": 1,
    "image": "busybox:test", "image_ref": "sha256:" + "0" * 64, "image_id": "sha256:" + "0" * 64,
    "runtime_handler": "runc", "bundle": "/run/cri-shim/bundles/c2", "log_path": "/var/log/pods/p/web/1.log",
    "labels": {"app": "web"}, "annotations": {"note": "x"},
    "mounts": [{"container_path": "/data", "host_path": "/srv/data", "readonly": True,
                "propagation": "PROPAGATION_HOST_TO_CONTAINER"}],
    "resources": {"cpu_shares": "256", "memory_limit_in_bytes": "67108864", "unified": {"memory.high": "1"}},
    "user": {"uid": 1000, "gid": 1000, "supplemental_groups": [1000]}, "stop_signal": 2,
    "stdin": True, "stdin_once": True, "tty": False, "created_at": 5, "started_at": 6, "finished_at": 0,
    "exit_code": 0, "reason": "", "message": "", "pid": 42, "monitor_pid": 41, "monitor_start_time": 7,
    "cgroups_path": "/kubepods/c2", "image_volumes": {"/v": "/var/lib/cri-shim/volumes/v"}, "idmapped": {},
}


def test_a_record_of_the_earlier_form_loads_and_is_written_back_in_the_current_one(tmp_path: Path) -> None:
    """A restart after an upgrade: the records on disk hold the config's fields one by one."""
    (tmp_path / "c2.json").write_text(json.dumps({"schema": 1, "record": EARLIER_RECORD}))
    store: RecordStore[ContainerRecord] = RecordStore("container", tmp_path, ContainerRecord)
    assert store.load() == []
    rec = store.get("c2")
    assert rec is not None
    expected = api.ContainerConfig(
        metadata=api.ContainerMetadata(name="web", attempt=1), image=api.ImageSpec(image="busybox:test"),
        labels={"app": "web"}, annotations={"note": "x"}, stdin=True, stdin_once=True,
        mounts=[api.Mount(container_path="/data", host_path="/srv/data", readonly=True,
                          propagation=api.PROPAGATION_HOST_TO_CONTAINER)],
        linux=api.LinuxContainerConfig(resources=api.LinuxContainerResources(
            cpu_shares=256, memory_limit_in_bytes=64 * 1024 * 1024, unified={"memory.high": "1"})),
    )
    assert rec.config == expected
    assert (rec.log_path, rec.user, rec.stop_signal, rec.pid, rec.monitor_pid, rec.cgroups_path, rec.image_volumes) == (
        "/var/log/pods/p/web/1.log", {"uid": 1000, "gid": 1000, "supplemental_groups": [1000]}, 2, 42, 41,
        "/kubepods/c2", {"/v": "/var/lib/cri-shim/volumes/v"})
    assert rec.state == CONTAINER_RUNNING
    written = json.loads((tmp_path / "c2.json").read_text())["record"]
    assert "config" in written and not {"metadata_name", "labels", "mounts", "resources", "tty"} & written.keys()
    again: RecordStore[ContainerRecord] = RecordStore("container", tmp_path, ContainerRecord)
    assert again.load() == [] and again.get("c2") == rec


def test_cri_log_parser() -> None:
    e = crilog.parse_line("2016-10-06T00:17:09.669794202Z stdout F hello world\n")
    assert (e.stream, e.partial, e.content, e.nanos) == ("stdout", False, "hello world", 669794202)
    e = crilog.parse_line("2026-11-24T17:56:23.2735+00:00 stderr P:x part")
    assert (e.stream, e.partial, e.content, e.nanos) == ("stderr", True, "part", 273500000)
    assert crilog.parse_line("2026-11-24T17:56:23Z stdout F ").content == ""
    for bad in ("yesterday stdout F x", "2026-11-24T17:56:23Z stdin F x", "2026-11-24T17:56:23Z stdout Q x", "x"):
        with pytest.raises(ValueError):
            crilog.parse_line(bad)
    entries = [crilog.parse_line(f"2026-11-24T17:56:23Z {s} {t} {c}") for s, t, c in
               [("stdout", "P", "ab"), ("stderr", "F", "err"), ("stdout", "F", "cd"), ("stdout", "P", "tail")]]
    assert crilog.messages(entries) == ["err", "abcd", "tail"]
    assert crilog.messages(entries, "stdout") == ["abcd", "tail"]


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_stats_cgroup_v1(tmp_path: Path) -> None:
    cg = "/pod/c1"
    write(tmp_path, "cpuacct/pod/c1/cpuacct.usage", "123456789\n")
    write(tmp_path, "memory/pod/c1/memory.usage_in_bytes", "10000\n")
    write(tmp_path, "memory/pod/c1/memory.limit_in_bytes", "9223372036854771712\n")
    write(tmp_path, "memory/pod/c1/memory.stat", "cache 1\ntotal_inactive_file 3000\ntotal_rss 4000\ntotal_pgfault 50\ntotal_pgmajfault 2\n")
    write(tmp_path, "memory/pod/c1/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    s = stats.read(cg, tmp_path)
    assert s is not None
    assert (s.cpu_usage_ns, s.memory_usage_bytes, s.memory_working_set_bytes, s.memory_rss_bytes) == (123456789, 10000, 7000, 4000)
    assert (s.page_faults, s.major_page_faults, s.memory_limit_bytes, s.memory_available_bytes, s.oom_kills) == (50, 2, None, None, 1)
    assert stats.oom_kills(cg, tmp_path) == 1
    assert stats.read("/pod/gone", tmp_path) is None


def test_stats_cgroup_v2(tmp_path: Path) -> None:
    write(tmp_path, "cgroup.controllers", "cpu memory\n")
    write(tmp_path, "kubepods.slice/kubepods-pod1.slice/cri-shim-c1.scope/cpu.stat", "usage_usec 1500\nuser_usec 1000\n")
    d = "kubepods.slice/kubepods-pod1.slice/cri-shim-c1.scope/"
    write(tmp_path, d + "memory.current", "8192\n")
    write(tmp_path, d + "memory.max", "16384\n")
    write(tmp_path, d + "memory.stat", "anon 4096\ninactive_file 9000\npgfault 7\npgmajfault 1\n")
    write(tmp_path, d + "memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
    s = stats.read("kubepods-pod1.slice:cri-shim:c1", tmp_path)
    assert s is not None
    assert (s.cpu_usage_ns, s.memory_usage_bytes, s.memory_working_set_bytes, s.memory_rss_bytes) == (1500000, 8192, 0, 4096)
    assert (s.memory_limit_bytes, s.memory_available_bytes, s.oom_kills, s.page_faults) == (16384, 16384, 2, 7)
    write(tmp_path, "plain/c2/memory.max", "max\n")
    assert stats.read("/plain/c2", tmp_path).memory_limit_bytes is None  # type: ignore[union-attr]


def test_systemd_path_expansion() -> None:
    assert stats.relative_path("a-b-c.slice:cri-shim:id") == "/a.slice/a-b.slice/a-b-c.slice/cri-shim-id.scope"
    assert stats.relative_path("/kubepods/pod1/c1") == "/kubepods/pod1/c1"


@pytest.mark.parametrize("inotify", [True, False])
def test_exit_watcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inotify: bool) -> None:
    if not inotify:
        monkeypatch.setattr(exits.inotify, "init", lambda: -1)
        monkeypatch.setattr(exits, "POLL_INTERVAL", 0.02)

    async def scenario() -> list[str]:
        watcher = ExitWatcher(tmp_path / "exits")
        seen: list[str] = []
        watcher.subscribe(seen.append)
        watcher.start()
        assert await watcher.wait("c1", 0.05) is None

        async def conmon_writes() -> None:
            await asyncio.sleep(0.05)
            tmp = watcher.directory / "c1.AB12CD"
            tmp.write_text("137")
            os.rename(tmp, watcher.directory / "c1")

        writer = asyncio.ensure_future(conmon_writes())
        found = await watcher.wait("c1", 5)
        await writer
        assert found is not None and found.code == 137 and found.finished_at > 0
        assert watcher.read("c1") == found
        await asyncio.sleep(0.1)
        watcher.forget("c1")
        assert watcher.read("c1") is None
        watcher.close()
        return seen

    assert asyncio.run(scenario()) == ["c1"]


def test_oom_watcher_marks_an_oom_before_the_cgroup_goes(tmp_path: Path) -> None:
    """A cgroup v2 tree stands in for /sys/fs/cgroup (this host is v1): its memory.events is a
    plain file, modified as the kernel would, and removed as systemd removes a stopped scope."""
    root = tmp_path / "cgroup"
    (root / "pod.slice" / "c1.scope").mkdir(parents=True)
    (root / "pod.slice" / "c2.scope").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    quiet = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"
    for name in ("c1", "c2"):
        (root / "pod.slice" / f"{name}.scope" / "memory.events").write_text(quiet)
    bundles = {name: tmp_path / name for name in ("c1", "c2", "gone")}
    for bundle in bundles.values():
        bundle.mkdir()

    async def scenario() -> None:
        watcher = oomwatch.OomWatcher(root)
        watcher.start()
        watcher.watch("/pod.slice/c1.scope", bundles["c1"])
        watcher.watch("/pod.slice/c2.scope", bundles["c2"])
        watcher.watch("/pod.slice/gone.scope", bundles["gone"])  # exited already: nothing to watch
        (root / "pod.slice" / "c1.scope" / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
        c2 = root / "pod.slice" / "c2.scope" / "memory.events"
        c2.write_text(quiet.replace("max 0", "max 9"))
        await asyncio.sleep(0.2)
        assert oomwatch.killed(bundles["c1"]) and not oomwatch.killed(bundles["c2"])
        assert [bundle for _, bundle in watcher._watches.values()] == [bundles["c2"]]  # c1's watch is done
        c2.unlink()
        await asyncio.sleep(0.2)
        assert watcher._watches == {}  # a removed cgroup ends its watch
        watcher.close()

    asyncio.run(scenario())
    assert oomwatch.killed(bundles["c1"])
    assert not oomwatch.killed(bundles["c2"])  # at its limit, but nothing killed
    assert not oomwatch.killed(bundles["gone"])


def test_oom_watcher_does_nothing_on_cgroup_v1(tmp_path: Path) -> None:
    async def scenario() -> None:
        watcher = oomwatch.OomWatcher(tmp_path)
        watcher.start()
        watcher.watch("/pod/c1", tmp_path)
        assert watcher._watches == {}
        watcher.close()

    asyncio.run(scenario())


def test_read_exit_ignores_empty_files(tmp_path: Path) -> None:
    (tmp_path / "c").write_text("")
    assert exits.read_exit(tmp_path / "c") is None
    assert exits.read_exit(tmp_path / "missing") is None


def test_conmon_command_line(tmp_path: Path) -> None:
    from cri_shim.runtime.conmon import ConmonMonitor
    from cri_shim.runtime.monitor import MonitorSpec
    from cri_shim.runtime.runc import Runc

    sockets = Path("/run/cri-shim/s")  # attach sockets need a short directory (sun_path)
    mon = ConmonMonitor("/usr/bin/conmon", tmp_path / "exits", sockets)
    runc = Runc("/usr/sbin/runc", tmp_path / "root", systemd_cgroup=True)
    spec = MonitorSpec(container_id="c" * 64, name="n", bundle=tmp_path / "b", log_dir=3, log_name="l.log",
                       log_path="/l.log", runtime=runc, stdin=True, stdin_once=False, tty=True)
    args = mon.args(spec)
    pairs = dict(zip(args, args[1:]))
    assert pairs["--api-version"] == "1" and pairs["-c"] == pairs["-u"] == "c" * 64
    assert pairs["--exit-dir"] == str(tmp_path / "exits") and pairs["--persist-dir"] == str(tmp_path / "b")
    assert pairs["-l"] == f"k8s-file:{tmp_path / 'b' / 'log.fifo'}" and pairs["--socket-dir-path"] == str(sockets)
    assert [args[i + 1] for i, a in enumerate(args) if a == "--runtime-arg"] == [f"--root={tmp_path / 'root'}", "--systemd-cgroup"]
    assert {"-t", "-i", "--leave-stdin-open"} <= set(args)
    once = mon.args(MonitorSpec(container_id="c", name="n", bundle=tmp_path, log_dir=3, log_name="l", log_path="/l",
                                runtime=runc, stdin=True, stdin_once=True))
    assert "-i" in once and "--leave-stdin-open" not in once and "-t" not in once
    # No stdin asked for: a pipe all the same (closed after create), never conmon's /dev/null.
    closed = mon.args(MonitorSpec(container_id="c", name="n", bundle=tmp_path, log_dir=3, log_name="l", log_path="/l",
                                  runtime=runc))
    assert "-i" in closed and "--leave-stdin-open" not in closed
    terminal = mon.args(MonitorSpec(container_id="c", name="n", bundle=tmp_path, log_dir=3, log_name="l", log_path="/l",
                                    runtime=runc, tty=True))
    assert "-t" in terminal and "-i" not in terminal  # the terminal is its stdin
    assert mon.attach_socket("abc") == sockets / "abc" / "attach"
    with pytest.raises(ValueError, match="too long"):
        ConmonMonitor("conmon", tmp_path, Path("/" + "x" * 40))
    assert args[0] == "/usr/bin/conmon"  # no scope asked for: conmon itself, in the daemon's cgroup


def test_conmon_in_a_scope_of_the_pod_slice_under_the_systemd_driver(tmp_path: Path) -> None:
    from cri_shim.runtime.conmon import ConmonMonitor
    from cri_shim.runtime.monitor import MonitorSpec
    from cri_shim.runtime.runc import Runc

    mon = ConmonMonitor("/usr/bin/conmon", tmp_path / "exits", Path("/run/cri-shim/s"))
    mon.systemd_run = "/usr/bin/systemd-run"
    runc = Runc("/usr/sbin/runc", tmp_path / "root", systemd_cgroup=True)
    spec = MonitorSpec(container_id="c1", name="n", bundle=tmp_path / "b", log_dir=3, log_name="l.log", log_path="/l.log",
                       runtime=runc, scope_slice="kubepods-besteffort-pod1.slice")
    args = mon.args(spec)
    split = args.index("--")
    assert args[:split] == ["/usr/bin/systemd-run", "--scope", "--quiet", "--collect",
                            "--slice=kubepods-besteffort-pod1.slice", "--unit=cri-shim-conmon-c1"]
    assert args[split + 1:] == mon.args(MonitorSpec(container_id="c1", name="n", bundle=tmp_path / "b", log_dir=3,
                                                    log_name="l.log", log_path="/l.log", runtime=runc))


def test_runc_exec_command_line(tmp_path: Path) -> None:
    from cri_shim.runtime.runc import Runc

    runc = Runc("/usr/sbin/runc", tmp_path / "root")
    cmd = runc.exec_command("cid", tmp_path / "p.json", tmp_path / "p.pid")
    assert cmd == ["/usr/sbin/runc", f"--root={tmp_path / 'root'}", "exec", "--detach", "--process", str(tmp_path / "p.json"),
                   "--pid-file", str(tmp_path / "p.pid"), "cid"]
    tty = runc.exec_command("cid", tmp_path / "p.json", tmp_path / "p.pid", "exec-1.console")
    assert tty[3:6] == ["--detach", "--console-socket", "exec-1.console"]


def test_runc_errors_lose_their_log_framing() -> None:
    from cri_shim.runtime.runc import error_message

    logfmt = (
        'time="2026-12-01T21:12:54Z" level=warning msg="cannot toggle freezer: cgroups not configured for container"\n'
        'time="2026-12-01T21:12:54Z" level=error msg="runc create failed: unable to start container process: '
        'exec: \\"sh\\": executable file not found in $PATH"\n'
    )
    assert error_message(logfmt) == 'runc create failed: unable to start container process: exec: "sh": executable file not found in $PATH'
    assert error_message('{"level":"error","msg":"boom"}\n{"level":"info","msg":"x"}') == "boom"
    assert error_message('time="t" level=warning msg="only a warning"') == "only a warning"
    assert error_message('container "abc" does not exist\n') == 'container "abc" does not exist'


def test_a_create_cancelled_during_its_writes_waits_for_them_before_it_rolls_back(tmp_path: Path) -> None:
    """A write on a worker thread cannot be stopped: the cancellation reaches the create (and its
    rollback) only once the write has ended, so the rollback is never undone by it."""
    spec = tmp_path / "bundle" / "config.json"

    async def create() -> None:
        def slow_write() -> None:
            time.sleep(0.2)
            atomic.write_json(spec, {}, durable=False)
        await containers._to_the_end(asyncio.to_thread(slow_write))

    async def cancel_then_roll_back() -> bool:
        task = asyncio.create_task(create())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return spec.exists()  # what a rollback now would find (and remove for good)

    assert asyncio.run(cancel_then_roll_back())
