"""Loaded for every test: makes the helper modules in tests/ (coordinator_harness) importable from
each test directory, so the API and CLI tests share one harness."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
