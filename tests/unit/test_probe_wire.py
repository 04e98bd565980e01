"""Probe messages: round trips, authentication, and never mistaken for WireGuard (or the reverse)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgmesh import keys
from wgmesh.agent import probe_wire
from wgmesh.agent.probe_wire import Burst, Ping, Pong, ProbeFormatError, Report

KEY = probe_wire.pair_key(keys.generate_keypair().private_key, "a", "b")
OTHER = probe_wire.pair_key(None, keys.generate_keypair().public_key, keys.generate_keypair().public_key)

U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
U16 = st.integers(0, 2**16 - 1)
messages = st.one_of(
    st.builds(Ping, U32, U64, st.booleans()),
    st.builds(Pong, U32, U64, st.booleans()),
    st.builds(Burst, U32, U64, U16, U16, st.integers(38, probe_wire.MAX_PROBE)),
    st.builds(Report, U32, U64, U16, U16, U32, U32),
)


@given(messages)
def test_every_message_round_trips(message: probe_wire.Message) -> None:
    datagram = probe_wire.encode(message, KEY)
    assert probe_wire.is_probe(datagram)
    assert probe_wire.peek_sender(datagram) == message.sender
    assert probe_wire.decode(datagram, KEY) == message


@given(messages)
def test_another_pairs_key_is_refused(message: probe_wire.Message) -> None:
    with pytest.raises(ProbeFormatError, match="MAC"):
        probe_wire.decode(probe_wire.encode(message, KEY), OTHER)


@given(messages, st.data())
def test_any_flipped_bit_is_refused(message: probe_wire.Message, data: st.DataObject) -> None:
    datagram = bytearray(probe_wire.encode(message, KEY))
    bit = data.draw(st.integers(0, len(datagram) * 8 - 1))
    datagram[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ProbeFormatError):
        probe_wire.decode(bytes(datagram), KEY)


@given(st.binary(max_size=2000))
def test_garbage_only_ever_raises_probe_format_error(blob: bytes) -> None:
    with pytest.raises(ProbeFormatError):
        probe_wire.decode(blob, KEY)


@pytest.mark.parametrize("kind", [1, 2, 3, 4])
def test_wireguard_messages_are_not_probes(kind: int) -> None:
    # WireGuard: a type byte 1-4, then three reserved zero bytes.
    assert not probe_wire.is_probe(bytes([kind, 0, 0, 0]) + bytes(144))


def test_burst_size_is_bounded() -> None:
    with pytest.raises(ValueError, match="burst packet size"):
        probe_wire.encode(Burst(1, 1, 0, 1, probe_wire.MAX_PROBE + 1), KEY)
    assert len(probe_wire.encode(Burst(1, 1, 0, 1, 1200), KEY)) == 1200


def test_pair_key_is_the_psk_or_symmetric_in_the_public_keys() -> None:
    psk = keys.generate_keypair().private_key
    assert probe_wire.pair_key(psk, "x", "y") == keys.decode_key(psk)
    a, b = keys.generate_keypair().public_key, keys.generate_keypair().public_key
    assert probe_wire.pair_key(None, a, b) == probe_wire.pair_key(None, b, a)
    assert probe_wire.pair_key(None, a, b) != probe_wire.pair_key(None, a, a)
