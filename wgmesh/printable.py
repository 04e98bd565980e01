"""Pure: text from outside (what nodes report, what an older version stored) made safe to show.

`escape` writes every character that is not printable as a visible escape (`\\x1b`, `\\r`, `\\u202e`), so a
value can neither drive the terminal (colours, titles, cursor moves), nor hide or reorder what is around it
(CR, bidi overrides), nor forge a log line (LF). The API refuses such text where it enters (models.Printable);
this is for what got in before, and for every place text is shown: the CLI, the logs and the dashboard
(web/app.js does the same in `visible`).
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def is_printable(text: str) -> bool:
    """No control, format, separator (other than space) or unassigned characters: what `escape` keeps."""
    return text.isprintable()


def escape(text: str) -> str:
    """`text` with every character that is not printable written as its Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def _escaped(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
