"""Reading items: CSV, JSONL or Parquet into the run's data snapshot and ``items`` table.

Every problem is a ``DataError`` naming the file and, where it is about one item, the
1-based data row and the item's id.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.config import Config, DataConfig
from store.database import Store
from store.errors import DataError
from store.sql import ident

SPLIT_COL = "__split"
FILE_ROW_COL = "__file_row"


def detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    suffixes = "".join(path.suffixes).lower()
    for fmt, ends in (("parquet", (".parquet", ".pq")), ("jsonl", (".jsonl", ".ndjson", ".json")),
                      ("csv", (".csv", ".tsv", ".csv.gz", ".txt"))):
        if suffixes.endswith(ends) or path.suffix.lower() in ends:
            return fmt
    raise DataError("cannot tell the format from the file name; set data.format to csv, jsonl or parquet",
                    str(path))


UNLABELLED_FOLDERS = ("unlabelled", "unlabeled")


def read_image_folder(root: Path, label_column: str = "label") -> pa.Table:
    """``root/<label>/<file>`` as rows (image, label); files under ``unlabelled/`` get no label.

    ``image`` is the path relative to ``root``'s parent (``train/cat/001.png``), so a train and
    a test folder side by side never give two items the same path.
    """
    from views.vision.images import IMAGE_SUFFIXES

    images: list[str] = []
    labels: list[str | None] = []
    for f in sorted(root.rglob("*")):
        if not f.is_file() or f.name.startswith("."):
            continue
        rel = f.relative_to(root)
        if len(rel.parts) < 2:
            raise DataError(f"'{rel}' lies directly in the image folder: put each image in a folder named "
                            f"after its label, or in {UNLABELLED_FOLDERS[0]}/", str(root))
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        images.append(str(f.relative_to(root.parent)))
        labels.append(None if rel.parts[0].lower() in UNLABELLED_FOLDERS else rel.parts[0])
    if not images:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in label folders", str(root))
    return pa.table({"image": pa.array(images, pa.string()), label_column: pa.array(labels, pa.string())})


def read_table(path: str | Path, declared_format: str = "auto", label_column: str = "label") -> pa.Table:
    """Read a whole file into Arrow with DuckDB's readers (type sniffing, quoting, gzip), or an
    image folder into (image, label) rows."""
    p = Path(path)
    if p.is_dir() and declared_format in ("auto", "images"):
        return read_image_folder(p, label_column)
    if declared_format == "images":
        raise DataError("data.format 'images' needs a folder of label folders", str(p))
    if not p.is_file():
        raise DataError("file not found", str(p))
    if p.stat().st_size == 0:
        raise DataError("file is empty", str(p))
    fmt = detect_format(p, declared_format)
    con = duckdb.connect(":memory:")
    try:
        if fmt == "csv":
            rel = con.read_csv(str(p))
        elif fmt == "jsonl":
            rel = con.read_json(str(p), format="newline_delimited")
        else:
            rel = con.read_parquet(str(p))
        table = rel.to_arrow_table()
    except duckdb.Error as exc:
        raise DataError(f"cannot read as {fmt}: {str(exc).splitlines()[0]}", str(p)) from None
    finally:
        con.close()
    if table.num_rows == 0:
        raise DataError("file has no data rows", str(p))
    return table


def _first(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple | None:
    """First row of a query, fully fetched (duckdb 2.x keeps a half-read result open)."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


@dataclass(frozen=True)
class LoadedData:
    n_train: int
    n_gold: int
    n_unlabelled: int
    n_test: int
    columns: list[str]


def _with_meta(table: pa.Table, split: str | pa.Array) -> pa.Table:
    n = table.num_rows
    split_arr = pa.array([split] * n, pa.string()) if isinstance(split, str) else split
    table = table.append_column(SPLIT_COL, split_arr)
    return table.append_column(FILE_ROW_COL, pa.array(range(1, n + 1), pa.int64()))


def _split_column(table: pa.Table, d: DataConfig, path: str) -> pa.Table:
    if d.split_column is None:
        return _with_meta(table, "train")
    if d.split_column not in table.column_names:
        raise DataError(f"split column '{d.split_column}' (data.split_column) is missing", path)
    is_test = pc.fill_null(pc.equal(table.column(d.split_column).cast(pa.string()), d.test_value), False)
    return _with_meta(table, pc.if_else(is_test, "test", "train").combine_chunks())


def load_into_store(store: Store, run_id: int, cfg: Config) -> LoadedData:
    """Snapshot the configured files into ``data_<run_id>`` and fill ``items``.

    Call inside the run-creation transaction: on error nothing is kept.
    """
    d = cfg.data
    labels = cfg.task.names
    train = _split_column(read_table(d.train, d.format, d.label_column), d, d.train)
    parts = [train]
    paths = {"train": d.train, "test": d.test or d.train}
    if d.test:
        test = read_table(d.test, d.format, d.label_column)
        if d.split_column and d.split_column in test.column_names:
            test = test.drop_columns([d.split_column])
        parts.append(_with_meta(test, "test"))
    for part, name in zip(parts, ("train", "test")):
        if d.label_column not in part.column_names:
            raise DataError(f"label column '{d.label_column}' (data.label_column) is missing", paths[name])
        if d.id_column and d.id_column not in part.column_names:
            raise DataError(f"id column '{d.id_column}' (data.id_column) is missing", paths[name])
    try:
        table = pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"test file's columns do not match the train file's: {exc}", d.test) from None
    data_table = store.snapshot_data(run_id, table)
    con = store.con
    label_ref = f"d.{ident(d.label_column)}"
    ltype = table.schema.field(d.label_column).type
    if pa.types.is_floating(ltype):
        vals = table.column(d.label_column).drop_null().to_numpy()
        if (vals == vals.round()).all():  # integer labels a writer turned into floats (0 -> 0.0)
            label_ref = f"CAST({label_ref} AS BIGINT)"
    label = f"NULLIF(trim(CAST({label_ref} AS VARCHAR)), '')"
    meta = {SPLIT_COL, FILE_ROW_COL, d.label_column}
    if d.split_column:
        meta.add(d.split_column)
    id_column = d.id_column or ("image" if Path(d.train).is_dir() else None)  # an image folder: its paths
    if id_column:
        id_expr = f"CAST(d.{ident(id_column)} AS VARCHAR)"
    else:
        content = [c for c in table.column_names if c not in meta]
        packed = ", ".join(f"{ident(c)} := d.{ident(c)}" for c in content)
        id_expr = f"substr(md5(CAST(to_json(struct_pack({packed})) AS VARCHAR)), 1, 16)"
    con.execute(
        f"""
        CREATE TEMP TABLE __ids AS
        SELECT d.__row, d.{SPLIT_COL} AS split, d.{FILE_ROW_COL} AS file_row, {id_expr} AS base_id,
               {label} AS gold_label,
               row_number() OVER (PARTITION BY {id_expr} ORDER BY d.__row) AS dup
        FROM {ident(data_table)} d
        """
    )
    try:
        if id_column:
            bad = _first(con, "SELECT split, file_row FROM __ids WHERE base_id IS NULL ORDER BY __row LIMIT 1")
            if bad:
                raise DataError(f"id column '{id_column}' is empty", paths[bad[0]], row=bad[1])
            bad = _first(con, "SELECT split, file_row, base_id FROM __ids WHERE dup > 1 ORDER BY __row LIMIT 1")
            if bad:
                raise DataError("duplicate id", paths[bad[0]], row=bad[1], item=bad[2])
            id_sql = "base_id"
        else:
            # identical content: keep each copy, numbered in file order
            id_sql = "CASE WHEN dup = 1 THEN base_id ELSE base_id || '-' || dup END"
        bad = _first(con, "SELECT split, file_row, base_id, gold_label FROM __ids WHERE gold_label IS NOT NULL"
                     " AND NOT list_contains(?, gold_label) ORDER BY __row LIMIT 1", [labels])
        if bad:
            raise DataError(f"label '{bad[3]}' is not one of the task's labels {labels}",
                            paths[bad[0]], row=bad[1], item=bad[2])
        bad = _first(con, "SELECT split, file_row, base_id FROM __ids WHERE split = 'test' AND gold_label IS NULL"
                     " ORDER BY __row LIMIT 1")
        if bad:
            raise DataError("held-out test item has no gold label", paths[bad[0]], row=bad[1], item=bad[2])
        con.execute(
            f"INSERT INTO items SELECT ?, {id_sql}, __row, split, gold_label FROM __ids ORDER BY __row", [run_id])
    finally:
        con.execute("DROP TABLE IF EXISTS __ids")
    counts = con.execute(
        "SELECT count(*) FILTER (split = 'train'), count(*) FILTER (split = 'train' AND gold_label IS NOT NULL),"
        " count(*) FILTER (split = 'test') FROM items WHERE run_id = ?", [run_id]).fetchall()[0]
    n_train, n_gold, n_test = (int(x) for x in counts)
    if n_train == 0:
        raise DataError("no training rows (every row is in the test split)", d.train)
    columns = [c for c in store.data_columns(run_id) if c not in (SPLIT_COL, FILE_ROW_COL)]
    return LoadedData(n_train, n_gold, n_train - n_gold, n_test, columns)
