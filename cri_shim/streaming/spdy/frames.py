"""SPDY/3.1 frames: their in-memory form, encoding, and a bounded reader.

Every frame starts with 8 bytes. Control frames: control bit, 15-bit version (3), 16-bit type,
8-bit flags, 24-bit length. DATA frames: control bit clear, 31-bit stream id, 8-bit flags, 24-bit
length. Control payloads are capped (ours are tiny); DATA payloads may be up to 16 MiB, so the
reader hands a large DATA frame over in pieces instead of allocating it whole. Anything
malformed raises FrameError, which ends the connection (the header contexts may be out of step).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Protocol

from cri_shim.streaming.spdy.headers import HeaderBlockError, HeaderCompressor, HeaderDecompressor, Headers

VERSION = 3
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
MAX_LENGTH = (1 << 24) - 1
MAX_STREAM_ID = (1 << 31) - 1
# Control frames we accept: header blocks from Go clients are tens of bytes.
MAX_CONTROL_PAYLOAD = 64 * 1024
# The largest piece of a DATA payload held in memory at once.
DATA_PIECE = 64 * 1024

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9

# RST_STREAM status codes.
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, UNSUPPORTED_VERSION, CANCEL = 1, 2, 3, 4, 5
INTERNAL_ERROR, FLOW_CONTROL_ERROR, STREAM_IN_USE, STREAM_ALREADY_CLOSED = 6, 7, 8, 9
# GOAWAY status codes.
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, GOAWAY_INTERNAL_ERROR = 0, 1, 2


class FrameError(ValueError):
    """Malformed input: the connection cannot continue."""


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers
    associated_id: int = 0
    priority: int = 0
    slot: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    # (flags, id, value) triples
    entries: tuple[tuple[int, int, int], ...] = ()
    clear: bool = False


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = GOAWAY_OK


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes
    fin: bool = False


Frame = SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame | WindowUpdate | Data


def _control(ftype: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload


def _sid(stream_id: int) -> bytes:
    if not 0 < stream_id <= MAX_STREAM_ID:
        raise ValueError(f"stream id {stream_id} out of range")
    return struct.pack(">I", stream_id)


class FrameEncoder:
    """Serialises frames; owns the connection's sending header context, so frames must be
    written in the order they are encoded."""

    def __init__(self) -> None:
        self._headers = HeaderCompressor()

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, Data):
            if len(frame.data) > MAX_LENGTH:
                raise ValueError("DATA payload over 16 MiB")
            return _sid(frame.stream_id) + struct.pack(">I", (FLAG_FIN if frame.fin else 0) << 24 | len(frame.data)) + frame.data
        if isinstance(frame, SynStream):
            flags = (FLAG_FIN if frame.fin else 0) | (FLAG_UNIDIRECTIONAL if frame.unidirectional else 0)
            body = _sid(frame.stream_id) + struct.pack(">IBB", frame.associated_id, (frame.priority & 7) << 5, frame.slot)
            return _control(SYN_STREAM, flags, body + self._headers.compress(frame.headers))
        if isinstance(frame, (SynReply, HeadersFrame)):
            ftype = SYN_REPLY if isinstance(frame, SynReply) else HEADERS
            return _control(ftype, FLAG_FIN if frame.fin else 0, _sid(frame.stream_id) + self._headers.compress(frame.headers))
        if isinstance(frame, RstStream):
            return _control(RST_STREAM, 0, _sid(frame.stream_id) + struct.pack(">I", frame.status))
        if isinstance(frame, Settings):
            body = struct.pack(">I", len(frame.entries)) + b"".join(
                struct.pack(">II", (flags << 24) | sid, value) for flags, sid, value in frame.entries
            )
            return _control(SETTINGS, 1 if frame.clear else 0, body)
        if isinstance(frame, Ping):
            return _control(PING, 0, struct.pack(">I", frame.ping_id))
        if isinstance(frame, GoAway):
            return _control(GOAWAY, 0, struct.pack(">II", frame.last_good_stream_id, frame.status))
        if isinstance(frame, WindowUpdate):
            return _control(WINDOW_UPDATE, 0, _sid(frame.stream_id) + struct.pack(">I", frame.delta))
        raise TypeError(type(frame))


class ByteSource(Protocol):
    """Where frames come from: asyncio.StreamReader fits, so does a WebSocket tunnel."""

    async def readexactly(self, n: int) -> bytes: ...


def _stream_id(word: int) -> int:
    stream_id = word & MAX_STREAM_ID
    if stream_id == 0:
        raise FrameError("stream id 0 in a stream frame")
    return stream_id


def _exact(payload: bytes, n: int, what: str) -> None:
    if len(payload) != n:
        raise FrameError(f"{what} frame of length {len(payload)}, want {n}")


class FrameDecoder:
    """Parses control frames; owns the connection's receiving header context, so payloads
    must be fed in wire order."""

    def __init__(self) -> None:
        self._headers = HeaderDecompressor()

    def _block(self, data: bytes) -> Headers:
        try:
            return self._headers.decompress(data)
        except HeaderBlockError as exc:
            raise FrameError(str(exc)) from None

    def control(self, version: int, ftype: int, flags: int, payload: bytes) -> Frame | None:
        """The frame, or None for a type SPDY/3 tells receivers to ignore."""
        if version != VERSION:
            raise FrameError(f"SPDY version {version}, want {VERSION}")
        if ftype == SYN_STREAM:
            if len(payload) < 10:
                raise FrameError("short SYN_STREAM")
            sid, assoc, pri, slot = struct.unpack(">IIBB", payload[:10])
            return SynStream(
                _stream_id(sid), self._block(payload[10:]), assoc & MAX_STREAM_ID, pri >> 5, slot,
                bool(flags & FLAG_FIN), bool(flags & FLAG_UNIDIRECTIONAL),
            )
        if ftype in (SYN_REPLY, HEADERS):
            if len(payload) < 4:
                raise FrameError("short SYN_REPLY/HEADERS")
            (sid,) = struct.unpack(">I", payload[:4])
            cls = SynReply if ftype == SYN_REPLY else HeadersFrame
            return cls(_stream_id(sid), self._block(payload[4:]), bool(flags & FLAG_FIN))
        if ftype == RST_STREAM:
            _exact(payload, 8, "RST_STREAM")
            sid, status = struct.unpack(">II", payload)
            return RstStream(_stream_id(sid), status)
        if ftype == SETTINGS:
            if len(payload) < 4:
                raise FrameError("short SETTINGS")
            (count,) = struct.unpack(">I", payload[:4])
            _exact(payload, 4 + 8 * count, "SETTINGS")
            entries = tuple(
                (word >> 24, word & 0xFFFFFF, value)
                for word, value in struct.iter_unpack(">II", payload[4:])
            )
            return Settings(entries, bool(flags & 1))
        if ftype == PING:
            _exact(payload, 4, "PING")
            return Ping(struct.unpack(">I", payload)[0])
        if ftype == GOAWAY:
            _exact(payload, 8, "GOAWAY")
            last, status = struct.unpack(">II", payload)
            return GoAway(last & MAX_STREAM_ID, status)
        if ftype == WINDOW_UPDATE:
            _exact(payload, 8, "WINDOW_UPDATE")
            sid, delta = struct.unpack(">II", payload)
            return WindowUpdate(sid & MAX_STREAM_ID, delta & MAX_STREAM_ID)
        return None


class FrameReader:
    """Reads frames from a byte source; a DATA frame larger than DATA_PIECE comes out as
    several Data frames on the same stream, FIN on the last, so memory stays bounded."""

    def __init__(self, source: ByteSource) -> None:
        self._source = source
        self._decoder = FrameDecoder()
        self._data_left = 0
        self._data_stream = 0
        self._data_fin = False

    async def read(self) -> Frame:
        """The next frame. Raises asyncio.IncompleteReadError at end of input."""
        while True:
            if self._data_left:
                return await self._data_piece()
            head = await self._source.readexactly(8)
            word, flags_len = struct.unpack(">II", head)
            flags, length = flags_len >> 24, flags_len & MAX_LENGTH
            if not word & 0x80000000:
                self._data_stream = _stream_id(word)
                self._data_fin = bool(flags & FLAG_FIN)
                self._data_left = length
                if length == 0:
                    return Data(self._data_stream, b"", self._data_fin)
                continue
            if length > MAX_CONTROL_PAYLOAD:
                raise FrameError(f"control frame of {length} bytes")
            payload = await self._source.readexactly(length)
            frame = self._decoder.control((word >> 16) & 0x7FFF, word & 0xFFFF, flags, payload)
            if frame is not None:
                return frame

    async def _data_piece(self) -> Data:
        n = min(self._data_left, DATA_PIECE)
        data = await self._source.readexactly(n)
        self._data_left -= n
        return Data(self._data_stream, data, self._data_fin and not self._data_left)
