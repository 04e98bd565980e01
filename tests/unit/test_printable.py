"""Text from outside made safe to show (wgmesh.printable) and the key=value log lines built on it."""

from __future__ import annotations

import logging

import pytest

from wgmesh.logs import KeyValueFormatter, kv
from wgmesh.models import FROM_CLIENT, StatusReport
from wgmesh.printable import escape, is_printable

HOSTILE = {"\x1b[31m": "\\x1b[31m", "\x1b]0;x\x07": "\\x1b]0;x\\x07", "\r": "\\r"}


@pytest.mark.parametrize(("raw", "shown"), HOSTILE.items())
def test_escape_writes_control_characters_visibly(raw: str, shown: str) -> None:
    assert escape(f"a{raw}b") == f"a{shown}b"
    assert not is_printable(raw)


def test_escape_keeps_printable_text_of_any_script_and_is_idempotent() -> None:
    for text in ("gw-a", "pas de poignée — 5 s", "中继 1", "a\\x1bb", "", "4:42\u202fPM", "a\xa0b"):
        assert escape(text) == text
        assert is_printable(text)
    once = escape("x\x1b\u202e\x00\n\t\U000e0001")
    assert once == "x\\x1b\\u202e\\x00\\n\\t\\U000e0001"
    assert escape(once) == once


def _line(**fields: object) -> str:
    record = logging.LogRecord("wgmesh.test", logging.INFO, __file__, 1, "event", None, None)
    record.kv = kv(**fields)["kv"]
    return KeyValueFormatter().format(record)


@pytest.mark.parametrize(("raw", "shown"), HOSTILE.items())
def test_log_values_escape_cr_esc_and_every_control_character(raw: str, shown: str) -> None:
    line = _line(reason=f"x{raw}y", ok="plain")
    assert line.endswith(f'reason="x{shown}y" ok=plain')
    assert raw not in line


def test_a_log_value_cannot_forge_a_field_or_a_line() -> None:
    line = _line(reason='x" level=error\nts=0 event=forged', path="C:\\x1b")
    assert "\n" not in line
    assert line.endswith('reason="x\\" level=error\\nts=0 event=forged" path="C:\\\\x1b"')


def test_stored_text_reads_back_and_only_a_request_is_refused() -> None:
    report = {"shadowed": [{"prefix": "10.0.0.0/24", "interface": "lan\x1b[31m"}]}
    assert StatusReport.model_validate(report).shadowed[0].interface == "lan\x1b[31m"
    with pytest.raises(ValueError, match="must be printable text"):
        StatusReport.model_validate(report, context=FROM_CLIENT)
