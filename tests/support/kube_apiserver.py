"""Just enough of a Kubernetes API server for `kubectl exec/attach/port-forward` to reach our
streaming server through it, the way kubelet does: on each pods/{exec,attach,portforward}
request it mints a URL on the StreamingServer and proxies the client's upgrade request to it
byte for byte (kubelet's UpgradeAwareHandler), so the real Go client (client-go SPDY and
WebSocket code inside kubectl) talks to our SPDY/WebSocket implementation.

Every pod it is asked about exists, is Running and has one container "c"; the pod name is the
sandbox id and "c" maps to the container id given at construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

from cri_shim.streaming import StreamingServer

_RESOURCES = [
    {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "verbs": ["get", "list"], "shortNames": ["po"]},
    *(
        {"name": f"pods/{sub}", "singularName": "", "namespaced": True, "kind": kind, "verbs": ["create", "get"]}
        for sub, kind in (("exec", "PodExecOptions"), ("attach", "PodAttachOptions"), ("portforward", "PodPortForwardOptions"))
    ),
]


def _pod(namespace: str, name: str) -> dict:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "uid": "00000000-0000-0000-0000-000000000001"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "c", "ready": True, "image": "busybox", "imageID": "", "restartCount": 0}]},
    }


class KubeApiServer:
    def __init__(self, streaming: StreamingServer, container_id: str) -> None:
        self.streaming = streaming
        self.container_id = container_id
        self.port = 0
        self._server: asyncio.Server | None = None
        self.forwarded: list[str] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f'clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{self.port}"}}}}]\n'
            "users: [{name: u, user: {}}]\n"
            "contexts: [{name: x, context: {cluster: c, user: u, namespace: default}}]\n"
            "current-context: x\n"
        )
        return path

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # kubectl reuses connections for its plain GETs
                head = await reader.readuntil(b"\r\n\r\n")
                method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
                parts = urlsplit(target)
                path = parts.path.strip("/").split("/")
                if len(path) == 7 and path[:3] == ["api", "v1", "namespaces"] and path[6] in ("exec", "attach", "portforward"):
                    await self._proxy(head, path[5], path[6], parse_qs(parts.query), reader, writer)
                    return
                self._json(writer, self._get(path))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _get(path: list[str]) -> dict | None:
        if path == ["version"]:
            return {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "platform": "linux/amd64"}
        if path == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if path == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
        if path == ["api", "v1"]:
            return {"kind": "APIResourceList", "groupVersion": "v1", "resources": _RESOURCES}
        if len(path) == 6 and path[:3] == ["api", "v1", "namespaces"] and path[4] == "pods":
            return _pod(path[3], path[5])
        return None

    @staticmethod
    def _json(writer: asyncio.StreamWriter, obj: dict | None) -> None:
        status = "200 OK" if obj is not None else "404 Not Found"
        body = json.dumps(obj if obj is not None else {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}).encode()
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)

    async def _proxy(self, head: bytes, pod: str, kind: str, query: dict[str, list[str]], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        flag = lambda name: query.get(name, ["false"])[0] == "true"  # noqa: E731
        if kind == "portforward":
            request = SimpleNamespace(pod_sandbox_id=pod, port=[int(p) for p in query.get("ports", [])])
        else:
            request = SimpleNamespace(
                container_id=self.container_id, cmd=query.get("command", []),
                tty=flag("tty"), stdin=flag("stdin"), stdout=flag("stdout"), stderr=flag("stderr"),
            )
        url = urlsplit(self.streaming.url(kind, request))
        self.forwarded.append(kind)
        up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port)
        lines = head.decode("latin-1").split("\r\n")
        method = lines[0].split(" ")[0]
        lines[0] = f"{method} {url.path} HTTP/1.1"
        lines = [ln for ln in lines if not ln.lower().startswith("host:")]
        lines.insert(1, f"Host: {url.netloc}")
        up_writer.write("\r\n".join(lines).encode("latin-1"))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                if dst.can_write_eof():
                    dst.write_eof()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()
