"""The real relay refuses every unusable hello with the close code docs/relay-protocol.md gives it."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import pytest
from relay_harness import HELLO_TIMEOUT, Keys, RelayProcess, nodes, wait_until

from wgmesh.relay import protocol as p

Code = p.CloseCode


@pytest.mark.parametrize(
    ("make_ticket", "code"),
    [
        pytest.param(lambda k: Keys().ticket(101), Code.BAD_TICKET, id="forged-by-another-key"),
        pytest.param(
            lambda k: k.ticket(101, ttl=60, now=time.time() - 3600), Code.TICKET_EXPIRED, id="expired"
        ),
        pytest.param(lambda k: k.ticket(102), Code.WRONG_NODE, id="replayed-from-another-node"),
        pytest.param(lambda k: k.ticket(101, relays=["r2"]), Code.BAD_TICKET, id="for-another-relay"),
        pytest.param(lambda k: k.ticket(101, now=time.time() + 3600), Code.BAD_TICKET, id="not-yet-valid"),
        pytest.param(lambda k: "not.a.ticket", Code.BAD_TICKET, id="malformed"),
    ],
)
def test_unusable_ticket_is_refused(
    relay: RelayProcess, keys: Keys, make_ticket: Callable[[Keys], str], code: Code
) -> None:
    ticket = make_ticket(keys)
    with nodes(relay, 1) as (a,):
        a.send(p.Hello(node_id=101, ticket=ticket))
        close = a.expect_close(code)
    assert "ticket" in close.message
    assert ticket not in close.message


def test_ticket_for_this_relay_id_is_accepted(relay: RelayProcess, keys: Keys) -> None:
    with nodes(relay, 1) as (a,):
        assert a.hello(103, keys.ticket(103, relays=["r1"])).node_id == 103


def test_ticket_is_never_logged(relay: RelayProcess, keys: Keys) -> None:
    ticket = keys.ticket(104)
    with nodes(relay, 1) as (a,):
        a.hello(104, ticket)
    # the line is written just after hello-ok is sent, so it may trail the reply a little
    wait_until(
        lambda: 'event="node authenticated" node=104' in relay.text(), 5, "the authentication log line"
    )
    assert ticket not in relay.text()
    assert keys.public not in relay.text()


def test_data_before_hello_is_not_authenticated(relay: RelayProcess, keys: Keys) -> None:
    with nodes(relay, 2) as (a, b):
        b.hello(106, keys.ticket(106))
        a.send(p.Data(106, b"sneaky"))
        a.expect_close(Code.NOT_AUTHENTICATED)
        # nothing reached the node it was addressed to
        assert b.alive()
        assert not b.frames


def test_data_header_before_hello_is_refused_before_its_payload_arrives(relay: RelayProcess) -> None:
    with nodes(relay, 1) as (a,):
        a.send_raw(struct.pack(">HBBI", 1404, p.FrameType.DATA, 0, 2))  # 1,400 bytes promised, none sent
        close = a.expect_close(Code.NOT_AUTHENTICATED)
    # the header did it, not the hello deadline (which closes with the same code)
    assert close.message == "first frame must be hello, got data"


def test_malformed_frame_is_a_protocol_error(relay: RelayProcess, keys: Keys) -> None:
    with nodes(relay, 2) as (a, b):
        a.hello(107, keys.ticket(107))
        b.send_raw(struct.pack(">HBB", 0, 99, 0))
        b.expect_close(Code.PROTOCOL_ERROR)
        a.send_raw(struct.pack(">HBB", 3, p.FrameType.DATA, 0) + b"abc")  # shorter than its peer id
        a.expect_close(Code.PROTOCOL_ERROR)


def test_unknown_version_is_refused_with_the_supported_one(relay: RelayProcess) -> None:
    with nodes(relay, 1) as (a,):
        a.send_raw(struct.pack(">HBBBI", 8, p.FrameType.HELLO, 0, 2, 108) + b"abc")
        close = a.expect_close(Code.UNSUPPORTED_VERSION)
    assert "1" in close.message


def test_silent_connection_is_closed_after_hello_timeout(relay: RelayProcess) -> None:
    with nodes(relay, 1) as (a,):
        start = time.monotonic()
        a.expect_close(Code.NOT_AUTHENTICATED)
        assert HELLO_TIMEOUT * 0.9 <= time.monotonic() - start < HELLO_TIMEOUT + 2


def test_expired_ticket_closes_an_authenticated_connection(relay: RelayProcess, keys: Keys) -> None:
    with nodes(relay, 1) as (a,):
        ok = a.hello(109, keys.ticket(109, ttl=1))
        a.expect_close(Code.TICKET_EXPIRED, timeout=4)
        assert time.time() >= ok.expires_at - 0.1


def test_refresh_moves_the_expiry(relay: RelayProcess, keys: Keys) -> None:
    with nodes(relay, 1) as (a,):
        a.hello(110, keys.ticket(110, ttl=1))
        a.hello(110, keys.ticket(110, ttl=3600))
        time.sleep(2.2)
        assert a.alive()
