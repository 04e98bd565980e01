"""The `pair` fixture: two namespaces on a veth link, always torn down (see netns_harness.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_harness import Pair, skip_reason, veth_pair


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    """Namespaces `PREFIXa`/`PREFIXb` with veths 198.18.1.1/24 and 198.18.1.2/24, workers not started."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with veth_pair(f"wgt{secrets.token_hex(2)}", tmp_path, ("10.1.0.0/24", "10.2.0.0/24")) as made:
        yield made
