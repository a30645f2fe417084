"""Reading JSON Lines: DuckDB's reader, with its errors and one of its silent readings
turned into one line that names the file's line.

A key whose values differ in type from line to line (``"split": "test"`` on one line,
``"split": NaN`` on another, as Python's ``json.dumps`` writes a float NaN) is read by
DuckDB as a JSON column: every value keeps its JSON quotes (``"test"`` with the quotes),
so no row matched ``test`` any more and ids and labels changed silently. :func:`read_jsonl`
reads such a column as text: strings as themselves, ``null``, ``NaN`` and ``Infinity`` as
missing (pandas' missing value), other numbers and booleans as their JSON text; a list or
an object where other lines hold one value is refused, naming its line.
"""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from orchestrator.read_errors import one_line as _one_line, reason as _reason
from store.errors import DataError
from store.sql import ident


def _is_array(p: Path) -> bool:
    """Whether the file (gzipped or not) starts, after blanks, with ``[``: one JSON array of
    records (what ``cotrain export`` writes to a ``.json`` file), not JSON Lines."""
    try:
        opener = gzip.open if p.name.lower().endswith(".gz") else open  # as the readers below
        with opener(p, "rb") as f:
            head = f.read(4096)
    except (OSError, EOFError):
        return False  # the reader below names what is wrong with the file
    return head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"["


def read_jsonl(con: duckdb.DuckDBPyConnection, p: Path) -> pa.Table:
    """The JSON Lines file ``p`` (or one JSON array of records) as an Arrow table, its
    mixed-type keys read as text (above)."""
    rel = con.read_json(str(p), format="array" if _is_array(p) else "newline_delimited")
    mixed = [c for c, t in zip(rel.columns, rel.types) if str(t) == "JSON"]
    table = rel.to_arrow_table()
    if not mixed:
        return table
    con.register("__jsonl", table)
    try:
        for c in mixed:
            q = f"CAST({ident(c)} AS JSON)"
            bad = con.execute(f"SELECT n, json_type(v) FROM (SELECT row_number() OVER () AS n, {q} AS v FROM __jsonl)"
                              " WHERE json_type(v) IN ('ARRAY', 'OBJECT') ORDER BY n LIMIT 1").fetchall()
            if bad:
                found = record_line(p, int(bad[0][0]))
                where = f"line {found[0]}" if found else f"record {bad[0][0]}"
                what = "a list" if bad[0][1] == "ARRAY" else "an object"
                raise DataError(f"key {c!r} holds {what} at {where}, where other lines hold one value", str(p))
        cols = [f"CASE json_type({q}) WHEN 'VARCHAR' THEN json_extract_string({q}, '$') WHEN 'NULL' THEN NULL"
                f" WHEN 'DOUBLE' THEN CASE WHEN isfinite(CAST({q} AS DOUBLE)) THEN CAST({ident(c)} AS VARCHAR) END"
                f" ELSE CAST({ident(c)} AS VARCHAR) END AS {ident(c)}" if c in mixed else ident(c)
                for c in table.column_names for q in [f"CAST({ident(c)} AS JSON)"]]
        return con.sql(f"SELECT {', '.join(cols)} FROM __jsonl").to_arrow_table()
    finally:
        con.unregister("__jsonl")


def json_reason(p: Path, exc: Exception) -> str:
    """DuckDB's JSON error with the file's line. DuckDB counts non-blank records, and names the
    record after the bad one for malformed JSON (``at byte 7 in line 3`` for the 2nd record),
    the record itself for one it cannot convert (``in line 2: Object ... has duplicate key``)."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    m = re.search(r"at byte (\d+) in line (\d+): (.*)", first)
    if m:
        byte, record, what = int(m.group(1)), int(m.group(2)) - 1, m.group(3).strip()
        what = what.replace("Try auto-detecting the JSON format", "").strip().rstrip(".")
        found = record_line(p, record)
        if found is None:
            where = f"record {record}"
        else:
            where = f"line {found[0]}" + (f", byte {byte}" if byte <= found[1] else "")
        return _one_line(f"malformed JSON at {where}: {what}")
    m = re.search(r"the keys ('.*') and ('.*') differ only in case", first)
    if m:  # DuckDB matches keys case-insensitively and cannot read both
        return _one_line(f"the keys {m.group(1)} and {m.group(2)} differ only in case, which the reader cannot "
                         "tell apart: rename one of them")
    m = re.search(r"^(?:Invalid Input Error: )?(.*?) in file .*?, in line (\d+): (.*)", first)
    if m:
        found = record_line(p, int(m.group(2)))
        where = f"line {found[0]}" if found else f"record {m.group(2)}"
        return _one_line(f"{m.group(1)} at {where}: {m.group(3).strip()}")
    return _reason(exc)


def json_diagnosis(p: Path) -> str | None:
    """The first line of a JSONL file that Python's parser refuses or that repeats a key."""
    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        dup = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
        if dup is not None:
            raise ValueError(f"duplicate key {dup!r}")
        return dict(pairs)

    opener = gzip.open if p.name.lower().endswith(".gz") else open
    with opener(p, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if raw.strip():
                try:
                    json.loads(raw, object_pairs_hook=no_repeats)
                except (ValueError, RecursionError) as exc:
                    return _one_line(f"line {n}: {exc}")
    return None


def record_line(p: Path, record: int) -> tuple[int, int] | None:
    """(1-based line, its length in bytes) of the ``record``-th non-blank line of the file."""
    if record < 1:
        return None
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    seen = 0
    with opener(p, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if raw.strip():
                seen += 1
                if seen == record:
                    return n, len(raw.rstrip(b"\r\n"))
    return None


__all__ = ["json_diagnosis", "json_reason", "read_jsonl", "record_line"]
