"""The daemon's own Prometheus metrics and the optional /metrics endpoint (`metrics.address`).

The parts that measure (the RPC wrapper, the puller, the CNI runner, the container service, the
daemon) call the observe_* functions below, which do nothing until enable() has made the series:
prometheus-client is imported only then, so a daemon without an endpoint (the default) pays
neither its 3 MB nor its import time. The series are process-wide, as the log is.

prometheus-client renders them (its WSGI app) behind a small threaded wsgiref server, bounded
as the streaming server is: at most MAX_SCRAPERS connections at once (one more is closed
unread), each dropped after IDLE_SECONDS without a byte, so idle or slow clients cannot pile up
threads. What is read of the event loop's state (containers by state) is read on the loop,
through the collector below, never from a server thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import socketserver
import threading
import typing
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

if typing.TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("cri_shim.metrics")

NAMESPACE = "cri_shim"
# Buckets from 1 ms to 2 min: RPCs, CNI calls and pod starts span that range on a node.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
PULL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
CONTAINER_STATE_NAMES = ("created", "running", "exited", "unknown")  # CRI ContainerState 0..3
SNAPSHOT_TIMEOUT = 5.0
MAX_SCRAPERS = 16
IDLE_SECONDS = 5


class _Series:
    """Every series of the daemon, in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        common: dict[str, typing.Any] = {"namespace": NAMESPACE, "registry": self.registry}
        self.grpc_requests = Counter(
            "grpc_requests", "CRI calls answered, by method and gRPC status code.", ["method", "code"], **common)
        self.grpc_latency = Histogram(
            "grpc_request_duration_seconds", "Time to answer a CRI call (a stream: until it ended), by method and code.",
            ["method", "code"], buckets=LATENCY_BUCKETS, **common)
        self.pod_start = Histogram(
            "pod_start_duration_seconds",
            "From RunPodSandbox's start to the pod's first container started (StartContainer answered).",
            buckets=LATENCY_BUCKETS, **common)
        self.image_pulls = Counter("image_pulls", "Image pulls finished, by result (ok or error).", ["result"], **common)
        self.image_pull_bytes = Counter(
            "image_pull_bytes", "Bytes received from registries by image pulls (manifests, configs, layers).", **common)
        self.image_pull_seconds = Histogram(
            "image_pull_duration_seconds", "Time an image pull took, by result (ok or error).", ["result"],
            buckets=PULL_BUCKETS, **common)
        self.cni_latency = Histogram(
            "cni_plugin_duration_seconds", "Time a CNI plugin call took, by command (ADD, DEL, CHECK), plugin and result.",
            ["command", "plugin", "result"], buckets=LATENCY_BUCKETS, **common)
        self.recovery_seconds = Gauge(
            "recovery_duration_seconds", "How long the last start-up recovery took (0 until it finished).", **common)
        # The series of each (method, code) seen, kept: labels() takes a lock and a lookup per
        # call, two thirds of the cost of counting one (at most 41 methods x 17 codes).
        self.rpc: dict[tuple[str, str], tuple[typing.Any, typing.Any]] = {}


_series: _Series | None = None
_enabling = threading.Lock()


def enable() -> CollectorRegistry:
    """Makes the series (once); observations count from now on. The registry they are in."""
    global _series
    with _enabling:
        if _series is None:
            _series = _Series()
        return _series.registry


def observe_rpc(method: str, code: str, seconds: float) -> None:
    """One CRI call answered with code, and its latency."""
    if (s := _series) is None:
        return
    pair = s.rpc.get((method, code))
    if pair is None:
        pair = s.rpc[method, code] = (s.grpc_requests.labels(method, code), s.grpc_latency.labels(method, code))
    pair[0].inc()
    pair[1].observe(seconds)


def observe_pod_start(seconds: float) -> None:
    if (s := _series) is not None:
        s.pod_start.observe(seconds)


def observe_pull(result: str, received: int, seconds: float) -> None:
    """One image pull finished (result ok or error) after receiving that many bytes."""
    if (s := _series) is not None:
        s.image_pulls.labels(result).inc()
        s.image_pull_bytes.inc(received)
        s.image_pull_seconds.labels(result).observe(seconds)


def observe_cni(command: str, plugin: str, result: str, seconds: float) -> None:
    if (s := _series) is not None:
        s.cni_latency.labels(command, plugin, result).observe(seconds)


def set_recovery(seconds: float) -> None:
    if (s := _series) is not None:
        s.recovery_seconds.set(seconds)


class ContainerStates:
    """cri_shim_containers{state}: counted on the event loop at each scrape, from the records it owns."""

    def __init__(self, loop: asyncio.AbstractEventLoop, states: Callable[[], list[int]]) -> None:
        self._loop = loop
        self._states = states

    def describe(self) -> list[GaugeMetricFamily]:
        return [self._family()]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        try:
            counts = self._count()
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:  # loop busy past the timeout, or closed
            log.warning("containers by state not counted", extra={"error": str(exc) or type(exc).__name__})
            return
        for number, name in enumerate(CONTAINER_STATE_NAMES):
            family.add_metric([name], counts.get(number, 0))
        yield family

    def _count(self) -> Tally[int]:
        if _running_loop() is self._loop:
            return Tally(self._states())  # a scrape from the loop itself would wait on itself
        done: concurrent.futures.Future[Tally[int]] = concurrent.futures.Future()

        def count() -> None:
            try:
                done.set_result(Tally(self._states()))
            except Exception as exc:  # noqa: BLE001 - handed to the scraping thread
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(count)
        return done.result(SNAPSHOT_TIMEOUT)

    @staticmethod
    def _family() -> GaugeMetricFamily:
        from prometheus_client.core import GaugeMetricFamily

        return GaugeMetricFamily(f"{NAMESPACE}_containers", "Containers known to the runtime, by CRI state.",
                                 labels=["state"])


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _Handler(WSGIRequestHandler):
    timeout = IDLE_SECONDS  # set on the connection: a read or write waiting longer ends it

    def log_message(self, format: str, *args: typing.Any) -> None:  # noqa: A002 - scrapes are not logged
        pass


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server with a thread a connection, at most MAX_SCRAPERS of them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[WSGIRequestHandler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._slots = threading.BoundedSemaphore(MAX_SCRAPERS)
        super().__init__(address, handler)

    def process_request(self, request: typing.Any, client_address: typing.Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # at the cap: closed unread
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: typing.Any, client_address: typing.Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class Endpoint:
    """The /metrics HTTP server on metrics.address, and the containers collector it needs."""

    def __init__(self, address: str, collector: ContainerStates) -> None:
        from prometheus_client import make_wsgi_app

        host, _, port = address.rpartition(":")
        self._registry = enable()
        self._collector = collector
        self._registry.register(collector)  # type: ignore[arg-type] - a collector by its methods
        try:
            self._server = make_server(host.strip("[]"), int(port), make_wsgi_app(self._registry), _Server, _Handler)
        except OSError:
            self._registry.unregister(collector)  # type: ignore[arg-type]
            raise
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        self.port: int = self._server.server_port
        log.info("metrics endpoint listening", extra={"address": host, "port": self.port})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._registry.unregister(self._collector)  # type: ignore[arg-type]
