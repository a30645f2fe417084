"""Reading a CSV file into Arrow with DuckDB's reader, and what its sniffer gets wrong.

The sniffer types columns from a sample and renames what it cannot tell apart; each helper
here catches one way that would change data without a word (a fraction past the sample, a
header naming a column twice or in two cases, a bare CR inside a cell) or names the line
where the file stops being a table.
"""
from __future__ import annotations

import csv
import gzip
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.read_errors import reason as _reason
from store.connect import connect
from store.encoding import replace_bare_cr, utf8_problem
from store.errors import DataError


def read_csv(p: Path, text: Sequence[str] = ()) -> pa.Table:
    """DuckDB's CSV reader, retried when its sniffer is too narrow: every row sampled for the
    types, long lines allowed, and (for a file whose lines end in LF) a bare CR inside a cell
    read as part of the cell, as pandas writes it (unquoted ``\\rx``), not as a line break.
    The ``text`` columns the file has are read as text."""
    attempts = ({}, {"sample_size": -1, "max_line_size": 1 << 30})
    exc: Exception | None = None
    for opts in attempts:
        try:
            table = _retyped(p, _duckdb_csv(p, **opts), text, opts)
        except duckdb.Error as e:
            exc = e
            continue
        return _checked(table, p, p, opts, None)
    problem = utf8_problem(p)
    if problem:
        raise DataError(f"cannot read as csv: {problem}", str(p)) from None
    shown, actual = str(p), None
    with tempfile.TemporaryDirectory(prefix="cotrain-csv-") as tmp:
        copy = _bare_cr_copy(p, Path(tmp) / "data.csv")
        if copy is not None:
            path, stand_in = copy
            actual = str(path)
            try:
                read = _retyped(path, _duckdb_csv(path, **attempts[-1]), text, attempts[-1])
                return _restore_cr(_checked(read, path, p, attempts[-1], stand_in), stand_in)
            except duckdb.Error as e:
                exc = e
        assert exc is not None
        bad = _first_bad_csv_line(p)
        reason = _reason(exc, shown=shown, actual=actual)
    raise DataError(f"cannot read as csv: {bad + '; ' if bad else ''}{reason}", str(p)) from None


def _checked(table: pa.Table, read: Path, p: Path, opts: dict, stand_in: str | None) -> pa.Table:
    """``table``, read from ``read`` (``p`` itself, or its copy with each bare CR replaced by
    ``stand_in``), unless the file is one the reader misread without a word: rows with more
    fields than the header (read as one cell a line), a column named twice, or a NUL in the
    header. The checks read what the reader read (Python's csv module refuses a bare CR), and
    a message names a stood-in CR as ``\\r``."""
    def shown(message: str) -> str:  # the stand-in as a character, and as repr() escapes it
        if not stand_in:
            return message
        return message.replace(stand_in, "\\r").replace(repr(stand_in)[1:-1], "\\r")

    if table.num_columns == 1 and any(d in table.column_names[0] for d in ",;\t|"):
        bad = _first_bad_csv_line(read)
        if bad:
            raise DataError(shown(f"cannot read as csv: {bad}"), str(p))
    dup = _duplicate_header(read, table.column_names, opts) or _nul_in_header(p)
    if dup:
        raise DataError(shown(dup), str(p))
    return table


def _retyped(p: Path, table: pa.Table, text: Sequence[str], opts: dict) -> pa.Table:
    """``table`` with what the sniffer got wrong read again, in one more read and only when
    there is something to check: the ``text`` columns it typed otherwise as VARCHAR; each
    column it typed as an integer from its sample as DOUBLE when a later row holds a
    fraction (DuckDB's cast to an integer rounds: '1.5' read as 2, without a word; a sample
    of every row, ``sample_size=-1``, sees them all); and each column it typed BOOLEAN as
    text when its cells are not all true or false: it also reads yes/no, T/F, Y/N and 1/0 as
    booleans, and an export then wrote 'true' where the file said 'yes' (a probe's finding)."""
    typed = [c for c in dict.fromkeys(text) if c in table.column_names
             and not pa.types.is_string(table.schema.field(c).type)]
    flags = [c for c in table.column_names if c not in typed and pa.types.is_boolean(table.schema.field(c).type)]
    ints = [] if opts.get("sample_size") == -1 else [
        c for c in table.column_names if c not in typed and (pa.types.is_integer(table.schema.field(c).type)
                                                             or pa.types.is_decimal(table.schema.field(c).type))]
    if not typed and not ints and not flags:
        return table
    again = _duckdb_csv(p, **opts, dtype={**{c: "VARCHAR" for c in typed + flags}, **{c: "DOUBLE" for c in ints}})
    for c in (typed + [c for c in ints if pc.any(pc.not_equal(again.column(c), pc.floor(again.column(c)))).as_py()]
              + [c for c in flags if not _spelled_as_booleans(again.column(c))]):
        table = table.set_column(table.column_names.index(c), c, again.column(c))
    return table


#: BOOLEAN spellings a column may hold and still be read as booleans (any case; blank is missing).
BOOLEAN_WORDS = ("true", "false")


def _spelled_as_booleans(cells: pa.ChunkedArray) -> bool:
    """Whether every cell (blank: missing) reads true or false, in any case."""
    words = pc.utf8_lower(pc.utf8_trim_whitespace(cells.drop_null()))
    return pc.all(pc.is_in(words, value_set=pa.array(BOOLEAN_WORDS))).as_py() in (True, None)


def _duplicate_header(p: Path, names: list[str], opts: dict) -> str | None:
    """Why the header is refused, when it names a column twice: DuckDB renames the second
    ``a_0`` to ``a_0_1`` without a word, and a view reading ``a_`` columns then reads both."""
    lowered = {n.lower() for n in names}
    suspects = [(m.group(1), n) for n in names if (m := re.fullmatch(r"(.+)_\d+", n)) and m.group(1).lower() in lowered]
    if not suspects:
        return None
    con = connect()
    try:
        first = con.read_csv(str(p), header=False, **opts).limit(1)  # type: ignore[arg-type]
        raw = [str(x) for x in first.fetchall()[0]]
    except (duckdb.Error, IndexError, UnicodeDecodeError):
        return None
    finally:
        con.close()
    base, renamed = next(((b, n) for b, n in suspects if raw.count(b) > 1), (None, None))
    if base is not None:
        return (f"column {base!r} appears more than once in the header (the reader would call the next one "
                f"{renamed!r}); rename or drop the copies")
    return case_clash(raw)


def _nul_in_header(p: Path) -> str | None:
    """Why a header holding a NUL character is refused: the reader cut the name there
    (``f_<NUL>1`` read as ``f_``) without a word."""
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    try:
        with opener(p, "rb") as f:
            head = f.readline(1 << 20)
    except (OSError, EOFError):
        return None
    if b"\x00" not in head:
        return None
    delim = max((b",", b";", b"\t", b"|"), key=head.count)
    col = head[:head.index(b"\x00")].count(delim) + 1
    return f"the header holds a NUL character (in column {col}), which the reader would cut the name at; remove it"


def case_clash(names: Sequence[str]) -> str | None:
    """Why a header is refused whose names differ only in case: DuckDB's readers match names
    case-insensitively and silently renamed the later one (``F`` beside ``f`` read as ``F_1``)."""
    first: dict[str, str] = {}
    for n in names:
        if n.lower() in first and first[n.lower()] != n:
            return (f"the columns {first[n.lower()]!r} and {n!r} differ only in case, which the reader cannot tell "
                    "apart; rename one of them")
        first.setdefault(n.lower(), n)
    return None


#: The types DuckDB's sniffer may give a column (HUGEINT keeps a 20-digit integer exact): not
#: TIME, DATE or TIMESTAMP, which turned '1:00' into 01:00:00 and a column of '-inf' into a DATE
#: of -infinity that exports then wrote unescaped (a probe's finding); a date stays its text.
TYPE_CANDIDATES = ("BOOLEAN", "BIGINT", "HUGEINT", "DOUBLE", "VARCHAR")


def _duckdb_csv(p: Path, **opts: object) -> pa.Table:
    con = connect()
    try:
        return con.read_csv(str(p), auto_type_candidates=list(TYPE_CANDIDATES),  # type: ignore[arg-type]
                            **opts).to_arrow_table()
    except UnicodeDecodeError:  # DuckDB cut its message inside a character: read as a failure
        raise duckdb.InvalidInputException("the CSV reader failed and its message could not be decoded") from None
    finally:
        con.close()


def _bare_cr_copy(p: Path, out: Path) -> tuple[Path, str] | None:
    """``p`` (decompressed) written to ``out`` with each bare CR replaced by a stand-in
    character (:func:`store.encoding.replace_bare_cr`) and that character, or ``None``."""
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    with opener(p, "rb") as f:
        data, stand_in = replace_bare_cr(f.read())
    if stand_in is None:
        return None
    out.write_bytes(data)
    return out, stand_in


def _restore_cr(table: pa.Table, stand_in: str) -> pa.Table:
    cols = []
    for col in table.columns:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = pc.replace_substring(col, stand_in, "\r")
        cols.append(col)
    return pa.table(cols, names=[n.replace(stand_in, "\r") for n in table.column_names])


def _first_bad_csv_line(p: Path) -> str | None:
    """Where a CSV stops having the header's number of fields, or a CR breaks a cell: ``line
    N has K fields, the header has H`` (lines counted by LF), or ``None``."""
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # a long cell is no error
    try:
        with opener(p, "rt", encoding="utf-8-sig", newline="") as f:
            delim = max(",;\t|", key=f.readline().count)
            f.seek(0)
            reader = csv.reader(iter(lambda: _lf_line(f), ""), delimiter=delim)
            width: int | None = None
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return None
                except csv.Error as exc:
                    return f"line {reader.line_num}: {exc}".replace(
                        " - do you need to open the file with newline=''?", " (a bare CR inside a cell?)")
                if width is None:
                    width = len(row)
                elif row and len(row) != width:
                    return f"line {reader.line_num} has {len(row)} fields, the header has {width}"
    except (OSError, UnicodeDecodeError, EOFError):
        return None


def _lf_line(f) -> str:  # noqa: ANN001
    """The next line of a text file opened with ``newline=''``, split at LF only."""
    parts = []
    while True:
        part = f.readline()
        parts.append(part)
        if not part or part.endswith("\n"):
            return "".join(parts)


__all__ = ["case_clash", "read_csv"]
