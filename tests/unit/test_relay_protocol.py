"""wgmesh.relay.protocol: frame layouts, the frame scanner and the decoder on it, limits, and fuzzing."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmesh.errors import WgmeshError
from wgmesh.relay import protocol as p

u32 = st.integers(0, p.MAX_U32)
u64 = st.integers(0, p.MAX_U64)
tickets = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.",
    min_size=1,
    max_size=p.MAX_TICKET,
)
frames_st: st.SearchStrategy[p.Frame] = st.one_of(
    st.builds(p.Hello, node_id=u32, ticket=tickets),
    st.builds(p.HelloOk, node_id=u32, expires_at=u64),
    st.builds(p.Data, peer_id=u32, datagram=st.binary(max_size=2000)),
    st.builds(p.Ping, token=u64),
    st.builds(p.Pong, token=u64),
    st.builds(p.Close, code=st.integers(0, 0xFFFF), message=st.text(max_size=200)),
)


def decode_all(data: bytes, **kwargs: int) -> list[p.Frame]:
    return p.FrameDecoder(**kwargs).feed(data)


# --- layouts pinned to the bytes in docs/relay-protocol.md --------------------------------------------


def test_data_frame_layout() -> None:
    assert p.encode(p.Data(7, b"\xaa\xbb")) == bytes.fromhex("0006 03 00 00000007 aabb")


def test_hello_layout() -> None:
    assert p.encode(p.Hello(node_id=258, ticket="abc")) == bytes.fromhex("0008 01 00 01 00000102") + b"abc"


def test_hello_ok_ping_pong_close_layouts() -> None:
    assert p.encode(p.HelloOk(node_id=1, expires_at=2)) == bytes.fromhex(
        "000d 02 00 01 00000001 0000000000000002"
    )
    assert p.encode(p.Ping(5)) == bytes.fromhex("0008 04 00 0000000000000005")
    assert p.encode(p.Pong(5)) == bytes.fromhex("0008 05 00 0000000000000005")
    assert p.encode(p.Close(p.CloseCode.BAD_TICKET, "no")) == bytes.fromhex("0004 06 00 0006") + b"no"


def test_encode_data_fast_path_matches_encode() -> None:
    assert p.encode_data(9, b"xyz") == p.encode(p.Data(9, b"xyz"))


def test_encode_many_concatenates() -> None:
    frames: list[p.Frame] = [p.Ping(1), p.Data(2, b"a")]
    assert p.encode_many(frames) == p.encode(frames[0]) + p.encode(frames[1])


# --- decoder behaviour ------------------------------------------------------------------------------


def test_many_frames_in_one_read_and_a_partial_one_kept() -> None:
    wire = p.encode_many([p.Data(1, b"one"), p.Data(2, b"two"), p.Ping(3)])
    decoder = p.FrameDecoder()
    assert decoder.feed(wire[:-3]) == [p.Data(1, b"one"), p.Data(2, b"two")]
    assert decoder.buffered == p.HEADER_SIZE + 8 - 3
    assert decoder.feed(wire[-3:]) == [p.Ping(3)]
    assert decoder.buffered == 0


def test_byte_by_byte_feed_yields_the_same_frames() -> None:
    frames: list[p.Frame] = [p.Hello(1, "t"), p.Data(5, b"x" * 100), p.Close(0)]
    decoder = p.FrameDecoder()
    out: list[p.Frame] = []
    for byte in p.encode_many(frames):
        out += decoder.feed(bytes([byte]))
    assert out == frames


def test_accepts_bytearray_and_memoryview() -> None:
    wire = p.encode(p.Ping(1))
    assert p.FrameDecoder().feed(bytearray(wire)) == [p.Ping(1)]
    assert p.FrameDecoder().feed(memoryview(wire)) == [p.Ping(1)]


def test_empty_datagram_is_valid() -> None:
    assert decode_all(p.encode(p.Data(1, b""))) == [p.Data(1, b"")]


def test_largest_datagram_round_trips() -> None:
    frame = p.Data(1, b"\x01" * p.MAX_DATAGRAM)
    assert decode_all(p.encode(frame)) == [frame]


def test_unknown_close_codes_are_accepted_for_forward_compatibility() -> None:
    assert decode_all(p.encode(p.Close(4000, "new"))) == [p.Close(4000, "new")]


# --- the scanner the relay and the shim run ------------------------------------------------------------

Item = tuple[int, ...]
DATA = p.FrameType.DATA


class Scan:
    """Runs a scanner and keeps what it handed over, in order: (DATA, peer, start, end, frames) for a run of
    Data frames, (type, start, end) with the payload bounds for any other frame."""

    def __init__(self, scanner: p.FrameScanner, stop_after: int | None = None) -> None:
        self.scanner = scanner
        self.items: list[Item] = []
        self.stop_after = stop_after

    def on_data(self, peer: int, start: int, end: int, frames: int) -> None:
        self.items.append((DATA, peer, start, end, frames))

    def on_frame(self, kind: int, start: int, end: int) -> bool:
        self.items.append((kind, start, end))
        return kind == self.stop_after

    def run(self, buf: bytes | bytearray, pos: int = 0) -> int:
        return self.scanner.scan(buf, pos, len(buf), self.on_data, self.on_frame)


def test_scanner_hands_over_bounds_in_the_buffer_and_leaves_a_partial_frame() -> None:
    wire = p.encode_many([p.Data(7, b"abc"), p.Ping(9), p.Data(8, b"")]) + p.encode(p.Data(1, b"xy"))[:-1]
    scan = Scan(p.FrameScanner())
    assert scan.run(wire) == 31
    assert scan.items == [(DATA, 7, 0, 11, 1), (p.FrameType.PING, 15, 23), (DATA, 8, 23, 31, 1)]
    assert wire[p.DATA_HEADER_SIZE : 11] == b"abc"
    assert p.parse_payload(p.FrameType.PING, wire, 15, 23) == p.Ping(9)


def test_scanner_starts_where_it_is_told_and_stops_when_asked() -> None:
    wire = b"junk" + p.encode_many([p.Data(5, b"z"), p.Close(0), p.Data(5, b"after close")])
    scan = Scan(p.FrameScanner(), stop_after=p.FrameType.CLOSE)
    assert scan.run(wire, 4) == 4 + 9 + 6
    assert scan.items == [(DATA, 5, 4, 13, 1), (p.FrameType.CLOSE, 17, 19)]


def test_merging_scanner_hands_over_a_run_per_receiver_split_by_other_frames() -> None:
    frames: list[p.Frame] = [p.Data(2, b"a"), p.Data(2, b"bb"), p.Data(3, b"c"), p.Ping(1), p.Data(3, b"d")]
    wire = p.encode_many(frames)
    scan = Scan(p.FrameScanner(merge=True))
    assert scan.run(wire) == len(wire)
    assert [item[0] for item in scan.items] == [DATA, DATA, p.FrameType.PING, DATA]
    assert [(peer, n) for kind, peer, _, _, n in (i for i in scan.items if i[0] == DATA)] == [
        (2, 2),
        (3, 1),
        (3, 1),
    ]
    runs = [wire[item[2] : item[3]] for item in scan.items if item[0] == DATA]
    assert runs == [p.encode_many(frames[:2]), p.encode(frames[2]), p.encode(frames[4])]


def test_stamp_rewrites_every_data_peer_id_in_place_and_reports_the_receiver() -> None:
    buf = bytearray(p.encode_many([p.Data(2, b"to two"), p.Ping(5), p.Data(3, b"to three")]))
    scan = Scan(p.FrameScanner(merge=True, stamp=p.peer_id_field(1)))
    scan.run(buf)
    assert [item[1] for item in scan.items if item[0] == DATA] == [2, 3]
    assert p.FrameDecoder().feed(buf) == [p.Data(1, b"to two"), p.Ping(5), p.Data(1, b"to three")]


def test_hello_first_refuses_data_from_its_header_alone() -> None:
    header = struct.pack(">HBBI", 104, DATA, 0, 2)  # the 100-byte datagram has not arrived
    with pytest.raises(p.ProtocolError, match="first frame must be hello, got data") as info:
        Scan(p.FrameScanner(hello_first=True)).run(header)
    assert info.value.close_code == p.CloseCode.NOT_AUTHENTICATED
    for frame in (p.Hello(1, "t"), p.Close(0)):
        scan = Scan(p.FrameScanner(hello_first=True))
        scan.run(p.encode(frame))
        assert len(scan.items) == 1


def test_a_hello_handled_mid_scan_takes_effect_on_the_frames_after_it() -> None:
    # What the relay does: the hello authenticates, and data in the same read is stamped and forwarded.
    buf = bytearray(p.encode_many([p.Hello(1, "t"), p.Data(2, b"x"), p.Data(2, b"y")]))
    scanner = p.FrameScanner(merge=True, hello_first=True)
    data: list[Item] = []

    def on_hello(kind: int, start: int, end: int) -> bool:
        assert kind == p.FrameType.HELLO
        scanner.hello_first = False
        scanner.stamp = p.peer_id_field(1)
        return False

    assert scanner.scan(buf, 0, len(buf), lambda *run: data.append(run), on_hello) == len(buf)
    assert [(peer, n) for peer, _, _, n in data] == [(2, 2)]
    assert p.FrameDecoder().feed(buf)[1:] == [p.Data(1, b"x"), p.Data(1, b"y")]


def test_frames_before_a_bad_header_are_handed_over_before_the_error() -> None:
    wire = p.encode_many([p.Data(2, b"a"), p.Data(2, b"b")]) + struct.pack(">HBB", 0, 99, 0)
    scan = Scan(p.FrameScanner(merge=True))
    with pytest.raises(p.ProtocolError, match="unknown frame type 99"):
        scan.run(wire)
    assert scan.items == [(DATA, 2, 0, 18, 2)]


def test_peer_id_field_and_close_code_name() -> None:
    assert p.peer_id_field(258) == b"\x00\x00\x01\x02"
    with pytest.raises(p.ProtocolError, match="does not fit in u32"):
        p.peer_id_field(p.MAX_U32 + 1)
    assert p.close_code_name(p.CloseCode.BAD_TICKET) == "bad_ticket"
    assert p.close_code_name(4000) == "4000"


# --- refusals ---------------------------------------------------------------------------------------


def test_oversized_frame_refused_from_its_header_alone() -> None:
    decoder = p.FrameDecoder(max_payload=1504)
    header = struct.pack(">HBBI", 1505, p.FrameType.DATA, 0, 1)
    with pytest.raises(p.ProtocolError, match="data frame of 1505 bytes exceeds the limit of 1504") as info:
        decoder.feed(header)
    assert info.value.close_code == p.CloseCode.FRAME_TOO_LARGE


def test_frame_at_the_configured_limit_is_accepted() -> None:
    frame = p.Data(1, b"z" * 1500)
    assert p.FrameDecoder(max_payload=1504).feed(p.encode(frame)) == [frame]


def test_per_type_limits_refuse_an_oversized_ping_before_it_arrives() -> None:
    with pytest.raises(p.ProtocolError, match="ping frame of 9 bytes"):
        decode_all(struct.pack(">HBB", 9, p.FrameType.PING, 0))


def test_data_frame_shorter_than_its_peer_id_refused_from_its_header_alone() -> None:
    with pytest.raises(p.ProtocolError, match="data frame of 3 bytes is shorter than its 4-byte peer id"):
        decode_all(struct.pack(">HBB", 3, p.FrameType.DATA, 0))


def test_unknown_type_refused() -> None:
    with pytest.raises(p.ProtocolError, match="unknown frame type 99"):
        decode_all(struct.pack(">HBB", 0, 99, 0))


def test_reserved_byte_must_be_zero() -> None:
    with pytest.raises(p.ProtocolError, match="reserved header byte is 1"):
        decode_all(struct.pack(">HBB", 8, p.FrameType.PING, 1) + bytes(8))


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (struct.pack(">HBB", 2, p.FrameType.DATA, 0) + b"ab", "shorter than its 4-byte peer id"),
        (struct.pack(">HBB", 4, p.FrameType.PING, 0) + bytes(4), "ping must be 8 bytes"),
        (struct.pack(">HBB", 1, p.FrameType.CLOSE, 0) + b"x", "close of 1 bytes"),
        (struct.pack(">HBB", 4, p.FrameType.CLOSE, 0) + b"\x00\x00\xff\xfe", "not UTF-8"),
        (struct.pack(">HBB", 3, p.FrameType.HELLO_OK, 0) + b"abc", "hello-ok must be 13 bytes"),
        (struct.pack(">HBB", 5, p.FrameType.HELLO, 0) + b"\x01\x00\x00\x00\x01", "too short"),
        (struct.pack(">HBB", 7, p.FrameType.HELLO, 0) + b"\x01\x00\x00\x00\x01a?", "outside base64url"),
    ],
)
def test_malformed_frames_refused_with_a_clear_message(wire: bytes, message: str) -> None:
    with pytest.raises(p.ProtocolError, match=message):
        decode_all(wire)


def test_hello_with_another_version_is_refused_as_unsupported() -> None:
    wire = struct.pack(">HBBBI", 6, p.FrameType.HELLO, 0, 2, 1) + b"t"
    with pytest.raises(p.ProtocolError, match="version 2; this end speaks 1") as info:
        decode_all(wire)
    assert info.value.close_code == p.CloseCode.UNSUPPORTED_VERSION


def test_decoder_stays_failed_after_an_error() -> None:
    decoder = p.FrameDecoder()
    with pytest.raises(p.ProtocolError):
        decoder.feed(struct.pack(">HBB", 0, 99, 0))
    with pytest.raises(p.ProtocolError, match="unknown frame type"):
        decoder.feed(p.encode(p.Ping(1)))


def test_protocol_error_is_a_wgmesh_error() -> None:
    assert issubclass(p.ProtocolError, WgmeshError)


@pytest.mark.parametrize(
    "frame",
    [
        p.Data(p.MAX_U32 + 1, b""),
        p.Data(-1, b""),
        p.Data(1, b"x" * (p.MAX_DATAGRAM + 1)),
        p.Hello(1, ""),
        p.Hello(1, "x" * (p.MAX_TICKET + 1)),
        p.Hello(1, "tické"),
        p.Hello(1, "t", version=256),
        p.Ping(p.MAX_U64 + 1),
        p.Close(70000),
        p.Close(0, "x" * (p.MAX_MESSAGE + 1)),
        p.HelloOk(1, -1),
    ],
)
def test_encode_refuses_values_the_layout_cannot_carry(frame: p.Frame) -> None:
    with pytest.raises(p.ProtocolError):
        p.encode(frame)


def test_decoder_limit_must_be_sane() -> None:
    with pytest.raises(ValueError, match="max_payload"):
        p.FrameDecoder(max_payload=70000)


# --- fuzzing ----------------------------------------------------------------------------------------


@settings(max_examples=300)
@given(frames=st.lists(frames_st, max_size=20), cuts=st.lists(st.integers(0, 50_000), max_size=10))
def test_round_trip_of_any_frame_sequence_split_anywhere(frames: list[p.Frame], cuts: list[int]) -> None:
    wire = p.encode_many(frames)
    points = sorted({c % (len(wire) + 1) for c in cuts})
    decoder = p.FrameDecoder()
    out: list[p.Frame] = []
    previous = 0
    for point in [*points, len(wire)]:
        out += decoder.feed(wire[previous:point])
        previous = point
    assert out == frames
    assert decoder.buffered == 0


@settings(max_examples=500)
@given(chunks=st.lists(st.binary(max_size=300), max_size=8))
def test_random_bytes_raise_nothing_but_protocol_error(chunks: list[bytes]) -> None:
    decoder = p.FrameDecoder(max_payload=1024)
    try:
        for chunk in chunks:
            for frame in decoder.feed(chunk):
                assert p.encode(frame)  # whatever decodes must encode again
    except p.ProtocolError:
        pass


@settings(max_examples=300)
@given(
    frames=st.lists(frames_st, min_size=1, max_size=5),
    position=st.integers(0, 10_000),
    byte=st.integers(0, 255),
)
def test_corrupted_streams_raise_only_protocol_error(frames: list[p.Frame], position: int, byte: int) -> None:
    wire = bytearray(p.encode_many(frames))
    wire[position % len(wire)] = byte
    with contextlib.suppress(p.ProtocolError):
        p.FrameDecoder().feed(bytes(wire))


@given(limit=st.integers(4, 3000), size=st.integers(0, 3000))
def test_length_limit_enforced_exactly(limit: int, size: int) -> None:
    wire = p.encode(p.Data(1, bytes(size)))
    decoder = p.FrameDecoder(max_payload=limit)
    if size + 4 <= limit:
        assert decoder.feed(wire) == [p.Data(1, bytes(size))]
    else:
        with pytest.raises(p.ProtocolError, match="exceeds the limit"):
            decoder.feed(wire)


@settings(max_examples=300)
@given(frames=st.lists(frames_st, max_size=20), cut=st.integers(0, 50_000))
def test_merged_scan_covers_the_frames_in_order(frames: list[p.Frame], cut: int) -> None:
    wire = p.encode_many(frames)
    size = cut % (len(wire) + 1)
    scan = Scan(p.FrameScanner(merge=True))
    consumed = scan.scanner.scan(wire, 0, size, scan.on_data, scan.on_frame)
    decoded: list[p.Frame] = []
    for item in scan.items:
        if item[0] == DATA:
            _, peer, start, end, count = item
            run = p.FrameDecoder().feed(wire[start:end])
            assert len(run) == count
            assert all(isinstance(f, p.Data) and f.peer_id == peer for f in run)
        else:
            kind, start, end = item
            start -= p.HEADER_SIZE
            run = [p.parse_payload(kind, wire, start + p.HEADER_SIZE, end)]
        assert start == len(p.encode_many(decoded))  # nothing skipped, nothing twice
        decoded += run
    # every frame complete within the first `size` bytes, and not the partial one after them
    assert decoded == frames[: len(decoded)]
    assert consumed == len(p.encode_many(decoded)) <= size
    if decoded != frames:
        assert size < consumed + len(p.encode(frames[len(decoded)]))
