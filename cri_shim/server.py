"""The gRPC server: RuntimeService and ImageService on a unix socket, over grpc.aio.

Handlers are plain async methods on service objects (cri_shim.services), named exactly as the
RPCs. This module binds them to the RPCs listed in the API descriptor, so an RPC no service
implements answers UNIMPLEMENTED (kubelet and cri-client have fallbacks for that code). Every
call goes through one wrapper, the only place that maps exceptions to gRPC status codes, logs
the call, counts it and its latency by method and code (cri_shim.metrics) and answers
UNAVAILABLE until start-up recovery is done. A request that does not parse reaches the wrapper
as Malformed (grpc.aio would answer UNKNOWN and log a traceback for a deserializer that raises)
and is answered INVALID_ARGUMENT with one short log line.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from cri_shim import metrics
from cri_shim.api import api_pb2
from cri_shim.config import Config
from cri_shim.status import status_of

log = logging.getLogger("cri_shim.server")

PACKAGE = api_pb2.DESCRIPTOR.package


class Gate:
    """Open once start-up recovery has finished; calls before that answer UNAVAILABLE."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()


class Malformed:
    """What a request that does not parse as its message type is deserialized to, so that the
    call wrapper, not grpc.aio, answers it."""

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def _parser(request_type: type[Message]) -> Callable[[bytes], Message | Malformed]:
    def parse(data: bytes) -> Message | Malformed:
        try:
            return request_type.FromString(data)
        except DecodeError as exc:
            return Malformed(exc)

    return parse


async def _admit(name: str, request: Any, context: grpc.aio.ServicerContext, gate: Gate, started: float) -> None:
    """Aborts the call while recovery runs, or when its request did not parse."""
    if not gate.ready.is_set():
        _observe(name, grpc.StatusCode.UNAVAILABLE, started)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "cri-shim is recovering its state, retry shortly")
    if isinstance(request, Malformed):
        message = f"malformed request: {request.error}"  # protobuf names the type, never the bytes
        log.info("rpc failed", extra={"rpc": name, "code": "INVALID_ARGUMENT", "error": message})
        _observe(name, grpc.StatusCode.INVALID_ARGUMENT, started)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)


def _wrap_unary(name: str, impl: Callable[..., Any], gate: Gate) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        await _admit(name, request, context, gate, started)
        try:
            response = await impl(request, context)
        except asyncio.CancelledError:
            log.info("rpc cancelled", extra={"rpc": name, "ms": _ms(started)})
            _observe(name, grpc.StatusCode.CANCELLED, started)
            raise
        except Exception as exc:  # noqa: BLE001 - the one place every failure becomes a status
            code, message = status_of(exc)
            _log_failure(name, code, message, exc, started)
            await context.abort(code, message)
        log.debug("rpc", extra={"rpc": name, "ms": _ms(started), "code": "OK"})
        _observe(name, grpc.StatusCode.OK, started)
        return response

    return call


def _wrap_stream(name: str, impl: Callable[..., AsyncIterator[Any]], gate: Gate) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        await _admit(name, request, context, gate, started)
        try:
            async for item in impl(request, context):
                yield item
        except asyncio.CancelledError:
            _observe(name, grpc.StatusCode.CANCELLED, started)
            raise
        except Exception as exc:  # noqa: BLE001
            code, message = status_of(exc)
            _log_failure(name, code, message, exc, started)
            await context.abort(code, message)
        _observe(name, grpc.StatusCode.OK, started)

    return call


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _observe(name: str, code: grpc.StatusCode, started: float) -> None:
    """Counts the call and its latency by method and code (cri_shim_grpc_requests_total and _duration_seconds)."""
    metrics.observe_rpc(name, code.name, time.perf_counter() - started)


def _log_failure(name: str, code: grpc.StatusCode, message: str, exc: Exception, started: float) -> None:
    _observe(name, code, started)
    fields = {"rpc": name, "ms": _ms(started), "code": code.name, "error": message}
    if code == grpc.StatusCode.UNKNOWN:
        log.error("rpc failed", extra=fields, exc_info=exc)
    else:
        log.info("rpc failed", extra=fields)


def service_handler(service_name: str, implementations: list[object], gate: Gate) -> grpc.GenericRpcHandler:
    """Binds the RPCs of one API service to the methods of the given service objects."""
    descriptor = api_pb2.DESCRIPTOR.services_by_name[service_name]
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in descriptor.methods:
        owners = [obj for obj in implementations if callable(getattr(obj, method.name, None))]
        if not owners:
            continue
        if len(owners) > 1:
            raise RuntimeError(f"{method.name} is implemented twice: {owners}")
        impl = getattr(owners[0], method.name)
        request_type = getattr(api_pb2, method.input_type.name)
        response_type = getattr(api_pb2, method.output_type.name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method.name, impl, gate),
                request_deserializer=_parser(request_type),
                response_serializer=response_type.SerializeToString,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method.name, impl, gate),
                request_deserializer=_parser(request_type),
                response_serializer=response_type.SerializeToString,
            )
    return grpc.method_handlers_generic_handler(f"{PACKAGE}.{service_name}", handlers)


def create(cfg: Config, services: dict[str, list[object]], gate: Gate) -> grpc.aio.Server:
    """A gRPC server bound to the configured unix socket, not yet started."""
    limit = cfg.server.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ]
    )
    server.add_generic_rpc_handlers([service_handler(name, impls, gate) for name, impls in services.items()])
    socket = Path(cfg.server.socket)
    socket.parent.mkdir(parents=True, exist_ok=True)
    socket.unlink(missing_ok=True)
    server.add_insecure_port(f"unix:{socket}")
    return server


def secure_socket(cfg: Config) -> None:
    """Applies the configured mode and group to the socket once the server has created it."""
    socket = cfg.server.socket
    if cfg.server.socket_group:
        os.chown(socket, -1, grp.getgrnam(cfg.server.socket_group).gr_gid)
    os.chmod(socket, cfg.server.socket_mode)
