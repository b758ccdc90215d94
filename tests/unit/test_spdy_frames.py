"""SPDY/3.1 framing and header compression: byte layouts from the SPDY/3 draft, the shared
zlib contexts, and refusal of malformed input (bounded, and never anything but FrameError)."""

from __future__ import annotations

import asyncio
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cri_shim.streaming.spdy import frames as f
from cri_shim.streaming.spdy.dictionary import SPDY3_DICTIONARY
from cri_shim.streaming.spdy.headers import (
    MAX_HEADER_BLOCK,
    HeaderBlockError,
    HeaderCompressor,
    HeaderDecompressor,
    decode_block,
    encode_block,
)

pytestmark = pytest.mark.unit


def read_all(data: bytes) -> list[f.Frame]:
    """Every frame in data, through the same reader the server uses."""

    async def go() -> list[f.Frame]:
        source = asyncio.StreamReader()
        source.feed_data(data)
        source.feed_eof()
        reader = f.FrameReader(source)
        out = []
        while True:
            try:
                out.append(await reader.read())
            except asyncio.IncompleteReadError:
                return out

    return asyncio.run(go())


def control(ftype: int, payload: bytes, flags: int = 0, version: int = 3) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, ftype, flags << 24 | len(payload)) + payload


def test_dictionary_is_the_published_constant():
    # 1423 bytes, length-prefixed words then text; zlib identifies it by this Adler-32.
    assert len(SPDY3_DICTIONARY) == 1423
    assert SPDY3_DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert b"\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07version" in SPDY3_DICTIONARY
    assert b"\x00\x00\x00\x06origin100101201202" in SPDY3_DICTIONARY
    assert SPDY3_DICTIONARY.endswith(b",utf-,*,enq=0.")
    assert zlib.adler32(SPDY3_DICTIONARY) == 0xE3C6A7C2


@pytest.mark.parametrize(
    "frame, wire",
    [
        (f.Ping(1), "80030006 00000004 00000001"),
        (f.GoAway(5, f.GOAWAY_OK), "80030007 00000008 00000005 00000000"),
        (f.GoAway(7, f.GOAWAY_PROTOCOL_ERROR), "80030007 00000008 00000007 00000001"),
        (f.RstStream(3, f.CANCEL), "80030003 00000008 00000003 00000005"),
        (f.RstStream(9, f.REFUSED_STREAM), "80030003 00000008 00000009 00000003"),
        (f.WindowUpdate(1, 0x10000), "80030009 00000008 00000001 00010000"),
        (f.Settings(((1, 4, 100),)), "80030004 0000000c 00000001 01000004 00000064"),
        (f.Data(1, b"hi", fin=True), "00000001 01000002 6869"),
        (f.Data(0x7FFFFFFF, b""), "7fffffff 00000000"),
    ],
)
def test_frame_layouts(frame, wire):
    data = bytes.fromhex(wire.replace(" ", ""))
    assert f.FrameEncoder().encode(frame) == data
    assert read_all(data) == [frame]


def test_syn_stream_layout_and_dictionary_id():
    frame = f.SynStream(1, {"streamtype": ["error"]}, priority=0)
    data = f.FrameEncoder().encode(frame)
    assert data[:4] == bytes.fromhex("80030001")
    assert data[4] == 0 and int.from_bytes(data[5:8], "big") == len(data) - 8
    assert data[8:18] == bytes.fromhex("00000001 00000000 0000".replace(" ", ""))
    # RFC 1950 header with FDICT set, then the dictionary's Adler-32 (DICTID).
    assert data[18] == 0x78 and data[19] & 0x20 and (data[18] << 8 | data[19]) % 31 == 0
    assert data[20:24] == bytes.fromhex("e3c6a7c2")
    # Inflating the block with the published dictionary gives the plain name/value block.
    plain = zlib.decompressobj(zdict=SPDY3_DICTIONARY).decompress(data[18:])
    assert plain == bytes.fromhex("00000001 0000000a") + b"streamtype" + bytes.fromhex("00000005") + b"error"
    assert read_all(data) == [frame]


def test_reply_flags_and_unidirectional_syn():
    enc = f.FrameEncoder()
    data = enc.encode(f.SynStream(3, {}, fin=True, unidirectional=True, priority=7)) + enc.encode(f.SynReply(3, {}, fin=True))
    syn, reply = read_all(data)
    assert syn.fin and syn.unidirectional and syn.priority == 7
    assert reply == f.SynReply(3, {}, fin=True)
    assert data[4] == 0x03  # FIN | UNIDIRECTIONAL


def test_name_value_block_layout():
    block = encode_block({"Port": ["8080"], "multi": ["a", "b"]})
    assert block == (
        bytes.fromhex("00000002 00000004".replace(" ", "")) + b"port" + bytes.fromhex("00000004") + b"8080"
        + bytes.fromhex("00000005") + b"multi" + bytes.fromhex("00000003") + b"a\x00b"
    )
    assert decode_block(block) == {"port": ["8080"], "multi": ["a", "b"]}
    # Upper-case names from a lenient peer are folded; repeated names merge.
    raw = bytes.fromhex("00000002") + b"".join(
        struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v for n, v in ((b"PORT", b"1"), (b"port", b"2"))
    )
    assert decode_block(raw) == {"port": ["1", "2"]}


def test_one_context_per_direction_across_blocks():
    # Later blocks reference earlier ones: only the same long-lived inflater can read them.
    comp, decomp = HeaderCompressor(), HeaderDecompressor()
    blocks = [comp.compress({"streamtype": [t], "port": ["80"], "requestid": [str(i)]}) for i, t in enumerate(["error", "data"] * 3)]
    assert len(blocks[2]) < len(blocks[0])
    assert [decomp.decompress(b)["requestid"] for b in blocks] == [[str(i)] for i in range(6)]
    with pytest.raises(HeaderBlockError):
        HeaderDecompressor().decompress(blocks[2])  # a fresh context cannot start mid-stream


@pytest.mark.parametrize(
    "data, why",
    [
        (control(f.PING, b"\x00\x00\x00\x01", version=2), "version"),
        (control(f.PING, b"\x00\x00\x00\x01\x00"), "PING"),
        (control(f.GOAWAY, b"\x00\x00\x00\x01"), "GOAWAY"),
        (control(f.RST_STREAM, b"\x00" * 9), "RST_STREAM"),
        (control(f.RST_STREAM, bytes.fromhex("00000000 00000005".replace(" ", ""))), "stream id 0"),
        (control(f.WINDOW_UPDATE, b"\x00" * 4), "WINDOW_UPDATE"),
        (control(f.SYN_STREAM, b"\x00\x00\x00\x01\x00\x00\x00\x00"), "short SYN_STREAM"),
        (control(f.SYN_REPLY, b"\x00\x00"), "short"),
        (control(f.SETTINGS, bytes.fromhex("00000002 01000004 00000064".replace(" ", ""))), "SETTINGS"),
        (control(f.SETTINGS, bytes.fromhex("ffffffff")), "SETTINGS"),
        (control(f.SYN_STREAM, bytes.fromhex("00000001 00000000 0000".replace(" ", "")) + b"not zlib at all"), "compressed"),
        (bytes.fromhex("00000000 00000001 ff".replace(" ", "")), "stream id 0"),
        (struct.pack(">HHI", 0x8003, f.SYN_STREAM, 0xFFFFFF), "control frame of"),
    ],
)
def test_malformed_frames_are_refused(data, why):
    async def go() -> None:
        source = asyncio.StreamReader()
        source.feed_data(data)
        source.feed_eof()
        with pytest.raises(f.FrameError, match=why):
            await f.FrameReader(source).read()

    asyncio.run(go())


def test_unknown_control_types_are_skipped():
    ping = f.FrameEncoder().encode(f.Ping(3))
    assert read_all(control(0x0A, b"credential frame") + control(0x7777, b"") + ping) == [f.Ping(3)]


def _syn_with_block(plain: bytes) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, SPDY3_DICTIONARY)
    block = z.compress(plain) + z.flush(zlib.Z_SYNC_FLUSH)
    return control(f.SYN_STREAM, bytes.fromhex("00000001 00000000 0000".replace(" ", "")) + block)


def test_header_bomb_is_refused_without_inflating_it():
    # ~10 MB of header value squeezed into a few KiB: refused at the 64 KiB limit.
    plain = bytes.fromhex("00000001 00000001".replace(" ", "")) + b"x" + struct.pack(">I", 10_000_000) + b"a" * 10_000_000
    data = _syn_with_block(plain)
    assert len(data) < f.MAX_CONTROL_PAYLOAD
    with pytest.raises(f.FrameError, match=f"larger than {MAX_HEADER_BLOCK}"):
        read_all(data)


@pytest.mark.parametrize(
    "plain, why",
    [
        (bytes.fromhex("7fffffff"), "claims"),
        (bytes.fromhex("00000001 00000010".replace(" ", "")) + b"short", "truncated"),
        (bytes.fromhex("00000001 00000000 00000000".replace(" ", "")), "empty header name"),
        (bytes.fromhex("00000000") + b"trailing", "after the last"),
        (bytes.fromhex("00000001 00000001".replace(" ", "")) + b"\xff" + bytes.fromhex("00000000"), "UTF-8"),
    ],
)
def test_bad_header_blocks(plain, why):
    with pytest.raises(f.FrameError, match=why):
        read_all(_syn_with_block(plain))


def test_large_data_frames_come_in_bounded_pieces():
    payload = bytes(range(256)) * 1000  # 256000 bytes in one frame
    data = struct.pack(">II", 5, 0x01 << 24 | len(payload)) + payload
    pieces = read_all(data)
    assert all(isinstance(p, f.Data) and p.stream_id == 5 and len(p.data) <= f.DATA_PIECE for p in pieces)
    assert b"".join(p.data for p in pieces) == payload
    assert [p.fin for p in pieces] == [False] * (len(pieces) - 1) + [True]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_input_only_ever_raises_frame_errors(data):
    try:
        read_all(data)
    except f.FrameError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=20))
def test_random_frame_sequences_after_a_valid_syn(chunks):
    # Valid prefix (so the header context is live) followed by arbitrary bytes.
    prefix = f.FrameEncoder().encode(f.SynStream(1, {"streamtype": ["stdin"]}))
    try:
        frames = read_all(prefix + b"".join(chunks))
    except f.FrameError:
        return
    assert frames[0] == f.SynStream(1, {"streamtype": ["stdin"]})


header_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=20)
header_values = st.lists(st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=30), min_size=1, max_size=3)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(header_names, header_values, max_size=6), min_size=1, max_size=8))
def test_header_blocks_round_trip_through_shared_contexts(blocks):
    enc, dec = f.FrameEncoder(), f.FrameDecoder()
    for i, headers in enumerate(blocks, start=1):
        wire = enc.encode(f.SynStream(2 * i - 1, headers))
        word, flags_len = struct.unpack(">II", wire[:8])
        frame = dec.control(3, word & 0xFFFF, flags_len >> 24, wire[8:])
        assert frame == f.SynStream(2 * i - 1, headers)
