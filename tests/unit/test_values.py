"""The typed values of the pure core: endpoints and prefixes parsed once, printed back the same, refused readably."""

from __future__ import annotations

import ipaddress
import re

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgmesh.errors import ValidationError
from wgmesh.models import Network, PeerStatus, Route, StatusReport, SubnetsUpdate
from wgmesh.values import Endpoint, Prefix


@pytest.mark.parametrize(
    ("text", "host", "port", "printed"),
    [
        ("198.51.100.7:51820", "198.51.100.7", 51820, "198.51.100.7:51820"),
        ("[2001:DB8:0::1]:443", "2001:db8::1", 443, "[2001:db8::1]:443"),
        ("Relay.Example.net:8443", "relay.example.net", 8443, "relay.example.net:8443"),
        (" 10.0.0.1:1 ", "10.0.0.1", 1, "10.0.0.1:1"),
    ],
)
def test_parse_gives_canonical_host_and_port(text: str, host: str, port: int, printed: str) -> None:
    endpoint = Endpoint.parse(text)
    assert (endpoint.host, endpoint.port, str(endpoint)) == (host, port, printed)


def test_equal_endpoints_compare_equal_however_written() -> None:
    assert Endpoint.parse("[2001:db8:0:0::1]:51820") == Endpoint("2001:db8::1", 51820)
    assert Endpoint.parse("[2001:db8::1]:51820") != Endpoint.parse("[2001:db8::1]:51821")
    assert len({Endpoint("10.0.0.1", 1), Endpoint.parse("10.0.0.1:1")}) == 1


def test_ip_and_socket_address() -> None:
    assert Endpoint.parse("[fd00::1]:7").ip == ipaddress.ip_address("fd00::1")
    assert Endpoint.parse("gw.example:7").ip is None
    assert Endpoint.parse("[fd00::1]:7").address == ("fd00::1", 7)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("198.51.100.7", "must be HOST:PORT (IPv6 as [ADDRESS]:PORT)"),
        (":51820", "must be HOST:PORT"),
        ("198.51.100.7:", "must be HOST:PORT"),
        ("198.51.100.7:http", "must be HOST:PORT"),
        ("198.51.100.7:\u00b2", "must be HOST:PORT"),  # a digit to str.isdigit, not to int()
        ("198.51.100.7:0", "port must be 1-65535"),
        ("198.51.100.7:65536", "port must be 1-65535"),
        ("fd00::1:51820", "write IPv6 endpoints as [ADDRESS]:PORT"),
        ("[1.2.3.4]:5", "brackets are for IPv6 addresses"),
        ("[gw]:5", "brackets are for IPv6 addresses"),
        ("bad_host:5", "neither an IP address nor a hostname"),
        ("-gw:5", "neither an IP address nor a hostname"),
    ],
)
def test_bad_endpoints_raise_the_bad_input_error_naming_the_text(text: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        Endpoint.parse(text)
    assert fragment in info.value.message
    assert repr(text) in info.value.message
    assert info.value.code == "invalid_endpoint" and info.value.status == 422


def test_port_zero_only_where_asked_for() -> None:
    assert Endpoint.parse("0.0.0.0:0", port_zero=True).port == 0
    with pytest.raises(ValidationError, match="port must be 1-65535"):
        Endpoint.parse("0.0.0.0:0")


def test_building_one_checks_it_too() -> None:
    with pytest.raises(ValidationError):
        Endpoint("10.0.0.1", 70000)
    with pytest.raises(ValidationError):
        Endpoint("not a host", 1)


PORTS = st.integers(min_value=1, max_value=65535)
LABELS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
HOSTS = st.one_of(
    st.ip_addresses().map(str),
    st.lists(LABELS, min_size=1, max_size=4).map(".".join),
)


@given(HOSTS, PORTS)
def test_parse_reads_back_what_str_prints(host: str, port: int) -> None:
    endpoint = Endpoint(host, port)
    assert Endpoint.parse(str(endpoint)) == endpoint
    assert str(Endpoint.parse(str(endpoint))) == str(endpoint)


@given(st.ip_addresses(), PORTS)
def test_models_parse_once_and_write_back_the_same_string(ip: ipaddress._BaseAddress, port: int) -> None:
    text = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    report = StatusReport.model_validate_json(f'{{"endpoints": ["{text}"], "metrics": "{text}"}}')
    assert report.endpoints == [Endpoint(str(ip), port)] and report.metrics == Endpoint(str(ip), port)
    assert report.model_dump(mode="json")["endpoints"] == [text]
    assert report.model_dump()["metrics"] == text  # python mode too: stores and caches hold strings
    assert StatusReport.model_validate_json(report.model_dump_json()) == report


def test_models_refuse_a_hostname_endpoint() -> None:
    # Peers and WireGuard need an address: nothing on the path resolves names.
    with pytest.raises(pydantic.ValidationError, match="must be ADDRESS:PORT"):
        StatusReport(endpoints=["gw.example:51820"])
    with pytest.raises(pydantic.ValidationError, match="valid string"):
        StatusReport.model_validate({"endpoints": [51820]})


def test_the_schema_of_an_endpoint_is_still_a_string() -> None:
    schema = StatusReport.model_json_schema()
    assert schema["properties"]["endpoints"]["items"] == {"type": "string"}
    assert PeerStatus.model_json_schema()["properties"]["endpoint"]["anyOf"][0]["type"] == "string"


# --- prefixes -------------------------------------------------------------------------------------

NETWORKS = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str)).flatmap(
    lambda host: st.integers(0, ipaddress.ip_address(host).max_prefixlen).map(
        lambda length: ipaddress.ip_network(f"{host}/{length}", strict=False)
    )
)


@given(NETWORKS)
def test_prefixes_parse_once_and_write_back_the_canonical_string(net: Prefix) -> None:
    route = Route.model_validate_json(
        f'{{"prefix": "{net}", "gateway": "gw", "gateway_id": 1, "state": "active"}}'
    )
    assert route.prefix == net and isinstance(route.prefix, type(net))
    assert route.model_dump(mode="json")["prefix"] == str(net)
    assert route.model_dump()["prefix"] == str(net)  # python mode too: stores and caches hold strings
    assert Route.model_validate_json(route.model_dump_json()) == route


def test_a_prefix_is_canonical_however_written() -> None:
    update = SubnetsUpdate(subnets=[" 10.1.0.0/24", "2001:DB8:0::/32"])
    assert update.subnets == [ipaddress.ip_network("10.1.0.0/24"), ipaddress.ip_network("2001:db8::/32")]
    # (site null and no aliases, left out as the agent sends them: agent/client.py)
    assert update.model_dump_json(exclude_none=True, exclude_defaults=True) == (
        '{"subnets":["10.1.0.0/24","2001:db8::/32"]}'
    )


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("10.1.0.5/24", "10.1.0.5/24 has host bits set; did you mean 10.1.0.0/24?"),
        ("10.1.0.0", "is not a CIDR prefix (expected ADDRESS/LENGTH)"),
        ("10.1.0.0/33", "is not a valid CIDR prefix"),
        (24, "Input should be a valid string"),
    ],
)
def test_models_refuse_a_bad_prefix_with_the_parsers_words(value: object, fragment: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=re.escape(fragment)):
        SubnetsUpdate.model_validate({"subnets": [value]})


def test_a_network_default_is_a_prefix_and_the_schema_of_a_prefix_is_still_a_string() -> None:
    assert Network().overlay_cidr == ipaddress.ip_network("100.96.0.0/16")
    schema = Network.model_json_schema()["properties"]["overlay_cidr"]
    assert schema == {"default": "100.96.0.0/16", "title": "Overlay Cidr", "type": "string"}
    assert SubnetsUpdate.model_json_schema()["properties"]["subnets"]["items"] == {"type": "string"}
