"""Fixtures for the dashboard tests: a real coordinator with an enrolled mesh, and headless Chromium.

The browser is Debian's /usr/bin/chromium driven by Playwright (its own browser download is not used).
Set WGMESH_SCREENSHOTS=DIR (`make screenshots`) to save the screenshots the tests take.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from coordinator_harness import Coordinator
from web_harness import CHROMIUM, Mesh, build_mesh, chromium


@pytest.fixture(scope="module")
def mesh(coordinator: Coordinator, admin: httpx.Client) -> Mesh:
    """Three gateways with subnets, one conflicting route, and status reports giving every path kind."""
    return build_mesh(coordinator, admin)


@pytest.fixture(scope="module")
def browser(coordinator: Coordinator) -> Iterator[Any]:
    """A browser that trusts the module coordinator's key, and no other."""
    with chromium([coordinator.pin], os.environ.get("WGMESH_CHROMIUM", CHROMIUM)) as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) per test, laptop-sized."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(10_000)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield p
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="session")
def screenshots() -> Path | None:
    """Where to save screenshots (WGMESH_SCREENSHOTS), or None."""
    target = os.environ.get("WGMESH_SCREENSHOTS")
    if not target:
        return None
    path = Path(target)
    path.mkdir(parents=True, exist_ok=True)
    return path
