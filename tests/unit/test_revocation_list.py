"""wgmesh.relay.revocation: the list a relay holds, and the token it proves itself with."""

from __future__ import annotations

import pytest

from wgmesh.errors import AuthError, ValidationError
from wgmesh.models import RevokedTicket
from wgmesh.pins import Pin
from wgmesh.relay.identity import RelayIdentity, generate_key
from wgmesh.relay.revocation import MAX_SKEW, RevocationPuller, Revocations, relay_token, verify_relay_token

NOW = 1_800_000_000.0


def test_a_revoked_node_loses_the_tickets_issued_up_to_its_deletion_only() -> None:
    held = Revocations()
    held.replace([RevokedTicket(node_id=7, issued_before=1000), RevokedTicket(node_id=7, issued_before=900)])
    assert held.revoked(7, 1000)
    assert held.revoked(7, 10)
    assert not held.revoked(7, 1001)  # issued after the deletion: a later node with that id
    assert not held.revoked(8, 10)
    held.replace([])  # the next pull no longer names it (its last ticket expired)
    assert not held.revoked(7, 10)
    assert len(held) == 0


def test_token_names_the_relay_whose_pinned_key_signed_it() -> None:
    identity = RelayIdentity.from_key(generate_key())
    pins = {"r1": identity.pin}
    token = relay_token(identity.key_pem, "r1", NOW)
    assert verify_relay_token(token, NOW + MAX_SKEW, pins) == "r1"
    with pytest.raises(AuthError, match="over"):
        verify_relay_token(token, NOW + MAX_SKEW + 1, pins)
    with pytest.raises(AuthError, match="not from a relay"):
        verify_relay_token(token, NOW, {"r1": Pin(bytes(32))})
    with pytest.raises(AuthError, match="not from a relay"):
        verify_relay_token(token, NOW, {"r2": identity.pin})
    # Another id signed into the same token shape does not verify.
    forged = token.split(".")
    forged[1] = relay_token(identity.key_pem, "r2", NOW).split(".")[1]
    with pytest.raises(AuthError):
        verify_relay_token(".".join(forged), NOW, {"r2": identity.pin})
    for junk in ("", "wgmesh-relay-1.a.b.c.d", "bearer-token", token + ".x"):
        with pytest.raises(AuthError):
            verify_relay_token(junk, NOW, pins)


def test_puller_refuses_what_could_never_pull() -> None:
    key = RelayIdentity.from_key(generate_key()).key_pem
    with pytest.raises(ValidationError, match="--relay-id"):
        RevocationPuller(urls=("https://c.example",), tls=None, relay_id="", key_pem=key)
    with pytest.raises(ValidationError, match="interval"):
        RevocationPuller(urls=("https://c.example",), tls=None, relay_id="r1", key_pem=key, interval=0)
