"""wgmesh.keys: X25519 key pairs, preshared keys and the base64 form WireGuard uses."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgmesh import keys
from wgmesh.errors import ValidationError

# RFC 7748 section 6.1: Alice's X25519 key pair.
RFC7748_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
RFC7748_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_generated_pair_is_32_byte_keys_whose_public_half_derives_from_the_private() -> None:
    pair = keys.generate_keypair()
    assert len(keys.decode_key(pair.private_key)) == 32
    assert len(keys.decode_key(pair.public_key)) == 32
    assert keys.public_key_of(pair.private_key) == pair.public_key
    assert pair.private_key != pair.public_key


def test_generated_pairs_differ() -> None:
    pairs = [keys.generate_keypair() for _ in range(20)]
    assert len({p.private_key for p in pairs}) == 20
    assert len({p.public_key for p in pairs}) == 20


def test_public_key_derivation_matches_rfc7748_vector() -> None:
    assert keys.public_key_of(b64(RFC7748_PRIVATE)) == b64(RFC7748_PUBLIC)


def test_repr_of_a_pair_never_shows_the_private_key() -> None:
    pair = keys.generate_keypair()
    assert pair.private_key not in repr(pair)
    assert pair.private_key not in str(pair)
    assert pair.public_key in repr(pair)


def test_decode_accepts_a_valid_key() -> None:
    raw = os.urandom(32)
    assert keys.decode_key(b64(raw)) == raw


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not base64 at all!", "not valid base64"),
        ("", "got 0"),
        (b64(os.urandom(31)), "got 31"),
        (b64(os.urandom(33)), "got 33"),
        (b64(os.urandom(32)).rstrip("="), "not valid base64"),
        (" " + b64(os.urandom(32)), "not valid base64"),
        ("é" * 44, "not valid base64"),
    ],
)
def test_decode_refuses_bad_keys_with_a_reason(text: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        keys.decode_key(text)
    assert info.value.code == "invalid_key"
    assert fragment in info.value.message


def test_decode_refuses_non_canonical_spelling_of_a_key() -> None:
    # 32 bytes leave 2 unused bits in the last base64 character: setting them spells the same bytes
    # differently. WireGuard refuses such keys; accepting them would let one key register twice.
    canonical = b64(bytes(31) + b"\x00")
    assert canonical.endswith("AA=")
    twin = canonical[:-2] + "B="
    assert base64.b64decode(twin) == base64.b64decode(canonical)
    with pytest.raises(ValidationError, match="canonical"):
        keys.decode_key(twin)


@given(st.binary(min_size=32, max_size=32))
def test_encode_decode_round_trip(raw: bytes) -> None:
    assert keys.decode_key(keys.encode_key(raw)) == raw


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_encode_refuses_wrong_length(size: int) -> None:
    with pytest.raises(ValidationError, match=f"got {size}"):
        keys.encode_key(bytes(size))


def test_psks_are_random_32_byte_keys() -> None:
    psks = {keys.generate_psk() for _ in range(20)}
    assert len(psks) == 20
    assert all(len(keys.decode_key(p)) == 32 for p in psks)


@given(a=st.integers(1, 10**6), b=st.integers(1, 10**6), generation=st.integers(0, 100))
def test_pair_psk_is_the_same_from_both_ends(a: int, b: int, generation: int) -> None:
    master = b"m" * 32
    assert keys.derive_pair_psk(master, a, b, generation) == keys.derive_pair_psk(master, b, a, generation)
    assert len(keys.decode_key(keys.derive_pair_psk(master, a, b, generation))) == 32


def test_pair_psk_differs_by_pair_generation_and_master() -> None:
    master = os.urandom(32)
    base = keys.derive_pair_psk(master, 1, 2)
    others = {
        keys.derive_pair_psk(master, 1, 3),
        keys.derive_pair_psk(master, 2, 3),
        keys.derive_pair_psk(master, 12, 3),
        keys.derive_pair_psk(master, 1, 23),
        keys.derive_pair_psk(master, 1, 2, 1),
        keys.derive_pair_psk(os.urandom(32), 1, 2),
    }
    assert base not in others
    assert len(others) == 6
    assert keys.derive_pair_psk(master, 1, 2) == base  # deterministic


def test_hex_form_round_trips_and_matches_uapi_layout() -> None:
    raw = os.urandom(32)
    hexed = keys.key_to_hex(b64(raw))
    assert hexed == raw.hex()
    assert len(hexed) == 64
    assert keys.hex_to_key(hexed) == b64(raw)


def test_secret_hash_matches_only_its_secret() -> None:
    stored = keys.hash_secret("s3cret-value-abcdefgh")
    assert stored != "s3cret-value-abcdefgh"
    assert keys.secret_matches("s3cret-value-abcdefgh", stored)
    assert not keys.secret_matches("s3cret-value-abcdefgH", stored)
    assert not keys.secret_matches("", stored)


def test_fingerprint_is_the_first_eight_characters() -> None:
    pair = keys.generate_keypair()
    assert keys.fingerprint(pair.public_key) == pair.public_key[:8]
