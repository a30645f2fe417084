"""Export round-trip: Parquet (loads with HF datasets), JSONL, CSV; provenance and filters."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from orchestrator import api
from store.database import Store
from store.errors import StoreError
from tests.conftest import write_config, write_estimates


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("exp")
    api.run(write_config(tmp, policy="k_best", k=12, max_rounds=3))
    return tmp / "run.duckdb"


def _stored(store: Path) -> pd.DataFrame:
    with Store(store, read_only=True) as st:
        return st.con.sql("SELECT item_id, label, round, confidence FROM pseudo_labels").df()


@pytest.mark.parametrize("fmt", ["parquet", "json", "jsonl", "csv"])
def test_export_roundtrip(finished_store: Path, tmp_path: Path, fmt: str):
    out = tmp_path / f"labels.{fmt}"
    n = api.export(finished_store, out)  # the format from the suffix: .json is one array, .jsonl one per line
    df = {"parquet": pd.read_parquet, "csv": pd.read_csv, "json": pd.read_json,
          "jsonl": lambda p: pd.read_json(p, lines=True)}[fmt](out)
    assert len(df) == n == 15 + len(_stored(finished_store))
    assert list(df.columns[:8]) == ["item_id", "label", "source", "source_views", "agreeing_views", "round",
                                    "confidence", "p_correct"]
    assert {"a_0", "b_3", "split"} <= set(df.columns)  # the item's own fields come along
    pseudo = df[df.source != "gold"].set_index("item_id")
    stored = _stored(finished_store).set_index("item_id")
    assert pseudo.label.sort_index().tolist() == stored.label.sort_index().tolist()
    assert (pseudo["round"].sort_index().astype(int) == stored["round"].sort_index()).all()
    assert set(df.source) == {"gold", "k_best"}


def test_export_parquet_loads_with_hf_datasets(finished_store: Path, tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "labels.parquet"
    n = api.export(finished_store, out)
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == n
    assert "source_views" in ds.features and ds[0]["source"] == "gold"


def test_agreeing_views_come_from_that_rounds_predictions(finished_store: Path, tmp_path: Path):
    out = tmp_path / "l.parquet"
    api.export(finished_store, out, source="pseudo")
    df = pd.read_parquet(out)
    assert len(df) == len(_stored(finished_store)) > 0 and (df.source != "gold").all()
    for _, row in df.iterrows():
        assert set(row.source_views) <= set(row.agreeing_views)


def test_agreeing_views_and_source_views_keep_the_configs_view_order(tmp_path: Path):
    """agreeing_views came sorted by name while source_views keep the config's order, so the
    same views read [va, vb, g] beside [g, va, vb]."""
    cfg = write_config(tmp_path, policy="k_best", k=12, max_rounds=1)
    data = yaml.safe_load(cfg.read_text())
    data["views"][0]["name"], data["views"][1]["name"] = "zeta", "alpha"
    cfg.write_text(yaml.safe_dump(data))
    api.run(cfg)
    api.export(tmp_path / "run.duckdb", tmp_path / "l.parquet", source="pseudo")
    df = pd.read_parquet(tmp_path / "l.parquet")
    both = df[df.agreeing_views.map(len) == 2]
    assert len(both) and all(list(v) == ["zeta", "alpha"] for v in both.agreeing_views)
    assert all(list(v) == ["zeta", "alpha"] for v in df.source_views if len(v) == 2)


def test_export_filters(finished_store: Path, tmp_path: Path):
    out = tmp_path / "f.parquet"
    stored = _stored(finished_store)
    assert api.export(finished_store, out, max_round=0, include_gold=False) == (stored["round"] == 0).sum()
    assert api.export(finished_store, out, min_confidence=0.95, include_gold=False, force=True) == \
        (stored.confidence >= 0.95).sum()
    n_va = api.export(finished_store, out, source="va", force=True)
    assert n_va == len(pd.read_parquet(out)) and n_va > 0
    assert all("va" in v for v in pd.read_parquet(out).source_views)
    assert api.export(finished_store, out, source="gold", force=True) == 15


def test_json_exports_read_back_as_input(finished_store: Path, tmp_path: Path):
    """A .json export is one array, unless --format jsonl asks for lines; cotrain reads both
    (and .ndjson) back as a data file, the same rows."""
    from orchestrator.data import read_table

    n = api.export(finished_store, tmp_path / "a.json")
    assert api.export(finished_store, tmp_path / "l.json", "jsonl") == n
    assert api.export(finished_store, tmp_path / "l.ndjson") == n
    assert (tmp_path / "a.json").read_text().lstrip().startswith("[")
    assert len((tmp_path / "l.json").read_text().splitlines()) == n
    tables = [read_table(tmp_path / name).to_pandas() for name in ("a.json", "l.json", "l.ndjson")]
    assert len(tables[0]) == n and all(t.equals(tables[0]) for t in tables[1:])


def test_export_errors(finished_store: Path, tmp_path: Path):
    with pytest.raises(StoreError, match="cannot tell the export format from 'x.xlsx'"):
        api.export(finished_store, tmp_path / "x.xlsx")
    # Parquet bytes into a .csv, CSV into a .parquet: written silently
    with pytest.raises(StoreError, match=r"--format parquet into 'x.csv': its suffix says csv; name the file"):
        api.export(finished_store, tmp_path / "x.csv", "parquet")
    with pytest.raises(StoreError, match=r"--format csv into 'x.parquet': its suffix says parquet or hf-parquet"):
        api.export(finished_store, tmp_path / "x.parquet", "csv")
    with pytest.raises(StoreError, match=r"--format json into 'x.jsonl': its suffix says jsonl; name the file"):
        api.export(finished_store, tmp_path / "x.jsonl", "json")
    assert list(tmp_path.iterdir()) == []
    config = tmp_path / "cotrain.yaml"  # the run's own config was replaced with --force
    config.write_text("store: run.duckdb\n")
    with pytest.raises(StoreError, match=r"--format parquet into 'cotrain.yaml': a .yaml file is a config or a "
                                        r"store, not an export"):
        api.export(finished_store, config, "parquet", force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["cotrain.yaml"] and config.read_text() == "store: run.duckdb\n"
    with pytest.raises(StoreError, match="no run 9"):
        api.export(finished_store, tmp_path / "x.csv", run_id=9)
    with pytest.raises(StoreError, match="does not exist"):
        api.export(finished_store, tmp_path / "nope" / "x.csv")


# ------------------------------------------------------------------ p_correct (issue 13)
@pytest.fixture(scope="module")
def estimated(finished_store: Path, tmp_path_factory) -> dict:
    """A copy of the finished run whose pseudo-labels carry known ``p_correct`` values (every
    fourth one none, as a debate verdict's), and one of them reviewed."""
    import shutil

    tmp = tmp_path_factory.mktemp("estimated")
    store = tmp / "run.duckdb"
    shutil.copy(finished_store, store)
    with Store(store, read_only=True) as st:
        pseudo = [i for (i,) in st.con.execute("SELECT item_id FROM pseudo_labels ORDER BY item_id").fetchall()]
        gold = {i for (i,) in st.con.execute("SELECT item_id FROM items WHERE split = 'train'"
                                            " AND gold_label IS NOT NULL").fetchall()}
    values = {item: None if n % 4 == 0 else round(0.3 + 0.7 * (n % 10) / 9, 3) for n, item in enumerate(pseudo)}
    write_estimates(store, {}, {}, values)
    reviewed = pseudo[4]  # has no estimate (n % 4 == 0) yet, reviewed it always passes
    (tmp / "reviews.csv").write_text(f"id,label\n{reviewed},bee\n")
    api.import_reviews(store, tmp / "reviews.csv", rounds=0)
    with Store(store, read_only=True) as st:  # what the store holds (FLOAT: compared as stored)
        stored = dict(st.con.execute("SELECT item_id, p_correct FROM pseudo_labels WHERE status = 'accepted'"
                                     ).fetchall())
    return {"store": store, "stored": stored, "gold": gold, "reviewed": reviewed}


def _expected_p(est: dict, item: str) -> float | None:
    return 1.0 if item in est["gold"] or item == est["reviewed"] else est["stored"][item]


def _same_p(got: object, want: float | None) -> bool:
    if want is None:
        return got is None or (isinstance(got, float) and pd.isna(got))
    return got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("fmt", ["parquet", "json", "jsonl", "csv", "hf-parquet"])
def test_every_flat_export_carries_the_stored_p_correct(estimated: dict, tmp_path: Path, fmt: str):
    out = tmp_path / ("labels." + ("parquet" if fmt == "hf-parquet" else fmt))
    n = api.export(estimated["store"], out, fmt)
    df = {"parquet": pd.read_parquet, "hf-parquet": pd.read_parquet, "csv": pd.read_csv,
          "json": lambda p: pd.read_json(p, dtype=False),
          "jsonl": lambda p: pd.read_json(p, lines=True, dtype=False)}[fmt](out)
    assert list(df.columns).index("p_correct") == list(df.columns).index("confidence") + 1
    assert len(df) == n == len(estimated["gold"]) + 1 + len(estimated["stored"])
    got = dict(zip(df.item_id, df.p_correct))
    assert all(_same_p(got[i], _expected_p(estimated, i)) for i in got), got
    assert sum(pd.isna(v) for v in got.values()) == sum(v is None for v in estimated["stored"].values()) > 0


def test_review_tasks_carry_p_correct(estimated: dict, tmp_path: Path):
    import json

    api.export(estimated["store"], tmp_path / "ls.json", "label-studio")
    api.export(estimated["store"], tmp_path / "ar.json", "argilla")
    tasks = json.loads((tmp_path / "ls.json").read_text())
    records = json.loads((tmp_path / "ar.json").read_text())
    ls = {t["data"]["item_id"]: t["data"]["cotrain_p_correct"] for t in tasks}
    ar = {r["id"]: r["metadata"]["cotrain_p_correct"] for r in records}
    assert ls == ar and set(ls) == estimated["gold"] | {estimated["reviewed"]} | set(estimated["stored"])
    assert all(_same_p(v, _expected_p(estimated, i)) for i, v in ls.items())
    settings = json.loads((tmp_path / "ar.settings.json").read_text())
    assert "cotrain_p_correct" in {m["name"] for m in settings["metadata"]}


def test_hf_folder_carries_p_correct(estimated: dict, tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    api.export(estimated["store"], tmp_path / "hf", "hf")
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert all(_same_p(p, _expected_p(estimated, i)) for i, p in zip(ds["item_id"], ds["p_correct"]))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("threshold", [0.0, 0.6, 1.0])
def test_min_p_correct_keeps_exactly_the_expected_ids(estimated: dict, tmp_path: Path, fmt: str, threshold: float):
    out = tmp_path / f"kept.{fmt}"
    n = api.export(estimated["store"], out, min_p_correct=threshold)
    df = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    want = estimated["gold"] | {estimated["reviewed"]} | {
        i for i, p in estimated["stored"].items() if p is not None and p >= threshold}
    assert set(df.item_id) == want and n == len(df) == len(want)
    assert n.unestimated == sum(p is None for p in estimated["stored"].values()) > 0
    assert (df.p_correct[~df.source.isin(["gold", "review"])] >= threshold).all()
    only_pseudo = api.export(estimated["store"], out, min_p_correct=threshold, include_gold=False, force=True)
    assert only_pseudo == len(want) - len(estimated["gold"]) - 1
    assert api.export(estimated["store"], out, force=True).unestimated is None  # no filter, nothing counted


def test_a_threshold_equal_to_an_exported_value_keeps_its_row(estimated: dict, tmp_path: Path):
    """The store keeps confidence and p_correct as 32-bit floats; a threshold copied from an
    export (0.9999, read back as 0.99989998) was compared as a 64-bit float and dropped the
    very row it was copied from (every pseudo-label at p_correct 0.9791667: all dropped)."""
    api.export(estimated["store"], tmp_path / "all.csv", include_gold=False)
    df = pd.read_csv(tmp_path / "all.csv")
    for column, option in (("confidence", "min_confidence"), ("p_correct", "min_p_correct")):
        values = df[column].dropna()
        below = values[values.astype(np.float32).astype(np.float64) < values]  # stored a hair under its text
        assert len(below)
        row = df.loc[below.index[len(below) // 2]]
        out = tmp_path / f"{column}.csv"
        api.export(estimated["store"], out, include_gold=False, **{option: float(row[column])})
        kept = pd.read_csv(out)
        assert row["item_id"] in set(kept.item_id)
        assert set(kept.item_id) == set(df.item_id[df[column] >= row[column]])


def test_min_p_correct_is_checked(estimated: dict, tmp_path: Path):
    for bad in (-0.01, 1.5, float("nan")):
        with pytest.raises(StoreError, match="--min-p-correct must be between 0 and 1"):
            api.export(estimated["store"], tmp_path / "x.csv", min_p_correct=bad)
        with pytest.raises(StoreError, match="--min-confidence must be between 0 and 1"):  # was an empty file
            api.export(estimated["store"], tmp_path / "x.csv", min_confidence=bad * 7)
    assert not (tmp_path / "x.csv").exists()


def test_cli_names_a_path_with_a_newline_on_one_line(estimated: dict, tmp_path: Path):
    """``wrote N rows to <path>`` printed a newline in the file name raw, over two lines."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    out = tmp_path / "q\nnl.csv"
    res = CliRunner().invoke(app, ["export", str(estimated["store"]), str(out)])
    assert res.exit_code == 0 and out.exists(), res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(repr(str(out))), res.stdout


def test_cli_min_p_correct(estimated: dict, tmp_path: Path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    out = tmp_path / "kept.csv"
    res = CliRunner().invoke(app, ["export", str(estimated["store"]), str(out), "--min-p-correct", "0.6"])
    assert res.exit_code == 0, res.output
    expected = api.export(estimated["store"], tmp_path / "api.csv", min_p_correct=0.6)
    assert set(pd.read_csv(out).item_id) == set(pd.read_csv(tmp_path / "api.csv").item_id)
    lines = res.stderr.strip().splitlines()  # one line, saying how many had no estimate
    assert len(lines) == 1 and str(expected.unestimated) in lines[0].split(), res.stderr
    for bad in ("1.5", "-1", "nan"):
        res = CliRunner().invoke(app, ["export", str(estimated["store"]), str(tmp_path / "bad.csv"),
                                       "--min-p-correct", bad])
        lines = res.output.strip().splitlines()
        assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error:"), res.output
        assert "--min-p-correct" in lines[0]
    assert not (tmp_path / "bad.csv").exists()
    # a seed without a sample changed nothing, silently
    res = CliRunner().invoke(app, ["export", str(estimated["store"]), str(tmp_path / "bad.csv"), "--seed", "3"])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1 and lines == ["error: --seed seeds the draw of --sample; give --sample N too"], res.output
    assert not (tmp_path / "bad.csv").exists()
    res = CliRunner().invoke(app, ["export", str(estimated["store"]), str(out), "--seed", "3", "--sample", "4",
                                   "--force"])
    assert res.exit_code == 0, res.output
    api.export(estimated["store"], tmp_path / "s.csv", sample=4, seed=3)
    assert list(pd.read_csv(out).item_id) == list(pd.read_csv(tmp_path / "s.csv").item_id)
    # more than there are: every row, and one line saying so (it wrote fewer than N silently)
    total = api.export(estimated["store"], tmp_path / "all.csv")
    res = CliRunner().invoke(app, ["export", str(estimated["store"]), str(tmp_path / "big.csv"), "--sample",
                                   str(total + 50)])
    assert res.exit_code == 0 and len(pd.read_csv(tmp_path / "big.csv")) == total, res.output
    assert res.stderr.strip().splitlines() == [f"--sample {total + 50}: only {total} row(s) matched, so all of "
                                               "them were written"]


def test_export_and_report_options_that_would_give_nothing_say_so(estimated: dict, tmp_path: Path):
    """A typo in --source wrote an empty file with exit 0, --round -1 exported gold only and
    report --top -1 failed with DuckDB's own message (a probe's findings)."""
    store = estimated["store"]
    with pytest.raises(StoreError, match=r"--source 'bogus' names no source of run \d+ \(one of .*gold"):
        api.export(store, tmp_path / "a.csv", source="bogus")
    with pytest.raises(StoreError, match=r"--round must be 0 or more"):
        api.export(store, tmp_path / "a.csv", max_round=-1)
    with pytest.raises(StoreError, match=r"--round 99: run \d+ has rounds 0-\d+"):
        api.export(store, tmp_path / "a.csv", max_round=99)
    with pytest.raises(StoreError, match=r"--top must be 0 or more"):
        api.report(store, tmp_path / "r.html", top_disputed=-1)
    with pytest.raises(StoreError, match=r"--source gold with --no-gold selects nothing"):
        api.export(store, tmp_path / "a.csv", source="gold", include_gold=False)
    with pytest.raises(StoreError, match=r"--sample must be 1 or more \(items to draw\), not 0"):
        api.export(store, tmp_path / "a.csv", sample=0)
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "r.html").exists()
    assert api.export(store, tmp_path / "g.csv", source="gold") > 0  # a known source still exports


@pytest.mark.parametrize("call, match", [
    (lambda s, t: api.status(s, run_id="x"), r"run_id must be a whole number, not 'x'"),
    (lambda s, t: api.export(s, t / "a.csv", min_confidence="x"), r"min_confidence must be a number, not 'x'"),
    (lambda s, t: api.export(s, t / "a.csv", max_round="1"), r"max_round must be a whole number, not '1'"),
    (lambda s, t: api.export(s, t / "a.csv", sample=2.5), r"sample must be a whole number, not 2.5"),
    (lambda s, t: api.export(s, t / "a.csv", run_id=True), r"run_id must be a whole number, not True"),
    (lambda s, t: api.export(s, t / "a.csv", min_p_correct=True), r"min_p_correct must be a number, not True"),
    (lambda s, t: api.report(s, t / "a.html", top_disputed="3"), r"top_disputed must be a whole number, not '3'"),
])
def test_the_librarys_arguments_of_the_wrong_type_are_one_line(estimated: dict, tmp_path: Path, call, match):
    """A library caller's "1", True or 2.5 met DuckDB's or Python's own error (a probe's finding)."""
    with pytest.raises(StoreError, match=match):
        call(estimated["store"], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_library_takes_numpys_numbers(estimated: dict, tmp_path: Path):
    """Numbers read from a DataFrame are numpy's: DuckDB refused to bind them."""
    store = estimated["store"]
    rid = api.status(store).run_id
    n = api.export(store, tmp_path / "a.csv", run_id=np.int64(rid), max_round=np.int64(0),
                   sample=np.int32(5), min_confidence=np.float32(0.0), include_gold=np.bool_(True))
    assert n == 5 == len(pd.read_csv(tmp_path / "a.csv"))
    assert api.status(store, run_id=np.int64(rid)).run_id == rid
    assert api.report(store, tmp_path / "r.html", top_disputed=np.int64(3)).exists()
