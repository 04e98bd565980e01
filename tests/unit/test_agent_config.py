"""Agent settings: flags over the TOML file over defaults, and clear errors."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

import pytest

from wgmesh.agent import config
from wgmesh.agent.main import build_parser
from wgmesh.errors import ValidationError
from wgmesh.join_token import with_identity
from wgmesh.pins import Pin


def _load(argv: list[str], **kw: bool) -> config.AgentConfig:
    return config.load(build_parser().parse_args(argv), **kw)


def test_flags(tmp_path: Path) -> None:
    cfg = _load(
        [
            "--coordinator",
            "http://198.18.0.1:8080",
            "--token",
            "wgt_1.x",
            "--name",
            "gw1",
            "--advertise",
            "10.1.0.0/24",
            "--advertise",
            "10.9.0.0/16",
            "--listen-port",
            "51900",
            "--interface",
            "wgt0",
            "--backend",
            "userspace",
            "--state-dir",
            str(tmp_path),
            "--masquerade",
        ]
    )
    assert cfg.coordinator == ("http://198.18.0.1:8080",)
    assert cfg.advertise == (ip_network("10.1.0.0/24"), ip_network("10.9.0.0/16"))
    assert (cfg.listen_port, cfg.interface, cfg.backend, cfg.masquerade) == (51900, "wgt0", "userspace", True)
    assert cfg.state_dir == tmp_path
    assert "wgt_1.x" not in repr(cfg)


def test_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        'coordinator = "http://198.18.0.1:8080"\nname = "gw-file"\nadvertise = ["10.1.0.0/24"]\n'
        "listen_port = 51000\nmasquerade = true\n"
    )
    cfg = _load(["--config", str(path), "--name", "gw-flag"])
    assert cfg.name == "gw-flag"
    assert cfg.advertise == (ip_network("10.1.0.0/24"),)
    assert cfg.listen_port == 51000
    assert cfg.masquerade is True


def test_mss_clamp_is_on_unless_a_flag_or_the_file_turns_it_off(tmp_path: Path) -> None:
    assert _load(["--coordinator", "http://x"]).mss_clamp is True
    assert _load(["--coordinator", "http://x", "--no-mss-clamp"]).mss_clamp is False
    path = tmp_path / "agent.toml"
    path.write_text('coordinator = "http://x"\nmss_clamp = false\n')
    assert _load(["--config", str(path)]).mss_clamp is False


def test_route_width_bounds_from_flags_and_file(tmp_path: Path) -> None:
    cfg = _load(["--coordinator", "http://x"])
    assert (cfg.min_prefix_length, cfg.min_prefix_length6, cfg.allow_wide_routes) == (8, 16, False)
    cfg = _load(["--coordinator", "http://x", "--min-prefix-length", "0", "--min-prefix-length6", "48"])
    assert (cfg.min_prefix_length, cfg.min_prefix_length6) == (0, 48)
    assert _load(["--coordinator", "http://x", "--allow-wide-routes"]).allow_wide_routes is True
    path = tmp_path / "agent.toml"
    path.write_text('coordinator = "http://x"\nallow_wide_routes = true\nmin_prefix_length = 12\n')
    cfg = _load(["--config", str(path)])
    assert (cfg.min_prefix_length, cfg.allow_wide_routes) == (12, True)


@pytest.mark.parametrize(
    ("argv", "toml", "message"),
    [
        ([], None, "--coordinator URL is required"),
        (["--coordinator", "http://x", "--name", "GW1"], None, "hostname label"),
        (["--coordinator", "http://x", "--advertise", "10.1.0.5/16"], None, "did you mean 10.1.0.0/16"),
        (["--coordinator", "http://x", "--interface", "a-very-long-interface-name"], None, "1-15 characters"),
        ([], "coordinator = \n", "config file"),
        ([], 'coordinater = "http://x"\n', "unknown key 'coordinater'"),
        ([], 'coordinator = "http://x"\nmss_clamp = "no"\n', "mss_clamp must be true or false"),
        (["--coordinator", "http://x", "--min-prefix-length", "33"], None, "min_prefix_length must be"),
        (["--coordinator", "http://x", "--min-prefix-length6", "-1"], None, "min_prefix_length6 must be"),
        ([], 'coordinator = "http://x"\nallow_wide_routes = 1\n', "allow_wide_routes must be true or false"),
        ([], "coordinator = [1, 2]\n", "a URL or a list of URLs"),
        (["--coordinator", "http://a", "--coordinator", "ftp://b"], None, "must look like http"),
    ],
)
def test_bad_settings(tmp_path: Path, argv: list[str], toml: str | None, message: str) -> None:
    path = tmp_path / "agent.toml"
    if toml is not None:
        path.write_text(toml)
        argv = [*argv, "--config", str(path)]
    with pytest.raises(ValidationError, match=message):
        _load(argv)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        _load(["--coordinator", "http://x", "--config", str(tmp_path / "missing.toml")])


def test_cleanup_needs_no_coordinator(tmp_path: Path) -> None:
    cfg = _load(["cleanup", "--interface", "wgt0"], require_coordinator=False)
    assert cfg.interface == "wgt0"
    assert cfg.coordinator == ()


def test_several_coordinators_from_flags_the_file_or_the_token(tmp_path: Path) -> None:
    flags = _load(["--coordinator", "https://a:8443/", "--coordinator", "https://b:8443"])
    assert flags.coordinator == ("https://a:8443", "https://b:8443")
    path = tmp_path / "agent.toml"
    path.write_text('coordinator = ["https://a:8443", "https://b:8443", "https://a:8443"]\n')
    assert _load(["--config", str(path)]).coordinator == ("https://a:8443", "https://b:8443")
    token = with_identity("wgt_1.x", Pin(bytes(32)), ["https://c:8443", "https://d:8443"])
    assert _load(["--token", token]).coordinator == ("https://c:8443", "https://d:8443")
    # the flags override what the token carries
    assert _load(["--token", token, "--coordinator", "https://a:8443"]).coordinator == ("https://a:8443",)


def test_ha_flags_and_their_refusals(tmp_path: Path) -> None:
    base = ["--coordinator", "http://198.18.0.1:8080", "--config", str(tmp_path / "none.toml")]
    (tmp_path / "none.toml").write_text("")
    cfg = _load([*base, "--site", "vpc2", "--on-primary", "/usr/local/bin/route-to-me 'rtb 1'"])
    assert (cfg.site, cfg.hook, cfg.ha_preempt_after) == (
        "vpc2",
        ("/usr/local/bin/route-to-me", "rtb 1"),
        30.0,
    )
    assert _load([*base, "--ha-preempt-after", "0"]).ha_preempt_after == 0.0
    assert _load(base).site is None and _load(base).hook is None
    for bad, words in (
        (["--site", "Not A Name"], "--site"),
        (["--on-primary", "unterminated 'quote"], "--on-primary"),
        (["--ha-preempt-after", "-1"], "ha_preempt_after"),
        (["--ha-preempt-after", "nan"], "ha_preempt_after"),
    ):
        with pytest.raises(ValidationError, match=words):
            _load([*base, *bad])
    (tmp_path / "ha.toml").write_text('site = "vpc3"\nha_preempt_after = 12\non_primary = "hook primary"\n')
    from_file = _load(["--coordinator", "http://198.18.0.1:8080", "--config", str(tmp_path / "ha.toml")])
    assert (from_file.site, from_file.ha_preempt_after, from_file.hook) == ("vpc3", 12.0, ("hook", "primary"))


def test_advertise_may_name_an_alias_in_flags_and_file(tmp_path: Path) -> None:
    cfg = _load(
        [
            "--coordinator",
            "http://x",
            "--advertise",
            "172.31.0.0/16=10.201.0.0/16",
            "--advertise",
            "10.9.0.0/24",
        ]
    )
    assert cfg.advertise == (ip_network("172.31.0.0/16"), ip_network("10.9.0.0/24"))
    assert cfg.aliases == {ip_network("172.31.0.0/16"): ip_network("10.201.0.0/16")}
    path = tmp_path / "agent.toml"
    path.write_text('coordinator = "http://x"\nadvertise = ["172.31.0.0/16 = 10.201.0.0/16"]\n')
    assert _load(["--config", str(path)]).aliases == {
        ip_network("172.31.0.0/16"): ip_network("10.201.0.0/16")
    }


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("172.31.0.0/16=10.201.0.0/24", "of its family and length"),
        ("172.31.0.0/16=fd00::/16", "of its family and length"),
        ("172.31.0.0/16=10.201.0.1/16", "10.201.0.1/16"),
        ("172.31.0.0/16=", "172.31.0.0/16"),
    ],
)
def test_a_bad_alias_is_refused_with_the_reason(entry: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _load(["--coordinator", "http://x", "--advertise", entry])
    assert message in caught.value.message
