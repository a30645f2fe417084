"""Data in: CSV, JSONL, Parquet; ids; labels; held-out test; one-line errors that store nothing."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import yaml

from orchestrator import api
from orchestrator.config import load_config
from orchestrator.rounds import RoundRunner
from store.database import Store
from store.errors import CotrainError, DataError, ViewError
from tests.conftest import synthetic_frame, write_config


def _start(cfg_path: Path, store: Store) -> int:
    cfg = load_config(cfg_path)
    run_id, _ = RoundRunner(cfg, store, base_dir=cfg_path.parent).start()
    return run_id


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_formats_load_the_same_items(tmp_path: Path, fmt: str, mem_store: Store):
    run_id = _start(write_config(tmp_path, fmt=fmt), mem_store)
    counts = mem_store.con.execute(
        "SELECT split, count(*), count(gold_label) FROM items WHERE run_id = ? GROUP BY split ORDER BY split",
        [run_id]).fetchall()
    assert counts == [("test", 150, 150), ("train", 600, 15)]
    assert mem_store.scalar("SELECT item_id FROM items WHERE row_idx = 0") == "it00000"


def test_separate_test_file(tmp_path: Path, mem_store: Store):
    df = synthetic_frame()
    train, test = df[df.split == "train"], df[df.split == "test"]
    train.drop(columns=["truth", "split"]).to_csv(tmp_path / "train.csv", index=False)
    test.drop(columns=["truth", "split"]).to_csv(tmp_path / "test.csv", index=False)
    cfg = yaml.safe_load(write_config(tmp_path).read_text())
    cfg["data"] = {"train": "train.csv", "test": "test.csv", "id_column": "id"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run_id = _start(tmp_path / "c.yaml", mem_store)
    assert mem_store.scalar("SELECT count(*) FROM items WHERE run_id = ? AND split = 'test'", [run_id]) == 150


@pytest.mark.parametrize("change, column, lacking", [
    ("drop", "a_1", "test.csv"),   # its rows read NaN: blamed on a test item, after the run was created
    ("add", "a_9", "train.csv"),   # a prefix view picks it up: every train row read NaN, blamed on one
    ("drop", "notes", None),       # a column no view reads may be missing
])
def test_a_column_a_view_reads_must_be_in_both_data_files(tmp_path: Path, change: str, column: str, lacking):
    """A test file without a column a view reads was filled with NULLs by the permissive
    concatenation: a text view scored the test split on empty texts and the run's reported
    accuracy fell (0.88 against 0.89 for its other view alone) with exit 0. Now one line
    names the column and the file that lacks it, and nothing is stored."""
    df = synthetic_frame()
    df["notes"] = "x"
    train, test = df[df.split == "train"].drop(columns=["truth", "split"]), df[df.split == "test"].drop(
        columns=["truth", "split"])
    test = test.drop(columns=[column]) if change == "drop" else test.assign(**{column: 1.0})
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    cfg = yaml.safe_load(write_config(tmp_path).read_text())
    cfg["data"] = {"train": "train.csv", "test": "test.csv", "id_column": "id"}
    cfg["cotrain"]["max_rounds"] = 1
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    if lacking is None:
        assert api.run(tmp_path / "c.yaml", store=tmp_path / "s.duckdb").status == "finished"
        return
    with pytest.raises(DataError, match=rf"/{lacking}: column '{column}', which a view or the debate reads, is not"):
        api.run(tmp_path / "c.yaml", store=tmp_path / "s.duckdb")
    assert not (tmp_path / "s.duckdb").exists()  # refused before any run: the store it created is gone


def test_a_debate_field_must_be_in_both_data_files(tmp_path: Path):
    """A debate over test items would have read a column the test file lacks as empty text."""
    df = synthetic_frame()
    df["notes"] = "a note"
    train, test = (df[df.split == s].drop(columns=["truth", "split"]) for s in ("train", "test"))
    train.to_csv(tmp_path / "train.csv", index=False)
    test.drop(columns=["notes"]).to_csv(tmp_path / "test.csv", index=False)
    cfg = yaml.safe_load(write_config(tmp_path).read_text())
    cfg["data"] = {"train": "train.csv", "test": "test.csv", "id_column": "id"}
    cfg["debate"] = {"fields": ["notes"], "agents": [{"name": "a0", "model": "openai/fake",
                                                      "api_base": "http://127.0.0.1:9/v1"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(DataError, match=r"/test.csv: column 'notes', which a view or the debate reads"):
        api.run(tmp_path / "c.yaml", store=tmp_path / "s.duckdb")


def test_content_hash_ids_are_stable_and_distinct_for_duplicates(tmp_path: Path):
    df = pd.DataFrame({"text": ["good", "bad", "good", "fine"], "label": ["pos", "neg", None, None]})
    df.to_csv(tmp_path / "d.csv", index=False)
    cfg = {"task": {"labels": ["neg", "pos"]}, "data": {"train": "d.csv"},
           "views": [{"name": "t", "kind": "sklearn", "text": "text"}], "cotrain": {"policy": "self"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    ids = []
    for _ in range(2):
        with Store(":memory:") as st:
            rid = _start(tmp_path / "c.yaml", st)
            ids.append([r[0] for r in st.con.execute(
                "SELECT item_id FROM items WHERE run_id = ? ORDER BY row_idx", [rid]).fetchall()])
    assert ids[0] == ids[1]
    assert len(set(ids[0])) == 4
    assert ids[0][2] == ids[0][0] + "-2"  # same content as row 1, numbered in file order


def test_numeric_labels_match_declared_names(tmp_path: Path, mem_store: Store):
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": [0, 1, None, None]})
    df.to_csv(tmp_path / "d.csv", index=False)
    cfg = {"task": {"labels": [0, 1]}, "data": {"train": "d.csv"},
           "views": [{"name": "t", "kind": "sklearn", "columns": ["x"]}], "cotrain": {"policy": "self"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rid = _start(tmp_path / "c.yaml", mem_store)
    assert mem_store.scalar("SELECT list(gold_label ORDER BY row_idx) FROM items WHERE run_id = ?",
                            [rid]) == ["0", "1", None, None]


def _csv_run(tmp: Path, store: Store, ids: list[str], labels: list, declared: list, extra: str = "") -> int:
    """Write a CSV by hand (so nothing but the reader decides types) and start a run on it."""
    rows = [f"{i},{x},{lab}" for i, x, lab in zip(ids, range(len(ids)), labels)]
    (tmp / "d.csv").write_text("id,x,label\n" + "\n".join(rows) + "\n" + extra)
    cfg = {"task": {"labels": declared}, "data": {"train": "d.csv", "id_column": "id"},
           "views": [{"name": "t", "kind": "sklearn", "columns": ["x"]}], "cotrain": {"policy": "self"}}
    (tmp / "c.yaml").write_text(yaml.safe_dump(cfg))
    return _start(tmp / "c.yaml", store)


def test_csv_ids_and_labels_are_read_as_the_file_spells_them(tmp_path: Path, mem_store: Store):
    """The sniffer made 0.50 the id '0.5', 1/1/2024 the id '2024-01-01', 007 the id '7', and
    the label 3.0 '3', so a review naming the file's id found no item."""
    ids = ["0.50", "1/1/2024", "007", "1.5"]
    rid = _csv_run(tmp_path, mem_store, ids, ["1.0", "3.0", "", ""], ["1.0", "2.0", "3.0"])
    got = mem_store.con.execute("SELECT item_id, gold_label FROM items WHERE run_id = ? ORDER BY row_idx",
                                [rid]).fetchall()
    assert got == [("0.50", "1.0"), ("1/1/2024", "3.0"), ("007", None), ("1.5", None)]


def test_csv_booleans_and_integer_spellings_of_labels(tmp_path: Path, mem_store: Store):
    """True/False stay as written; an integer label written as a float (pandas, with gaps)
    still names the declared integer, unless the float's spelling is itself a label."""
    rid = _csv_run(tmp_path, mem_store, ["a", "b", "c"], ["True", "False", ""], ["True", "False"])
    assert mem_store.scalar("SELECT list(gold_label ORDER BY row_idx) FROM items WHERE run_id = ?",
                            [rid]) == ["True", "False", None]
    with Store() as st:
        rid = _csv_run(tmp_path, st, ["a", "b", "c", "d"], ["1.0", "0.0", " 2.0", ""], ["0", "1", "2"])
        assert st.scalar("SELECT list(gold_label ORDER BY row_idx) FROM items WHERE run_id = ?",
                         [rid]) == ["1", "0", "2", None]


def test_label_cells_are_trimmed_of_tabs_and_line_ends_too(tmp_path: Path, mem_store: Store):
    """README: label cells are read trimmed. Only spaces were: a hand-edited ``' b\t'`` was
    refused as the unknown label ``'b\t'``."""
    rid = _csv_run(tmp_path, mem_store, ["a", "b", "c", "d"], [" b\t", "\ta ", "\t", "2.0\t"], ["a", "b", "2"])
    assert mem_store.scalar("SELECT list(gold_label ORDER BY row_idx) FROM items WHERE run_id = ?",
                            [rid]) == ["b", "a", None, "2"]


def test_a_label_in_another_unicode_form_names_the_task_label(tmp_path: Path, mem_store: Store):
    """``café`` written with a combining accent (as macOS writes file and folder names) was
    refused as "label 'café' is not one of the task's labels ['café', ...]", the two alike
    on screen (a probe's finding); it now names the task's label, in the data and in reviews."""
    import unicodedata

    from store.items import label_spelling

    nfc, nfd = "caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9")
    assert nfd != nfc and label_spelling(nfd, [nfc, "tea"]) == nfc and label_spelling(nfc, [nfd]) == nfd
    assert label_spelling(nfc, [nfc]) is None and label_spelling("tea", [nfc]) is None
    rid = _csv_run(tmp_path, mem_store, ["a", "b", "c"], [nfd, "tea", nfc], [nfc, "tea"])
    assert mem_store.scalar("SELECT list(gold_label ORDER BY row_idx) FROM items WHERE run_id = ?",
                            [rid]) == [nfc, "tea", nfc]


def test_only_a_float_spelling_of_an_integer_names_it(tmp_path: Path, mem_store: Store):
    """'1_0', '1e1' and other digits are no spelling of 10 or 1: they are unknown labels."""
    from store.items import label_spellings

    col = pa.chunked_array([["1.0", "-2.00", "1_0", "1e1", "\u0661", "+3.0", "10", "4.5"]])
    assert label_spellings(col, ["1", "-2", "10", "3", "4"]) == {"1.0": "1", "-2.00": "-2", "+3.0": "3"}


def test_a_csv_split_column_of_booleans_still_matches_its_test_value(tmp_path: Path, mem_store: Store):
    df = synthetic_frame(n=60, n_gold=6, n_test=20).drop(columns=["truth"])
    df["is_test"] = df.pop("split") == "test"  # pandas writes True / False
    df.to_csv(tmp_path / "d.csv", index=False)
    cfg = {"task": {"labels": ["ant", "bee", "cat"]}, "data": {"train": "d.csv", "id_column": "id",
           "split_column": "is_test", "test_value": "true"}, "views": [{"name": "va", "kind": "sklearn",
                                                                         "column_prefix": "a_"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rid = _start(tmp_path / "c.yaml", mem_store)
    assert mem_store.scalar("SELECT count(*) FROM items WHERE run_id = ? AND split = 'test'", [rid]) == 20


def test_a_csv_train_file_beside_a_parquet_test_file(tmp_path: Path, mem_store: Store):
    """The CSV's label is read as text, the Parquet's as integers: they are joined as text."""
    df = synthetic_frame(n=60, n_gold=6, n_test=20).drop(columns=["truth"])
    df["label"] = df["label"].map({"ant": 0, "bee": 1, "cat": 2}).astype("Int64")
    df[df.split == "train"].drop(columns=["split"]).to_csv(tmp_path / "tr.csv", index=False)
    df[df.split == "test"].drop(columns=["split"]).to_parquet(tmp_path / "te.parquet", index=False)
    cfg = {"task": {"labels": [0, 1, 2]}, "data": {"train": "tr.csv", "test": "te.parquet", "id_column": "id"},
           "views": [{"name": "va", "kind": "sklearn", "column_prefix": "a_"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rid = _start(tmp_path / "c.yaml", mem_store)
    got = mem_store.con.execute("SELECT split, count(*), count(gold_label), list(DISTINCT gold_label ORDER BY "
                                "gold_label) FROM items WHERE run_id = ? GROUP BY split ORDER BY split",
                                [rid]).fetchall()
    assert [(s, n, g) for s, n, g, _ in got] == [("test", 20, 20), ("train", 60, 6)]
    assert set(got[0][3]) <= {"0", "1", "2"} and set(got[1][3]) - {None} == {"0", "1", "2"}


def test_an_unknown_csv_label_is_quoted_as_the_file_spells_it(tmp_path: Path, mem_store: Store):
    with pytest.raises(DataError, match=r"label '2\.50' is not one of the task's labels \['1', '2'\]"):
        _csv_run(tmp_path, mem_store, ["a", "b", "c"], ["1", "2.50", ""], ["1", "2"])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_columns_differing_only_in_case_are_refused(tmp_path: Path, fmt: str):
    """DuckDB's readers renamed ``F`` beside ``f`` to ``F_1`` without a word: a view naming ``F``
    was told it was no column, and one reading every column read a renamed copy."""
    df = synthetic_frame(n=60, n_gold=6, n_test=20).drop(columns=["truth"])
    df["A_0"] = df["a_0"] * 2
    path = tmp_path / f"d.{fmt}"
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path, index=False)
    cfg = {"task": {"labels": ["ant", "bee", "cat"]}, "data": {"train": path.name, "id_column": "id",
                                                               "split_column": "split"},
           "views": [{"name": "va", "kind": "sklearn", "columns": ["a_0", "A_0"]}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(DataError, match=r"the columns 'a_0' and 'A_0' differ only in case"):
        api.run(tmp_path / "c.yaml")
    assert not (tmp_path / "cotrain.duckdb").exists()  # the store this run created held nothing: removed


@pytest.mark.parametrize("sep,bare_cr", [(",", False), ("\t", False), (",", True)])
def test_a_nul_in_a_csv_header_is_refused_not_cut(tmp_path: Path, sep: str, bare_cr: bool):
    """The reader cut ``f_<NUL>1`` to ``f_`` without a word (a hostile probe's finding); a bare
    CR in a cell (read on a second path) skipped the check."""
    rows = [sep.join(["id", "f_\x001", "f_2", "label", "split"])]
    rows += [sep.join([f"i{i}", f"{i % 7}.5", str(i % 3), "ab"[i % 2], "test" if i > 50 else "train"])
             for i in range(60)]
    if bare_cr:
        rows.append(sep.join(["i_cr\rx", "1.5", "1", "a", "train"]))
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    cfg = {"task": {"labels": ["a", "b"]}, "data": {"train": "d.csv", "id_column": "id", "split_column": "split"},
           "views": [{"name": "v", "kind": "sklearn", "column_prefix": "f_"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(DataError, match=r"the header holds a NUL character \(in column 2\)"):
        api.plan(tmp_path / "c.yaml")


def test_a_refused_data_file_leaves_no_empty_store_and_keeps_an_existing_one(tmp_path: Path):
    """A config whose data file was missing left an empty 800 KB store and its progress file."""
    cfg = write_config(tmp_path)
    doc = yaml.safe_load(cfg.read_text())
    doc["data"]["train"] = "nothere.csv"
    cfg.write_text(yaml.safe_dump(doc))
    with pytest.raises(DataError, match="nothere.csv"):
        api.run(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cotrain.yaml", "items.csv"]
    doc["data"]["train"] = "items.csv"
    cfg.write_text(yaml.safe_dump(doc))
    assert api.run(cfg).status == "finished"
    doc["data"]["train"] = "nothere.csv"
    cfg.write_text(yaml.safe_dump(doc))
    with pytest.raises(DataError, match="nothere.csv"):
        api.run(cfg, new_run=True)
    assert [r["status"] for r in api.status(tmp_path / "run.duckdb").runs] == ["finished"]  # kept, as it was


def _rewrite_items(tmp: Path, edit) -> None:
    """Apply ``edit`` to the items CSV as a DataFrame and write it back."""
    df = pd.read_csv(tmp / "items.csv")
    edit(df)
    df.to_csv(tmp / "items.csv", index=False)


def _expect_error(tmp_path: Path, mutate, exc_type: type, match: str) -> Exception:
    df = synthetic_frame(n=60, n_gold=6, n_test=20)
    cfg_path = write_config(tmp_path, df)
    cfg = yaml.safe_load(cfg_path.read_text())
    mutate(tmp_path, cfg)
    cfg_path.write_text(yaml.safe_dump(cfg))
    store_path = tmp_path / "s.duckdb"
    with Store(store_path) as st:  # a store that already holds something
        st.con.execute("CREATE TABLE keep AS SELECT 42 AS x")
    with pytest.raises(exc_type, match=match) as info:
        api.run(cfg_path, store=store_path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, CotrainError)
    with Store(store_path) as st:  # nothing written, nothing lost
        assert st.scalar("SELECT count(*) FROM runs") == 0
        assert st.scalar("SELECT count(*) FROM items") == 0
        assert st.scalar("SELECT x FROM keep") == 42
        assert st.scalar("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'data_%'") == 0
    return info.value


def test_unknown_label_names_row_and_item(tmp_path: Path):
    bad: dict[str, object] = {}

    def mutate(tmp, cfg):
        df = pd.read_csv(tmp / "items.csv")
        first = df.index[df.label.notna()][1]
        df.loc[first, "label"] = "cow"
        df.to_csv(tmp / "items.csv", index=False)
        bad.update(row=int(first) + 1, item=df.loc[first, "id"])
    err = _expect_error(tmp_path, mutate, DataError, r"items.csv row \d+ item 'it\d+': label 'cow' is not one of")
    assert (err.row, err.item) == (bad["row"], bad["item"])


def test_missing_view_column(tmp_path: Path):
    def mutate(tmp, cfg):
        cfg["views"][0] = {"name": "va", "kind": "sklearn", "columns": ["a_0", "zzz"]}
    _expect_error(tmp_path, mutate, ViewError, r"view 'va': column 'zzz' is not a column of the data")


def test_a_column_listed_twice(tmp_path: Path):
    def mutate(tmp, cfg):
        cfg["views"][0] = {"name": "va", "kind": "sklearn", "columns": ["a_0", "a_1", "a_0"]}
    _expect_error(tmp_path, mutate, ViewError, r"view 'va': column 'a_0' is listed twice in 'columns'")


def test_missing_label_column(tmp_path: Path):
    def mutate(tmp, cfg):
        cfg["data"]["label_column"] = "gold"
    _expect_error(tmp_path, mutate, DataError, r"items.csv: label column 'gold' \(data.label_column\) is missing")


def test_missing_split_column_says_how_to_do_without_one(tmp_path: Path):
    def mutate(tmp, cfg):
        cfg["data"]["split_column"] = "fold"
    _expect_error(tmp_path, mutate, DataError, r"items.csv: split column 'fold' \(data.split_column\) is missing; "
                  r"remove data.split_column if the file holds no held-out rows \(data.test names a test file\)")


def test_empty_file(tmp_path: Path):
    def mutate(tmp, cfg):
        (tmp / "items.csv").write_text("")
    _expect_error(tmp_path, mutate, DataError, r"items.csv: file is empty")


def test_header_only_file(tmp_path: Path):
    def mutate(tmp, cfg):
        (tmp / "items.csv").write_text("id,a_0,a_1,a_2,a_3,b_0,b_1,b_2,b_3,label,split\n")
    _expect_error(tmp_path, mutate, DataError, r"items.csv: file has no data rows")


def test_missing_file(tmp_path: Path):
    def mutate(tmp, cfg):
        cfg["data"]["train"] = "absent.csv"
    _expect_error(tmp_path, mutate, DataError, r"absent.csv: file not found")


def test_duplicate_id(tmp_path: Path):
    def mutate(tmp, cfg):
        def edit(df):
            df.loc[5, "id"] = df.loc[2, "id"]
        _rewrite_items(tmp, edit)
    _expect_error(tmp_path, mutate, DataError, r"items.csv row 6 item 'it00002': duplicate id")


def test_test_item_without_gold(tmp_path: Path):
    def mutate(tmp, cfg):
        def edit(df):
            df.loc[df.index[df.split == "test"][0], "label"] = None
        _rewrite_items(tmp, edit)
    _expect_error(tmp_path, mutate, DataError, r"held-out test item has no gold label")


def test_no_labelled_items(tmp_path: Path):
    def mutate(tmp, cfg):
        def edit(df):
            df.loc[df.split == "train", "label"] = None
        _rewrite_items(tmp, edit)
    _expect_error(tmp_path, mutate, DataError, r"no labelled training rows")


def test_gold_of_one_class_only_is_one_error(tmp_path: Path):
    """Every view would abstain round after round (a warning per fit) and the run end with
    exit 0 and nothing; now one line says why before anything runs."""
    def mutate(tmp, cfg):
        def edit(df):
            train = df.split == "train"
            df.loc[train & (df.label != "ant"), "label"] = None
        _rewrite_items(tmp, edit)
    _expect_error(tmp_path, mutate, DataError, r"every labelled training row is 'ant': a view trained on one class")


def test_a_task_label_without_gold_is_warned_about(tmp_path: Path, caplog):
    """Gold for 2 of 3 labels: the views never predict the third, every pool item of it got
    another label, and the estimated precision (0.96 in a probe, 0.67 true) could not see it;
    the run said nothing. It warns once, naming the labels, before any round."""
    df = synthetic_frame(n=60, n_gold=6, n_test=20)
    cfg_path = write_config(tmp_path, df)
    _rewrite_items(tmp_path, lambda d: d.__setitem__("label", d["label"].where((d.split == "test") | (d.label != "cat"))))
    with caplog.at_level(logging.WARNING, logger="cotrain"):
        api.run(cfg_path)
    warned = [r for r in caplog.records if r.getMessage().startswith("task label(s)")]
    assert len(warned) == 1 and warned[0].args[0] == "'cat'"


def test_unknown_view_kind_plugin_path(tmp_path: Path):
    def mutate(tmp, cfg):
        cfg["views"][1] = {"name": "vb", "kind": "nosuch.module:View"}
    _expect_error(tmp_path, mutate, ViewError, r"unknown view kind 'nosuch.module:View'")


def test_bad_estimator_fails_before_anything_is_stored(tmp_path: Path):
    def mutate(tmp, cfg):
        cfg["views"][0]["estimator"] = "sklearn.linear_model.NoSuchModel"
    _expect_error(tmp_path, mutate, ViewError, r"view 'va': cannot build estimator 'sklearn.linear_model.NoSuchModel'")


def test_a_fraction_past_the_sniffers_sample_is_read_as_written_not_rounded(tmp_path: Path):
    """DuckDB types a CSV column from a sample of rows and its cast to an integer rounds: a
    '1.5' at row 25,001 of an integer-looking column was read as 2."""
    from orchestrator.data import read_table

    n = 30_000
    x = [str(i) for i in range(n)]
    x[25_000] = "1.5"
    p = tmp_path / "late.csv"
    p.write_text("x,count,label\n" + "".join(f"{v},{i},a\n" for i, v in enumerate(x)))
    table = read_table(p, "csv")
    assert pa.types.is_floating(table.schema.field("x").type) and table.column("x")[25_000].as_py() == 1.5
    assert table.column("x")[24_999].as_py() == 24_999.0
    assert pa.types.is_integer(table.schema.field("count").type)  # a column of integers stays one


def test_a_test_value_that_matches_no_row_is_refused_not_trained_on(tmp_path: Path):
    """test_value 'Test' for a column of 'test': the 20 held-out rows, every one labelled, became
    training gold without a word (0 test items)."""
    def mutate(tmp, cfg):
        cfg["data"]["test_value"] = "Test"

    _expect_error(tmp_path, mutate, DataError,
                  r"items\.csv: no row of split column 'split' equals test_value 'Test' \(it holds 'train', "
                  r"'test'\): every held-out row would train; set data\.test_value")


@pytest.mark.parametrize("value", ["test", "holdout"])
def test_a_test_value_without_a_split_column_is_refused_not_ignored(tmp_path: Path, value: str):
    """``test_value: test`` with no ``split_column``: every row trained, the held-out ones as gold
    labels, and the run said "0 test items" (a probe's finding). The default alone still loads."""
    from orchestrator.config import parse_config
    from store.errors import ConfigError

    def mutate(tmp, cfg):
        cfg["data"].pop("split_column", None)
        cfg["data"]["test_value"] = value

    err = _expect_error(tmp_path, mutate, ConfigError, r"data.test_value needs data.split_column")
    assert "test rows train as gold" in str(err)
    (tmp_path / "ok").mkdir()
    cfg = yaml.safe_load(write_config(tmp_path / "ok", synthetic_frame(n=60, n_gold=6, n_test=20)).read_text())
    cfg["data"].pop("split_column", None)
    assert parse_config(cfg).data.test_value == "test"


def test_csv_columns_keep_their_values_exactly_and_yes_no_is_text_a_view_names(tmp_path: Path):
    """A 20-digit integer stays exact (HUGEINT, not a rounded DOUBLE); yes/no is text, which a
    view over columns refuses in one line that says how to recode it."""
    from orchestrator.csv_reader import read_csv

    p = tmp_path / "t.csv"
    p.write_text("id,big,yn\n1,12345678901234567890,yes\n2,2,no\n")
    t = read_csv(p)
    assert str(t.column("big")[0].as_py()) == "12345678901234567890" and t.column("yn").to_pylist() == ["yes", "no"]
    df = synthetic_frame(n=60, n_gold=6, n_test=20)
    df["a_3"] = ["yes", "no"] * 40
    with pytest.raises(ViewError, match=r"column 'a_3' is not numeric: item 'it\d+' holds '(yes|no)' \(a view over "
                                        r"columns reads numbers, or true/false; recode the column, e.g. yes/no as 1/0\)"):
        api.run(write_config(tmp_path, df))


def test_a_bare_cr_file_is_checked_as_read_and_named_as_written(tmp_path: Path):
    """On the bare-CR path the checks read the copy the reader read: a one-column file whose
    quoted header holds a comma was refused (Python's csv module refuses a bare CR), and a
    refused header showed the reader's private stand-in for the CR."""
    from orchestrator.csv_reader import read_csv

    one = tmp_path / "one.csv"
    one.write_bytes(b'"text, here"\n' + b"".join(b"row %d\n" % i for i in range(20)) + b"a\rb\n")
    table = read_csv(one)
    assert table.column_names == ["text, here"] and table.num_rows == 21 and "a\rb" in table.column(0).to_pylist()
    dup = tmp_path / "dup.csv"
    dup.write_bytes(b"id,a\r,a\r,label\n" + b"".join(b"i%d,1,2,x\n" % i for i in range(5)) + b"i9,c\rd,2,x\n")
    with pytest.raises(DataError) as err:
        read_csv(dup)
    assert "column 'a\\r' appears more than once" in str(err.value) and "'a\\r_1'" in str(err.value)
    assert not any(0xE000 <= ord(ch) <= 0xF8FF for ch in str(err.value))
