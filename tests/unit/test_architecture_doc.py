"""docs/architecture.md keeps true: every module of the package is in its map, and every path it names exists."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
# `wgmesh/cli/{status,routes}.py` names two modules; a plain path names one.
NAMED = re.compile(r"`(wgmesh/[\w/{},]*\.py)`")


def _expand(pattern: str) -> list[str]:
    parts = re.split(r"\{([^}]*)\}", pattern)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(combo) for combo in itertools.product(*choices)]


def _named() -> set[str]:
    return {path for found in NAMED.findall(DOC.read_text()) for path in _expand(found)}


def _modules() -> set[str]:
    return {
        str(p.relative_to(ROOT))
        for p in (ROOT / "wgmesh").rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    }


def test_every_module_is_in_the_map() -> None:
    missing = sorted(_modules() - _named())
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_every_path_the_map_names_exists() -> None:
    stale = sorted(p for p in _named() if not (ROOT / p).is_file())
    assert not stale, f"docs/architecture.md names modules that do not exist: {stale}"
