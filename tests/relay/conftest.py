"""Fixtures for the relay tests: a coordinator key pair and one real `wgmesh-relay` process per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from relay_harness import HELLO_TIMEOUT, Keys, RelayProcess, relay_process


@pytest.fixture(scope="module")
def keys() -> Keys:
    """The coordinator's ticket-signing key for this module's relay."""
    return Keys()


@pytest.fixture(scope="module")
def relay(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """A relay process trusting `keys`, with a short hello deadline; stopped by PID in teardown."""
    log = tmp_path_factory.mktemp("relay") / "relay.log"
    with relay_process(
        log, "--coordinator-key", keys.public, "--relay-id", "r1", "--hello-timeout", str(HELLO_TIMEOUT)
    ) as r:
        yield r
