"""Structured logging: every line is `key=value` pairs, and secrets are never passed in."""

from __future__ import annotations

import logging
import sys
from typing import Any

from wgmesh import printable


def _quote(value: Any) -> str:
    # Every character that is not printable is escaped, not only LF: a CR or an ESC in a value (a node's
    # report, a client's header) would otherwise hide or forge lines on the terminal that shows the log.
    text = str(value)
    if not text or not printable.is_printable(text) or any(c in text for c in ' "=\\'):
        return '"' + printable.escape(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
    return text


class KeyValueFormatter(logging.Formatter):
    """`ts=… level=… logger=… event=… k=v …` from `log.info(event, extra={"kv": {...}})`."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields.update(getattr(record, "kv", {}))
        line = " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        if record.exc_info:
            line += " exc=" + _quote(self.formatException(record.exc_info))
        return line


LEVELS = ("debug", "info", "warning", "error")
"""The levels every wgmesh program's `--log-level` takes."""


def setup(level: str = "info") -> None:
    """Send wgmesh's logs to stderr as key=value lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The HTTP client logs every request at INFO; that is noise next to our own events.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def kv(**fields: Any) -> dict[str, dict[str, Any]]:
    """The `extra` argument carrying key=value fields."""
    return {"kv": fields}
