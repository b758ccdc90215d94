"""Interoperability with the real Go client: kubectl (client-go's SPDY executor on moby/
spdystream, its gorilla WebSocket v5 executor, and both port-forward dialers) reaches our
streaming server through a minimal API server that proxies upgrades as kubelet does.
Skipped where no kubectl is installed."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support.kube_apiserver import KubeApiServer
from tests.support.streaming import echo, harness, hello_http, http_server, scenario

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
]

# kubectl picks WebSocket first (with SPDY fallback); these force each transport.
TRANSPORTS = {
    "websocket": {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "true", "KUBECTL_PORT_FORWARD_WEBSOCKETS": "true"},
    "spdy": {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false", "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"},
}


async def kubectl(kubeconfig: Path, transport: str, *args: str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--kubeconfig", str(kubeconfig), *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HOME": str(kubeconfig.parent), **TRANSPORTS[transport]},
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out, err


@pytest.fixture
def workdir():
    path = Path(tempfile.mkdtemp(prefix="kubectl-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@scenario
async def test_kubectl_exec(transport, workdir):
    async with harness() as h:
        api = KubeApiServer(h.server, "ctr")
        await api.start()
        config = api.kubeconfig(workdir / "kubeconfig")
        code, out, err = await kubectl(config, transport, "exec", "pod1", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
        assert (code, out) == (7, b"out\n")
        assert b"err\n" in err and b"command terminated with exit code 7" in err
        code, out, _ = await kubectl(config, transport, "exec", "-i", "pod1", "--", "cat", stdin=b"piped through kubectl\n" * 1000)
        assert (code, out) == (0, b"piped through kubectl\n" * 1000)
        assert api.forwarded == ["exec", "exec"]
        await api.close()


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@scenario
async def test_kubectl_attach(transport, workdir):
    async with harness() as h:
        await h.container("ctr", ["sh"], stdin_once=True)
        api = KubeApiServer(h.server, "ctr")
        await api.start()
        config = api.kubeconfig(workdir / "kubeconfig")
        code, out, err = await kubectl(config, transport, "attach", "-i", "pod1", stdin=b"echo attached; exit 3\n")
        assert out.endswith(b"attached\n"), (out, err)
        assert code == 0  # attach reports the stream's end, not the container's exit code
        await api.close()


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@scenario
async def test_kubectl_port_forward(transport, workdir):
    web, web_port = await http_server(hello_http)
    echo_server, echo_port = await http_server(echo)
    async with harness() as h:
        api = KubeApiServer(h.server, "ctr")
        await api.start()
        config = api.kubeconfig(workdir / "kubeconfig")
        proc = await asyncio.create_subprocess_exec(
            "kubectl", "--kubeconfig", str(config), "port-forward", "--address", "127.0.0.1", "pod1", f":{web_port}", f":{echo_port}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "HOME": str(workdir), **TRANSPORTS[transport]},
        )
        try:
            assert proc.stdout is not None
            local = {}
            for _ in range(2):
                line = await proc.stdout.readline()
                found = re.search(rb"127\.0\.0\.1:(\d+) -> (\d+)", line)
                assert found, line
                local[int(found.group(2))] = int(found.group(1))

            async def get(path: str) -> bytes:
                reader, writer = await asyncio.open_connection("127.0.0.1", local[web_port])
                writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
                await writer.drain()
                reply = await reader.read()
                writer.close()
                return reply

            replies = await asyncio.gather(*(get(f"/k{i}") for i in range(8)))
            assert [r.rsplit(b" ", 1)[1] for r in replies] == [f"/k{i}".encode() for i in range(8)]
            payload = os.urandom(512 * 1024)
            reader, writer = await asyncio.open_connection("127.0.0.1", local[echo_port])
            writer.write(payload)
            await writer.drain()
            got = await reader.readexactly(len(payload))
            writer.close()
            assert got == payload
        finally:
            proc.terminate()
            await proc.wait()
        assert api.forwarded == ["portforward"]
        assert {port for _, port in h.dial.dialed} == {web_port, echo_port}
        await api.close()
    web.close()
    echo_server.close()
