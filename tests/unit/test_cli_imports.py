"""Every `wgmesh` command starts a Python interpreter: the CLI imports what its commands need, not the
coordinator's database layer (SQLAlchemy and the coordinator's modules, about 0.3 s of each start-up, and
psycopg, which only a PostgreSQL lab uses)."""

from __future__ import annotations

import json
import subprocess
import sys

from wgmesh.lab.timescale import scaled

PROBE = (
    "import json, sys; import wgmesh.cli.main; "
    "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy' "
    "or m.split('.')[0] == 'psycopg' or m.startswith('wgmesh.coordinator'))))"
)


def test_the_cli_does_not_import_the_coordinator_sqlalchemy_or_psycopg() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=scaled(30)
    )
    assert json.loads(done.stdout) == []
