"""Hostile input (issue 11: findings 7 and 8, "What to build" item 10).

Two parts:

* Reading data and review files: a non-UTF-8 file names its line and byte; a JSONL error
  names the file's line; a CSV whose cells hold a bare CR (pandas writes ``\\rx`` unquoted)
  reads as written; a review file that cannot be read is one ``ReviewError`` and writes nothing.
* A seeded fuzz suite that runs the real CLI in subprocesses: hostile column names, ids,
  labels and cells, broken files, through ``run`` -> ``export`` (csv, parquet) ->
  ``import-reviews`` -> ``report`` -> ``status``. Every step ends with exit 0, or a non-zero
  exit with exactly one ``error:`` line on stderr and no traceback; no step hits an unforeseen
  exception (the CLI's crash log stays empty); the store still opens read-only; and no file
  appears outside the expected outputs (a column name cannot ``COPY ... TO 'PWNED.txt'``).

The default run keeps to a few cases (about a minute: each CLI call is a fresh Python); the
seeded sweep over every kind is ``-m slow``.
"""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from orchestrator import api
from orchestrator.data import read_table
from store.database import Store
from store.errors import DataError, ReviewError
from tests.conftest import synthetic_frame, write_config

ROOT = Path(__file__).resolve().parents[1]


# ====================================================================== part A: reading files
def _msg(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and "\r" not in msg, msg
    return msg


def test_non_utf8_csv_keeps_its_cause_with_line_and_byte(tmp_path: Path):
    p = tmp_path / "d.csv"
    p.write_bytes(b"id,f_a,label\n1,0.5,a\n2,caf\xe9,b\n")
    with pytest.raises(DataError) as e:
        read_table(p)
    msg = _msg(e)
    assert msg.startswith(f"{p}: ") and "not UTF-8: byte 0xe9 at line 3, byte 6" in msg


def test_non_utf8_gzipped_csv_and_utf16(tmp_path: Path):
    import gzip

    p = tmp_path / "d.csv.gz"
    with gzip.open(p, "wb") as f:
        f.write(b"id,label\n" + b"x,a\n" * 5 + b"\x80y,b\n")
    with pytest.raises(DataError) as e:
        read_table(p)
    assert "line 7, byte 1" in _msg(e)
    q = tmp_path / "u16.csv"
    q.write_bytes("id,label\nx,a\n".encode("utf-16"))
    with pytest.raises(DataError) as e:
        read_table(q)
    assert "UTF-16" in _msg(e)


def test_non_utf8_jsonl_names_line_and_byte(tmp_path: Path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"id": 1, "t": "ok"}\n{"id": 2, "t": "caf\xe9"}\n')
    with pytest.raises(DataError) as e:
        read_table(p)
    assert "not UTF-8: byte 0xe9 at line 2, byte 20" in _msg(e)


@pytest.mark.parametrize("text, line", [
    ('{"id": 1}\n{"id": x}\n{"id": 3}\n', 2),
    ('{"id": x}\n', 1),
    ('\n\n{"id": 1}\n\n{"id": 2}\n   \n{"id": 3,,}\n', 7),     # blank lines count as lines of the file
    ('{"id": 1}\r\n{"id": 2}\r\n{"id": }\r\n', 3),
    ('{"id": 1}\n{"id": 2\n', 2),                              # cut short
])
def test_jsonl_error_names_the_bad_line_of_the_file(tmp_path: Path, text: str, line: int):
    p = tmp_path / "d.jsonl"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_table(p)
    msg = _msg(e)
    assert f"malformed JSON at line {line}" in msg and f"line {line + 1}" not in msg


def test_pandas_csv_with_a_bare_cr_in_a_cell_reads_as_written(tmp_path: Path):
    """pandas leaves a cell holding CR unquoted (``b,\\rx,``); DuckDB's sniffer failed on it."""
    texts = ["hello", "\rx", "y\r", "a\rb\rc", "z\r\nw", "plain", "\r"]
    df = pd.DataFrame({"id": [f"i{i}" for i in range(len(texts))], "f_a": [0.5 * i for i in range(len(texts))],
                       "text": texts, "label": ["a", None, "b", None, None, "a", None]})
    df.to_csv(tmp_path / "d.csv", index=False)
    assert b",\rx," in (tmp_path / "d.csv").read_bytes()  # unquoted, as pandas writes it
    t = read_table(tmp_path / "d.csv")
    assert t.column_names == ["id", "f_a", "text", "label"]
    assert t.column("text").to_pylist() == texts
    assert t.column("f_a").to_pylist() == df.f_a.tolist()


def test_bare_cr_in_a_header_and_a_gzipped_file(tmp_path: Path):
    import gzip

    with gzip.open(tmp_path / "d.csv.gz", "wb") as f:
        f.write(b"id,f\ra,label\n1,x\ry,a\n2,z,b\n")
    t = read_table(tmp_path / "d.csv.gz")
    assert t.column_names == ["id", "f\ra", "label"] and t.column("f\ra").to_pylist() == ["x\ry", "z"]


def test_a_row_with_extra_fields_names_its_line(tmp_path: Path):
    p = tmp_path / "d.csv"
    p.write_text("id,x,label\n1,2,a\n2,3,b,4\n3,4,c\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_table(p)
    assert "line 3 has 4 fields, the header has 3" in _msg(e)


def test_types_past_the_sniffer_sample_and_long_lines_read(tmp_path: Path):
    rows = ["id,x,label"] + [f"{i},{i},a" for i in range(25_000)] + ["z,notanumber,b"]
    (tmp_path / "late.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    t = read_table(tmp_path / "late.csv")
    assert t.num_rows == 25_001 and t.column("id").to_pylist()[-1] == "z"
    (tmp_path / "long.csv").write_text("id,text,label\n1," + "w " * 1_500_000 + ",a\n2,b,b\n", encoding="utf-8")
    t = read_table(tmp_path / "long.csv")
    assert t.num_rows == 2 and len(t.column("text")[0].as_py()) == 3_000_000


def test_duckdb_reasons_stay_on_one_line(tmp_path: Path):
    p = tmp_path / "d.parquet"
    p.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataError) as e:
        read_table(p)
    assert _msg(e).startswith(f"{p}: cannot read as parquet: ")


@pytest.mark.parametrize("name", ["__row", "__split", "__file_row"])
def test_a_column_named_like_cotrains_own_is_refused(tmp_path: Path, name: str):
    """The fuzz suite found a label column named ``__row``: it collided with the snapshot's own
    ``__row`` and ended in an aborted transaction instead of an error."""
    df = synthetic_frame(n=60, n_test=10)
    df[name] = "x"
    cfg = write_config(tmp_path, df, max_rounds=1)
    with pytest.raises(DataError) as e:
        api.run(cfg)
    assert f"column '{name}' has a name cotrain uses for its own columns" in _msg(e)


@pytest.mark.parametrize("odd", [math.inf, -math.inf, 1e300, math.nan])
def test_float_labels_out_of_integer_range_are_one_error(tmp_path: Path, odd: float):
    """Float labels 0.0/1.0 read as '0'/'1'; an infinite or huge one made that cast fail with a
    ConversionException (an unforeseen error) instead of naming the label."""
    df = synthetic_frame(n=60, n_test=10)
    df["label"] = df["label"].map({"ant": 0.0, "bee": 1.0, "cat": 2.0})
    df.loc[3, "label"] = odd
    t = pa.Table.from_pandas(df.drop(columns=["truth", "label"]), preserve_index=False)
    # written as NaN, not null: a float NaN is no label, as pandas reads it
    t = t.append_column("label", pa.array(df["label"].to_numpy(dtype=float), pa.float64(), from_pandas=False))
    pq.write_table(t, tmp_path / "d.parquet")
    cfg = yaml.safe_load(write_config(tmp_path, df, max_rounds=1).read_text())
    cfg["task"]["labels"], cfg["data"]["train"] = [0, 1, 2], "d.parquet"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    if math.isnan(odd):  # NaN is no label: the row is unlabelled
        assert api.run(tmp_path / "c.yaml").status == "finished"
        return
    with pytest.raises(DataError) as e:
        api.run(tmp_path / "c.yaml")
    assert "row 4 item 'it00003': label '" in _msg(e) and "is not one of the task's labels" in str(e.value)


def test_names_that_differ_only_in_case_are_explained(tmp_path: Path):
    df = synthetic_frame(n=60, n_test=10)
    df.insert(1, "LABEL", "x")  # DuckDB would read the later 'label' as 'label_1'
    cfg = write_config(tmp_path, df, max_rounds=1)
    with pytest.raises(DataError) as e:
        api.run(cfg)
    assert "the columns 'LABEL' and 'label' differ only in case, which the reader cannot tell apart" in _msg(e)


def test_jsonl_duplicate_keys_name_the_line(tmp_path: Path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"k": 1}\n\n{"k": 2}\n{"k": 3, "k": 4}\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_table(p)
    assert 'JSON transform error at line 4: Object {"k":3,"k":4} has duplicate key "k"' in _msg(e)


def test_jsonl_keys_that_differ_only_in_case_say_so(tmp_path: Path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"Ab": 1, "aB": 2, "label": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_table(p)
    assert "the keys 'Ab' and 'aB' differ only in case" in _msg(e) and "columns=" not in str(e.value)


def test_jsonl_nan_in_a_text_key_reads_as_missing_and_keeps_the_other_values_plain(tmp_path: Path):
    """``json.dumps`` writes a float NaN as a bare ``NaN``; DuckDB then read the whole key as
    JSON, every value in its quotes, so no row matched ``test`` and every id gained quotes
    (a hostile probe's finding). Now NaN is missing and the other values read as written."""
    rows = [{"id": "i0", "a_0": 1.0, "split": "train", "label": "pos"},
            {"id": math.nan, "a_0": 2.0, "split": math.nan, "label": math.nan},
            {"id": "i2", "a_0": 3.0, "split": "test", "label": "neg"},
            {"id": 7, "a_0": 4.0, "split": "test", "label": True}]
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert "NaN" in p.read_text()
    t = read_table(p)
    assert t.column("split").to_pylist() == ["train", None, "test", "test"]
    assert t.column("id").to_pylist() == ["i0", None, "i2", "7"]
    assert t.column("label").to_pylist() == ["pos", None, "neg", "true"]
    assert t.column("a_0").to_pylist() == [1.0, 2.0, 3.0, 4.0]


def test_a_csv_header_naming_a_column_twice_is_one_error(tmp_path: Path):
    """DuckDB renamed the second ``a_0`` to ``a_0_1`` without a word, and a view reading the
    ``a_`` columns read both; a header with ``a`` and a genuine ``a_1`` still reads."""
    p = tmp_path / "d.csv"
    p.write_text("id,a_0,a_0,label\n1,2,3,x\n2,3,4,y\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_table(p)
    assert "column 'a_0' appears more than once in the header (the reader would call the next one 'a_0_1')" in _msg(e)
    p.write_text("id,a,a_1,label\n1,2,3,x\n", encoding="utf-8")
    assert read_table(p).column_names == ["id", "a", "a_1", "label"]


def test_jsonl_a_list_where_other_lines_hold_one_value_names_the_line(tmp_path: Path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"id": "a", "split": "train"}\n\n{"id": "b", "split": ["test"]}\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_table(p)
    assert "key 'split' holds a list at line 3, where other lines hold one value" in _msg(e)


def test_a_duckdb_message_cut_inside_a_character_is_still_one_error(tmp_path: Path):
    """DuckDB quotes the bad record shortened, cutting an emoji in two; its Python binding then
    raised UnicodeDecodeError instead of the error (found by the fuzz suite)."""
    p = tmp_path / "d.jsonl"
    p.write_text('{"a' + "\U0001F600" * 24 + '": 1, "k": 1, "k": 2}\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_table(p)
    assert "cannot read as jsonl: line 1: duplicate key 'k'" in _msg(e)


# -------------------------------------------------------------- review files
@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-round run; tests copy its store before importing into it."""
    tmp = tmp_path_factory.mktemp("run")
    cfg = write_config(tmp, synthetic_frame(n=120, n_test=30), max_rounds=1)
    api.run(cfg)
    return tmp / "run.duckdb"


@pytest.fixture
def store_copy(small_run: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "run.duckdb"
    shutil.copy(small_run, dst)
    return dst


def _reviews(store: Path) -> int:
    with Store(store, read_only=True) as st:
        return int(st.scalar("SELECT count(*) FROM reviews"))


def _item_ids(store: Path, n: int) -> list[str]:
    with Store(store, read_only=True) as st:
        return [r[0] for r in st.con.execute("SELECT item_id FROM items WHERE gold_label IS NULL AND split = 'train'"
                                             " ORDER BY row_idx LIMIT ?", [n]).fetchall()]


def test_non_utf8_review_csv_is_one_line_and_writes_nothing(store_copy: Path, tmp_path: Path):
    ids = _item_ids(store_copy, 2)
    p = tmp_path / "reviews.csv"
    p.write_bytes(f"id,label,reviewer\n{ids[0]},ant,ann\n{ids[1]},bee,Jos\xe9\n".encode("latin-1"))
    with pytest.raises(ReviewError) as e:
        api.import_reviews(store_copy, p)
    msg = _msg(e)
    assert msg.startswith(f"{p}: ") and "not UTF-8: byte 0xe9 at line 3" in msg
    assert _reviews(store_copy) == 0


def test_review_csv_with_long_cells_bare_cr_and_spaced_ids(store_copy: Path, tmp_path: Path):
    """An edited export: a 300 kB note (over Python's default csv field limit), a note holding
    a CR that pandas leaves unquoted, an id a spreadsheet padded with spaces. A reviewer name
    holding a CR (or a newline: a forged log line) is refused, naming the record."""
    ids = _item_ids(store_copy, 3)
    df = pd.DataFrame({"id": [ids[0], f"  {ids[1]} ", ids[2]], "label": ["ant", " bee", "cat"],
                       "note": ["x" * 300_000, "a\rb", "y"], "reviewer": ["a", "c", "d"]})
    df.to_csv(tmp_path / "r.csv", index=False)
    assert api.import_reviews(store_copy, tmp_path / "r.csv").imported == 3
    with Store(store_copy, read_only=True) as st:
        got = st.con.execute("SELECT item_id, label, reviewer FROM reviews ORDER BY file_row").fetchall()
    assert got == [(ids[0], "ant", "a"), (ids[1], "bee", "c"), (ids[2], "cat", "d")]
    df["reviewer"] = ["e", "f\rg", "h"]
    df.to_csv(tmp_path / "cr.csv", index=False)
    with pytest.raises(ReviewError, match=r"row 2 item .*: reviewer 'f\\rg' holds a control character"):
        api.import_reviews(store_copy, tmp_path / "cr.csv")
    assert _reviews(store_copy) == 3


def test_jsonl_reviews_split_at_lf_only_and_name_the_bad_line(store_copy: Path, tmp_path: Path):
    ids = _item_ids(store_copy, 2)
    good = tmp_path / "r.jsonl"
    recs = [{"item_id": ids[0], "label": "ant", "note": "a\u2028b\x85c"}, {"item_id": ids[1], "label": "bee"}]
    good.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n", encoding="utf-8")
    assert api.import_reviews(store_copy, good).imported == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(recs[0]) + "\n\n" + '{"item_id": "x", "label": }\n', encoding="utf-8")
    with pytest.raises(ReviewError) as e:
        api.import_reviews(store_copy, bad)
    assert "line 3, column" in _msg(e)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'[{"item_id": "caf\xe9", "label": "ant"}]')
    with pytest.raises(ReviewError) as e:
        api.import_reviews(store_copy, latin)
    assert "not UTF-8: byte 0xe9 at line 1, byte 18" in _msg(e)
    assert _reviews(store_copy) == 2


# ====================================================================== part B: the fuzz suite
ATOMS = [
    '"', "'", ";", "--", "/*", "*/", "\n", "\r", "\r\n", "\t", "\x01", "\x1b[31m", "\x7f", "\x0b", "\x0c",
    "\u202e", "\u200f", "\u200b", "\u2028", "\ufeff", "\x85", "שלום", "مرحبا", "☃", "😀", "ünï", "ß", "Å",
    "\\", "`", "$(id)", "%s", "{0}", "<b>", "</script>", "&amp;", "=1+1", "@SUM(A1)", "+1", "-1", " ", "  ",
    "NULL", "null", "NaN", "inf", "true", "0", "1e9", ",", "|", "#", "DROP TABLE items",
    "x\" FROM (SELECT 1); COPY (SELECT 'x') TO 'PWNED.txt'; --", "'); COPY (SELECT 1) TO 'PWNED2.txt'; --",
]
RESERVED = ["__row", "__split", "__file_row", "__x", "__"]
EXPORT_COLUMNS = ("item_id", "label", "source", "source_views", "agreeing_views", "round", "confidence")
INTERNAL = ("__row", "__split", "__file_row")   # cotrain's own columns: a file may not bring them


def _hostile(r: random.Random, lo: int = 1, hi: int = 4) -> str:
    s = "".join(r.choice(ATOMS) for _ in range(r.randint(lo, hi)))
    if r.random() < 0.08:
        s += "n" * r.choice([300, 5000])  # very long
    return s


def _yaml_safe(s: str) -> bool:
    """A name the YAML config can carry exactly (the config is not under test here)."""
    try:
        return yaml.safe_load(yaml.safe_dump({"k": s}, allow_unicode=True)) == {"k": s}
    except yaml.YAMLError:
        return False


@dataclass
class Case:
    name: str
    fmt: str                                  # csv | jsonl | parquet
    expect: str                               # ok | error | either
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    raw: bytes | None = None                  # exact file bytes instead of columns/rows
    damage: Callable[[bytes], bytes] | None = None
    train_ids: set[str] = field(default_factory=set)
    labels: list[str] = field(default_factory=list)

    def describe(self) -> str:
        cols = [c if len(c) < 60 else c[:60] + "…" for c in self.columns]
        return f"case {self.name} ({self.fmt}, expect {self.expect}); columns {cols!r}"


def _unique(r: random.Random, taken: set[str], make: Callable[[], str], bad_start: str | None = None,
            strip: bool = True) -> str:
    """A fresh name from ``make``: not taken (DuckDB reads column names case-insensitively, so
    not taken in another case either), not one of cotrain's own columns, carried exactly by
    YAML; with ``strip``, no space at either end (a name the config must match exactly)."""
    for _ in range(200):
        s = make()
        fits = s.strip() == s and s != "" if strip else True
        if (fits and s.lower() not in taken and _yaml_safe(s) and "\x00" not in s and s not in INTERNAL
                and (bad_start is None or not s.startswith(bad_start))):
            taken.add(s.lower())
            return s
    raise AssertionError("generator could not find a fresh name")


def _project(seed: int, fmt: str, *, kind: str = "names", n: int = 40, n_test: int = 8) -> Case:
    """A dataset that should run: hostile column names, ids, labels and text, sound values.
    ``kind="cells"`` adds hostile cell values (control characters, RTL, a 1 MB cell, NaN/inf
    text, empty strings); NaN/inf features are the broken kind ``nan_features``."""
    r = random.Random(seed)
    taken: set[str] = set()
    prefix = _unique(r, taken, lambda: _hostile(r, 1, 2) + "§")
    feats = [_unique(r, taken, lambda: prefix + _hostile(r, 0, 3)) for _ in range(3)]
    other = lambda: r.choice([_hostile(r), r.choice(RESERVED) + _hostile(r, 0, 2)])  # noqa: E731
    label_col = _unique(r, taken, other, prefix)
    id_col = _unique(r, taken, other, prefix)
    text_col = _unique(r, taken, lambda: _hostile(r), prefix)  # a view may not read a __ column
    split_col = _unique(r, taken, other, prefix) if r.random() < 0.6 else None
    # columns no key names: may be empty or padded with spaces
    extras = [_unique(r, taken, lambda: r.choice([other(), "", " ", " " + other(), r.choice(EXPORT_COLUMNS).upper(),
                                                   r.choice(EXPORT_COLUMNS)]), prefix, strip=False)
              if r.random() < 0.3 else _unique(r, taken, other, prefix) for _ in range(r.randint(0, 2))]
    labels = [_unique(r, taken, lambda i=i: f"L{i}{_hostile(r, 0, 2)}Z") for i in range(r.choice([2, 3]))]
    ids = [_unique(r, taken, lambda i=i: f"{_hostile(r, 0, 2)}#{i}{r.choice(['', ' ', chr(9)])}", strip=False)
           for i in range(n + n_test)]
    rows = []
    for i in range(n + n_test):
        y = i % len(labels)
        gold = labels[y] if (i < 4 * len(labels) or i >= n) else None
        vals = [3.0 * y + r.gauss(0, 1) * (j + 1) for j in range(len(feats))]
        text = f"w{y} word{y} " + _hostile(r, 0, 3)
        if kind == "cells":
            roll = r.random()
            if roll < 0.3:
                text = "".join(chr(r.randint(0, 31)) for _ in range(r.randint(0, 8))) + f" w{y}"
            elif roll < 0.4:
                text = r.choice(["", "NaN", "inf", "-inf", "null", "\u202e\u202d", " ", "\x00", "nan"])
        rows.append([ids[i], *vals, text, gold] + ([("test" if i >= n else "train")] if split_col else [])
                    + [_hostile(r, 0, 3) for _ in extras])
    columns = [id_col, *feats, text_col, label_col] + ([split_col] if split_col else []) + extras
    if kind == "cells":
        rows[n - 1][len(feats) + 1] = "z" * 1_000_000 + f" w{(n - 1) % len(labels)}"  # a 1 MB cell
    if r.random() < 0.3 and extras and fmt != "jsonl":  # a duplicate column name (not one the config names)
        columns.append(extras[0])
        for row in rows:
            row.append(_hostile(r, 0, 1))
    if split_col is None:  # without a split column every row trains
        rows = rows[:n]
    train = {row[0] for row in rows[:n]}
    data: dict[str, Any] = {"train": f"data.{fmt}", "id_column": id_col, "label_column": label_col}
    if r.random() < 0.3:  # no id column: ids hash the content, and identical rows are numbered
        del data["id_column"]
        train = set()
        for i in r.sample(range(4 * len(labels), n), 3):
            rows[i] = list(rows[i - 1]) if rows[i - 1][columns.index(label_col)] is None else rows[i]
    if split_col:
        data["split_column"] = split_col
    config = {"task": {"labels": labels}, "data": data,
              "views": [{"name": "num", "kind": "sklearn", "column_prefix": prefix},
                        {"name": "txt", "kind": "sklearn", "text": text_col}],
              "cotrain": {"max_rounds": 1, "policy": "threshold", "threshold": 0.5}, "seed": 0,
              "store": "run.duckdb"}
    return Case(f"{kind}-{fmt}-{seed}", fmt, "ok", columns, rows, config, train_ids=train, labels=labels)


def _broken(seed: int, what: str, fmt: str | None = None) -> Case:
    """A file that should be refused with one line (or, where marked, read)."""
    r = random.Random(seed)
    any_format = ("labels", "dup_ids", "empty_ids", "nan_features", "reserved", "case_clash")
    fmt = fmt or (r.choice(["csv", "jsonl", "parquet"]) if what in any_format else "csv")
    base = _project(seed, fmt)
    base.name, base.expect = f"{what}-{base.fmt}-{seed}", "error"
    id_i = 0
    label_i = base.columns.index(base.config["data"]["label_column"])
    if what == "empty":
        base.raw = b""
    elif what == "header_only":
        base.raw = (",".join(json.dumps(c) for c in base.columns) + "\n").encode()
    elif what == "labels":  # a label value the task does not declare
        base.rows[r.randrange(len(base.rows))][label_i] = _hostile(r) + "?"
    elif what == "dup_ids":
        base.config["data"]["id_column"] = base.columns[id_i]
        base.rows[5][id_i] = base.rows[2][id_i]
    elif what == "empty_ids":
        base.config["data"]["id_column"] = base.columns[id_i]
        base.rows[3][id_i] = None
    elif what == "dup_keys":  # a JSON object that repeats a key
        base = _project(seed, "jsonl")
        base.name, base.expect = f"{what}-jsonl-{seed}", "error"
        base.columns.append(base.columns[-1])
        for row in base.rows:
            row.append(row[-1])
    elif what == "latin1":  # a cell in Latin-1 somewhere in the file
        base.damage = lambda b: b.replace(b"word1", "wörd1".encode("latin-1"), 1)
    elif what == "random_bytes":
        def damage(b: bytes) -> bytes:
            pos = r.randrange(len(b) // 2, len(b))
            return b[:pos] + bytes(r.randrange(128, 256) for _ in range(4)) + b[pos:]
        base.damage = damage
    elif what == "utf16":
        base.damage = lambda b: b.decode("utf-8").encode("utf-16")
    elif what == "truncated_jsonl":
        base = _project(seed, "jsonl")
        base.name, base.expect = f"{what}-jsonl-{seed}", "error"
        base.damage = lambda b: b[: len(b) * 2 // 3]
    elif what == "bad_parquet_utf8":  # a Parquet string column holding bytes that are not UTF-8
        base = _project(seed, "parquet")
        base.name, base.expect = f"{what}-parquet-{seed}", "either"
        text_i = base.columns.index(base.config["views"][1]["text"])
        base.rows[7][text_i] = b"caf\xe9 w1"
    elif what == "nan_features":  # NaN / inf among unlabelled rows' features: one line naming it
        base.expect = "either"
        for i in r.sample(range(4 * len(base.labels), len(base.rows)), 2):
            base.rows[i][1 + r.randrange(3)] = r.choice([math.nan, math.inf, -math.inf])
    elif what == "reserved":  # a column named like one of cotrain's own
        base.columns[-1 if len(base.columns) > 6 else 1] = r.choice(INTERNAL)
    elif what == "case_clash":  # the label column and another differ only in case
        name = base.config["data"]["label_column"]
        base.columns[1] = name.swapcase() if name.swapcase() != name else name.upper()
        base.expect = "either"
    elif what == "bare_cr":  # pandas writes these cells unquoted: the file must read as written
        base.expect = "ok"
        text_i = base.columns.index(base.config["views"][1]["text"])
        for i in (1, 6, 11):
            base.rows[i][text_i] = f"\rx w{i % len(base.labels)}\r y"
    else:
        raise ValueError(what)
    return base


def _write(case: Case, folder: Path) -> Path:
    data = folder / case.config["data"]["train"]
    if case.raw is not None:
        data.write_bytes(case.raw)
    elif case.fmt == "csv":
        pd.DataFrame(case.rows, columns=case.columns).to_csv(data, index=False)
    elif case.fmt == "jsonl":
        with open(data, "w", encoding="utf-8") as f:
            for row in case.rows:  # by hand: duplicate keys, NaN/Infinity and raw U+2028 as they come
                f.write("{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{json.dumps(v, ensure_ascii=False)}"
                                       for k, v in zip(case.columns, row)) + "}\n")
    else:
        arrays = []
        for j in range(len(case.columns)):
            col = [row[j] for row in case.rows]
            if any(isinstance(v, bytes) for v in col):  # invalid UTF-8 in a string column, unchecked
                raw = [v if isinstance(v, bytes) else (None if v is None else str(v).encode()) for v in col]
                arrays.append(pa.array(raw, pa.binary()).view(pa.string()))
            elif all(v is None or isinstance(v, float) for v in col):
                arrays.append(pa.array(col, pa.float64()))
            else:
                arrays.append(pa.array([None if v is None else str(v) for v in col], pa.string()))
        pq.write_table(pa.Table.from_arrays(arrays, names=case.columns), data)
    if case.damage is not None:
        data.write_bytes(case.damage(data.read_bytes()))
    (folder / "cotrain.yaml").write_text(yaml.safe_dump(case.config, allow_unicode=True, sort_keys=False),
                                         encoding="utf-8")
    return data


@dataclass
class Step:
    argv: list[str]
    rc: int
    out: str
    err: str


class Pipeline:
    """One case through the CLI; collects every broken promise instead of stopping at the first."""

    def __init__(self, case: Case, tmp: Path, more_exports: tuple[tuple[str, str], ...] = ()) -> None:
        self.case, self.tmp, self.more_exports = case, tmp, more_exports
        self.proj, self.out, self.cwd, self.home = (tmp / d for d in ("proj", "out", "cwd", "home"))
        for d in (self.proj, self.out, self.cwd, self.home):
            d.mkdir(parents=True)
        self.store = self.proj / "run.duckdb"
        self.problems: list[str] = []
        self.steps: list[Step] = []
        self.env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        self.env.update(COTRAIN_HOME=str(self.home), TERM="dumb", NO_COLOR="1", PYTHONPATH=str(ROOT),
                        PYTHONIOENCODING="utf-8")

    def cli(self, *args: str | Path) -> Step:
        argv = [sys.executable, "-m", "orchestrator.cli", *map(str, args)]
        logs_before = self._logs()
        p = subprocess.run(argv, cwd=self.cwd, env=self.env, capture_output=True, timeout=300)
        out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
        step = Step([str(a) for a in args], p.returncode, out, err)
        self.steps.append(step)
        where = f"`cotrain {args[0]}`"
        if "Traceback" in out or "Traceback" in err:
            self.problems.append(f"{where}: traceback (rc {p.returncode}):\n{err[-4000:]}")
        elif p.returncode != 0:
            lines = err.splitlines()
            if len(lines) != 1 or not lines[0].startswith("error:") or not lines[0][6:].strip():
                self.problems.append(f"{where}: rc {p.returncode} but stderr is not one 'error:' line: {err[-2000:]!r}")
        new_logs = self._logs() - logs_before  # the CLI's crash log: an exception nobody foresaw
        if new_logs:
            text = "\n".join(x.read_text(encoding="utf-8", errors="replace")[-3000:] for x in sorted(new_logs))
            self.problems.append(f"{where}: unforeseen exception: {err.strip()[:500]}\n{text}")
        return step

    def _logs(self) -> set[Path]:
        return set((self.home / "logs").glob("*.log")) if (self.home / "logs").exists() else set()

    def store_readable(self) -> None:
        if not self.store.exists():
            return
        try:
            with Store(self.store, read_only=True) as st:
                st.con.execute("SELECT count(*) FROM runs").fetchall()
        except Exception as exc:  # noqa: BLE001 - any failure here is the finding
            self.problems.append(f"store does not open read-only: {type(exc).__name__}: {exc}")
        st = self.cli("status", self.store)
        if st.rc != 0:
            self.problems.append(f"`cotrain status` exits {st.rc}: {st.err.strip()[:500]!r}")

    def run(self) -> None:
        case = self.case
        _write(case, self.proj)
        cfg = self.proj / "cotrain.yaml"
        run = self.cli("run", cfg, "--quiet")
        if case.expect == "ok" and run.rc != 0:
            self.problems.append(f"`cotrain run` should succeed: {run.err.strip()[:800]!r}")
        if case.expect == "error" and run.rc == 0:
            self.problems.append("`cotrain run` should refuse this file, but exits 0")
        if run.rc == 0:
            self._after_run()
        self.store_readable()
        self._no_stray_files()

    def _after_run(self) -> None:
        case = self.case
        csv_out, pq_out, html = self.out / "labels.csv", self.out / "labels.parquet", self.out / "report.html"
        steps = [self.cli("export", self.store, csv_out), self.cli("export", self.store, pq_out)]
        for name, fmt in self.more_exports:
            if self.cli("export", self.store, self.out / name, "--format", fmt).rc != 0 and case.expect == "ok":
                self.problems.append(f"`cotrain export --format {fmt}` failed: {self.steps[-1].err.strip()[:500]!r}")
        if steps[1].rc != 0 or not pq_out.exists():
            self.problems.append(f"`cotrain export` to parquet failed: {steps[1].err.strip()[:500]!r}")
            return
        exported = pq.read_table(pq_out)
        ids = [str(x) for x in exported.column("item_id").to_pylist()]
        if case.train_ids and not set(ids) <= case.train_ids:
            self.problems.append(f"exported ids are not the file's: {sorted(set(ids) - case.train_ids)[:3]!r}")
        if case.expect == "ok" and case.raw is None:
            # the label column is exported as 'label'; an empty name is read as 'columnN'; a name
            # the export itself uses (item_id, source, ...) is dropped or renamed 'source_1'
            missing = [c for c in case.columns if c not in exported.column_names and c.strip()
                       and c != case.config["data"]["label_column"] and c.lower() not in EXPORT_COLUMNS]
            if missing:
                self.problems.append(f"exported column names differ from the file's: missing {missing[:3]!r}")
        if steps[0].rc != 0:
            self.problems.append(f"`cotrain export` to csv failed: {steps[0].err.strip()[:500]!r}")
        pick = ids[-4:]
        labels = case.labels or [str(x) for x in (exported.column("label").to_pylist())][:2]
        reviews = pd.DataFrame({"id": pick, "label": [labels[i % len(labels)] for i in range(len(pick))]})
        reviews.to_csv(self.proj / "reviews.csv", index=False)
        imp = self.cli("import-reviews", self.store, self.proj / "reviews.csv")
        if case.expect == "ok" and imp.rc != 0:
            self.problems.append(f"`cotrain import-reviews` of ids from the export failed: {imp.err.strip()[:800]!r}")
        if imp.rc == 0:
            with Store(self.store, read_only=True) as st:
                got = dict(st.con.execute("SELECT item_id, label FROM reviews").fetchall())
            if got != dict(zip(reviews.id, reviews.label)):
                self.problems.append(f"reviews did not round-trip: {got!r} != {dict(zip(reviews.id, reviews.label))!r}")
        rep = self.cli("report", self.store, "--out", html)
        if case.expect == "ok" and rep.rc != 0:
            self.problems.append(f"`cotrain report` failed: {rep.err.strip()[:500]!r}")

    def _no_stray_files(self) -> None:
        allowed = {self.proj / n for n in ("cotrain.yaml", self.case.config["data"]["train"], "reviews.csv",
                                           "run.duckdb", "run.duckdb.wal", "run.duckdb.progress.json")}
        allowed |= {self.out / n for n in ("labels.csv", "labels.parquet", "report.html")}
        # an export may write beside its file (ls.label_config.xml, argilla.settings.json) or a folder (hf)
        stems = {n.split(".")[0] for n, _ in self.more_exports}
        for f in self.tmp.rglob("*"):
            if "PWNED" in f.name:
                self.problems.append(f"a statement from the data ran: {f} exists")
            elif (f.is_file() and f not in allowed and self.home not in f.parents
                  and not (self.out in f.parents and f.relative_to(self.out).parts[0].split(".")[0] in stems)):
                self.problems.append(f"unexpected file {f.relative_to(self.tmp)}")

    def report(self) -> str:
        return self.case.describe() + "\n" + "\n".join(f"  - {p}" for p in self.problems)


ALL_EXPORTS = (("labels.jsonl", "jsonl"), ("hf", "hf"), ("hf.parquet", "hf-parquet"), ("ls.json", "label-studio"),
               ("argilla.json", "argilla"))


def _check(cases: list[Case], tmp: Path, more_exports: tuple[tuple[str, str], ...] = ()) -> None:
    failures = []
    for i, case in enumerate(cases):
        pipe = Pipeline(case, tmp / f"c{i}", more_exports)
        pipe.run()
        if pipe.problems:
            failures.append(pipe.report())
    assert not failures, "\n\n".join(failures)


BROKEN = ["empty", "header_only", "labels", "dup_ids", "empty_ids", "latin1", "random_bytes", "utf16",
          "truncated_jsonl", "bad_parquet_utf8", "bare_cr", "reserved", "case_clash", "nan_features",
          "dup_keys"]


def test_fuzz_hostile_names_and_cells_through_every_command(tmp_path: Path):
    """Hostile column names, ids, labels (quotes, ``;``, ``--``, newlines, RTL marks, emoji,
    very long, names starting with ``__``, a duplicate column) and cells (control characters,
    RTL, a 1 MB cell, NaN/inf text, empty strings): run, export, import-reviews, report, status."""
    _check([_project(1, "csv", kind="cells")], tmp_path)


def test_fuzz_broken_files_are_one_line(tmp_path: Path):
    """An empty file, a Latin-1 cell in a CSV, a JSONL file cut short: one line each, the
    store still readable (the slow sweep covers every broken kind, header-only and undeclared
    labels included)."""
    _check([_broken(16, "empty"), _broken(10, "latin1"), _broken(15, "truncated_jsonl")], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(len(BROKEN)))
def test_fuzz_sweep(tmp_path: Path, seed: int):
    """The seeded sweep: every broken kind once, and random kinds and formats, per seed."""
    r = random.Random(1000 + seed)
    cases = [_project(100 + seed, r.choice(["csv", "jsonl", "parquet"]), kind=r.choice(["names", "cells"])),
             _broken(200 + seed, BROKEN[seed]),
             _broken(300 + seed, r.choice(BROKEN))]
    _check(cases, tmp_path, ALL_EXPORTS)


@pytest.mark.slow
def test_fuzz_data_columns_named_like_export_columns(tmp_path: Path):
    """Data columns named like the export's own (source, ROUND, confidence, item_id, label in
    another case) through every export format; Label Studio records keep cotrain's provenance."""
    case = _project(7, "csv")
    for i, name in enumerate(["source", "ROUND", "confidence", "item_id", "Label"]):
        case.columns.append(name)
        for row in case.rows:
            row.append(f"data-{i}")
    _check([case], tmp_path, ALL_EXPORTS)
    tasks = json.loads((tmp_path / "c0" / "out" / "ls.json").read_text(encoding="utf-8"))
    assert {t["data"]["cotrain_source"] for t in tasks} <= {"gold", "review", "threshold", "debate"}


@pytest.mark.parametrize("records, match", [
    ([{"item_id": "{0}", "label": ["ant", "bee"]}],
     r"row 1 item '{0}': the answer holds 2 labels \('ant', 'bee'\); a review gives one"),
    ([{"item_id": "{0}", "label": "ant", "reviewed_at": "not a date"}],
     r"row 1 item '{0}': reviewed_at 'not a date' is no time: give ISO 8601"),
    ([{"item_id": "{0}", "label": "ant"}, {"item_id": "{1}", "label": "bee", "reviewed_at": "=NOW()"}],
     r"row 2 item '{1}': reviewed_at '=NOW\(\)' is no time"),
    ([{"item_id": "{0}", "label": "ant", "reviewed_at": "2999-01-01T00:00:00Z"}],
     r"row 1 item '{0}': reviewed_at 2999-01-01T00:00:00 is in the future"),
    ([{"item_id": "{0}", "label": "ant", "reviewer": "eve\nFAKE LOG LINE"}],
     r"row 1 item '{0}': reviewer 'eve\\nFAKE LOG LINE' holds a control character"),
    ([{"item_id": "{0}", "label": "ant", "reviewer": "e" * 300}],
     r"row 1 item '{0}': reviewer name is 300 characters; at most 256"),
    ([{"item_id": "{0}", "Label": "ant"}],
     r"r\.json: no record has a 'label' \(the reviewer's answer\): its 'Label' differs only in case or spaces"),
    ([{"item_id": "{0}", "label": "d" * 100_000}],
     r"row 1 item '{0}': label 'd{79}\.\.\. \(100,000 characters\) is not one of the task's labels"),
])
def test_review_answers_that_cannot_be_filed_are_refused_naming_the_record(store_copy: Path, tmp_path: Path,
                                                                           records, match):
    """A multi-label answer was skipped as 'without an answer', a time that is no time was filed
    as NULL, a reviewer's newline forged a log line, and a 100 kB label made a 100 kB error
    line; each is now one short line naming the record, and nothing is filed."""
    from store.exchange.reviews import task_fingerprint

    ids = _item_ids(store_copy, 2)
    recs = json.loads(json.dumps(records).replace("{0}", ids[0]).replace("{1}", ids[1]))
    for r in recs:  # a review file from export --select: it reads reviewer and reviewed_at
        r["cotrain_task"] = task_fingerprint(["ant", "bee", "cat"])
    (tmp_path / "r.json").write_text(json.dumps(recs))
    with pytest.raises(ReviewError, match=match.replace("{0}", ids[0]).replace("{1}", ids[1])) as e:
        api.import_reviews(store_copy, tmp_path / "r.json")
    assert len(_msg(e)) < 400
    assert _reviews(store_copy) == 0


def test_a_bad_reviewer_option_and_too_many_rounds_are_refused_naming_the_option(store_copy: Path,
                                                                                 tmp_path: Path):
    ids = _item_ids(store_copy, 1)
    (tmp_path / "r.csv").write_text(f"id,label\n{ids[0]},ant\n")
    with pytest.raises(ReviewError, match=r"^--reviewer: reviewer 'eve\\nadmin' holds a control character"):
        api.import_reviews(store_copy, tmp_path / "r.csv", reviewer="eve\nadmin")
    with pytest.raises(ReviewError, match=r"^rounds must be at most 100,000, not 2,147,483,647$"):
        api.import_reviews(store_copy, tmp_path / "r.csv", rounds=2**31 - 1)
    assert _reviews(store_copy) == 0
    assert api.import_reviews(store_copy, tmp_path / "r.csv", rounds=100_000).rounds_granted == 100_000


def test_a_parquet_review_file_without_a_label_column_says_so(store_copy: Path, tmp_path: Path):
    """It said 'no reviewed record in the file (1 without an answer)': the answers' column
    was renamed, not left empty."""
    ids = _item_ids(store_copy, 1)
    for name in ("Label", "label; DROP TABLE x"):
        pd.DataFrame({"item_id": ids, name: ["ant"]}).to_parquet(tmp_path / "r.parquet")
        with pytest.raises(ReviewError) as e:
            api.import_reviews(store_copy, tmp_path / "r.parquet")
        hint = ": its 'Label' differs only in case or spaces; rename it 'label'" if name == "Label" else ""
        assert _msg(e).endswith(f"r.parquet: no record has a 'label' (the reviewer's answer){hint}")
    assert _reviews(store_copy) == 0


def test_a_blank_answer_is_no_answer_in_every_format(store_copy: Path, tmp_path: Path):
    """Spaces in 'label' were skipped in a CSV but refused as label ' ' in JSON."""
    from store.exchange.reviews import task_fingerprint

    ids = _item_ids(store_copy, 2)
    task = task_fingerprint(["ant", "bee", "cat"])
    (tmp_path / "r.json").write_text(json.dumps([{"item_id": ids[0], "label": "  ", "cotrain_task": task},
                                                 {"item_id": ids[1], "label": "bee", "cotrain_task": task}]))
    rep = api.import_reviews(store_copy, tmp_path / "r.json")
    assert (rep.imported, rep.skipped) == (1, 1)
