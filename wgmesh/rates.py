"""Bandwidth rates as tc writes them (`20mbit`, `1.5gbit`): parsed to bits per second and back."""

from __future__ import annotations

import re

from wgmesh.errors import ValidationError

UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
_RATE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(bit|kbit|mbit|gbit)$")
MIN_RATE = 8 * 10**3
MAX_RATE = 100 * 10**9


def parse_rate(text: str, *, minimum: int = MIN_RATE, maximum: int = MAX_RATE) -> int:
    """Bits per second of a rate such as `20mbit`; ValidationError with the accepted form when not one.

    Only bit units: tc reads `mbps` as megabytes per second, a classic factor-8 mistake.
    """
    match = _RATE.fullmatch(text.strip().lower())
    if match is None:
        raise ValidationError(
            f"rate {text!r} must be a number and a unit: bit, kbit, mbit or gbit (e.g. 20mbit)",
            code="invalid_rate",
        )
    bits = round(float(match.group(1)) * UNITS[match.group(2)])
    if not minimum <= bits <= maximum:
        raise ValidationError(
            f"rate {text!r} must be between {format_rate(minimum)} and {format_rate(maximum)}",
            code="invalid_rate",
        )
    return bits


def format_rate(bits: int) -> str:
    """Bits per second in the largest tc unit that keeps it whole (`1500kbit`, `20mbit`)."""
    for unit in ("gbit", "mbit", "kbit"):
        if bits % UNITS[unit] == 0:
            return f"{bits // UNITS[unit]}{unit}"
    return f"{bits}bit"


def normalize_rate(text: str) -> str:
    """The canonical spelling of a rate (`1.5mbit` → `1500kbit`)."""
    return format_rate(parse_rate(text))
