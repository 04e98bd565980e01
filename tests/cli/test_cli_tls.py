"""How the CLI trusts the coordinator's HTTPS (issue 15): `--pin`, `--ca`, `SSL_CERT_FILE`, `pin`/`ca` in
cli.toml; anything else is refused before the admin token is sent, exit 2 with one line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import Cli, base_env, run_cli
from coordinator_harness import ADMIN_TOKEN, Coordinator, running
from pki import issue, make_ca, write_chain

from wgmesh.coordinator import identity
from wgmesh.pins import Pin


def without_trust(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != "WGMESH_PIN"}


def test_the_self_signed_identity_needs_its_pin(
    wgmesh: Cli, cli_env: dict[str, str], coordinator: Coordinator
) -> None:
    r = wgmesh("nodes", "--json", env=without_trust(cli_env))
    assert r.code == 2
    assert r.one_line_error() == (
        f"wgmesh: refusing coordinator {coordinator.url}: its certificate is not trusted "
        "(self-signed certificate); give --pin sha256:… or --ca FILE"
    )
    assert wgmesh("nodes", "--json", "--pin", str(coordinator.pin), env=without_trust(cli_env)).code == 0
    other = identity.generate().pin
    r = wgmesh("nodes", "--json", "--pin", str(other), env=without_trust(cli_env))
    assert r.code == 2
    assert f"it presented key {coordinator.pin}, not {other}" in r.one_line_error()
    assert r.out == ""


@pytest.fixture(scope="module")
def ca_coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Coordinator, Path, Pin]]:
    """A coordinator serving a CA-issued certificate (`--tls-cert`): the CA file and the CA's pin."""
    tmp = tmp_path_factory.mktemp("ca")
    ca = make_ca()
    chain, key, ca_file = write_chain(tmp, issue(ca, "127.0.0.1"), ca)
    extra = ("--tls-cert", str(chain), "--tls-key", str(key))
    with running(Coordinator(db=tmp / "c.db", log=tmp / "c.log", extra=extra)) as c:
        yield c, ca_file, Pin.of_certificate(ca.cert)


def test_a_ca_issued_certificate_is_trusted_by_ca_file_environment_config_or_ca_pin(
    ca_coordinator: tuple[Coordinator, Path, Pin], tmp_path: Path
) -> None:
    c, ca_file, ca_pin = ca_coordinator
    assert c.pin == ca_pin  # `pin --tls-cert` and the served chain agree: the CA's key
    env = base_env(tmp_path) | {"WGMESH_URL": c.url, "WGMESH_TOKEN": ADMIN_TOKEN}
    refused = run_cli("nodes", "--json", env=env)
    assert refused.code == 2 and "its certificate is not trusted" in refused.one_line_error()
    assert run_cli("nodes", "--json", "--ca", str(ca_file), env=env).code == 0
    assert run_cli("nodes", "--json", env=env | {"SSL_CERT_FILE": str(ca_file)}).code == 0
    assert run_cli("nodes", "--json", "--pin", str(ca_pin), env=env).code == 0
    config = tmp_path / ".config/wgmesh/cli.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'ca = "{ca_file}"\n')
    config.chmod(0o600)
    assert run_cli("nodes", "--json", env=env).code == 0
    config.write_text(f'pin = "{ca_pin}"\n')
    assert run_cli("nodes", "--json", env=env).code == 0
    # another CA's file does not make this chain trusted
    other = tmp_path / "other-ca.pem"
    other.write_bytes(make_ca("other").cert_pem())
    r = run_cli("nodes", "--json", "--ca", str(other), env=env)
    assert r.code == 2 and "its certificate is not trusted" in r.one_line_error()
