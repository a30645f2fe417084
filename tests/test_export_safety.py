"""Exports are safe to open (issue 11, item 6): CSV cells a spreadsheet would run as formulas
are escaped as OWASP recommends; an existing file is replaced only with ``force``; the store
itself, its write-ahead log and the run's input data are never written over, force or not.
Every test reads a real run's store and the files on disk, never terminal text."""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from orchestrator import api
from orchestrator.cli import app
from store.database import Store
from store.errors import CotrainError, StoreError
from tests.conftest import synthetic_frame, write_config

#: item text a spreadsheet would run as a formula (or as its first cell's control character)
HOSTILE = ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "\tx", "\rx"]
NORMAL = "a=b, -c +d @e"          # formula characters inside the text: left alone
HOSTILE_ID = "-it-hostile"        # an item id is a text cell too
HOSTILE_COLUMN = "-note"          # and so is a header cell


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A finished two-view sklearn run whose gold items carry hostile text. Its input is JSONL:
    DuckDB's CSV sniffer cannot read a quoted cell holding a bare CR (``\rx``) yet."""
    tmp = tmp_path_factory.mktemp("safety")
    df = synthetic_frame()
    gold = df.index[df["label"].notna() & (df["split"] == "train")].tolist()
    df["note"] = "plain note"
    df[HOSTILE_COLUMN] = "x"
    hostile_ids = []
    for i, text in zip(gold, HOSTILE):
        df.loc[i, "note"] = text
        hostile_ids.append(df.loc[i, "id"])
    df.loc[gold[len(HOSTILE)], "note"] = NORMAL
    normal_id = df.loc[gold[len(HOSTILE)], "id"]
    df.loc[gold[len(HOSTILE) + 1], "id"] = HOSTILE_ID
    api.run(write_config(tmp, df, fmt="jsonl", policy="k_best", k=12, max_rounds=2))
    return {"store": tmp / "run.duckdb", "input": tmp / "items.jsonl", "hostile": dict(zip(hostile_ids, HOSTILE)),
            "normal_id": normal_id}


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> dict:
    """A finished run read from a CSV file: the input people most often export over."""
    tmp = tmp_path_factory.mktemp("safety_csv")
    api.run(write_config(tmp, max_rounds=1))
    return {"store": tmp / "run.duckdb", "input": tmp / "items.csv"}


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- (a) formula escaping
def test_csv_cells_that_start_a_formula_get_a_leading_quote(run, tmp_path: Path):
    stored_notes = {}
    with Store(run["store"], read_only=True) as st:  # the run stored the hostile text unchanged
        stored_notes = dict(st.con.execute('SELECT id, note FROM data_1').fetchall())
    assert {i: stored_notes[i] for i in run["hostile"]} == run["hostile"]

    out = tmp_path / "labels.csv"
    n = api.export(run["store"], out)
    header, rows = _rows(out)
    assert len(rows) == n > len(HOSTILE)
    by_id = {r["item_id"]: r for r in rows}
    for item, text in run["hostile"].items():
        assert by_id[item]["note"] == "'" + text
    assert by_id[run["normal_id"]]["note"] == NORMAL
    others = [r["note"] for i, r in by_id.items() if i not in run["hostile"] and i != run["normal_id"]]
    assert others and set(others) == {"plain note"}
    assert "'" + HOSTILE_ID in by_id and HOSTILE_ID not in by_id
    assert "'" + HOSTILE_COLUMN in header and HOSTILE_COLUMN not in header
    assert header[:7] == ["item_id", "label", "source", "source_views", "agreeing_views", "round", "confidence"]
    # numbers stay numbers: a negative feature keeps its sign, no quote
    negative = [r["a_0"] for r in rows if r["a_0"].startswith("-")]
    assert negative and all(float(v) < 0 for v in negative)
    assert all(r["source_views"].startswith("[") for r in rows)

    raw = tmp_path / "raw.csv"
    assert api.export(run["store"], raw, escape_formulas=False) == n
    raw_header, raw_rows = _rows(raw)
    raw_by_id = {r["item_id"]: r for r in raw_rows}
    for item, text in run["hostile"].items():
        assert raw_by_id[item]["note"] == text
    assert HOSTILE_ID in raw_by_id and HOSTILE_COLUMN in raw_header
    # the two files differ in exactly those cells: text cells that start a formula
    unescape = {"'" + HOSTILE_COLUMN: HOSTILE_COLUMN}
    assert [unescape.get(h, h) for h in header] == raw_header
    text_cols = {"item_id", "id", "label", "source", "source_views", "agreeing_views", "split", "note",
                 HOSTILE_COLUMN}
    changed = 0
    for esc, plain in zip(rows, raw_rows):
        for k, v in esc.items():
            want = plain[unescape.get(k, k)]
            if unescape.get(k, k) in text_cols and want[:1] in ("=", "+", "-", "@", "\t", "\r"):
                want, changed = "'" + want, changed + 1
            assert v == want
    assert changed == len(HOSTILE) + 2  # the six notes, and the id as item_id and as the data's id


def test_escaping_leaves_an_ordinary_csv_byte_identical(run, tmp_path: Path):
    """Pseudo-labelled rows hold no hostile cell: escaping on or off writes the same bytes
    (lists, numbers and text render exactly as before)."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    cols = {"source", "note"}
    n = api.export(run["store"], a, include_gold=False)
    assert n > 0 and api.export(run["store"], b, include_gold=False, escape_formulas=False) == n
    header, rows = _rows(a)
    assert cols <= set(header) and {r["note"] for r in rows} == {"plain note"}
    # only the hostile header differs between the two files
    assert a.read_bytes().replace(b"'" + HOSTILE_COLUMN.encode(), HOSTILE_COLUMN.encode()) == b.read_bytes()


def test_other_formats_keep_the_text_as_it_is(run, tmp_path: Path):
    """Escaping is for CSV opened in a spreadsheet; JSONL and Parquet carry the text unchanged."""
    api.export(run["store"], tmp_path / "l.jsonl")
    api.export(run["store"], tmp_path / "l.parquet")
    for df in (pd.read_json(tmp_path / "l.jsonl", lines=True, dtype=False), pd.read_parquet(tmp_path / "l.parquet")):
        notes = df.set_index("item_id")["note"]
        assert {i: notes[i] for i in run["hostile"]} == run["hostile"]


def test_jsonl_export_is_strict_json_with_infinite_values(tmp_path: Path):
    """DuckDB wrote inf as ``Infinity``, which JSON has no word for: a strict parser refused the line."""
    import json

    df = synthetic_frame(n=120, n_gold=30, n_test=30)
    df["score"] = [float("inf"), float("-inf"), float("nan")] * 50
    df["vec"] = [[1.0, float("inf")]] * 150
    df["st"] = [{"x": float("nan"), "y": "q", "z": [[float("-inf")]]}] * 150
    api.run(write_config(tmp_path, df, fmt="parquet", max_rounds=1))
    n = api.export(tmp_path / "run.duckdb", tmp_path / "o.jsonl")
    assert api.export(tmp_path / "run.duckdb", tmp_path / "o.json") == n  # one array, the same rows

    def refuse(word: str) -> None:
        raise ValueError(word)
    rows = [json.loads(line, parse_constant=refuse) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert json.loads((tmp_path / "o.json").read_text(), parse_constant=refuse) == rows
    assert len(rows) == n > 0
    assert {r["score"] for r in rows} == {None} and {tuple(r["vec"]) for r in rows} == {(1.0, None)}
    assert all(r["st"] == {"x": None, "y": "q", "z": [[None]]} for r in rows)
    assert all(0.0 <= r["confidence"] <= 1.0 for r in rows)
    api.export(tmp_path / "run.duckdb", tmp_path / "o.parquet")  # Parquet has the values: they stay
    assert pd.read_parquet(tmp_path / "o.parquet")["score"].isna().sum() < n
    # CSV keeps them as text; -inf would be a formula to a spreadsheet (#NAME?), so it gets the quote
    api.export(tmp_path / "run.duckdb", tmp_path / "o.csv")
    _, csv_rows = _rows(tmp_path / "o.csv")
    assert {r["score"] for r in csv_rows} == {"inf", "'-inf", ""}  # NaN was read as no value
    assert {r["a_0"] for r in csv_rows} == {str(x) for x in df.set_index("id").loc[[r["item_id"] for r in csv_rows],
                                                                                     "a_0"]}


# ---------------------------------------------------------------- (b) no silent overwrite
@pytest.mark.parametrize("fmt, name", [("csv", "x.csv"), ("jsonl", "x.jsonl"), ("parquet", "x.parquet"),
                                       ("hf-parquet", "x.parquet"), ("label-studio", "x.json")])
def test_an_existing_file_is_replaced_only_with_force(run, tmp_path: Path, fmt: str, name: str):
    out = tmp_path / name
    out.write_bytes(b"precious bytes\n")
    with pytest.raises(StoreError) as err:
        api.export(run["store"], out, fmt)
    assert str(out) in str(err.value) and "already exists" in str(err.value) and "\n" not in str(err.value)
    assert out.read_bytes() == b"precious bytes\n"
    n = api.export(run["store"], out, fmt, force=True)
    assert n > 0 and out.read_bytes() != b"precious bytes\n"
    if fmt == "csv":
        assert len(_rows(out)[1]) == n


def test_a_review_sidecar_is_not_overwritten_either(run, tmp_path: Path):
    out = tmp_path / "tasks.json"
    sidecar = tmp_path / "tasks.label_config.xml"
    sidecar.write_text("<mine/>")
    with pytest.raises(StoreError, match="tasks.label_config.xml already exists"):
        api.export(run["store"], out, "label-studio")
    assert sidecar.read_text() == "<mine/>" and not out.exists()
    api.export(run["store"], out, "label-studio", force=True)
    assert sidecar.read_text().startswith("<View>")


def test_hf_writes_into_a_non_empty_folder_only_with_force(run, tmp_path: Path):
    pytest.importorskip("datasets")
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty"):
        api.export(run["store"], folder, "hf")
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]
    n = api.export(run["store"], folder, "hf", force=True)
    assert n > 0 and (folder / "state.json").is_file() and (folder / "keep.txt").read_text() == "mine"


# ---------------------------------------------------------------- (c) never the store or the input
@pytest.mark.parametrize("which", ["csv_run", "run"])
def test_the_store_and_the_input_are_never_overwritten_even_with_force(which, request, tmp_path: Path):
    store, data = request.getfixturevalue(which)["store"], request.getfixturevalue(which)["input"]
    before = (_sha(store), _sha(data))
    wal = Path(str(store) + ".wal")
    link, hard = tmp_path / "link.csv", tmp_path / "hard.csv"
    link.symlink_to(data)
    os.link(store, hard)  # a hard link: another name of the store's own bytes
    cases = [(store, "csv", f"refusing to overwrite the store itself: {store}"),
             (store, "parquet", "the store itself"), (store, "jsonl", "the store itself"),
             (store, "hf-parquet", "the store itself"), (store, "hf", "the store itself"),
             (store.parent / ".." / store.parent.name / store.name, "csv", "the store itself"),
             (hard, "csv", "the store itself"),
             (wal, "csv", f"refusing to overwrite the store's write-ahead log: {wal}"),
             (Path(str(store) + ".progress.json"), "json", "refusing to overwrite the store's progress file"),
             (data, None, f"refusing to overwrite run 1's input data (data.train): {data}"),
             (data, "jsonl", "input data"), (data, "label-studio", "input data"),
             (link, None, "input data")]
    for force in (False, True):
        for target, fmt, message in cases:
            with pytest.raises(StoreError) as err:
                api.export(store, target, fmt, force=force)
            assert message in str(err.value) and "\n" not in str(err.value), (target, fmt, force)
    assert (_sha(store), _sha(data)) == before and not wal.exists()
    with Store(store, read_only=True) as st:  # the store still opens and reads
        assert st.latest_run() == 1 and st.con.execute("SELECT count(*) FROM items").fetchone()[0] == 750
    assert str(data).endswith(".csv" if which == "csv_run" else ".jsonl")


def test_no_path_a_device_and_an_empty_hf_dataset_are_refused_in_one_line(csv_run, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    """'' was the working folder (an hf export with --force filled it), /dev/null a FileExistsError
    traceback, '-' (meant as stdout) an hf folder named '-', and a filter that kept no row wrote an
    hf dataset that datasets cannot load."""
    store = csv_run["store"]
    monkeypatch.chdir(tmp_path)
    for target, fmt, message in (("", "hf", "no output path given"), (".", "hf", "no output path given ('.')"),
                                 ("./", "hf", "no output path given"), (str(tmp_path), "hf", "is the working folder"),
                                 ("/dev/null", "csv", "/dev/null is not a regular file; name a file to write"),
                                 ("-", None, "'-' reads as standard output"), ("-", "csv", "'-' reads as standard")):
        with pytest.raises(StoreError) as err:
            api.export(store, target, fmt, force=True)
        assert message in str(err.value) and "\n" not in str(err.value)
    for fmt, out in (("hf", tmp_path / "empty_hf"), ("hf-parquet", tmp_path / "empty.parquet")):
        with pytest.raises(StoreError, match=f"no row matches the filters, and an empty {fmt} dataset does not load"):
            api.export(store, out, fmt, include_gold=False, min_p_correct=1.0)
        assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    assert api.export(store, tmp_path / "empty.csv", include_gold=False, min_p_correct=1.0) == 0  # a file may be


def test_an_image_folder_input_protects_every_path_inside_it(tmp_path: Path):
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "1.png").write_bytes(b"\x89PNG")
    with Store(tmp_path / "s.duckdb") as st:
        st.create_run(config={"data": {"train": str(folder), "test": None, "label_column": "label"}},
                      config_hash="x", seed=0, code_version="test", labels=["cat"], views=["v"],
                      label_column="label", policy="k_best", feeding="cross", max_rounds=1,
                      input_files=[str(folder)])
    for target, fmt in [(folder / "x.csv", None), (folder / "cat" / "new.jsonl", None), (folder, "hf"),
                        (folder / "cat" / "1.png", "csv")]:
        with pytest.raises(StoreError, match="refusing to overwrite run 1's input data"):
            api.export(tmp_path / "s.duckdb", target, fmt, force=True)
    with pytest.raises(StoreError, match="input data"):
        api.report(tmp_path / "s.duckdb", folder / "report.html")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == ["cat", "cat/1.png"]
    assert (folder / "cat" / "1.png").read_bytes() == b"\x89PNG"


@pytest.mark.parametrize("column", ["VARCHAR", "STRUCT(bytes BLOB, path VARCHAR)"])
def test_an_image_an_image_column_names_is_input_data_too(tmp_path: Path, column: str):
    """``export ... images/x.png --force`` replaced an image the run's ``image:`` column reads
    (only data files and image folders were protected; a hostile probe's finding). Any
    spelling of its path is refused; a new file beside it is written."""
    (tmp_path / "images").mkdir()
    png = tmp_path / "images" / "a_1.png"
    png.write_bytes(b"\x89PNG")
    data = tmp_path / "items.csv"
    data.write_text("image,label\nimages/a_1.png,cat\n")
    with Store(tmp_path / "s.duckdb") as st:
        st.create_run(config={"data": {"train": str(data)}}, config_hash="x", seed=0, code_version="test",
                      labels=["cat"], views=["v"], label_column="label", policy="auto", feeding="cross",
                      max_rounds=1, input_files=[str(data)], image_fields=["image"])
        value = "'./images/a_1.png'" if column == "VARCHAR" else "{'bytes': NULL, 'path': 'images/a_1.png'}"
        st.con.execute(f"CREATE TABLE data_1 (image {column}, label VARCHAR)")
        st.con.execute(f"INSERT INTO data_1 VALUES ({value}, 'cat')")
    for target in (png, tmp_path / "images" / ".." / "images" / "a_1.png"):
        with pytest.raises(StoreError, match=r"refusing to overwrite run 1's input image \(column 'image'\)"):
            api.export(tmp_path / "s.duckdb", target, "csv", force=True)
    with pytest.raises(StoreError, match="input image"):
        api.report(tmp_path / "s.duckdb", png)
    assert png.read_bytes() == b"\x89PNG"
    from store.exchange.export import guard_output, image_input

    (tmp_path / "pics").mkdir()  # an absolute path in the column
    (tmp_path / "pics" / "c_1.png").write_bytes(b"\x89PNG")
    with Store(tmp_path / "s.duckdb") as st:
        path = str(tmp_path / "pics" / "c_1.png")
        st.con.execute("INSERT INTO data_1 (image, label) VALUES " +
                       ("(?, 'cat')" if column == "VARCHAR" else "({'bytes': NULL, 'path': ?}, 'cat')"), [path])
        assert image_input(st, tmp_path / "pics" / "c_1.png") == "run 1's input image (column 'image')"
    with Store(tmp_path / "s.duckdb", read_only=True) as st:  # a new file beside it is no input: allowed
        guard_output(st, [tmp_path / "images" / "b_1.csv", tmp_path / "images" / "a_2.png"], force=True)


# ---------------------------------------------------------------- (d) report --out
def test_report_refuses_the_store_and_the_input_but_replaces_a_report(csv_run, tmp_path: Path):
    store, data = csv_run["store"], csv_run["input"]
    before = (_sha(store), _sha(data))
    with pytest.raises(StoreError, match="refusing to overwrite the store itself"):
        api.report(store, store)
    with pytest.raises(StoreError, match="refusing to overwrite run 1's input data"):
        api.report(store, data)
    assert (_sha(store), _sha(data)) == before
    pytest.importorskip("matplotlib")
    page = tmp_path / "report.html"
    api.report(store, page)
    page.write_text(page.read_text().replace("</body>", "an older report</body>"))
    assert api.report(store, page) == page and "an older report" not in page.read_text()
    other = tmp_path / "cotrain.yaml"  # any other file stays: --out cotrain.yaml replaced the config
    other.write_text("task: {}")
    with pytest.raises(StoreError, match="already exists and is not a cotrain report"):
        api.report(store, other)
    assert other.read_text() == "task: {}"
    for write in (lambda out: api.report(store, out), lambda out: api.export(store, out)):
        with pytest.raises(StoreError, match="is a file, not a folder"):
            write(other / "x.csv")


# ---------------------------------------------------------------- (e) the CLI flags
def test_cli_force_and_no_escape_formulas(run, csv_run, tmp_path: Path):
    runner = CliRunner()
    store = str(run["store"])
    item, text = next(iter(run["hostile"].items()))
    out = tmp_path / "c.csv"
    out.write_text("old")
    res = runner.invoke(app, ["export", store, str(out)])
    assert res.exit_code == 1 and out.read_text() == "old"
    res = runner.invoke(app, ["export", store, str(out), "--force"])
    assert res.exit_code == 0
    assert {r["item_id"]: r["note"] for r in _rows(out)[1]}[item] == "'" + text
    res = runner.invoke(app, ["export", store, str(out), "--force", "--no-escape-formulas"])
    assert res.exit_code == 0
    assert {r["item_id"]: r["note"] for r in _rows(out)[1]}[item] == text
    store, data = str(csv_run["store"]), csv_run["input"]
    before = (_sha(csv_run["store"]), _sha(data))
    for args in (["export", store, str(data), "--force"], ["export", store, store, "--format", "csv", "--force"],
                 ["report", store, "--out", store], ["report", store, "--out", str(data)]):
        res = runner.invoke(app, args)
        assert res.exit_code == 1 and isinstance(res.exception, SystemExit), args
    assert (_sha(csv_run["store"]), _sha(data)) == before


# ---------------------------------------------------------------- escaped CSV back as reviews
def test_an_escaped_csv_export_imports_back_as_reviews(run, tmp_path: Path):
    """A reviewer keeps the exported CSV's item_id and label columns as their answers and hands
    them back: escaped ids read as the items. (The whole export is refused: its label column
    is cotrain's, not a reviewer's.)"""
    store = tmp_path / "copy.duckdb"
    shutil.copy(run["store"], store)
    out = tmp_path / "labels.csv"
    n = api.export(store, out)
    header, rows = _rows(out)
    assert any(r["item_id"] == "'" + HOSTILE_ID for r in rows)
    hostile = next(r for r in rows if r["item_id"] == "'" + HOSTILE_ID)  # corrected, so that its review is filed
    hostile["label"] = next(r["label"] for r in rows if r["label"] != hostile["label"])
    with open(tmp_path / "review.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["item_id", "label"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    summary = api.import_reviews(store, tmp_path / "review.csv", rounds=0)
    with Store(store, read_only=True) as st:
        n_gold = st.scalar("SELECT count(*) FROM items WHERE split = 'train' AND gold_label IS NOT NULL")
        hostile_gold = st.scalar("SELECT count(*) FROM items WHERE item_id = ? AND gold_label IS NOT NULL",
                                 [HOSTILE_ID])
    # the gold, read as itself, stays gold (not filed); the corrected hostile item is filed
    assert (summary.imported, summary.unchanged) == (n - n_gold + hostile_gold, n_gold - hostile_gold)
    with Store(store, read_only=True) as st:
        ids = {r[0] for r in st.con.execute("SELECT item_id FROM reviews").fetchall()}
    assert HOSTILE_ID in ids and "'" + HOSTILE_ID not in ids
    with pytest.raises(CotrainError):  # a quote before an ordinary id is not an escape
        bad = tmp_path / "bad.csv"
        bad.write_text("item_id,label\n'it00001,ant\n")
        api.import_reviews(store, bad, rounds=0)


def test_a_value_starting_with_a_quote_survives_the_round_trip(tmp_path: Path):
    """Labels ``=x`` and ``'=x`` (and ids ``'-0`` and ``-1``) used to export alike (``'=x``),
    so handing the export back unchanged relabelled an item. Now ``'...`` is escaped as well."""
    import yaml

    df = synthetic_frame(n=120, n_gold=30, n_test=30)
    labels = {"ant": "=x", "bee": "'=x", "cat": "plain"}
    df["label"] = df["label"].map(labels)
    df.loc[0, "id"], df.loc[1, "id"] = "'-0", "-1"
    cfg = write_config(tmp_path, df, fmt="jsonl", max_rounds=1)
    raw = yaml.safe_load(cfg.read_text())
    raw["task"]["labels"] = list(labels.values())
    cfg.write_text(yaml.safe_dump(raw))
    api.run(cfg)
    store, out = tmp_path / "run.duckdb", tmp_path / "labels.csv"
    api.export(store, out)
    cells = {r["item_id"]: r["label"] for r in _rows(out)[1]}
    with Store(store, read_only=True) as st:
        gold = dict(st.con.execute("SELECT item_id, gold_label FROM items WHERE gold_label IS NOT NULL "
                                   "AND split = 'train'").fetchall())

    def esc(v: str) -> str:
        return "'" + v if v[:1] in "=+-@'" else v
    assert {"'-0", "-1"} <= set(gold) and {"=x", "'=x"} <= set(gold.values())
    assert {i: cells[esc(i)] for i in gold} == {i: esc(v) for i, v in gold.items()}
    assert cells["''-0"] == esc(gold["'-0"]) and "''=x" in cells.values() and "'=x" in cells.values()
    review = tmp_path / "review.csv"  # the export's cells handed back unchanged
    with open(review, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "label"])
        w.writerows([esc(i), cells[esc(i)]] for i in gold)
    summary = api.import_reviews(store, review, rounds=0)  # each cell read as its gold label: nothing to file
    assert (summary.imported, summary.unchanged) == (0, len(gold))


def test_csv_fields_are_exported_as_written_not_as_the_sniffer_typed_them(tmp_path: Path):
    """DuckDB's sniffer typed 'yes'/'no' and 'T'/'F' as booleans (exported 'true'/'false'),
    '1:00' as a TIME (exported '01:00:00') and a column of '-inf' as a DATE of -infinity,
    which the CSV export then wrote without its formula escape (a probe's finding). Only
    true/false stay booleans; the rest are read as written."""
    import datetime

    df = synthetic_frame(n=120, n_gold=30, n_test=30)
    df["flag"] = ["yes", "no"] * 75
    df["tf"] = ["T", "F", "F"] * 50
    df["bool"] = ["True", "false", "FALSE"] * 50
    df["clock"] = ["1:00", "23:59"] * 75
    df["day"] = "2024-03-01"
    df["low"] = "-inf"
    api.run(write_config(tmp_path, df, max_rounds=1))
    api.export(tmp_path / "run.duckdb", tmp_path / "o.csv")
    _, rows = _rows(tmp_path / "o.csv")
    by_id = df.set_index("id")
    for col in ("flag", "tf", "clock", "day"):
        assert [r[col] for r in rows] == [by_id.loc[r["item_id"], col] for r in rows], col
    assert {r["low"] for r in rows} == {"'-inf"}  # a number, -inf, escaped as before
    assert {r["bool"] for r in rows} == {"true", "false"}  # true/false in any case: booleans
    api.export(tmp_path / "run.duckdb", tmp_path / "o.parquet")
    out = pd.read_parquet(tmp_path / "o.parquet")
    assert out["flag"].tolist() == [by_id.loc[i, "flag"] for i in out["item_id"]] and out["bool"].dtype == bool
    # a date column from a typed file is text to a spreadsheet: -infinity gets the escape too
    days = synthetic_frame(n=120, n_gold=30, n_test=30)
    days["when"] = [datetime.date(2024, 3, 1)] * 150
    (tmp_path / "p").mkdir()
    cfg = write_config(tmp_path / "p", days, fmt="parquet", max_rounds=1)
    import duckdb
    with duckdb.connect() as con:  # pandas cannot hold a date of -infinity: write it with DuckDB
        con.execute(f"COPY (SELECT * REPLACE (CASE WHEN id = 'it00000' THEN '-infinity'::DATE ELSE \"when\" END "
                    f"AS \"when\") FROM '{tmp_path / 'p' / 'items.parquet'}') TO '{tmp_path / 'p' / 'x.parquet'}'")
    os.replace(tmp_path / "p" / "x.parquet", tmp_path / "p" / "items.parquet")
    api.run(cfg)
    api.export(tmp_path / "p" / "run.duckdb", tmp_path / "p.csv")
    _, rows = _rows(tmp_path / "p.csv")
    assert {r["when"] for r in rows} <= {"2024-03-01", "'-infinity"} and "'-infinity" in {r["when"] for r in rows}
