"""The package as a user installs it (issue 22): the sdist and the wheel built from a copy of the checkout,
checked as PyPI would, the wheel installed into a fresh virtual environment (no editable install, no
checkout on the path), and the coordinator started from it serves the dashboard with no extra step.

Offline: the build runs without isolation (the venv holds the build backend), and the fresh environment
takes the wheel's dependencies from this venv's site-packages through a `.pth` line, which puts that
directory on the path without running its own `.pth` files (the editable install's finder among them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from coordinator_harness import free_port
from packaging_harness import ROOT, build_dist, has_checkout, project_version, run

from wgmesh.lab.timescale import scaled
from wgmesh.lab.wait import wait_until

PROGRAMS = ("wgmesh", "wgmesh-coordinator", "wgmesh-agent", "wgmesh-relay")
DASHBOARD = ("index.html", "app.js", "app.css", "favicon.svg")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the fresh environment, the directory holding the sdist and the wheel)."""
    if not has_checkout():
        pytest.skip("needs a git checkout: the build takes the tracked files only")
    tmp = tmp_path_factory.mktemp("packaging")
    dist, venv = build_dist(tmp), tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    python = venv / "bin" / "python"
    (wheel,) = dist.glob("*.whl")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        wheel,
        cwd=tmp,
    )
    site = Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp).strip()
    )
    (site / "_wgmesh_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    yield venv, dist


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WGMESH_WEB_DIR", "WGMESH_DB")}


def test_the_sdist_and_the_wheel_carry_the_dashboard(installed: tuple[Path, Path]) -> None:
    _venv, dist = installed
    version = project_version()
    names = sorted(p.name for p in dist.iterdir())
    assert names == [f"wgmesh-{version}-py3-none-any.whl", f"wgmesh-{version}.tar.gz"]
    listing = run(sys.executable, "-m", "zipfile", "-l", dist / names[0], cwd=dist)
    for name in DASHBOARD:
        assert f"wgmesh/web/{name}" in listing
    with tarfile.open(dist / names[1]) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    # What docs/deploy.md installs from a release besides the wheel: the units; and what a release says.
    wanted = {"LICENSE", "CHANGELOG.md", "README.md", "systemd/wgmesh-agent.service", "systemd/wgmesh-coordinator.service",
              "systemd/wgmesh-relay.service", "systemd/wgmesh-relay-tls.conf"}  # fmt: skip
    wanted |= {f"wgmesh/web/{name}" for name in DASHBOARD}
    assert wanted <= members, sorted(wanted - members)


def test_the_installed_package_is_not_the_checkout(installed: tuple[Path, Path]) -> None:
    venv, _dist = installed
    where = run(
        venv / "bin" / "python", "-c", "import wgmesh; print(wgmesh.__file__)", cwd=venv, env=clean_env()
    )
    assert Path(where.strip()).is_relative_to(venv), where


@pytest.mark.parametrize("program", PROGRAMS)
def test_every_program_says_its_version(installed: tuple[Path, Path], program: str) -> None:
    venv, _dist = installed
    said = run(venv / "bin" / program, "--version", cwd=venv, env=clean_env())
    assert said.strip() == f"{program} {project_version()}"


def test_the_installed_coordinator_serves_the_dashboard(installed: tuple[Path, Path], tmp_path: Path) -> None:
    venv, _dist = installed
    port = free_port()
    log = tmp_path / "coordinator.log"
    env = clean_env() | {"WGMESH_ADMIN_TOKEN": "admin-token-0123456789"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [venv / "bin" / "wgmesh-coordinator", "--db", f"sqlite:///{tmp_path / 'registry.db'}",
             "--listen", f"127.0.0.1:{port}", "--insecure-http", "--metrics-listen", "off"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"the coordinator exited:\n{log.read_text()}")
            try:
                return httpx.get(f"{url}/healthz", timeout=scaled(1.0)).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, 60, "the installed coordinator to answer")
        web = ROOT / "wgmesh" / "web"
        page = httpx.get(f"{url}/", timeout=scaled(5.0))
        assert page.status_code == 200
        assert page.text == (web / "index.html").read_text()
        for asset in ("app.js", "app.css"):
            answer = httpx.get(f"{url}/assets/{asset}", timeout=scaled(5.0))
            assert answer.status_code == 200, asset
            assert answer.content == (web / asset).read_bytes()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
