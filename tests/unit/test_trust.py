"""wgmesh.trust: which presented chains prove a pin, and join tokens that carry one."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from pki import issue, make_ca

from wgmesh.coordinator import identity
from wgmesh.errors import ValidationError
from wgmesh.join_token import JoinToken, with_identity
from wgmesh.pins import Pin
from wgmesh.trust import proven_pin


def test_a_self_signed_identity_proves_the_pin_of_its_own_key_only() -> None:
    made = identity.generate()
    der = [made.chain[0].public_bytes(Encoding.DER)]
    assert proven_pin(der, "anything", [made.pin]) == made.pin  # names do not matter for a key pin
    other = identity.generate()
    assert proven_pin(der, "anything", [other.pin]) is None
    # the announced next key is accepted beside the pinned one
    assert proven_pin(der, "x", [other.pin, made.pin]) == made.pin


def test_a_ca_pin_needs_a_leaf_that_verifiably_chains_to_that_ca_for_the_host() -> None:
    ca = make_ca()
    leaf = issue(ca, "127.0.0.1")
    pin = Pin.of_certificate(ca.cert)
    assert proven_pin([leaf.der(), ca.der()], "127.0.0.1", [pin]) == pin
    # another name than the certificate's
    assert proven_pin([leaf.der(), ca.der()], "10.0.0.1", [pin]) is None
    # a forger presents the CA's public certificate beside a leaf it signed itself
    forged = issue(ca, "127.0.0.1", signer=make_ca("forger").key)
    assert proven_pin([forged.der(), ca.der()], "127.0.0.1", [pin]) is None
    # the CA certificate not presented: nothing to check the leaf against
    assert proven_pin([leaf.der()], "127.0.0.1", [pin]) is None


def test_a_join_token_carries_pin_and_urls_and_a_bare_secret_still_parses() -> None:
    pin = Pin.parse("sha256:" + "0f" * 32)
    secret = "wgt_12.abcdefghijklmnopqrstuvwxyz-_0123"
    text = with_identity(secret, pin, ["https://198.51.100.1:8080", "https://[2001:db8::1]:443"])
    assert "~" in text and " " not in text
    parsed = JoinToken.parse(text)
    assert (parsed.secret, parsed.pin, parsed.urls) == (
        secret,
        pin,
        ("https://198.51.100.1:8080", "https://[2001:db8::1]:443"),
    )
    assert JoinToken.parse(secret) == JoinToken(secret)
    assert secret not in repr(parsed)
    with pytest.raises(ValidationError, match="damaged"):
        JoinToken.parse("wgmesh1~AAAA~~" + secret)  # a 3-byte pin
    with pytest.raises(ValidationError, match="damaged"):
        JoinToken.parse("wgmesh1~" + secret)
