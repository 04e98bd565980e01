"""Connection settings and failures of every coordinator command: flags, environment, cli.toml;
unreachable coordinator, bad token, no settings: exit 1 or 2 with one readable line."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from cli_harness import Cli, Result, base_env, run_cli_batch
from coordinator_harness import Coordinator, free_port

# Every command that talks to the coordinator, with arguments that pass argument parsing.
COMMANDS = [
    ("status",),
    ("status", "gw-x"),
    ("routes",),
    ("nodes",),
    ("nodes", "list"),
    ("nodes", "show", "gw-x"),
    ("nodes", "add", "gw-y"),
    ("node", "set", "gw-x", "--p2p", "off"),
    ("nodes", "rm", "gw-x", "--yes"),
    ("pair", "set", "gw-x", "gw-y", "--p2p", "off"),
    ("pair", "list"),
    ("network",),
    ("network", "show"),
    ("network", "set", "--mtu", "1400"),
    ("tokens", "create"),
    ("tokens", "list"),
    ("tokens", "revoke", "1"),
    ("export", "gw-x"),
]


@pytest.fixture(scope="module")
def seeded(admin: httpx.Client) -> None:
    for name in ("gw-x", "gw-y"):
        r = admin.post("/api/v1/nodes", json={"name": name, "generate_keys": True})
        assert r.status_code == 201, r.text


# Each group of tests below runs its commands in one process (run_cli_batch): they are about each
# command's message and exit code; a fresh process per command is run_cli's, tested elsewhere.


@pytest.fixture(scope="module")
def unreachable(cli_env: dict[str, str]) -> tuple[str, dict[tuple[str, ...], Result]]:
    url = f"https://127.0.0.1:{free_port()}"  # nothing listens there (just released by the OS)
    results = run_cli_batch([(*argv, "--json") for argv in COMMANDS], env=cli_env | {"WGMESH_URL": url})
    return url, dict(zip(COMMANDS, results, strict=True))


@pytest.fixture(scope="module")
def bad_token(cli_env: dict[str, str], seeded: None) -> dict[tuple[str, ...], Result]:
    results = run_cli_batch([(*argv, "--token", "not-the-admin-token") for argv in COMMANDS], env=cli_env)
    return dict(zip(COMMANDS, results, strict=True))


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_unreachable_coordinator_is_one_line_and_exit_1(
    unreachable: tuple[str, dict[tuple[str, ...], Result]], argv: tuple[str, ...]
) -> None:
    url, results = unreachable
    r = results[argv]
    assert r.code == 1
    assert r.one_line_error() == f"wgmesh: cannot reach the coordinator at {url}: Connection refused"
    assert r.out == ""


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_bad_token_is_one_line_and_exit_1(
    coordinator: Coordinator, bad_token: dict[tuple[str, ...], Result], argv: tuple[str, ...]
) -> None:
    r = bad_token[argv]
    assert r.code == 1
    line = r.one_line_error()
    assert line.startswith("wgmesh: admin token is not valid")
    assert coordinator.url in line and "--token" in line
    assert "not-the-admin-token" not in r.err  # the token is never echoed


def test_without_settings_every_command_says_how_to_give_them(home: Path) -> None:
    for argv, r in zip(COMMANDS, run_cli_batch(COMMANDS, env=base_env(home)), strict=True):
        assert r.code == 2, argv
        assert "no coordinator: pass --coordinator URL, set WGMESH_URL" in r.one_line_error()


def test_flags_win_over_the_environment_before_or_after_the_subcommand(
    wgmesh: Cli, coordinator: Coordinator, home: Path, closed_port: int
) -> None:
    env = base_env(home) | {
        "WGMESH_URL": f"https://127.0.0.1:{closed_port}",
        "WGMESH_TOKEN": "wrong-token-wrong",
    }
    assert coordinator.admin_token is not None
    flags = (
        "--coordinator",
        coordinator.url,
        "--token",
        coordinator.admin_token,
        "--pin",
        str(coordinator.pin),
    )
    assert wgmesh("status", *flags, "--json", env=env).code == 0
    assert wgmesh("nodes", *flags, "list", "--json", env=env).code == 0
    assert wgmesh("nodes", "list", *flags, "--json", env=env).code == 0
    assert wgmesh("tokens", *flags, "--json", env=env).code == 0


def write_config(base: Path, text: str, mode: int) -> Path:
    path = base / "wgmesh" / "cli.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_config_file_in_home_and_the_mode_warning(
    wgmesh: Cli, coordinator: Coordinator, tmp_path: Path
) -> None:
    path = write_config(
        tmp_path / ".config",
        f'coordinator = "{coordinator.url}"\ntoken = "{coordinator.admin_token}"\npin = "{coordinator.pin}"\n',
        0o600,
    )
    env = base_env(tmp_path)
    r = wgmesh("nodes", "--json", env=env)
    assert r.code == 0, r.err
    assert r.err == ""
    path.chmod(0o644)
    r = wgmesh("nodes", "--json", env=env)
    assert r.code == 0, r.err
    assert "nodes" in r.json()  # stdout stays clean JSON
    assert r.one_line_error() == (
        f"wgmesh: warning: {path} is readable by others (mode 0644); run: chmod 600 {path}"
    )


def test_config_file_under_xdg_config_home_and_a_broken_one(
    wgmesh: Cli, coordinator: Coordinator, tmp_path: Path
) -> None:
    xdg = tmp_path / "xdg"
    write_config(
        xdg,
        f'coordinator = "{coordinator.url}"\ntoken = "{coordinator.admin_token}"\npin = "{coordinator.pin}"\n',
        0o600,
    )
    env = base_env(tmp_path) | {"XDG_CONFIG_HOME": str(xdg)}
    assert wgmesh("routes", "--json", env=env).code == 0
    write_config(xdg, 'coordinator = "http://x:1"\ntoken = "t"\nverbose = true\n', 0o600)
    r = wgmesh("routes", env=env)
    assert r.code == 2
    assert "unknown key 'verbose'" in r.one_line_error()


def test_proxy_variables_are_ignored(wgmesh: Cli, cli_env: dict[str, str], closed_port: int) -> None:
    proxy = f"http://127.0.0.1:{closed_port}"
    env = cli_env | {"HTTP_PROXY": proxy, "http_proxy": proxy, "ALL_PROXY": proxy, "all_proxy": proxy}
    r = wgmesh("status", "--json", env=env)
    assert r.code == 0, r.err


def test_a_url_without_scheme_is_bad_usage(wgmesh: Cli) -> None:
    r = wgmesh("status", "--coordinator", "127.0.0.1:8080")
    assert r.code == 2
    assert "must look like http://HOST:PORT" in r.one_line_error()


def test_usage_errors_and_help(wgmesh: Cli) -> None:
    r = wgmesh()
    assert r.code == 2
    r.one_line_error()
    r = wgmesh("frobnicate")
    assert r.code == 2
    assert "invalid choice" in r.one_line_error()
    for argv in (
        ("--help",),
        ("status", "--help"),
        ("nodes", "rm", "--help"),
        ("tokens", "create", "--help"),
        ("network", "set", "--help"),
    ):
        r = wgmesh(*argv)
        assert r.code == 0 and "usage:" in r.out, argv
