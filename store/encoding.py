"""Text files as the readers of data and review files need them.

Data files and review files must be UTF-8. The readers (DuckDB, Python's ``csv``) either
fail with a message that does not say where, or (DuckDB's CSV reader) with a line number
of its own sniffing pass; :func:`utf8_problem` scans the bytes and says exactly where.
:func:`replace_bare_cr` lets those readers read a CSV whose cells hold a bare CR.
"""
from __future__ import annotations

import gzip
import re
from pathlib import Path

_CHUNK = 1 << 20
NL = b"\n"


def utf8_problem(path: str | Path, chunk_size: int = _CHUNK) -> str | None:
    """``None`` when ``path`` (``.gz`` decompressed) is valid UTF-8, else one line such as
    ``not UTF-8: byte 0xff at line 3, byte 5 (save the file as UTF-8)``; line and byte
    (within the line) are 1-based."""
    p = Path(path)
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    line, col0, carry = 1, 0, b""  # col0: bytes of the current line seen in earlier chunks
    with opener(p, "rb") as f:
        first = True
        while True:
            chunk = f.read(chunk_size)
            if first and chunk.startswith((b"\xff\xfe", b"\xfe\xff")):
                return "not UTF-8: the file starts with a UTF-16 byte-order mark (save it as UTF-8)"
            first = False
            data, carry = carry + chunk, b""
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                if chunk and exc.reason == "unexpected end of data" and exc.end == len(data):
                    data, carry = data[:exc.start], data[exc.start:]  # a character cut by the chunk end
                else:
                    before = data[:exc.start]
                    nl = before.rfind(NL)
                    col = exc.start - nl if nl >= 0 else col0 + exc.start + 1
                    return (f"not UTF-8: byte 0x{data[exc.start]:02x} at line {line + before.count(NL)}, "
                            f"byte {col} (save the file as UTF-8)")
            nl = data.rfind(NL)
            line += data.count(NL)
            col0 = len(data) - nl - 1 if nl >= 0 else col0 + len(data)
            if not chunk:
                return None


# Characters that stand in for a bare CR while a CSV reader that treats CR as a line break
# reads the file; the first one the file does not hold is used, then turned back into CR.
_CR_STAND_INS = ("\ue000", "\ue001", "\ue002", "\ufdd0", "\ufdd1")
_BARE_CR = re.compile(rb"\r(?!\n)")
_ANY_CR = re.compile(rb"\r")


def replace_bare_cr(data: bytes) -> tuple[bytes, str | None]:
    """``data`` with each CR that belongs to a cell replaced by a stand-in character, and that
    character; ``(data, None)`` when there is no such CR, the data has no LF (its lines end in
    CR), or every stand-in occurs in it.

    pandas writes a cell holding a CR unquoted (``b,\\rx,``, or ``b,x\\r`` at the end of a
    line): in a file whose lines end in LF that CR is part of the cell, but DuckDB's and
    Python's CSV readers end the row there. Where most lines end in LF every CR is such a
    cell's; where most end in CRLF, every CR not followed by LF (the last byte aside)."""
    lf, crlf = data.count(b"\n"), data.count(b"\r\n")
    if not lf:
        return data, None
    body = data[:-1] if data.endswith(b"\r") else data  # a CR at the very end ends the last line
    cr = _ANY_CR if lf - crlf > crlf else _BARE_CR
    if not cr.search(body):
        return data, None
    stand_in = next((s for s in _CR_STAND_INS if s.encode() not in data), None)
    if stand_in is None:
        return data, None
    return cr.sub(stand_in.encode(), body) + data[len(body):], stand_in
