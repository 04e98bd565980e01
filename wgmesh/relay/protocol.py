"""Relay wire protocol: frame types and layouts, `encode`, the `FrameScanner` every reader runs over its
buffer, and the `FrameDecoder` built on it (docs/relay-protocol.md).

Pure: no sockets. Every frame is a 4-byte header (u16 payload length, u8 type, u8 reserved = 0) and a payload.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum

from wgmesh.errors import WgmeshError

VERSION = 1
"""The protocol version this module speaks; sent in Hello and echoed in HelloOk."""

HEADER_SIZE = 4
DATA_HEADER_SIZE = 8
"""The header and the peer id in front of every Data frame's datagram."""
MAX_PAYLOAD = 0xFFFF
"""The u16 length field's ceiling; a decoder may be given a lower limit."""
MAX_DATAGRAM = MAX_PAYLOAD - 4
"""65,531 bytes: any UDP payload (IPv4 ≤ 65,507, IPv6 ≤ 65,527) fits in one Data frame."""
MAX_TICKET = 512
MAX_MESSAGE = 1024
MAX_U32 = 0xFFFF_FFFF
MAX_U64 = 0xFFFF_FFFF_FFFF_FFFF

HEADER = struct.Struct(">HBB")
"""Every frame's header: payload length, type, reserved."""
DATA_HEADER = struct.Struct(">HBBI")
"""A Data frame's header with its peer id: what a writer packs in front of a datagram in its own buffer."""
_HELLO = struct.Struct(">BI")
_HELLO_OK = struct.Struct(">BIQ")
_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
# Tickets are base64url plus '.' separators; anything else in a hello is garbage or an attack.
_TICKET_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=")


class FrameType(IntEnum):
    """The frame types of version 1."""

    HELLO = 1
    HELLO_OK = 2
    DATA = 3
    PING = 4
    PONG = 5
    CLOSE = 6


class CloseCode(IntEnum):
    """Why a side closes; decoders accept unknown codes so newer peers can add some."""

    NORMAL = 0
    GOING_AWAY = 1
    PROTOCOL_ERROR = 2
    UNSUPPORTED_VERSION = 3
    FRAME_TOO_LARGE = 4
    NOT_AUTHENTICATED = 5
    BAD_TICKET = 6
    TICKET_EXPIRED = 7
    WRONG_NODE = 8
    REPLACED = 9
    INTERNAL = 10
    BUSY = 11
    """The relay is at a connection cap (total, or without a hello from this address or in all)."""


def close_code_name(code: int) -> str:
    """A close code as logs, counters and status name it (`bad_ticket`); a code this version does not
    know (from a newer peer) by its number."""
    try:
        return CloseCode(code).name.lower()
    except ValueError:
        return str(code)


class ProtocolError(WgmeshError):
    """Bytes that are not a valid frame sequence; the connection cannot continue and is closed."""

    code = "relay_protocol"
    status = 400

    def __init__(self, message: str, *, close_code: int = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.close_code = close_code


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame from a node: the version it speaks, its node id and its relay ticket."""

    node_id: int
    ticket: str
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class HelloOk:
    """The relay's acceptance: the version it will speak, the node id, the ticket's expiry (unix seconds)."""

    node_id: int
    expires_at: int
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class Data:
    """One WireGuard datagram; `peer_id` is the receiver when sent to the relay, the sender when delivered."""

    peer_id: int
    datagram: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """Liveness and RTT probe; the other side answers Pong with the same token."""

    token: int


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to a Ping."""

    token: int


@dataclass(frozen=True, slots=True)
class Close:
    """The last frame a side sends, with a code and a human-readable message."""

    code: int
    message: str = ""


Frame = Hello | HelloOk | Data | Ping | Pong | Close


def _check_u32(name: str, value: int) -> None:
    if not 0 <= value <= MAX_U32:
        raise ProtocolError(f"{name} {value} does not fit in u32")


def _check_ticket(raw: bytes) -> None:
    if not 1 <= len(raw) <= MAX_TICKET:
        raise ProtocolError(f"hello ticket is {len(raw)} bytes; must be 1 to {MAX_TICKET}")
    if not _TICKET_BYTES.issuperset(raw):
        raise ProtocolError("hello ticket holds bytes outside base64url")


def encode_data(peer_id: int, datagram: bytes) -> bytes:
    """Fast path for the shim: one Data frame without building a dataclass."""
    if len(datagram) > MAX_DATAGRAM:
        raise ProtocolError(
            f"datagram of {len(datagram)} bytes exceeds {MAX_DATAGRAM}", close_code=CloseCode.FRAME_TOO_LARGE
        )
    try:
        return DATA_HEADER.pack(len(datagram) + 4, FrameType.DATA, 0, peer_id) + datagram
    except struct.error:
        raise ProtocolError(f"peer id {peer_id} does not fit in u32") from None


def encode(frame: Frame) -> bytes:
    """The wire bytes of one frame; refuses values the layout cannot carry."""
    if isinstance(frame, Data):
        return encode_data(frame.peer_id, frame.datagram)
    payload: bytes
    if isinstance(frame, Hello):
        _check_u32("node id", frame.node_id)
        if not 0 <= frame.version <= 0xFF:
            raise ProtocolError(f"version {frame.version} does not fit in u8")
        ticket = frame.ticket.encode("ascii", "replace")
        _check_ticket(ticket)
        payload = _HELLO.pack(frame.version, frame.node_id) + ticket
        kind = FrameType.HELLO
    elif isinstance(frame, HelloOk):
        _check_u32("node id", frame.node_id)
        if not 0 <= frame.version <= 0xFF or not 0 <= frame.expires_at <= MAX_U64:
            raise ProtocolError("hello-ok version or expiry out of range")
        payload = _HELLO_OK.pack(frame.version, frame.node_id, frame.expires_at)
        kind = FrameType.HELLO_OK
    elif isinstance(frame, Ping | Pong):
        if not 0 <= frame.token <= MAX_U64:
            raise ProtocolError(f"ping token {frame.token} does not fit in u64")
        payload = _U64.pack(frame.token)
        kind = FrameType.PING if isinstance(frame, Ping) else FrameType.PONG
    else:
        if not 0 <= frame.code <= 0xFFFF:
            raise ProtocolError(f"close code {frame.code} does not fit in u16")
        message = frame.message.encode("utf-8")
        if len(message) > MAX_MESSAGE:
            raise ProtocolError(f"close message of {len(message)} bytes exceeds {MAX_MESSAGE}")
        payload = _U16.pack(frame.code) + message
        kind = FrameType.CLOSE
    return HEADER.pack(len(payload), kind, 0) + payload


def encode_many(frames: Iterable[Frame]) -> bytes:
    """Several frames as one buffer, so a writer issues one send for a batch."""
    return b"".join(encode(f) for f in frames)


# --- decoding -------------------------------------------------------------------------------------
# Parsers get the buffer and the payload bounds; they slice a memoryview so each payload is copied once.


def _parse_data(mv: memoryview, start: int, end: int) -> Frame:
    # The header check has made sure the peer id is there.
    return Data(_U32.unpack_from(mv, start)[0], bytes(mv[start + 4 : end]))


def _parse_hello(mv: memoryview, start: int, end: int) -> Frame:
    if end - start < 1:
        raise ProtocolError("empty hello")
    version = mv[start]
    if version != VERSION:
        raise ProtocolError(
            f"hello asks for protocol version {version}; this end speaks {VERSION}",
            close_code=CloseCode.UNSUPPORTED_VERSION,
        )
    if end - start < _HELLO.size + 1:
        raise ProtocolError(f"hello of {end - start} bytes is too short for version, node id and ticket")
    _, node_id = _HELLO.unpack_from(mv, start)
    raw = bytes(mv[start + _HELLO.size : end])
    _check_ticket(raw)
    return Hello(node_id=node_id, ticket=raw.decode("ascii"), version=version)


def _parse_hello_ok(mv: memoryview, start: int, end: int) -> Frame:
    if end - start != _HELLO_OK.size:
        raise ProtocolError(f"hello-ok must be {_HELLO_OK.size} bytes, got {end - start}")
    version, node_id, expires_at = _HELLO_OK.unpack_from(mv, start)
    return HelloOk(node_id=node_id, expires_at=expires_at, version=version)


def _token_parser(kind: type[Ping | Pong]) -> Callable[[memoryview, int, int], Frame]:
    name = kind.__name__.lower()

    def parse(mv: memoryview, start: int, end: int) -> Frame:
        if end - start != 8:
            raise ProtocolError(f"{name} must be 8 bytes, got {end - start}")
        return kind(_U64.unpack_from(mv, start)[0])

    return parse


def _parse_close(mv: memoryview, start: int, end: int) -> Frame:
    if not 2 <= end - start <= 2 + MAX_MESSAGE:
        raise ProtocolError(f"close of {end - start} bytes; must be 2 to {2 + MAX_MESSAGE}")
    code = _U16.unpack_from(mv, start)[0]
    try:
        message = bytes(mv[start + 2 : end]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("close message is not UTF-8") from None
    return Close(code, message)


_PARSERS: dict[int, Callable[[memoryview, int, int], Frame]] = {
    FrameType.HELLO: _parse_hello,
    FrameType.HELLO_OK: _parse_hello_ok,
    FrameType.DATA: _parse_data,
    FrameType.PING: _token_parser(Ping),
    FrameType.PONG: _token_parser(Pong),
    FrameType.CLOSE: _parse_close,
}
# Upper payload bound per type, checked on the header so a bad frame is refused before it is buffered.
_TYPE_LIMITS: dict[int, int] = {
    FrameType.HELLO: _HELLO.size + MAX_TICKET,
    FrameType.HELLO_OK: _HELLO_OK.size,
    FrameType.DATA: MAX_PAYLOAD,
    FrameType.PING: 8,
    FrameType.PONG: 8,
    FrameType.CLOSE: 2 + MAX_MESSAGE,
}
_DATA = int(FrameType.DATA)
_HELLO_FIRST = frozenset({int(FrameType.HELLO), int(FrameType.CLOSE)})
"""What a node may send before its hello is accepted (close, to give up)."""


def check_header(length: int, kind: int, reserved: int, max_payload: int = MAX_PAYLOAD) -> None:
    """Raise the ProtocolError a reader raises for this frame header; return if the header is acceptable.

    A Data frame must hold at least its peer id, so a scanner can read it without looking at the length.
    """
    if (
        kind not in _PARSERS
        or reserved
        or length > max_payload
        or length > _TYPE_LIMITS[kind]
        or (kind == _DATA and length < 4)
    ):
        raise _header_refusal(length, kind, reserved, max_payload)


def _header_refusal(length: int, kind: int, reserved: int, max_payload: int) -> ProtocolError:
    # Only called for a header already known to be bad; says which rule it breaks.
    if kind not in _PARSERS:
        return ProtocolError(f"unknown frame type {kind}")
    if reserved:
        return ProtocolError(f"reserved header byte is {reserved}, must be 0")
    if kind == _DATA and length < 4:
        return ProtocolError(f"data frame of {length} bytes is shorter than its 4-byte peer id")
    return ProtocolError(
        f"{FrameType(kind).name.lower()} frame of {length} bytes exceeds "
        f"the limit of {min(max_payload, _TYPE_LIMITS[kind])}",
        close_code=CloseCode.FRAME_TOO_LARGE,
    )


def parse_payload(kind: int, buf: bytes | bytearray | memoryview, start: int, end: int) -> Frame:
    """The frame of type `kind` whose payload is `buf[start:end]`, for a header `check_header` accepted
    (every frame `FrameScanner.scan` hands over): readers decode only the rare frames that are not Data."""
    with memoryview(buf) as mv:
        return _PARSERS[kind](mv, start, end)


def peer_id_field(peer_id: int) -> bytes:
    """The 4 bytes a Data frame carries as its peer id (what a relay stamps as the sender)."""
    try:
        return _U32.pack(peer_id)
    except struct.error:
        raise ProtocolError(f"peer id {peer_id} does not fit in u32") from None


OnData = Callable[[int, int, int, int], object]
"""Called with (peer id, start, end, frames) for Data frames: `buf[start:end]` is `frames` whole Data frames
in a row for that peer (one unless the scanner merges); the first datagram starts at start + DATA_HEADER_SIZE."""
OnFrame = Callable[[int, int, int], bool]
"""Called with (type, start, end) for any other frame, its payload `buf[start:end]` (for `parse_payload`);
returns True to stop the scan after it (the connection is closing)."""


class FrameScanner:
    """The framing every reader runs: finds the complete frames in a buffer it does not copy.

    Each header is checked as soon as its 4 bytes are there, so a bad frame is refused before its payload
    is buffered. Data frames, the hot path, are handed over as bounds in the caller's buffer and never
    decoded; the caller decodes the rare other frames with `parse_payload`. Handlers are called, not
    yielded to: a relay forwards each run with one call, the cost its own loop had.

    `stamp` (a relay's sender id, from `peer_id_field`) is written over the peer id of every Data frame
    scanned, in place. `merge` hands consecutive Data frames for one peer over as one run, so a relay
    forwards them as one slice. `hello_first` refuses every frame but hello and close (a relay reading a
    node it has not authenticated). `on_frame` may change `stamp` and `hello_first` (a hello accepted):
    the scan reads them again for the frames after it.
    """

    __slots__ = ("hello_first", "max_payload", "merge", "stamp")

    def __init__(
        self,
        max_payload: int = MAX_PAYLOAD,
        *,
        merge: bool = False,
        stamp: bytes | None = None,
        hello_first: bool = False,
    ) -> None:
        if not 4 <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be 4 to {MAX_PAYLOAD}")
        self.max_payload = max_payload
        self.merge = merge
        self.stamp = stamp
        self.hello_first = hello_first

    def scan(
        self, buf: bytes | bytearray | memoryview, pos: int, size: int, on_data: OnData, on_frame: OnFrame
    ) -> int:
        """Hand every complete frame in `buf[pos:size]` to the handlers, in order; returns where the scan
        stopped: after the last frame handled, so a partial frame from there on is the caller's to keep.

        Raises ProtocolError at the first bad header or a frame refused by `hello_first`, after handing
        over every frame before it. With `stamp`, `buf` must be writable.
        """
        limit = self.max_payload
        merge = self.merge
        stamp = self.stamp
        hello_first = self.hello_first
        data_header = DATA_HEADER.unpack_from
        run_peer = -1
        run_start = run_end = run_frames = 0
        end: int
        while True:
            # The hot path: one unpack reads a Data frame's header and peer id together.
            while size - pos >= DATA_HEADER_SIZE and not hello_first:
                length, kind, reserved, peer = data_header(buf, pos)
                if kind != _DATA or reserved or not 4 <= length <= limit:
                    break
                end = pos + HEADER_SIZE + length
                if end > size:
                    break
                if stamp is not None:
                    buf[pos + HEADER_SIZE : pos + DATA_HEADER_SIZE] = stamp  # type: ignore[index]
                if peer == run_peer and merge:
                    run_end = end
                    run_frames += 1
                else:
                    if run_frames:
                        on_data(run_peer, run_start, run_end, run_frames)
                    run_peer, run_start, run_end, run_frames = peer, pos, end, 1
                pos = end
            # Whatever ends a run of Data frames (another frame, a bad or partial header) comes after it.
            if run_frames:
                on_data(run_peer, run_start, run_end, run_frames)
                run_peer = -1
                run_frames = 0
            if size - pos < HEADER_SIZE:
                return pos
            length, kind, reserved = HEADER.unpack_from(buf, pos)
            check_header(length, kind, reserved, limit)
            if hello_first and kind not in _HELLO_FIRST:
                raise ProtocolError(
                    f"first frame must be hello, got {FrameType(kind).name.lower()}",
                    close_code=CloseCode.NOT_AUTHENTICATED,
                )
            end = pos + HEADER_SIZE + length
            if end > size:
                return pos
            if on_frame(kind, pos + HEADER_SIZE, end):
                return end
            pos = end
            stamp = self.stamp
            hello_first = self.hello_first


class FrameDecoder:
    """Turns a TCP byte stream into frames: many per `feed`, a partial frame kept for the next one.

    For clients and tests; the relay and the shim run the same `FrameScanner` over their own buffers.
    After a ProtocolError the stream is out of step, so every later `feed` raises the same error.
    """

    __slots__ = ("_buffer", "_error", "_scanner")

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._scanner = FrameScanner(max_payload)
        self._buffer = b""
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held back as the start of an incomplete frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Every complete frame in the stream so far; raises ProtocolError on the first bad one."""
        if self._error is not None:
            raise self._error
        # Appending to the leftover copies only when a frame straddled the previous read.
        buf = self._buffer + bytes(data) if self._buffer else bytes(data)
        frames: list[Frame] = []
        parsers = _PARSERS

        def on_frame(kind: int, start: int, end: int) -> bool:
            frames.append(parsers[kind](mv, start, end))
            return False

        try:
            with memoryview(buf) as mv:
                pos = self._scanner.scan(
                    buf,
                    0,
                    len(buf),
                    lambda peer, start, end, _: frames.append(
                        Data(peer, bytes(mv[start + DATA_HEADER_SIZE : end]))
                    ),
                    on_frame,
                )
        except ProtocolError as error:
            self._error = error
            self._buffer = b""
            raise
        self._buffer = buf[pos:]
        return frames
