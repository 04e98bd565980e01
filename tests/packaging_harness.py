"""The sdist and the wheel built as a user's `make dist` builds them, from the tracked files only
(tests/packaging and tests/systemd install what this builds)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def project_version() -> str:
    """The package's version, as pyproject.toml says it."""
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command; its standard output, or an assertion error with everything it printed."""
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
    )
    return done.stdout


def has_checkout() -> bool:
    """Whether the tests run from a git checkout (the build takes its tracked files)."""
    return shutil.which("git") is not None and (ROOT / ".git").exists()


def build_dist(work: Path) -> Path:
    """Copy the tracked files to `work`/source, build the sdist and then the wheel from the sdist (a file
    missing from the sdist fails here) into `work`/dist, check both with twine; returns that directory."""
    source, dist = work / "source", work / "dist"
    for name in filter(None, run("git", "ls-files", "-z", cwd=ROOT).split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    # Without isolation: the venv holds the build backend, so nothing is downloaded.
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, source, cwd=work)
    run(Path(sys.executable).with_name("twine"), "check", "--strict", *sorted(dist.iterdir()), cwd=work)
    return dist
