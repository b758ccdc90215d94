"""SPDY/3 name/value header blocks and the two zlib contexts of a connection.

A header block is a 32-bit pair count, then for each pair a 32-bit length and the name, a 32-bit
length and the value (several values joined by NUL). Blocks are deflated with the SPDY/3
dictionary through ONE context per direction that lives as long as the connection, each block
ending in a sync flush, so every block depends on all blocks before it: a block we cannot inflate
leaves the receiving context unusable and the connection must end.

Inflation is bounded (a few KiB of deflate can claim gigabytes): blocks larger than the limit are
refused before they are allocated.
"""

from __future__ import annotations

import struct
import zlib

from cri_shim.streaming.spdy.dictionary import SPDY3_DICTIONARY

# Header blocks kubelet, crictl and kubectl send are a few dozen bytes.
MAX_HEADER_BLOCK = 64 * 1024

Headers = dict[str, list[str]]


class HeaderBlockError(ValueError):
    """A header block that cannot be inflated or parsed; fatal for the connection."""


def encode_block(headers: Headers) -> bytes:
    """The uncompressed name/value block; names go on the wire in lower case."""
    out = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        raw_name = name.lower().encode()
        raw_value = b"\x00".join(v.encode() for v in values)
        out.append(struct.pack(">I", len(raw_name)) + raw_name)
        out.append(struct.pack(">I", len(raw_value)) + raw_value)
    return b"".join(out)


def decode_block(block: bytes) -> Headers:
    """Parses an uncompressed block. Names are lower-cased (SPDY requires lower case; being
    lenient costs nothing), repeated names merge their values."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if n > len(block) - pos:
            raise HeaderBlockError("header block truncated")
        chunk = block[pos : pos + n]
        pos += n
        return chunk

    (count,) = struct.unpack(">I", take(4))
    # Every pair takes at least 8 bytes: a count beyond that is a lie, refused before looping.
    if count > (len(block) - 4) // 8:
        raise HeaderBlockError(f"header block claims {count} pairs in {len(block)} bytes")
    headers: Headers = {}
    for _ in range(count):
        (n,) = struct.unpack(">I", take(4))
        name = take(n)
        (n,) = struct.unpack(">I", take(4))
        value = take(n)
        if not name:
            raise HeaderBlockError("empty header name")
        try:
            key = name.decode().lower()
            values = value.decode().split("\x00")
        except UnicodeDecodeError as exc:
            raise HeaderBlockError(f"header is not UTF-8: {exc}") from None
        headers.setdefault(key, []).extend(values)
    if pos != len(block):
        raise HeaderBlockError(f"{len(block) - pos} bytes after the last header pair")
    return headers


class HeaderCompressor:
    """Deflates outgoing header blocks through the connection's one sending context."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, SPDY3_DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        block = encode_block(headers)
        return self._z.compress(block) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """Inflates incoming header blocks through the connection's one receiving context."""

    def __init__(self, limit: int = MAX_HEADER_BLOCK) -> None:
        self._z = zlib.decompressobj(15, zdict=SPDY3_DICTIONARY)
        self._limit = limit

    def decompress(self, data: bytes) -> Headers:
        try:
            block = self._z.decompress(data, self._limit + 1)
        except zlib.error as exc:
            raise HeaderBlockError(f"bad compressed header block: {exc}") from None
        if len(block) > self._limit or self._z.unconsumed_tail:
            raise HeaderBlockError(f"header block larger than {self._limit} bytes")
        if self._z.eof:
            raise HeaderBlockError("header compression stream ended")
        return decode_block(block)
