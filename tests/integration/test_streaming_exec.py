"""Exec and attach over SPDY/3.1 against real host processes, pipes and ptys, driven the way
client-go drives a runtime's streaming server."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import spdy_client
from tests.support.spdy_client import RemoteCommand
from tests.support.streaming import harness, scenario

pytestmark = pytest.mark.integration


@scenario
async def test_exec_without_tty_or_stdin():
    # critest "exec with tty=false and stdin=false": stdout exactly hello, stderr empty, success.
    async with harness() as h:
        result = await spdy_client.run(h.exec_url("echo", "-n", "hello"))
        assert result.protocol == "v5.channel.k8s.io"
        assert (result.stdout, result.stderr, result.status, result.exit_code) == (b"hello", b"", {"status": "Success"}, 0)


@scenario
async def test_exec_separates_stdout_and_stderr_and_echoes_stdin():
    async with harness() as h:
        url = h.exec_url("sh", "-c", "cat; echo to-stderr >&2", stdin=True)
        result = await spdy_client.run(url, stdin=b"line one\nline two\n")
        assert result.stdout == b"line one\nline two\n"
        assert result.stderr == b"to-stderr\n"
        assert result.exit_code == 0


@scenario
async def test_exec_streams_megabytes_both_ways():
    # Larger than one DATA piece and than a stream's inbound buffer: exercises back-pressure.
    payload = bytes(range(256)) * 12 * 1024  # 3 MiB
    async with harness() as h:
        result = await spdy_client.run(h.exec_url("cat", stdin=True), stdin=payload)
        assert len(result.stdout) == len(payload) and result.stdout == payload


@pytest.mark.parametrize("script, code", [("exit 0", 0), ("exit 1", 1), ("exit 42", 42), ("kill -9 $$", 137)])
@scenario
async def test_exit_codes(script, code):
    async with harness() as h:
        result = await spdy_client.run(h.exec_url("sh", "-c", script))
        assert result.exit_code == code
        if code:
            assert result.status["reason"] == "NonZeroExitCode"
            assert result.status["details"]["causes"] == [{"reason": "ExitCode", "message": str(code)}]
        assert h.exec.exits == [code]


@scenario
async def test_exec_with_tty_merges_output_and_applies_resizes():
    async with harness() as h:
        url = h.exec_url("sh", "-c", "read x; stty size; echo hello >&2", stdin=True, tty=True)
        cmd = await RemoteCommand.start(url, stdin=True, tty=True)
        assert set(cmd.streams) == {"error", "stdin", "stdout", "resize"}  # tty: no stderr stream
        await cmd.resize(100, 40)
        await h.exec.applied.wait()  # the size reached the pty before the shell reads on
        await cmd.send(b"\n")
        result = await cmd.finish()
        assert b"40 100" in result.stdout and b"hello" in result.stdout
        assert result.exit_code == 0
        assert [(s.width, s.height) for s in h.exec.resized] == [(100, 40)]


@scenario
async def test_tty_exec_sees_every_resize_in_order():
    async with harness() as h:
        url = h.exec_url("sh", "-c", "read x; stty size; read x; stty size", stdin=True, tty=True)
        cmd = await RemoteCommand.start(url, stdin=True, tty=True)
        for width, height in ((80, 24), (132, 50)):
            h.exec.applied.clear()
            await cmd.resize(width, height)
            await h.exec.applied.wait()
            await cmd.send(b"\n")
            await cmd.wait_output(f"{height} {width}".encode())
        result = await cmd.finish()
        assert result.exit_code == 0


@pytest.mark.parametrize(
    "protocol, status",
    [
        ("v5.channel.k8s.io", b'{"status":"Failure"'),
        ("v4.channel.k8s.io", b'{"status":"Failure"'),
        ("v3.channel.k8s.io", b"command terminated with non-zero exit code"),
        ("v2.channel.k8s.io", b"command terminated with non-zero exit code"),
        ("channel.k8s.io", b"command terminated with non-zero exit code"),
    ],
)
@scenario
async def test_each_protocol_version(protocol, status):
    async with harness() as h:
        ok = await spdy_client.run(h.exec_url("echo", "ok"), protocols=(protocol,))
        assert ok.protocol == protocol and ok.stdout == b"ok\n"
        assert ok.error == (b'{"status":"Success"}' if protocol in ("v5.channel.k8s.io", "v4.channel.k8s.io") else b"")
        failed = await spdy_client.run(h.exec_url("sh", "-c", "exit 3"), protocols=(protocol,))
        assert failed.error.startswith(status)
        # tty: v3+ add a resize stream, v1/v2 have none and the server must not wait for one.
        tty = await spdy_client.run(h.exec_url("echo", "tty", tty=True), protocols=(protocol,), tty=True)
        assert b"tty" in tty.stdout


@scenario
async def test_pings_are_echoed_and_the_connection_ends_with_goaway():
    async with harness() as h:
        cmd = await RemoteCommand.start(h.exec_url("sh", "-c", "read x; echo done", stdin=True), stdin=True)
        for _ in range(3):
            await cmd.conn.ping()
        await cmd.send(b"\n")
        await cmd.close_stdin()
        await asyncio.gather(*cmd._readers)
        await cmd.conn.closed.wait()  # server half-closed after its GOAWAY
        assert cmd.conn.goaway is not None and cmd.conn.goaway.status == 0
        result = await cmd.finish()
        assert result.stdout == b"done\n"


@scenario
async def test_backend_failure_is_an_internal_error_status():
    async with harness() as h:
        result = await spdy_client.run(h.exec_url("/nonexistent/binary"))
        assert result.status["reason"] == "InternalError" and result.status["code"] == 500
        assert "No such file" in result.status["message"]


@scenario
async def test_client_leaving_mid_exec_ends_the_command():
    async with harness() as h:
        cmd = await RemoteCommand.start(h.exec_url("sh", "-c", "echo started; exec sleep 600"))
        await cmd.wait_output(b"started")
        cmd.conn.transport.abort()
        await h.exec.exited.wait()
        assert h.exec.exits == [137]
        await cmd.conn.close()


@scenario
async def test_missing_streams_time_out_without_running_anything():
    async with harness(stream_creation_timeout_seconds=1) as h:
        conn = await spdy_client.connect(h.exec_url("echo", "never"))
        await conn.open_stream({"streamtype": "error"})  # stdout never comes
        await conn.closed.wait()
        assert conn.goaway is not None
        assert h.exec.started == 0
        await conn.close()


@scenario
async def test_attach_with_stdin_once():
    # critest "should support attach": no output until input, exactly hello, stdin close ends sh.
    async with harness() as h:
        await h.container("sh1", ["sh"], stdin_once=True)
        cmd = await RemoteCommand.start(h.attach_url("sh1"), stdin=True)
        await cmd.send(b"echo -n hello\n")
        await cmd.wait_output(b"hello")
        await cmd.close_stdin()
        result = await cmd.finish()
        assert (result.stdout, result.stderr, result.exit_code) == (b"hello", b"", 0)
        assert result.status == {"status": "Success"}


@scenario
async def test_many_attachers_share_the_output_and_without_stdin_once_stdin_stays_open():
    async with harness() as h:
        container = await h.container("cat1", ["sh", "-c", "while read line; do echo got $line; done"])
        writer = await RemoteCommand.start(h.attach_url("cat1"), stdin=True)
        watcher = await RemoteCommand.start(h.attach_url("cat1", stdin=False))
        await writer.send(b"one\n")
        for cmd in (writer, watcher):
            await cmd.wait_output(b"got one")
        await writer.close_stdin()  # not stdin_once: the container keeps its stdin
        second = await RemoteCommand.start(h.attach_url("cat1"), stdin=True)
        await second.send(b"two\n")
        for cmd in (second, watcher):
            await cmd.wait_output(b"got two")
        assert not container.exited.is_set()
        await container.stop()
        for cmd in (writer, watcher, second):
            assert (await cmd.finish()).exit_code == 0


@scenario
async def test_attach_to_unknown_container_fails_with_status():
    async with harness() as h:
        result = await spdy_client.run(h.attach_url("nope", stdin=False))
        assert result.status["reason"] == "InternalError" and "not found" in result.status["message"]
