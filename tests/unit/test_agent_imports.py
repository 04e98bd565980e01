"""A gateway runs `wgmesh-agent` for months: what it imports, it holds. Not the coordinator's database layer,
nor httpx's command line (click, rich and pygments: 5 MB), which httpx imports whenever click is installed
(uvicorn needs it in the same environment); wgmesh/__init__.py keeps that import out."""

from __future__ import annotations

import json
import subprocess
import sys

from wgmesh.lab.timescale import scaled

UNWANTED = ("click", "rich", "pygments", "sqlalchemy", "psycopg", "uvicorn", "starlette")
PROBE = (
    "import json, sys; import wgmesh.agent.main, httpx; "
    f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {UNWANTED!r} "
    "or m.startswith('wgmesh.coordinator'))))"
)


def test_the_agent_imports_neither_the_coordinator_nor_httpx_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=scaled(30)
    )
    assert json.loads(done.stdout) == []


def test_httpx_still_works_without_its_command_line() -> None:
    probe = "import wgmesh, httpx; print(httpx.Client().headers['user-agent'].split('/')[0])"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=scaled(30)
    )
    assert done.stdout.strip() == "python-httpx"
