"""wgmesh.relay.tickets: coordinator-signed relay tickets, verified offline by relays."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmesh.errors import AuthError, ValidationError
from wgmesh.relay import protocol
from wgmesh.relay import tickets as t

KEY = t.generate_signing_key()
PUB = t.public_key_of(KEY)
NOW = 1_800_000_000.0
DAY = 86_400.0


def issue(node_id: int = 7, ttl: float = DAY, now: float = NOW, **kwargs: Any) -> str:
    return t.issue_ticket(KEY, node_id, ttl, now, **kwargs)


def format_1_ticket(audience: str, node_id: int = 7) -> str:
    """A ticket as coordinators signed them before issue 16: format 1, one audience or (empty) any relay."""
    aud = audience.encode()
    payload = struct.pack(">BIQQB", 1, node_id, int(NOW), int(NOW + DAY), len(aud)) + aud
    signed = payload + t.load_private_key(KEY).sign(b"wgmesh-relay-ticket\x00" + payload)
    return base64.urlsafe_b64encode(signed).rstrip(b"=").decode()


def test_issued_ticket_verifies_and_says_what_was_signed() -> None:
    ticket = t.verify_ticket(PUB, issue(relays=["r1", "r2"]), NOW + 10, 7, relay_id="r2")
    assert ticket == t.Ticket(node_id=7, relays=("r1", "r2"), issued_at=int(NOW), expires_at=int(NOW + DAY))
    unnamed = t.verify_ticket(PUB, issue(), NOW + 10, 7)
    assert unnamed == t.Ticket(node_id=7, relays=None, issued_at=int(NOW), expires_at=int(NOW + DAY))


def test_ticket_is_compact_base64url_that_fits_a_hello() -> None:
    ticket = issue(relays=["relay-central"])
    assert len(ticket) < 160
    # As many relay ids as a ticket may hold still fit a hello.
    widest = issue(relays=["r" * 63] * 4)
    assert len(widest) <= protocol.MAX_TICKET
    assert t.verify_ticket(PUB, widest, NOW, 7, relay_id="r" * 63)
    assert set(ticket) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert protocol.FrameDecoder().feed(protocol.encode(protocol.Hello(7, ticket))) == [
        protocol.Hello(7, ticket)
    ]


def test_key_objects_and_base64_strings_are_interchangeable() -> None:
    private = t.load_private_key(KEY)
    public = t.load_public_key(PUB)
    assert t.public_key_of(private) == PUB
    assert t.verify_ticket(public, t.issue_ticket(private, 1, 60, NOW), NOW, 1).node_id == 1


def test_generated_keys_are_raw_32_bytes_and_differ() -> None:
    assert len(base64.b64decode(KEY)) == 32
    assert len(base64.b64decode(PUB)) == 32
    assert t.generate_signing_key() != KEY


def test_forged_ticket_from_another_key_refused() -> None:
    other = t.generate_signing_key()
    with pytest.raises(t.TicketForgedError, match="signature does not verify"):
        t.verify_ticket(PUB, t.issue_ticket(other, 7, DAY, NOW), NOW, 7)


def test_expired_ticket_refused() -> None:
    ticket = issue(ttl=60)
    assert t.verify_ticket(PUB, ticket, NOW + 59, 7)
    with pytest.raises(t.TicketExpiredError, match="expired 0 s ago"):
        t.verify_ticket(PUB, ticket, NOW + 60, 7)


def test_not_yet_valid_ticket_refused_beyond_the_clock_skew_leeway() -> None:
    ticket = issue(now=NOW + 120)
    assert t.verify_ticket(PUB, issue(now=NOW + 30), NOW, 7)  # within the 60 s leeway
    with pytest.raises(t.TicketNotYetValidError, match="120 s in the future"):
        t.verify_ticket(PUB, ticket, NOW, 7)


def test_ticket_replayed_by_another_node_refused() -> None:
    with pytest.raises(t.TicketWrongNodeError, match="belongs to node 7, presented by node 8"):
        t.verify_ticket(PUB, issue(node_id=7), NOW, 8)


def test_ticket_passes_only_on_the_relays_it_names() -> None:
    ticket = issue(relays=["relay-a", "relay-c"])
    assert t.verify_ticket(PUB, ticket, NOW, 7, relay_id="relay-a")
    assert t.verify_ticket(PUB, ticket, NOW, 7, relay_id="relay-c", accept_unnamed=False)
    with pytest.raises(t.TicketWrongAudienceError, match="'relay-a', 'relay-c', not 'relay-b'"):
        t.verify_ticket(PUB, ticket, NOW, 7, relay_id="relay-b")
    with pytest.raises(t.TicketWrongAudienceError):
        t.verify_ticket(PUB, ticket, NOW, 7)  # a relay without an id takes no named ticket
    with pytest.raises(t.TicketWrongAudienceError, match="for no relay"):
        t.verify_ticket(PUB, issue(relays=[]), NOW, 7, relay_id="relay-a")


def test_unnamed_tickets_pass_only_while_the_relay_accepts_them() -> None:
    unnamed = issue()
    assert t.verify_ticket(PUB, unnamed, NOW, 7, relay_id="relay-b")
    with pytest.raises(t.TicketUnnamedError, match="names no relay"):
        t.verify_ticket(PUB, unnamed, NOW, 7, relay_id="relay-b", accept_unnamed=False)


def test_format_1_tickets_still_verify_as_they_did() -> None:
    assert t.verify_ticket(PUB, format_1_ticket(""), NOW, 7, relay_id="relay-a").relays is None
    named = format_1_ticket("relay-a")
    assert t.verify_ticket(PUB, named, NOW, 7, relay_id="relay-a", accept_unnamed=False).relays == (
        "relay-a",
    )
    with pytest.raises(t.TicketWrongAudienceError):
        t.verify_ticket(PUB, named, NOW, 7, relay_id="relay-b")


@pytest.mark.parametrize(
    ("ticket", "message"),
    [
        ("", "impossible length"),
        ("x" * 1000, "impossible length"),
        ("!!!!" * 30, "not base64url"),
        ("AAAA", "impossible length"),
        ("é" * 40, "not base64url"),
    ],
)
def test_malformed_tickets_refused(ticket: str, message: str) -> None:
    with pytest.raises(t.TicketMalformedError, match=message):
        t.verify_ticket(PUB, ticket, NOW, 7)


def test_unknown_format_refused() -> None:
    raw = bytearray(base64.urlsafe_b64decode(issue() + "=="))
    raw[0] = 3
    with pytest.raises(t.TicketMalformedError, match="format 3 is unknown"):
        t.verify_ticket(PUB, base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode(), NOW, 7)


def test_padded_or_non_canonical_text_refused() -> None:
    with pytest.raises(t.TicketMalformedError):
        t.verify_ticket(PUB, issue() + "==", NOW, 7)


def test_errors_are_auth_errors_with_specific_codes() -> None:
    assert issubclass(t.TicketError, AuthError)
    codes = {cls.code for cls in t.TicketError.__subclasses__()}
    assert len(codes) == len(t.TicketError.__subclasses__())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"node_id": -1},
        {"node_id": 2**32},
        {"ttl": 0},
        {"ttl": t.MAX_TTL + 1},
        {"now": -5},
    ],
)
def test_issue_refuses_values_a_ticket_cannot_hold(kwargs: dict[str, float]) -> None:
    args: dict[str, float] = {"node_id": 1, "ttl": 60, "now": NOW, **kwargs}
    with pytest.raises(ValidationError):
        t.issue_ticket(KEY, int(args["node_id"]), args["ttl"], args["now"])


def test_issue_refuses_relay_ids_a_ticket_cannot_hold() -> None:
    with pytest.raises(ValidationError, match="relay id"):
        issue(relays=["r" * 65])
    with pytest.raises(ValidationError, match="relay id"):
        issue(relays=[""])
    with pytest.raises(ValidationError, match="at most 256"):
        issue(relays=["r" * 60] * 5)


def test_relay_list_lengths_that_do_not_add_up_are_malformed() -> None:
    raw = bytearray(base64.urlsafe_b64decode(issue(relays=["ab", "cd"]) + "=="))
    raw[21] = 3  # the count says three relays, the payload holds two
    with pytest.raises(t.TicketMalformedError, match="relay list"):
        t.decode_ticket(base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode())


@pytest.mark.parametrize("bad", ["not base64!", base64.b64encode(b"short").decode()])
def test_key_loading_refuses_bad_keys(bad: str) -> None:
    with pytest.raises(ValidationError):
        t.load_public_key(bad)
    with pytest.raises(ValidationError):
        t.load_private_key(bad)


def test_fingerprint_is_short_stable_and_not_the_ticket() -> None:
    ticket = issue()
    assert t.ticket_fingerprint(ticket) == t.ticket_fingerprint(ticket)
    assert len(t.ticket_fingerprint(ticket)) == 12
    assert t.ticket_fingerprint(ticket) not in ticket


@settings(max_examples=300)
@given(data=st.data())
def test_tampering_with_any_byte_is_refused(data: st.DataObject) -> None:
    ticket = issue(relays=data.draw(st.sampled_from([None, ["relay-a"], ["relay-b", "relay-a"]])))
    raw = bytearray(base64.urlsafe_b64decode(ticket + "=" * (-len(ticket) % 4)))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises((t.TicketMalformedError, t.TicketForgedError)):
        t.verify_ticket(PUB, tampered, NOW, 7, relay_id="relay-a")


@settings(max_examples=300)
@given(text=st.text(max_size=300))
def test_arbitrary_text_raises_only_ticket_errors(text: str) -> None:
    with pytest.raises(t.TicketError):
        t.verify_ticket(PUB, text, NOW, 7)


@given(
    node_id=st.integers(0, 2**32 - 1),
    ttl=st.floats(1, t.MAX_TTL),
    now=st.floats(0, 4e9),
    relays=st.lists(st.text(min_size=1, max_size=16), min_size=1, max_size=3),
)
def test_any_valid_issue_verifies_at_issue_time(
    node_id: int, ttl: float, now: float, relays: list[str]
) -> None:
    ticket = t.issue_ticket(KEY, node_id, ttl, now, relays=relays)
    claims = t.verify_ticket(PUB, ticket, now, node_id, relay_id=relays[-1])
    assert claims.node_id == node_id
    assert claims.relays == tuple(relays)
    assert claims.expires_at - claims.issued_at >= math.ceil(ttl)


def test_decode_reads_claims_without_verifying_for_logs() -> None:
    claims, payload, signature = t.decode_ticket(t.issue_ticket(t.generate_signing_key(), 3, 60, NOW))
    assert (claims.node_id, claims.expires_at, len(signature)) == (3, int(NOW) + 60, 64)
    assert payload[0] == t.LEGACY_FORMAT
    assert t.decode_ticket(issue(relays=["r"]))[1][0] == t.TICKET_FORMAT


def test_leeway_is_configurable() -> None:
    with pytest.raises(t.TicketNotYetValidError):
        t.verify_ticket(PUB, issue(now=NOW + 30), NOW, 7, leeway=0)
