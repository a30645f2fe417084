"""Reading items: CSV, JSONL or Parquet into the run's data snapshot and ``items`` table.

Every problem is a ``DataError`` naming the file and, where it is about one item, the
1-based data row and the item's id.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from orchestrator.config import Config, DataConfig
from orchestrator.csv_reader import case_clash as _case_clash, read_csv as _read_csv
from orchestrator.jsonl import json_diagnosis, json_reason, read_jsonl
from orchestrator.read_errors import one_line as _one_line, reason as _reason
from store.connect import connect
from store.database import Store
from store.encoding import utf8_problem
from store.errors import DataError, shown
from store.items import FILE_ROW_COL, SPLIT_COL, load_items, snapshot

log = logging.getLogger("cotrain")



def detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    suffixes = "".join(path.suffixes).lower()
    for fmt, ends in (("parquet", (".parquet", ".pq")),
                      ("jsonl", (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")),
                      ("csv", (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".txt"))):
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


def read_table(path: str | Path, declared_format: str = "auto", label_column: str = "label",
               text_columns: Sequence[str] = ()) -> pa.Table:
    """Read a whole file into Arrow with DuckDB's readers (type sniffing, quoting, gzip), or an
    image folder into (image, label) rows. ``text_columns`` (id, label) are read from a CSV
    as the file spells them: sniffed, ``0.50`` became 0.5 and ``1/1/2024`` a date."""
    p = Path(path)
    if p.is_dir() and declared_format in ("auto", "images"):
        return read_image_folder(p, label_column)
    if declared_format == "images":
        raise DataError("data.format 'images' needs a folder of label folders", str(p))
    if not p.is_file():  # /dev/null or a FIFO exists and is no file
        raise DataError("not a regular file" if p.exists() else "file not found", str(p))
    if p.stat().st_size == 0:
        raise DataError("file is empty", str(p))
    fmt = detect_format(p, declared_format)
    table = _read_csv(p, text_columns) if fmt == "csv" else _read_other(p, fmt)
    bad = next((c for c in table.column_names if "\x00" in c), None)
    if bad is not None:
        raise DataError(f"column name {bad!r} contains a NUL character", str(p))
    if table.num_rows == 0:
        raise DataError("file has no data rows", str(p))
    return table


# ------------------------------------------------------------------ reading a file
# DuckDB's messages run over many lines (the reader's settings, possible fixes, the whole
# offending line); an error keeps its one-line reason, with the file's line and byte.
def _read_other(p: Path, fmt: str) -> pa.Table:
    con = connect()
    try:
        if fmt == "jsonl":
            return read_jsonl(con, p)
        try:
            names = pq.read_schema(p).names
        except (pa.ArrowException, OSError):
            names = []  # not Parquet: DuckDB's reader says what is wrong with it
        clash = _case_clash(names)
        if clash:
            raise DataError(clash, str(p))
        return con.read_parquet(str(p)).to_arrow_table()
    except (duckdb.Error, UnicodeDecodeError) as exc:
        # UnicodeDecodeError: DuckDB cut its own message inside a character (it quotes the bad
        # record, shortened) and the message could not be read
        unreadable = isinstance(exc, UnicodeDecodeError)
        if fmt == "jsonl":
            why = utf8_problem(p) or (json_diagnosis(p) if unreadable else None) or json_reason(p, exc)
        else:
            why = _reason(exc)
        if unreadable and why == _reason(exc):
            why = "the reader failed and its message could not be decoded"
        raise DataError(f"cannot read as {fmt}: {why}", str(p)) from None
    finally:
        con.close()


@dataclass(frozen=True)
class LoadedData:
    n_train: int
    n_gold: int
    n_unlabelled: int
    n_test: int
    columns: list[str]
    gold_classes: tuple[str, ...] = ()  # the distinct labels of the labelled training rows
    # columns only one of the train and test files has: column -> the file that lacks it
    one_sided: dict[str, str] = field(default_factory=dict)

    def check_fields(self, fields: Sequence[str]) -> None:
        """Refuse a field the views read that one of the two files lacks: its rows there
        would read as missing (the test split's text as empty, silently lowering every test
        score; a train row's value as NaN, blamed on that row)."""
        bad = next((f for f in fields if f in self.one_sided), None)
        if bad is not None:
            raise DataError(f"column {bad!r}, which a view or the debate reads, is not in this file (the other "
                            "data file has it)", self.one_sided[bad])

    def gold_problem(self, label_column: str) -> str | None:
        """Why views trained on the gold labels alone could not label anything (none, or one
        class only), or None."""
        if self.n_gold == 0:
            return f"no labelled training rows: fill '{label_column}' for a few items"
        if len(self.gold_classes) < 2:
            return (f"every labelled training row is {self.gold_classes[0]!r}: a view trained on one class cannot "
                    "tell classes apart; label a few items of the other classes")
        return None


def _with_meta(table: pa.Table, split: str | pa.Array) -> pa.Table:
    n = table.num_rows
    split_arr = pa.repeat(pa.scalar(split, pa.string()), n) if isinstance(split, str) else split
    table = table.append_column(SPLIT_COL, split_arr)
    return table.append_column(FILE_ROW_COL, pa.array(np.arange(1, n + 1, dtype=np.int64)))  # not a Python range


#: Columns cotrain adds to the data snapshot; a file may not bring its own.
RESERVED_COLUMNS = ("__row", SPLIT_COL, FILE_ROW_COL)


def _no_reserved(table: pa.Table, path: str) -> pa.Table:
    bad = next((c for c in table.column_names if c in RESERVED_COLUMNS), None)
    if bad is not None:
        raise DataError(f"column {bad!r} has a name cotrain uses for its own columns "
                        f"({', '.join(RESERVED_COLUMNS)}); rename it", path)
    return table


def _missing(kind: str, name: str, columns: list[str]) -> str:
    """``label column 'x' (data.label_column) is missing``, and why when the file has a name
    like it: DuckDB's readers match names case-insensitively and rename the later of two that
    differ only in case (``label`` beside ``LABEL`` becomes ``label_1``)."""
    msg = f"{kind} column {name!r} (data.{kind}_column) is missing"
    renamed = [c for c in columns if re.fullmatch(re.escape(name) + r"_\d+", c)]
    clash = [c for c in columns if c.lower() == name.lower()]
    if renamed and clash:
        return (f"{msg}; the reader named it {renamed[0]!r} because {clash[0]!r} differs from it only in case "
                "(rename one of them)")
    if clash:
        return f"{msg}; the file has {clash[0]!r} (names must match exactly)"
    if kind == "split":  # the example config names one; many files have none
        return f"{msg}; remove data.split_column if the file holds no held-out rows (data.test names a test file)"
    return msg


def _split_column(table: pa.Table, d: DataConfig, path: str) -> pa.Table:
    if d.split_column is None:
        return _with_meta(table, "train")
    if d.split_column not in table.column_names:
        raise DataError(_missing("split", d.split_column, table.column_names), path)
    split = table.column(d.split_column).cast(pa.string())
    is_test = pc.fill_null(pc.equal(split, d.test_value), False)
    if table.num_rows and not d.test and not pc.any(is_test).as_py():  # a typo ('Test') trained on the held-out rows
        seen = pc.unique(split).drop_null().to_pylist()
        held = ", ".join(shown(v) for v in seen[:5]) + (", ..." if len(seen) > 5 else "")  # a 5 MB cell is cut
        raise DataError(f"no row of split column {d.split_column!r} equals test_value {d.test_value!r} (it holds "
                        f"{held or 'only empty cells'}): every held-out row would train; set data.test_value, or "
                        "drop data.split_column to train on every row", path)
    return _with_meta(table, pc.if_else(is_test, "test", "train").combine_chunks())


def _text_alike(parts: list[pa.Table], text: Sequence[str]) -> list[pa.Table]:
    """The train and test tables with each ``text`` column as text in both when one file reads
    it as text and the other does not (a CSV train file beside a Parquet test file)."""
    if len(parts) < 2:
        return parts
    for name in text:
        types = [t.schema.field(name).type for t in parts if name in t.column_names]
        if any(pa.types.is_string(t) for t in types) and not all(pa.types.is_string(t) for t in types):
            parts = [t.set_column(t.column_names.index(name), name, pc.cast(t.column(name), pa.string()))
                     if name in t.column_names and not pa.types.is_string(t.schema.field(name).type) else t
                     for t in parts]
    return parts


def _read_inputs(d: DataConfig, text: Sequence[str], paths: dict[str, str]) -> tuple[pa.Table, dict[str, str]]:
    """The train file's rows, then the test file's (``__split``, ``__file_row`` added), checked
    for the label and id columns; and the columns only one of the two has (column -> the path
    of the file without it)."""
    train = _split_column(_no_reserved(read_table(d.train, d.format, d.label_column, text), d.train), d, d.train)
    parts = [train]
    if d.test:
        test = _no_reserved(read_table(d.test, d.format, d.label_column, text), d.test)
        if d.split_column and d.split_column in test.column_names:
            test = test.drop_columns([d.split_column])
        parts.append(_with_meta(test, "test"))
    for part, name in zip(parts, ("train", "test")):
        if d.label_column not in part.column_names:
            raise DataError(_missing("label", d.label_column, part.column_names), paths[name])
        if d.id_column and d.id_column not in part.column_names:
            raise DataError(_missing("id", d.id_column, part.column_names), paths[name])
    parts = _text_alike(parts, text)
    names = [set(t.column_names) for t in parts]
    one_sided = {} if len(parts) < 2 else {**{c: paths["test"] for c in names[0] - names[1]},
                                           **{c: paths["train"] for c in names[1] - names[0]}}
    try:  # columns only one file has come out NULL in the other's rows (LoadedData.check_fields)
        return (pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]), one_sided
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"test file's columns do not match the train file's: {_one_line(str(exc))}", d.test) from None


def load_into_store(store: Store, run_id: int, cfg: Config) -> LoadedData:
    """Snapshot the configured files into ``data_<run_id>`` and fill ``items``.

    Call inside the run-creation transaction: on error nothing is kept.
    """
    d = cfg.data
    labels = cfg.task.names
    text = [c for c in (d.id_column, d.label_column) if c]  # the split column keeps the reader's spelling
    paths = {"train": d.train, "test": d.test or d.train}
    table, one_sided = _read_inputs(d, text, paths)
    id_column = d.id_column or ("image" if Path(d.train).is_dir() else None)  # an image folder: its paths
    snap = snapshot(store, run_id, table, d.label_column)
    del table  # the store holds the rows now, and the item checks read them there (3M rows: 240 MB freed)
    counts = load_items(store, run_id, snap, labels=labels, label_column=d.label_column, id_column=id_column,
                        split_column=d.split_column, paths=paths)
    n_train, n_gold, n_test = counts.n_train, counts.n_gold, counts.n_test
    if n_train == 0:
        raise DataError("no training rows (every row is in the test split)", d.train)
    columns = [c for c in store.data_columns(run_id) if c not in (SPLIT_COL, FILE_ROW_COL)]
    classes = store.query("SELECT DISTINCT gold_label FROM items WHERE run_id = ? AND split = 'train' AND gold_label "
                          "IS NOT NULL ORDER BY gold_label", [run_id]).column(0).to_pylist()
    missing = [name for name in labels if name not in classes]
    if missing and len(classes) >= 2:  # fewer is refused (LoadedData.gold_problem)
        log.warning("task label(s) %s have no labelled training row in %s: views trained on the gold labels never "
                    "predict them, so the pool's items of those classes get other labels, and the estimated "
                    "precision (read from gold) cannot see those errors; label a few items of each (or add an llm "
                    "view, which labels zero-shot)", ", ".join(map(repr, missing)), d.train)
    return LoadedData(n_train, n_gold, n_train - n_gold, n_test, columns, tuple(classes), one_sided)

