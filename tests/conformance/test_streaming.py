"""critest "Streaming" specs (pkg/validate/streaming.go, streaming_linux.go): exec, attach and
port-forward over SPDY (critest's default transport), on the URLs Exec/Attach/PortForward return.

The SPDY client is tests/support/spdy_client.py (client-go's stream order and framing). For
port-forward, critest's client-go listens on a local port and forwards each connection: the
same is done here with an asyncio listener opening one stream pair per accepted connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator

import pytest
from cri_api.v1 import api_pb2 as cri

from tests.conformance.framework import ATTEMPT, Framework, new_uuid
from tests.conformance.test_networking import main_page_status, pod_url, web_server
from tests.support.standin_images import BUSYBOX, HOSTNET_NGINX, HOSTNET_NGINX_PORT
from tests.support.portforward_client import PortForward
from tests.support.spdy_client import RemoteCommand

pytestmark = pytest.mark.conformance

WEB_PORT = 80
HOST_PORT_FOR_PORT_FORWARD = 12001
HOST_PORT_FOR_HOST_NET_PORT_FORWARD = 12002
STREAM_TIMEOUT = 60


def checked_url(url: str) -> str:
    """critest's parseURL: the URL must name a host."""
    assert urllib.parse.urlsplit(url).netloc, f"The host of URL should not be empty: {url!r}"
    return url


def running_default_container(f: Framework) -> str:
    pod_id, config = f.create_pod_sandbox_for_container()
    container_id = f.create_default_container(pod_id, config, "container-for-exec-test")
    f.start_container(container_id)
    return container_id


async def exec_output(url: str, tty: bool) -> tuple[bytes, bytes, int | None]:
    cmd = await RemoteCommand.start(url, stdin=tty, stdout=True, stderr=True, tty=tty)
    result = await asyncio.wait_for(cmd.finish(), STREAM_TIMEOUT)
    return result.stdout, result.stderr, result.exit_code


def test_runtime_should_support_exec_with_tty_false_and_stdin_false(f: Framework) -> None:
    container_id = running_default_container(f)
    request = cri.ExecRequest(container_id=container_id, cmd=["echo", "-n", "hello"], stdout=True, stderr=True)
    url = checked_url(f.rc.Exec(request).url)
    stdout, stderr, code = asyncio.run(exec_output(url, tty=False))
    assert code == 0
    assert stdout == b"hello", "The stdout of exec should be hello"
    assert stderr == b"", "The stderr of exec should be empty"


def test_runtime_should_support_exec_with_tty_true_and_stdin_true(f: Framework) -> None:
    container_id = running_default_container(f)
    request = cri.ExecRequest(container_id=container_id, cmd=["echo", "-n", "hello"], stdout=True, tty=True, stdin=True)
    url = checked_url(f.rc.Exec(request).url)
    stdout, stderr, code = asyncio.run(exec_output(url, tty=True))
    assert code == 0
    assert b"hello" in stdout, "The stdout of exec should contain hello"
    assert stderr == b""


async def attach_session(url: str) -> tuple[bytes, bytes, bytes, int | None]:
    """critest's checkAttach: quiet without input, `echo -n hello` via stdin gives exactly hello
    and nothing more for 3 s; closing stdin ends sh and the stream. (header, after, stderr, exit)."""
    cmd = await RemoteCommand.start(url, stdin=True, stdout=True, stderr=True, tty=False)
    await asyncio.sleep(1)
    header = bytes(cmd.output["stdout"])
    await asyncio.sleep(1)
    assert bytes(cmd.output["stdout"]) == header, "The container should stop output when there is no input"
    await cmd.send(b"echo -n hello\n")
    await asyncio.wait_for(cmd.wait_output(header + b"hello"), STREAM_TIMEOUT)
    await asyncio.sleep(3)
    after = bytes(cmd.output["stdout"])[len(header):]
    await cmd.close_stdin()
    result = await asyncio.wait_for(cmd.finish(), STREAM_TIMEOUT)
    return header, after, result.stderr, result.exit_code


def test_runtime_should_support_attach(f: Framework) -> None:
    pod_id, config = f.create_pod_sandbox_for_container()
    spec = cri.ContainerConfig(metadata=cri.ContainerMetadata(name="container-for-attach-test" + new_uuid(), attempt=ATTEMPT),
                               image=cri.ImageSpec(image=BUSYBOX), command=["/bin/sh"], linux=cri.LinuxContainerConfig(),
                               stdin=True, stdin_once=True, tty=False)
    container_id = f.create_container(spec, pod_id, config)
    f.start_container(container_id)
    request = cri.AttachRequest(container_id=container_id, stdin=True, stdout=True, stderr=True, tty=False)
    url = checked_url(f.rc.Attach(request).url)
    _, after, stderr, code = asyncio.run(attach_session(url))
    assert after == b"hello", "The stdout of attach should be hello and nothing else"
    assert stderr == b"", "The stderr of attach should be empty"
    assert code == 0


async def _pump_in(reader: asyncio.StreamReader, stream: object) -> None:
    while chunk := await reader.read(65536):
        await stream.write(chunk)  # type: ignore[attr-defined]
    await stream.close()  # type: ignore[attr-defined]


async def _pump_out(stream: object, writer: asyncio.StreamWriter) -> None:
    while chunk := await stream.read():  # type: ignore[attr-defined]
        writer.write(chunk)
        await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def forwarding(url: str, local_port: int, remote_port: int) -> AsyncIterator[None]:
    """client-go's ForwardPorts("local:remote"): a listener on 127.0.0.1:local_port whose every
    connection is carried to remote_port in the pod by a fresh error+data stream pair."""
    pf = await PortForward.start(url)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, data = await pf.open(remote_port)
        await asyncio.gather(_pump_in(reader, data), _pump_out(data, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", local_port)
    try:
        yield
    finally:
        server.close()
        await pf.close()


async def forwarded_main_page(url: str, local_port: int, remote_port: int) -> int:
    async with forwarding(url, local_port, remote_port):
        return await asyncio.to_thread(main_page_status, f"http://127.0.0.1:{local_port}/")


def test_runtime_should_support_portforward(f: Framework) -> None:
    config = f.pod_config("create-PodSandbox-with-port-mapping", port_mappings=[cri.PortMapping(container_port=WEB_PORT)])
    pod_id = f.run_pod_sandbox(config)
    web_server(f, pod_id, config, "container-for-portforward-test")
    assert main_page_status(pod_url(f, pod_id, WEB_PORT)) == 200
    url = checked_url(f.rc.PortForward(cri.PortForwardRequest(pod_sandbox_id=pod_id)).url)
    assert asyncio.run(forwarded_main_page(url, HOST_PORT_FOR_PORT_FORWARD, WEB_PORT)) == 200


def test_runtime_should_support_portforward_in_host_network(f: Framework) -> None:
    security = cri.LinuxSandboxSecurityContext(namespace_options=cri.NamespaceOption(network=cri.NODE))
    config = f.pod_config("create-PodSandbox-with-port-mapping", port_mappings=[cri.PortMapping(container_port=HOSTNET_NGINX_PORT)],
                          linux=cri.LinuxPodSandboxConfig(security_context=security))
    pod_id = f.run_pod_sandbox(config)
    web_server(f, pod_id, config, "container-for-host-net-portforward-test", HOSTNET_NGINX)
    assert main_page_status(f"http://127.0.0.1:{HOSTNET_NGINX_PORT}/") == 200
    url = checked_url(f.rc.PortForward(cri.PortForwardRequest(pod_sandbox_id=pod_id)).url)
    assert asyncio.run(forwarded_main_page(url, HOST_PORT_FOR_HOST_NET_PORT_FORWARD, HOSTNET_NGINX_PORT)) == 200
