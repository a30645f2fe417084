"""The one place SQL text meets names that come from data or config.

Values always travel as parameters (``?``). Identifiers (a data file's column names, a
table name derived from a run id) cannot be parameters, so every one of them goes through
:func:`ident`, which quotes it the way DuckDB's parser reads a quoted identifier: wrapped
in double quotes, with each embedded double quote doubled. Nothing else ever pastes a
name into SQL, so a CSV header such as ``f_z" FROM ...; COPY ... TO 'x'; --`` stays one
column name and can never become a statement.
"""
from __future__ import annotations

from collections.abc import Iterable


def ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (``a"b`` -> ``"a""b"``).

    Refuses a NUL character, which no identifier may hold."""
    name = str(name)
    if "\x00" in name:
        raise ValueError(f"identifier {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def idents(names: Iterable[str], prefix: str = "") -> str:
    """Comma-separated quoted identifiers, each optionally qualified (``prefix='d.'``)."""
    return ", ".join(prefix + ident(n) for n in names)


def literal(text: str) -> str:
    """``text`` as a SQL string literal, for the rare statement that takes no parameters
    (a ``COPY ... TO`` file name): single quotes doubled, NUL refused."""
    text = str(text)
    if "\x00" in text:
        raise ValueError(f"string {text!r} contains a NUL character")
    return "'" + text.replace("'", "''") + "'"


__all__ = ["ident", "idents", "literal"]
