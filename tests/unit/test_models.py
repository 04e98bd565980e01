"""wgmesh.models: the validation every payload gets where it enters."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from ipaddress import ip_network
from typing import Any

import pydantic
import pytest
from netmaps import GW1

from wgmesh import keys
from wgmesh.models import (
    EnrollRequest,
    ErrorResponse,
    NetMap,
    Network,
    NetworkPatch,
    Node,
    NodePatch,
    PeerConfig,
    Route,
    StatusReport,
    TokenCreate,
)

KEY = keys.generate_keypair().public_key


def enroll(**fields: Any) -> EnrollRequest:
    body: dict[str, Any] = {"token": "wgt_1.x", "name": "gw-a", "public_key": KEY, **fields}
    return EnrollRequest.model_validate(body)


def error_text(exc: pytest.ExceptionInfo[pydantic.ValidationError]) -> str:
    return " ".join(e["msg"] for e in exc.value.errors())


def test_network_defaults_match_the_design() -> None:
    net = Network()
    assert net.overlay_cidr == ip_network("100.96.0.0/16")
    assert net.p2p == "auto"
    assert net.listen_port == 51820
    assert net.mtu == 1420


@pytest.mark.parametrize("mtu", [1280, 1420, 9000])
def test_admin_mtus_are_1280_to_9000(mtu: int) -> None:
    assert Network(mtu=mtu).mtu == mtu
    assert NetworkPatch(mtu=mtu).mtu == mtu
    assert NodePatch(mtu=mtu).mtu == mtu


@pytest.mark.parametrize("mtu", [1279, 9001, 0, -1, 1400.5, "big"])
def test_other_admin_mtus_are_refused(mtu: object) -> None:
    for model in (Network, NetworkPatch, NodePatch):
        with pytest.raises(pydantic.ValidationError):
            model.model_validate({"mtu": mtu})


def test_a_node_patch_tells_a_cleared_mtu_from_an_omitted_one() -> None:
    assert "mtu" in NodePatch.model_validate({"mtu": None}).model_fields_set
    assert "mtu" not in NodePatch.model_validate({"p2p": "off"}).model_fields_set


def test_reported_mtus_are_576_to_65535_or_unknown() -> None:
    assert enroll().max_mtu is None
    assert enroll(max_mtu=576).max_mtu == 576
    assert StatusReport(mtu=1380, max_mtu=65535).model_dump()["max_mtu"] == 65535
    assert StatusReport().mtu is None and StatusReport().max_mtu is None
    for bad in (575, 65536, 0):
        with pytest.raises(pydantic.ValidationError):
            enroll(max_mtu=bad)
        with pytest.raises(pydantic.ValidationError):
            StatusReport(max_mtu=bad)
        with pytest.raises(pydantic.ValidationError):
            StatusReport(mtu=bad)


@pytest.mark.parametrize("name", ["a", "0", "gw-a", "gw-aws-fra-1", "a" * 63, "1a-b2"])
def test_hostname_labels_are_names(name: str) -> None:
    assert enroll(name=name).name == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "GW-A",
        "Gw",
        "gw/a",
        "/",
        "..",
        "gw..a",
        "a.b",
        "gw\x00a",
        "gw\n",
        "-gw",
        "gw-",
        "gw a",
        "gw_a",
        "a" * 64,
        "gwé",
    ],
)
def test_other_names_are_refused(name: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        enroll(name=name)
    assert "hostname label" in error_text(info)


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("not base64!", "not valid base64"),
        (base64.b64encode(os.urandom(31)).decode(), "got 31"),
        (base64.b64encode(os.urandom(33)).decode(), "got 33"),
        ("", "got 0"),
    ],
)
def test_keys_must_be_32_bytes_of_base64(key: str, fragment: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        enroll(public_key=key)
    assert fragment in error_text(info)


def test_cidrs_are_normalised() -> None:
    req = enroll(subnets=["10.1.0.0/16", "FD00:0::/8", "192.168.1.0/255.255.255.0"])
    assert req.subnets == [ip_network(p) for p in ("10.1.0.0/16", "fd00::/8", "192.168.1.0/24")]


@pytest.mark.parametrize(
    ("cidr", "fragment"),
    [
        ("10.1.0.5/16", "did you mean 10.1.0.0/16"),
        ("fd00::1/64", "did you mean fd00::/64"),
        ("10.1.0.0", "not a CIDR prefix"),
        ("10.1.0.0/33", "not a valid CIDR prefix"),
        ("banana/8", "not a valid CIDR prefix"),
    ],
)
def test_bad_cidrs_are_refused_with_a_reason(cidr: str, fragment: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        enroll(subnets=[cidr])
    assert fragment in error_text(info)


@pytest.mark.parametrize(
    ("endpoint", "normal"),
    [("198.51.100.7:51820", "198.51.100.7:51820"), ("[FD00::1]:1", "[fd00::1]:1")],
)
def test_endpoints_are_address_and_port(endpoint: str, normal: str) -> None:
    assert [str(e) for e in StatusReport(endpoints=[endpoint]).endpoints] == [normal]


@pytest.mark.parametrize(
    "endpoint",
    ["198.51.100.7", "198.51.100.7:0", "198.51.100.7:65536", "fd00::1:51820", "[1.2.3.4]:5", "host:51820"],
)
def test_bad_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        StatusReport(endpoints=[endpoint])


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_listen_port_must_be_a_port(port: int) -> None:
    with pytest.raises(pydantic.ValidationError):
        enroll(listen_port=port)


def test_unknown_fields_are_errors_not_ignored() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        enroll(subnet=["10.0.0.0/8"])
    assert info.value.errors()[0]["type"] == "extra_forbidden"


def test_eth0_ip_must_be_an_address() -> None:
    assert StatusReport(eth0_ip="10.1.0.5").eth0_ip == "10.1.0.5"
    with pytest.raises(pydantic.ValidationError):
        StatusReport(eth0_ip="10.1.0.300")


@pytest.mark.parametrize("tag", ["Prod", "", "a b", "x" * 64])
def test_bad_tags_are_refused(tag: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        NodePatch(tags=[tag])


def test_token_expiry_bounds() -> None:
    assert TokenCreate().expires_in == 86400
    assert TokenCreate(expires_in=None).expires_in is None
    for bad in (0, -5, 11 * 365 * 86400):
        with pytest.raises(pydantic.ValidationError):
            TokenCreate(expires_in=bad)


def test_p2p_policy_is_auto_or_off() -> None:
    assert NodePatch(p2p="off").p2p == "off"
    with pytest.raises(pydantic.ValidationError):
        NodePatch.model_validate({"p2p": "on"})


def test_route_states() -> None:
    base = {"prefix": "10.0.0.0/8", "gateway": "gw-a", "gateway_id": 1}
    for state in ("active", "standby", "conflict", "rejected"):
        assert Route.model_validate({**base, "state": state}).state == state
    with pytest.raises(pydantic.ValidationError):
        Route.model_validate({**base, "state": "primary"})


def test_node_and_peer_round_trip_through_json() -> None:
    node = Node(
        id=1,
        name="gw-a",
        public_key=KEY,
        overlay_ip="100.96.0.1",
        subnets=["10.1.0.0/16"],
        created_at=datetime.now(UTC),
    )
    assert Node.model_validate_json(node.model_dump_json()) == node
    peer = PeerConfig(
        node_id=1, name="gw-a", public_key=KEY, overlay_ip="100.96.0.1", allowed_ips=["100.96.0.1/32"]
    )
    assert PeerConfig.model_validate_json(peer.model_dump_json()) == peer


def test_error_body_shape() -> None:
    body = ErrorResponse.model_validate({"error": {"code": "invalid", "message": "why"}})
    assert body.model_dump() == {"error": {"code": "invalid", "message": "why"}}


def test_answers_to_agents_ignore_fields_a_newer_coordinator_adds() -> None:
    """An agent keeps following netmaps while the coordinator is upgraded before it."""
    netmap = {
        **GW1,
        "peers": [
            {
                "node_id": 2,
                "name": "gw2",
                "public_key": keys.generate_keypair().public_key,
                "overlay_ip": "100.96.0.2",
                "allowed_ips": ["100.96.0.2/32"],
                "a_field_from_the_future": True,
            }
        ],
        "another_field_from_the_future": {"x": 1},
    }
    parsed = NetMap.model_validate(netmap)
    assert parsed.peers[0].name == "gw2" and parsed.mtu == 1420
    # What agents send stays strict: a typo in a report is an error, not silence.
    with pytest.raises(pydantic.ValidationError):
        StatusReport.model_validate({"endpointz": []})
