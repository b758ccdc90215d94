"""The runtime's streaming backends on real containers and network namespaces: exec and attach
(runc under conmon, busybox rootfs) and port-forward, driven through the streaming server by
the SPDY client the way client-go drives it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.config import StreamingConfig
from cri_shim.errors import FailedPrecondition, NotFound
from cri_shim.runtime.streams import ContainerStreams, PodPortForward
from cri_shim.streaming import Backends, StreamingServer, StreamIO
from cri_shim.streaming.requests import AttachRequest, ExecRequest
from tests.support import crilog, spdy_client
from tests.support.containers import Harness, module_harness
from tests.support.portforward_client import PortForward
from tests.support.spdy_client import RemoteCommand
from tests.support.streaming import hello_http, http_server

pytestmark = pytest.mark.integration
_ = module_harness  # the module-wide `h` fixture

SLEEPER = b"sleep\x004321\x00"
# Exits 0 on the first SIGWINCH after printing the terminal's size, 9 if none comes in 60 s.
WAIT_FOR_RESIZE = "trap 'stty size; exit 0' WINCH; echo ready; i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; exit 9"


class Recorded(ContainerStreams):
    """ContainerStreams that also hands each exec's exit code to the test once the backend has
    returned, which the client cannot see after it has left."""

    def __init__(self, h: Harness) -> None:
        super().__init__(h.running, h.runtime)
        self.exits: asyncio.Queue[int] = asyncio.Queue()

    async def exec(self, request: ExecRequest, io: StreamIO) -> int:
        code = await super().exec(request, io)
        self.exits.put_nowait(code)
        return code


@contextlib.asynccontextmanager
async def serving(backends: Backends) -> AsyncIterator[StreamingServer]:
    server = StreamingServer(StreamingConfig(), backends)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def streams(h: Harness) -> tuple[Recorded, contextlib.AbstractAsyncContextManager[StreamingServer]]:
    backend = Recorded(h)
    return backend, serving(Backends(exec=backend, attach=backend))


def exec_url(server: StreamingServer, container_id: str, *cmd: str, stdin: bool = False, tty: bool = False) -> str:
    request = api.ExecRequest(container_id=container_id, cmd=list(cmd), stdin=stdin, stdout=True, stderr=not tty, tty=tty)
    return server.url("exec", request)


def attach_url(server: StreamingServer, container_id: str, tty: bool = False) -> str:
    request = api.AttachRequest(container_id=container_id, stdin=True, stdout=True, stderr=not tty, tty=tty)
    return server.url("attach", request)


async def until_running(needle: bytes, timeout: float = 30) -> None:
    """Until a host process whose command line holds needle runs; fails if none does in time."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not host_processes(needle):
        assert asyncio.get_running_loop().time() < deadline, f"no process {needle!r} within {timeout}s"
        await asyncio.sleep(0.02)


def host_processes(needle: bytes) -> list[int]:
    """Pids of host processes whose command line (NUL-separated) holds needle."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def running(h: Harness) -> str:
    return h.start(h.create(h.config("sleep", "100000"))).id


def test_exec_separates_stdout_and_stderr_and_reports_the_exit_code(h: Harness, running: str) -> None:
    async def scenario() -> spdy_client.Result:
        backend, served = streams(h)
        async with served as server:
            result = await spdy_client.run(exec_url(server, running, "sh", "-c", "echo -n out; echo -n err >&2; exit 3"))
            assert await backend.exits.get() == 3
            return result

    result = h.run(scenario())
    assert (result.stdout, result.stderr, result.exit_code) == (b"out", b"err", 3)
    assert result.status["reason"] == "NonZeroExitCode"


def test_exec_of_a_process_killed_by_a_signal_reports_128_plus_the_signal(h: Harness, running: str) -> None:
    async def scenario() -> spdy_client.Result:
        async with streams(h)[1] as server:
            return await spdy_client.run(exec_url(server, running, "sh", "-c", "kill -TERM $$"))

    assert h.run(scenario()).exit_code == 128 + 15


def test_exec_of_a_missing_command_is_an_error_with_the_runtime_s_message(h: Harness, running: str) -> None:
    async def scenario() -> spdy_client.Result:
        async with streams(h)[1] as server:
            return await spdy_client.run(exec_url(server, running, "no-such-command", tty=True), tty=True)

    result = h.run(scenario())
    assert result.status["reason"] == "InternalError" and "exec failed" in result.status["message"]
    # runc says why on its stderr, which the status carries; crun on the terminal it made.
    said = result.stdout.decode() if h.runc.name == "crun" else result.status["message"]
    assert "no-such-command" in said


def test_exec_runs_as_the_container_user_with_its_env_and_working_dir(h: Harness) -> None:
    cfg = h.config("sleep", "100000")
    cfg.linux.security_context.run_as_user.value = 33
    cfg.envs.add(key="GREETING", value="hi")
    cfg.working_dir = "/tmp"
    rec = h.start(h.create(cfg))

    async def scenario() -> spdy_client.Result:
        async with streams(h)[1] as server:
            return await spdy_client.run(exec_url(server, rec.id, "sh", "-c", "id -u; echo $GREETING; pwd"))

    result = h.run(scenario())
    h.run(h.runtime.remove(rec))
    assert (result.stdout, result.exit_code) == (b"33\nhi\n/tmp\n", 0)


def test_exec_echoes_stdin_through_cat(h: Harness, running: str) -> None:
    payload = b"line one\nline two\n" + bytes(range(256)) * 4096  # 1 MiB more: the pipes fill up

    async def scenario() -> spdy_client.Result:
        async with streams(h)[1] as server:
            return await spdy_client.run(exec_url(server, running, "cat", stdin=True), stdin=payload)

    result = h.run(scenario())
    assert len(result.stdout) == len(payload) and result.stdout == payload
    assert (result.stderr, result.status) == (b"", {"status": "Success"})


def test_exec_with_a_terminal(h: Harness, running: str) -> None:
    async def scenario() -> spdy_client.Result:
        async with streams(h)[1] as server:
            url = exec_url(server, running, "sh", "-c", "tty; read x; echo got $x; exit 5", stdin=True, tty=True)
            cmd = await RemoteCommand.start(url, stdin=True, tty=True)
            assert "stderr" not in cmd.streams
            await cmd.send(b"hello\n")
            return await cmd.finish()

    result = h.run(scenario())
    # The terminal echoes "hello" too, whenever it arrives: before or after the tty line.
    lines = result.stdout.split(b"\r\n")
    assert [line for line in lines if line.startswith(b"/dev/pts/")] and b"got hello" in lines and b"hello" in lines
    assert result.exit_code == 5


def test_stdin_eof_on_a_terminal_is_end_of_input(h: Harness, running: str) -> None:
    async def scenario() -> spdy_client.Result:
        async with streams(h)[1] as server:
            # cat ends only if the client's EOF reaches it as ^D.
            return await spdy_client.run(exec_url(server, running, "cat", stdin=True, tty=True), stdin=b"abc\n", tty=True)

    result = h.run(scenario())
    assert result.stdout == b"abc\r\nabc\r\n"  # the terminal's echo, then cat's copy
    assert result.exit_code == 0


def test_tty_exec_resizes_the_terminal(h: Harness, running: str) -> None:
    async def scenario() -> spdy_client.Result:
        async with streams(h)[1] as server:
            cmd = await RemoteCommand.start(exec_url(server, running, "sh", "-c", WAIT_FOR_RESIZE, tty=True), tty=True)
            await cmd.wait_output(b"ready")  # the trap is set: a resize before it would go unseen
            await cmd.resize(100, 40)
            return await cmd.finish()

    result = h.run(scenario())
    assert b"40 100\r\n" in result.stdout
    assert result.exit_code == 0


def test_exec_is_killed_when_the_client_disconnects(h: Harness, running: str) -> None:
    async def scenario() -> int:
        backend, served = streams(h)
        async with served as server:
            cmd = await RemoteCommand.start(exec_url(server, running, "sh", "-c", "echo started; exec sleep 4321"))
            await cmd.wait_output(b"started")
            await until_running(SLEEPER)  # the shell prints, then execs sleep
            await cmd.conn.close()  # mid-command
            return await backend.exits.get()

    assert h.run(scenario()) == 137  # SIGKILL
    assert host_processes(SLEEPER) == []
    assert host_processes(f"--root={h.runc.root}\0exec\0".encode()) == []  # runc went with it
    inside = h.run(h.runtime.exec_sync(h.get(running), ["ps", "-o", "args"], 10)).stdout.decode()
    assert "4321" not in inside and "sleep 100000" in inside


def test_unknown_and_stopped_containers_are_refused(h: Harness) -> None:
    stopped = h.run_to_exit(h.config("true")).id
    backend = ContainerStreams(h.running, h.runtime)
    io = StreamIO(tty=False, stdin=None, stdout=None, stderr=None)
    for container_id, error in (("0" * 64, NotFound), (stopped, FailedPrecondition)):
        with pytest.raises(error):
            h.run(backend.exec(ExecRequest(container_id, ("true",), stdout=True), io))
        with pytest.raises(error):
            h.run(backend.attach(AttachRequest(container_id, stdout=True), io))
    h.run(h.runtime.remove(h.get(stopped)))


def test_attach_with_stdin_once_echoes_through_cat_and_ends_with_the_container(h: Harness) -> None:
    cfg = h.config("sh", "-c", "cat; echo bye >&2")
    cfg.stdin, cfg.stdin_once = True, True
    rec = h.start(h.create(cfg))

    async def scenario() -> spdy_client.Result:
        async with streams(h)[1] as server:
            cmd = await RemoteCommand.start(attach_url(server, rec.id), stdin=True)
            await cmd.send(b"hello\n")
            await cmd.wait_output(b"hello\n")
            await cmd.close_stdin()  # stdin_once: the container's stdin closes, cat ends
            return await cmd.finish()

    result = h.run(scenario())
    assert (result.stdout, result.stderr, result.status) == (b"hello\n", b"bye\n", {"status": "Success"})
    ended = h.wait_exit(rec)
    assert ended.exit_code == 0
    logged = crilog.parse(h.log_path(ended))  # conmon went on logging while we were attached
    assert crilog.messages(logged, "stdout") == ["hello"] and crilog.messages(logged, "stderr") == ["bye"]
    h.run(h.runtime.remove(rec))


def test_attach_with_a_terminal_relays_input_and_resizes(h: Harness) -> None:
    cfg = h.config("sh", "-c", "read x; echo got $x; " + WAIT_FOR_RESIZE)
    cfg.stdin, cfg.tty = True, True
    rec = h.start(h.create(cfg))

    async def scenario() -> spdy_client.Result:
        async with streams(h)[1] as server:
            cmd = await RemoteCommand.start(attach_url(server, rec.id, tty=True), stdin=True, tty=True)
            await cmd.send(b"hi\n")
            await cmd.wait_output(b"ready")
            await cmd.resize(132, 50)
            return await cmd.finish()  # the container exits after the resize: attach ends

    result = h.run(scenario())
    assert b"got hi\r\n" in result.stdout and b"50 132\r\n" in result.stdout
    assert result.status == {"status": "Success"}
    assert h.wait_exit(rec).exit_code == 0
    h.run(h.runtime.remove(rec))


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of the test's own, lo up: the pinned path of a stand-in pod."""
    name = f"pf-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


@contextlib.contextmanager
def http_server_in(netns: str, bind: str, port: int, root: Path) -> Iterator[None]:
    """Python's http.server on bind:port inside netns, serving root; returns once it listens."""
    proc = subprocess.Popen(
        ["nsenter", f"--net={netns}", "--", sys.executable, "-u", "-m", "http.server", "--bind", bind,
         "--directory", str(root), str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"Serving HTTP"), "http.server did not start"
        yield
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("bind", ["127.0.0.1", "::1"], ids=["tcp4", "tcp6-after-tcp4-fails"])
def test_port_forward_reaches_a_server_listening_only_inside_the_pod(h: Harness, netns: str, tmp_path: Path, bind: str) -> None:
    (tmp_path / "hello.txt").write_text("hello from the pod\n")
    port = 8080
    pods = {"pod": netns}

    async def scenario() -> tuple[bytes, bytes, bytes, bytes]:
        async with serving(Backends(portforward=PodPortForward(pods.__getitem__))) as server:
            pf = await PortForward.start(server.url("portforward", api.PortForwardRequest(pod_sandbox_id="pod")))
            reply, error = await pf.exchange(port, b"GET /hello.txt HTTP/1.0\r\n\r\n")
            nothing, refused = await pf.exchange(port + 1, b"")
            await pf.close()
            return reply, error, nothing, refused

    with http_server_in(netns, bind, port, tmp_path):
        with pytest.raises(ConnectionRefusedError):  # not from the test's own network namespace
            h.run(asyncio.open_connection(bind, port))
        reply, error, nothing, refused = h.run(scenario())
    assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"\r\n\r\nhello from the pod\n")
    assert error == b""
    assert nothing == b""
    assert b"cannot connect to localhost:8081 in the pod's network namespace: 127.0.0.1: Connection refused" in refused


def test_port_forward_on_the_host_network_and_to_a_vanished_namespace(h: Harness) -> None:
    pods = {"host-pod": None, "gone-pod": "/run/netns/no-such-namespace"}

    async def scenario() -> tuple[bytes, bytes, bytes]:
        listener, port = await http_server(hello_http)
        async with serving(Backends(portforward=PodPortForward(pods.__getitem__))) as server:
            host = await PortForward.start(server.url("portforward", api.PortForwardRequest(pod_sandbox_id="host-pod")))
            reply, error = await host.exchange(port, b"GET /on-the-host HTTP/1.0\r\n\r\n")
            await host.close()
            gone = await PortForward.start(server.url("portforward", api.PortForwardRequest(pod_sandbox_id="gone-pod")))
            _, gone_error = await gone.exchange(port, b"")
            await gone.close()
        listener.close()
        await listener.wait_closed()
        return reply, error, gone_error

    reply, error, gone_error = h.run(scenario())
    assert reply.endswith(b"hello /on-the-host") and error == b""
    assert b"cannot open network namespace /run/netns/no-such-namespace" in gone_error
