"""Loading a run's items: the data snapshot (``data_<run>``) and the ``items`` table, with
each item's id, split and gold label, checked in SQL so a bad row is named by file and line.

The orchestrator reads the files (``orchestrator.data``) and hands the Arrow table here with
what it knows of the columns; nothing here reads a config.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.database import Store
from store.errors import DataError
from store.sql import ident, literal

#: Columns the loader adds to the snapshot: the item's split and its 1-based row in its file.
SPLIT_COL = "__split"
FILE_ROW_COL = "__file_row"


def _first(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple | None:
    """First row of a query, fully fetched (duckdb 2.x keeps a half-read result open)."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


@dataclass(frozen=True)
class ItemCounts:
    n_train: int
    n_gold: int
    n_test: int


#: What a label cell is trimmed of: spaces, and the tabs and line ends a hand-edited file
#: leaves (``' b\t'`` was refused as the unknown label ``'b\t'``).
LABEL_TRIM = " \t\r\n"
#: An integer as a writer of floats spells it.
_INTEGER_AS_FLOAT = re.compile(r"([-+]?[0-9]{1,18})\.0*")


def label_spellings(column: pa.ChunkedArray, labels: Sequence[str]) -> dict[str, str]:
    """Text labels of ``column`` that are no task label but spell one another way
    (:func:`label_spelling`), by their trimmed spelling. Exact spellings always win: with
    labels ``1.0`` and ``2.0`` the file's ``1.0`` stays ``1.0``."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return {}
    known, out = set(labels), {}
    for text in pc.unique(pc.utf8_trim(column, characters=LABEL_TRIM)).drop_null().to_pylist():  # as the SQL
        if (label := label_spelling(text, known)) is not None:
            out[text] = label
    return out


def label_spelling(text: str, labels: Collection[str]) -> str | None:
    """The task label that ``text``, no task label itself, spells another way; None otherwise:
    an integer written as a float (``'1.0'`` -> ``'1'``, as pandas writes an integer column
    with gaps; only ``'1.0'`` or ``'-3.00'``, never ``'1_0'``, ``'1e1'`` or other digits), or
    the same characters in another Unicode form (``café`` with a combining accent, as macOS
    file and folder names write it, for the task's precomposed ``café``: the two print alike,
    and the error that one was no task label showed them side by side, identical)."""
    if text in labels:
        return None
    m = _INTEGER_AS_FLOAT.fullmatch(text)
    if m and str(int(m.group(1))) in labels:
        return str(int(m.group(1)))
    if not text.isascii():
        nfc = unicodedata.normalize("NFC", text)
        same = [lab for lab in labels if unicodedata.normalize("NFC", lab) == nfc]
        if len(same) == 1:
            return same[0]
    return None


@dataclass(frozen=True)
class Snapshot:
    """A run's data snapshot once written: its table, and what the item checks read of the
    Arrow table it came from (its columns and label column), so that table can go."""

    table: str
    columns: list[str]
    label: pa.ChunkedArray


def snapshot(store: Store, run_id: int, table: pa.Table, label_column: str) -> Snapshot:
    """Write ``table`` (with ``__split`` and ``__file_row``) as ``data_<run_id>``."""
    return Snapshot(store.snapshot_data(run_id, table), list(table.column_names), table.column(label_column))


def load_items(store: Store, run_id: int, snap: Snapshot, *, labels: Sequence[str], label_column: str,
               id_column: str | None, split_column: str | None, paths: Mapping[str, str]) -> ItemCounts:
    """Fill ``items`` from the snapshot. ``id_column`` None: an item's id is a hash of its
    content (copies numbered in file order). ``paths`` names the file of each split, for
    errors. Call inside the run-creation transaction: on error nothing is kept."""
    d_label, d_split = label_column, split_column
    data_table, con = snap.table, store.con
    label_ref = f"d.{ident(d_label)}"
    ltype = snap.label.type
    if pa.types.is_floating(ltype):
        vals = snap.label.drop_null().to_numpy()
        vals = vals[np.isfinite(vals) & (np.abs(vals) < 2.0**62)]
        if (vals == vals.round()).all():  # integer labels a writer turned into floats (0 -> 0.0);
            # NaN is no label, and inf or 1e300 is named as it reads
            x = label_ref
            label_ref = (f"CASE WHEN isnan({x}) THEN NULL WHEN isfinite({x}) AND abs({x}) < 4.6e18 "
                         f"THEN CAST(CAST({x} AS BIGINT) AS VARCHAR) ELSE CAST({x} AS VARCHAR) END")
    label = f"NULLIF(trim(CAST({label_ref} AS VARCHAR), {literal(LABEL_TRIM)}), '')"
    remap = label_spellings(snap.label, labels)
    if remap:  # a label read as the task's spelling ('1.0' -> '1'); parameters need a table, not a view
        label = f"CASE {label} {' '.join(['WHEN ? THEN ?'] * len(remap))} ELSE {label} END"
    meta = {SPLIT_COL, FILE_ROW_COL, d_label}
    if d_split:
        meta.add(d_split)
    if id_column:
        id_expr = f"CAST(d.{ident(id_column)} AS VARCHAR)"
    else:
        content = [c for c in snap.columns if c not in meta]
        packed = ", ".join(f"{ident(c)} := d.{ident(c)}" for c in content)
        id_expr = f"substr(md5(CAST(to_json(struct_pack({packed})) AS VARCHAR)), 1, 16)"
    # a given id column is checked for duplicates with a hash aggregate (the row numbering
    # below sorts every id: only content hashes need it, to number identical copies)
    dup = "1" if id_column else f"row_number() OVER (PARTITION BY {id_expr} ORDER BY d.__row)"
    # A given id column needs no materialised copy: the checks below each scan the columns
    # they read, and the insert is one pass (at 3M rows the copy and its checks took 1.6 s). Content
    # hashes are computed once, into a table, since every check would hash again.
    kind = "VIEW" if id_column and not remap else "TABLE"
    con.execute(
        f"""
        CREATE TEMP {kind} __ids AS
        SELECT d.__row, d.{SPLIT_COL} AS split, d.{FILE_ROW_COL} AS file_row, {id_expr} AS base_id,
               {label} AS gold_label, {dup} AS dup
        FROM {ident(data_table)} d
        """, [x for pair in remap.items() for x in pair] or None
    )
    try:
        if id_column:
            bad = _first(con, "SELECT split, file_row FROM __ids WHERE base_id IS NULL ORDER BY __row LIMIT 1")
            if bad:
                raise DataError(f"id column {id_column!r} is empty", paths[bad[0]], row=bad[1])
            if _first(con, "SELECT base_id FROM __ids GROUP BY base_id HAVING count(*) > 1 LIMIT 1"):
                bad = _first(con, "SELECT split, file_row, base_id FROM (SELECT *, row_number() OVER "
                             "(PARTITION BY base_id ORDER BY __row) AS n FROM __ids) WHERE n > 1 ORDER BY __row LIMIT 1")
                raise DataError("duplicate id", paths[bad[0]], row=bad[1], item=bad[2])
            id_sql = "base_id"
        else:
            # identical content: keep each copy, numbered in file order
            id_sql = "CASE WHEN dup = 1 THEN base_id ELSE base_id || '-' || dup END"
        bad = _first(con, "SELECT split, file_row, base_id, gold_label FROM __ids WHERE gold_label IS NOT NULL"
                     " AND NOT list_contains(?, gold_label) ORDER BY __row LIMIT 1", [labels])
        if bad:
            raise DataError(f"label {bad[3]!r} is not one of the task's labels {labels}",
                            paths[bad[0]], row=bad[1], item=bad[2])
        bad = _first(con, "SELECT split, file_row, base_id FROM __ids WHERE split = 'test' AND gold_label IS NULL"
                     " ORDER BY __row LIMIT 1")
        if bad:
            raise DataError("held-out test item has no gold label", paths[bad[0]], row=bad[1], item=bad[2])
        # with a given id column, __ids is a plain scan of the snapshot in row order (DuckDB keeps
        # insertion order), so items land in row order without sorting again; content ids went
        # through a window, which does not keep order
        order = "" if kind == "VIEW" else " ORDER BY __row"
        con.execute(f"INSERT INTO items SELECT ?, {id_sql}, __row, split, gold_label FROM __ids{order}", [run_id])
    finally:
        con.execute(f"DROP {kind} IF EXISTS __ids")
    counts = con.execute(
        "SELECT count(*) FILTER (split = 'train'), count(*) FILTER (split = 'train' AND gold_label IS NOT NULL),"
        " count(*) FILTER (split = 'test') FROM items WHERE run_id = ?", [run_id]).fetchall()[0]
    return ItemCounts(*(int(x) for x in counts))
