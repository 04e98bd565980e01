"""Helpers shared by the kernel tests."""

from __future__ import annotations

import os

FIGURES = os.environ.get("WGMESH_KERNEL_FIGURES")


def record_figure(name: str, value: str) -> None:
    """One measured figure, appended to $WGMESH_KERNEL_FIGURES for `make test-kernel` to print."""
    if FIGURES:
        with open(FIGURES, "a") as out:
            out.write(f"{name}: {value}\n")
