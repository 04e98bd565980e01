"""agent/direct_auth.py: both ends compute one secret, only they can, and a proof holds for one
challenge, one pair of node ids and one listener key."""

from __future__ import annotations

from wgmesh import keys
from wgmesh.agent import direct_auth
from wgmesh.pins import Pin

PIN = Pin(b"\x01" * 32)
OTHER_PIN = Pin(b"\x02" * 32)


def test_both_ends_derive_the_same_secret_and_a_third_key_another() -> None:
    a, b, c = keys.generate_keypair(), keys.generate_keypair(), keys.generate_keypair()
    ab = direct_auth.pair_secret(a.private_key, b.public_key)
    assert ab == direct_auth.pair_secret(b.private_key, a.public_key)
    assert len(ab) == 32
    assert direct_auth.pair_secret(c.private_key, b.public_key) != ab


def test_a_challenge_round_trips_and_garbage_is_none() -> None:
    text = direct_auth.new_challenge()
    challenge = direct_auth.challenge_of(text)
    assert challenge is not None and len(challenge) == direct_auth.CHALLENGE_BYTES
    assert direct_auth.new_challenge() != text
    for bad in ("", "c.", "x." + text[2:], text[:-4], "c.!!!!"):
        assert direct_auth.challenge_of(bad) is None, bad


def test_a_proof_holds_only_for_its_challenge_ids_and_pin() -> None:
    secret, challenge = b"s" * 32, b"c" * 32
    answer = direct_auth.proof(secret, challenge, dialer=7, listener=9, listener_pin=PIN)
    assert direct_auth.proves(answer, secret, challenge, dialer=7, listener=9, listener_pin=PIN)
    for changed in (
        {"dialer": 8},
        {"listener": 8},
        {"listener_pin": OTHER_PIN},
    ):
        args = {"dialer": 7, "listener": 9, "listener_pin": PIN, **changed}
        assert not direct_auth.proves(answer, secret, challenge, **args)  # type: ignore[arg-type]
    assert not direct_auth.proves(answer, b"t" * 32, challenge, dialer=7, listener=9, listener_pin=PIN)
    assert not direct_auth.proves(answer, secret, b"d" * 32, dialer=7, listener=9, listener_pin=PIN)
    assert not direct_auth.proves("", secret, challenge, dialer=7, listener=9, listener_pin=PIN)
    assert not direct_auth.proves("é" + answer, secret, challenge, dialer=7, listener=9, listener_pin=PIN)
