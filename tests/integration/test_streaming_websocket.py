"""Exec and attach over WebSocket channel protocols (v5 with its close signal, v4, v1)."""

from __future__ import annotations

import pytest

from tests.support import ws_client
from tests.support.streaming import harness, scenario
from tests.support.upgrade import UpgradeFailed
from tests.support.ws_client import WsRemoteCommand

pytestmark = pytest.mark.integration


@scenario
async def test_v5_exec_with_stdin_close_signal():
    async with harness() as h:
        cmd = await WsRemoteCommand.start(h.exec_url("sh", "-c", "cat; echo err >&2; exit 4", stdin=True))
        assert cmd.protocol == "v5.channel.k8s.io"
        await cmd.send(b"through websocket\n")
        await cmd.close_stdin()
        result = await cmd.finish()
        assert cmd.first_message == b"\x01"  # the initial empty frame on stdout
        assert (result.stdout, result.stderr, result.exit_code) == (b"through websocket\n", b"err\n", 4)
        assert cmd.ws.close_code == 1000


@scenario
async def test_v4_exec_and_the_ready_frame_on_stderr_when_there_is_no_stdout():
    async with harness() as h:
        cmd = await WsRemoteCommand.start(h.exec_url("sh", "-c", "echo only-err >&2", stdout=False), ("v4.channel.k8s.io",))
        result = await cmd.finish()
        assert cmd.protocol == "v4.channel.k8s.io" and cmd.first_message == b"\x02"
        assert (result.stdout, result.stderr, result.status) == (b"", b"only-err\n", {"status": "Success"})


@scenario
async def test_v1_channel_protocol_reports_failure_as_text():
    async with harness() as h:
        cmd = await WsRemoteCommand.start(h.exec_url("sh", "-c", "exit 2"), ("channel.k8s.io",))
        result = await cmd.finish()
        assert result.error.startswith(b"command terminated with non-zero exit code")


@scenario
async def test_tty_resize_over_websocket():
    async with harness() as h:
        cmd = await WsRemoteCommand.start(h.exec_url("sh", "-c", "read x; stty size", stdin=True, tty=True))
        await cmd.resize(90, 30)
        await h.exec.applied.wait()
        await cmd.send(b"\n")
        result = await cmd.finish()
        assert b"30 90" in result.stdout and result.exit_code == 0


@scenario
async def test_attach_over_websocket():
    async with harness() as h:
        await h.container("ws-sh", ["sh"], stdin_once=True)
        cmd = await WsRemoteCommand.start(h.attach_url("ws-sh"))
        await cmd.send(b"echo -n hi-ws\n")
        await cmd.wait_output(b"hi-ws")
        await cmd.close_stdin()
        result = await cmd.finish()
        assert (result.stdout, result.status) == (b"hi-ws", {"status": "Success"})


@scenario
async def test_unsupported_subprotocol_is_refused():
    async with harness() as h:
        with pytest.raises(UpgradeFailed) as failed:
            await ws_client.connect(h.exec_url("true"), ("v9.channel.k8s.io",))
        assert failed.value.status == 403
