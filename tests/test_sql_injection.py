"""No SQL is built from data: hostile column names, ids and labels pass through run, status,
export in every format, report and import-reviews as plain names, and run nothing.

The header below is the one that wrote PWNED.txt before identifiers were quoted by
``store.sql.ident``: a column name that closes its quote, ends the statement and COPYs.
"""
from __future__ import annotations

import json
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from orchestrator import api

EVIL = ('f_z" FROM (SELECT 1 AS __row, 1 AS f_a, 1 AS f_z); COPY (SELECT \'x\' AS msg) TO \'PWNED.txt\'; '
        'SELECT __row, 0.0 AS "f_q')
F_COLS = ["f_a", EVIL, 'f_sl "cm"', "f_semi;--", "f_new\nline", "f_ünï ☃ שלום"]
G_COLS = ["g_0", "g_'quote'", "g_1); DROP TABLE items; --"]
LABELS = ['a"b', "semi;--", "uni ☃ ש"]
TEXT = "text \"quoted\" ; -- 'x'"


def _hostile_project(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    n, n_test = 240, 60
    y = rng.integers(0, 3, n + n_test)
    centers_f = rng.normal(0, 2.0, (3, len(F_COLS)))
    centers_g = rng.normal(0, 2.0, (3, len(G_COLS)))
    df = pd.DataFrame(centers_f[y] + rng.normal(0, 1.0, (n + n_test, len(F_COLS))), columns=F_COLS)
    for j, c in enumerate(G_COLS):
        df[c] = centers_g[y, j] + rng.normal(0, 1.0, n + n_test)
    df.insert(0, 'id "x"', [f"it'{i}\"; DROP TABLE runs; --" if i % 7 == 0 else f"ünï-{i}" for i in range(n + n_test)])
    df[TEXT] = "some text"
    labels = np.asarray(LABELS, dtype=object)[y]
    gold = np.full(n + n_test, None, dtype=object)
    for c in range(3):
        gold[np.flatnonzero(y[:n] == c)[:4]] = LABELS[c]
    gold[n:] = labels[n:]
    df["lab;el"] = gold
    df["sp\"lit"] = ["train"] * n + ["test"] * n_test
    df.to_csv(tmp / "items.csv", index=False)
    cfg = {"task": {"labels": LABELS},
           "data": {"train": "items.csv", "id_column": 'id "x"', "label_column": "lab;el", "split_column": 'sp"lit'},
           "views": [{"name": "vf", "kind": "sklearn", "column_prefix": "f_"},
                     {"name": "vg", "kind": "sklearn", "column_prefix": "g_"}],
           "cotrain": {"max_rounds": 2, "policy": "threshold", "threshold": 0.8},
           "store": "run.duckdb"}
    (tmp / "cotrain.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return tmp / "cotrain.yaml"


def _no_pwned(*roots: Path) -> None:
    for root in roots:
        assert not list(root.rglob("PWNED*")), f"a statement from a column name ran under {root}"


def test_hostile_names_run_nothing_and_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # COPY ... TO 'PWNED.txt' would land here
    cfg = _hostile_project(tmp_path)
    store = tmp_path / "run.duckdb"
    result = api.run(cfg)
    assert result.status == "finished" and result.n_pseudo > 0
    _no_pwned(tmp_path, work)

    rep = api.status(store)
    assert rep.runs[0]["views"] == ["vf", "vg"] and len(rep.rounds) == 3

    src = pd.read_csv(tmp_path / "items.csv")
    out = tmp_path / "out"
    out.mkdir()
    n = api.export(store, out / "l.parquet")
    t = pq.read_table(out / "l.parquet")
    # every data column keeps its exact name (the label column becomes 'label')
    assert set(F_COLS + G_COLS + [TEXT, 'id "x"', 'sp"lit']) <= set(t.column_names)
    assert set(t.column("label").to_pylist()) <= set(LABELS) and t.num_rows == n
    train_ids = set(src[src['sp"lit'] == "train"]['id "x"'])
    assert set(t.column("item_id").to_pylist()) <= train_ids
    assert any("DROP TABLE" in i for i in t.column("item_id").to_pylist())
    assert api.export(store, out / "l.jsonl") == n
    rows = [json.loads(x) for x in (out / "l.jsonl").read_text(encoding="utf-8").splitlines()]
    assert EVIL in rows[0] and rows[0]["f_new\nline"] == pytest.approx(rows[0]["f_new\nline"])
    assert api.export(store, out / "l.csv") == n
    assert EVIL in pd.read_csv(out / "l.csv").columns
    assert api.export(store, out / "hf", "hf") == n
    assert api.export(store, out / "hfp.parquet", "hf-parquet") == n
    assert api.export(store, out / "ls.json", "label-studio") == n
    tasks = json.loads((out / "ls.json").read_text(encoding="utf-8"))
    assert {t_["data"]["item_id"] for t_ in tasks} == set(t.column("item_id").to_pylist())
    assert api.export(store, out / "ar.json", "argilla") == n
    assert api.export(store, out / "disputed.parquet", disputed_only=True, sample=5) >= 0
    html = api.report(store, out / "report.html")
    page = html.read_text(encoding="utf-8")
    assert escape(LABELS[0]) in page and escape(LABELS[1]) in page  # the labels, escaped, in the tables
    _no_pwned(tmp_path, work)

    # reviews name hostile ids and labels; they come back exactly
    pseudo = pq.read_table(out / "l.parquet").to_pandas()
    pseudo = pseudo[~pseudo.source.isin(["gold", "review"])].head(6)
    assert len(pseudo) == 6
    reviews = pd.DataFrame({"id": pseudo.item_id, "label": [LABELS[i % 3] for i in range(6)]})
    reviews.to_csv(out / "reviews.csv", index=False)
    summary = api.import_reviews(store, out / "reviews.csv")
    assert summary.imported == 6
    api.export(store, out / "after.parquet", source="review")
    back = pq.read_table(out / "after.parquet").to_pandas()
    assert dict(zip(back.item_id, back.label)) == dict(zip(reviews.id, reviews.label))
    _no_pwned(tmp_path, work)


def test_a_quote_in_a_column_name_is_only_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`f_sl "cm"` used to crash run and export with a traceback."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 120)
    df = pd.DataFrame({'f_sl "cm"': y * 3 + rng.normal(0, 1, 120), "g_w": y * 3 + rng.normal(0, 1, 120)})
    df["label"] = np.where(np.arange(120) < 10, np.where(y == 1, "pos", "neg"), None)
    df.to_csv(tmp_path / "d.csv", index=False)
    cfg = {"task": {"labels": ["neg", "pos"]}, "data": {"train": "d.csv"},
           "views": [{"name": "a", "kind": "sklearn", "columns": ['f_sl "cm"']},
                     {"name": "b", "kind": "sklearn", "column_prefix": "g_"}],
           "cotrain": {"max_rounds": 1, "policy": "threshold"}, "store": "s.duckdb"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert api.run(tmp_path / "c.yaml").status == "finished"
    assert api.export(tmp_path / "s.duckdb", tmp_path / "o.parquet") > 10
    assert 'f_sl "cm"' in pq.read_table(tmp_path / "o.parquet").column_names
