"""wgmesh: a WireGuard mesh manager for interconnecting cloud networks."""

import sys
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wgmesh")  # the installed package's own metadata: one version, in pyproject.toml
except PackageNotFoundError:  # run from a copy of the sources that was never installed
    __version__ = "0+unknown"

# httpx imports its own command line (click, rich, pygments: 5 MB of every process's memory, on a gateway
# whose agent should stay small) whenever click is installed, as it is beside uvicorn. No wgmesh program
# runs httpx's command line: a None entry makes that one import fail, and httpx falls back to its stub.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
