"""The daemon's own Prometheus metrics and the optional /metrics endpoint (`metrics.address`).

The series are process-wide, as the log is: the parts that measure (the RPC wrapper, the
puller, the CNI runner, the container service, the daemon) record into this module's registry
whether or not an endpoint serves it, so no part needs to know whether metrics are wanted.
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

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("cri_shim.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)
NAMESPACE = "cri_shim"

# Buckets from 1 ms to 2 min: RPCs, CNI calls and pod starts span that range on a node.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

GRPC_REQUESTS = Counter(
    "grpc_requests", "CRI calls answered, by method and gRPC status code.", ["method", "code"],
    namespace=NAMESPACE, registry=REGISTRY,
)
GRPC_LATENCY = Histogram(
    "grpc_request_duration_seconds", "Time to answer a CRI call (a stream: until it ended), by method and code.",
    ["method", "code"], namespace=NAMESPACE, registry=REGISTRY, buckets=LATENCY_BUCKETS,
)
POD_START = Histogram(
    "pod_start_duration_seconds",
    "From RunPodSandbox's start to the pod's first container started (StartContainer answered).",
    namespace=NAMESPACE, registry=REGISTRY, buckets=LATENCY_BUCKETS,
)
IMAGE_PULLS = Counter(
    "image_pulls", "Image pulls finished, by result (ok or error).", ["result"], namespace=NAMESPACE, registry=REGISTRY,
)
IMAGE_PULL_BYTES = Counter(
    "image_pull_bytes", "Bytes received from registries by image pulls (manifests, configs, layers).",
    namespace=NAMESPACE, registry=REGISTRY,
)
IMAGE_PULL_SECONDS = Histogram(
    "image_pull_duration_seconds", "Time an image pull took, by result (ok or error).", ["result"],
    namespace=NAMESPACE, registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
CNI_LATENCY = Histogram(
    "cni_plugin_duration_seconds", "Time a CNI plugin call took, by command (ADD, DEL, CHECK), plugin and result.",
    ["command", "plugin", "result"], namespace=NAMESPACE, registry=REGISTRY, buckets=LATENCY_BUCKETS,
)
RECOVERY_SECONDS = Gauge(
    "recovery_duration_seconds", "How long the last start-up recovery took (0 until it finished).",
    namespace=NAMESPACE, registry=REGISTRY,
)

# The series of each (method, code) seen, kept: labels() takes a lock and a lookup per call, two
# thirds of the cost of counting a call (at most 41 methods x 17 codes).
_RPC_SERIES: dict[tuple[str, str], tuple[typing.Any, typing.Any]] = {}


def observe_rpc(method: str, code: str, seconds: float) -> None:
    """Counts one CRI call and its latency."""
    series = _RPC_SERIES.get((method, code))
    if series is None:
        series = _RPC_SERIES[method, code] = (GRPC_REQUESTS.labels(method, code), GRPC_LATENCY.labels(method, code))
    series[0].inc()
    series[1].observe(seconds)


CONTAINER_STATE_NAMES = ("created", "running", "exited", "unknown")  # CRI ContainerState 0..3
SNAPSHOT_TIMEOUT = 5.0
MAX_SCRAPERS = 16
IDLE_SECONDS = 5


class ContainerStates(Collector):
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
        host, _, port = address.rpartition(":")
        self._collector = collector
        REGISTRY.register(collector)
        try:
            self._server = make_server(host.strip("[]"), int(port), make_wsgi_app(REGISTRY), _Server, _Handler)
        except OSError:
            REGISTRY.unregister(collector)
            raise
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        self.port: int = self._server.server_port
        log.info("metrics endpoint listening", extra={"address": host, "port": self.port})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        REGISTRY.unregister(self._collector)
