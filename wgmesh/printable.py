"""Pure: text from outside (what nodes report, what an older version stored) made safe to show.

`escape` writes every character that is not printable as a visible escape (`\\x1b`, `\\r`, `\\u202e`), so a
value can neither drive the terminal (colours, titles, cursor moves), nor hide or reorder what is around it
(CR, bidi overrides), nor forge a log line (LF). The API refuses such text where it enters (models.Printable);
this is for what got in before, and for every place text is shown: the CLI, the logs and the dashboard
(wgmesh/web/app.js does the same in `visible`).
"""

from __future__ import annotations

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""Unicode categories that are not printable text: controls (ESC, CR, LF, BEL), format characters (bidi
overrides, zero-width ones), surrogates, private-use and unassigned code points, line and paragraph
separators. Spaces of every width (Zs) are text: a clock's narrow no-break space must not be escaped."""


def is_printable(text: str) -> bool:
    """No character of a HIDDEN category: what `escape` leaves as it is."""
    return text.isprintable() or not any(_hidden(c) for c in text)


def escape(text: str) -> str:
    """`text` with every character of a HIDDEN category written as its Python escape."""
    if text.isprintable():  # the common case, in C: str.isprintable refuses a superset of HIDDEN
        return text
    return "".join(_escaped(c) if _hidden(c) else c for c in text)


def _hidden(char: str) -> bool:
    return unicodedata.category(char) in HIDDEN


def _escaped(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
