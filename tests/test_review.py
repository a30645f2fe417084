"""Exports people load unchanged (Hugging Face datasets, Label Studio, Argilla) and the review
round-trip: reviewed labels come back as gold, contradicted pseudo-labels are revoked (kept
in history), and the next run trains on them."""
from __future__ import annotations

import csv
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator import api
from store.database import Store
from store.errors import ReviewError, StoreError
from tests.conftest import LABELS, synthetic_frame, write_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path, pd.DataFrame]:
    """(config, store, truth by id) of a finished two-view run."""
    tmp = tmp_path_factory.mktemp("review")
    df = synthetic_frame()
    cfg = write_config(tmp, df, policy="k_best", k=12, max_rounds=3)
    api.run(cfg)
    return cfg, tmp / "run.duckdb", df.set_index("id")["truth"]


@pytest.fixture(scope="module")
def _fresh_template(tmp_path_factory) -> tuple[Path, pd.Series]:
    """The project folder every ``fresh`` run is a copy of (the same run as ``finished``)."""
    tmp = tmp_path_factory.mktemp("fresh")
    df = synthetic_frame()
    api.run(write_config(tmp, df, policy="k_best", k=12, max_rounds=3))
    return tmp, df.set_index("id")["truth"]


@pytest.fixture
def fresh(_fresh_template, tmp_path: Path) -> tuple[Path, Path, pd.Series]:
    """A finished run of the test's own, which the test may change: a copy of the template's
    project folder (a copied project finds its run: runs are keyed by their data's contents),
    not a run per test (20 runs were 80 s of the suite)."""
    src, truth = _fresh_template
    shutil.copytree(src, tmp_path, dirs_exist_ok=True)
    return tmp_path / "cotrain.yaml", tmp_path / "run.duckdb", truth


def _pseudo(store: Path) -> pd.DataFrame:
    with Store(store, read_only=True) as st:
        return st.con.sql("SELECT item_id, label, source, source_views, round, status, reviewed_by FROM pseudo_labels"
                          " ORDER BY item_id").df()


# ---------------------------------------------------------------- exports
def test_hugging_face_exports_load_with_a_class_label(finished, tmp_path: Path):
    import datasets

    _, store, _ = finished
    n = api.export(store, tmp_path / "labels.parquet")
    assert api.export(store, tmp_path / "hf", "hf") == n
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert ds.features["label"].names == LABELS and len(ds) == n
    assert api.export(store, tmp_path / "hf.parquet", "hf-parquet") == n
    pq = datasets.load_dataset("parquet", data_files=str(tmp_path / "hf.parquet"), split="train")
    assert pq.features["label"].names == LABELS
    flat = pd.read_parquet(tmp_path / "labels.parquet")
    assert [LABELS[i] for i in pq["label"]] == flat["label"].tolist()
    assert pq["source"] == flat["source"].tolist() and "source_views" in pq.features
    with pytest.raises(StoreError, match="not empty"):
        api.export(store, tmp_path / "hf", "hf")


def test_label_studio_export_has_each_views_vote_and_a_config(finished, tmp_path: Path):
    _, store, _ = finished
    out = tmp_path / "tasks.json"
    n = api.export(store, out, "label-studio", include_gold=False)
    tasks = json.loads(out.read_text())
    assert len(tasks) == n == len(_pseudo(store))
    t = tasks[0]
    assert {"item_id", "cotrain_task", "cotrain_label", "cotrain_source"} <= set(t["data"])
    versions = [p["model_version"] for p in t["predictions"]]
    assert versions[0].startswith("cotrain:k_best(") and {"va", "vb"} & set(versions[1:])
    for p in t["predictions"]:
        assert 0 <= p["score"] <= 1 and p["result"][0]["value"]["choices"][0] in LABELS
        assert p["result"][0]["from_name"] == "label" and p["result"][0]["type"] == "choices"
    config = ET.fromstring(out.with_suffix(".label_config.xml").read_text())
    choices = config.find("Choices")
    assert choices.get("name") == "label" and [c.get("value") for c in choices] == LABELS
    to_name = choices.get("toName")
    assert any(el.get("name") == to_name for el in config) and all(to_name in t["data"] for t in tasks)
    # numbers only, no text field: the reviewer sees every field in one key-value table
    assert to_name == "cotrain_fields" and config.find("Table").get("value") == "$cotrain_fields"
    shown = t["data"]["cotrain_fields"]
    assert {"id", "split", *(f"{v}_{j}" for v in "ab" for j in range(4))} == set(shown)
    assert isinstance(shown["a_0"], float) and shown["id"] == t["data"]["item_id"]


def test_argilla_export_loads_as_records_and_settings(finished, tmp_path: Path):
    rg = pytest.importorskip("argilla")
    from argilla._models import FieldModel, MetadataFieldModel, QuestionModel

    _, store, _ = finished
    out = tmp_path / "records.json"
    n = api.export(store, out, "argilla", min_confidence=0.5)
    records = json.loads(out.read_text())
    assert len(records) == n > 0
    for rec in records:
        r = rg.Record.from_dict(rec)
        assert r.suggestions["label"].value in LABELS and r.suggestions["label"].agent.startswith("cotrain:")
        assert r.metadata["item_id"] == rec["id"] and r.suggestions["label"].score >= 0.5
    assert any(k.startswith("vote_") for rec in records for k in rec["metadata"])
    settings = json.loads(out.with_suffix(".settings.json").read_text())
    for f in settings["fields"]:
        FieldModel.model_validate(f)
    question = QuestionModel.model_validate(settings["questions"][0])
    assert [o["value"] for o in question.settings.options] == LABELS
    for m in settings["metadata"]:
        MetadataFieldModel.model_validate(m)
    names = {f["name"] for f in settings["fields"]}
    assert all(set(rec["fields"]) == names for rec in records)
    assert names == {"cotrain_fields"}  # numbers only: every field, one "name: value" line each
    lines = records[0]["fields"]["cotrain_fields"].splitlines()
    assert lines[0] == f"id: {records[0]['id']}" and lines[-1] == "split: train"
    assert [x.split(": ")[0] for x in lines[1:9]] == [f"{v}_{j}" for v in "ab" for j in range(4)]
    assert all(np.isfinite(float(x.split(": ")[1])) for x in lines[1:9])


def test_export_filters_disputed_and_a_stratified_sample(finished, tmp_path: Path):
    _, store, _ = finished
    with Store(store, read_only=True) as st:
        disputed = {r[0] for r in st.con.execute("SELECT item_id FROM disputes").fetchall()}
    n = api.export(store, tmp_path / "d.csv", disputed_only=True)
    d = pd.read_csv(tmp_path / "d.csv")
    assert n == len(d) > 0 and set(d["item_id"]) <= disputed
    assert (d["source"] == "disputed").any() and d.loc[d.source == "disputed", "label"].isna().all()
    api.export(store, tmp_path / "d.json", "label-studio", disputed_only=True)
    open_tasks = [t for t in json.loads((tmp_path / "d.json").read_text()) if t["data"]["cotrain_label"] is None]
    assert open_tasks and all(len({p["result"][0]["value"]["choices"][0] for p in t["predictions"]}) >= 1
                              and all(p["model_version"] in ("va", "vb") for p in t["predictions"])
                              for t in open_tasks)  # only the views' (disputing) votes
    api.export(store, tmp_path / "all.csv")
    every = pd.read_csv(tmp_path / "all.csv")
    api.export(store, tmp_path / "s.csv", sample=30, seed=1)
    s = pd.read_csv(tmp_path / "s.csv")
    assert len(s) == 30 and set(s["label"]) == set(every["label"])  # exactly the size asked (it was 27-33)
    share = every["label"].value_counts(normalize=True)
    assert (s["label"].value_counts(normalize=True) - share).abs().max() < 0.1
    api.export(store, tmp_path / "s2.csv", sample=30, seed=1)
    assert pd.read_csv(tmp_path / "s2.csv")["item_id"].tolist() == s["item_id"].tolist()  # seeded
    api.export(store, tmp_path / "s3.csv", sample=30, seed=2)
    assert pd.read_csv(tmp_path / "s3.csv")["item_id"].tolist() != s["item_id"].tolist()
    for n in (1, 2, 5, 7):  # small samples: exactly n rows, every label once when n covers them
        assert api.export(store, tmp_path / f"n{n}.csv", sample=n, seed=1) == n
        labels = pd.read_csv(tmp_path / f"n{n}.csv")["label"]
        assert labels.nunique() == min(n, every["label"].nunique())


def test_the_stratified_quota_is_exact_and_keeps_every_label():
    from store.exchange.query import stratified_quota

    assert stratified_quota({"a": 10, "b": 10}, 5) == {"a": 3, "b": 2}  # not 3 + 3
    assert stratified_quota({"a": 100, "b": 1, "c": 1}, 3) == {"a": 1, "b": 1, "c": 1}
    assert stratified_quota({"a": 100, "b": 1, "c": 1}, 2) == {"a": 2, "b": 0, "c": 0}
    assert stratified_quota({"a": 3, None: 4}, 100) == {"a": 3, None: 4}
    rng = np.random.default_rng(0)
    for _ in range(500):
        counts = {f"l{i}": int(c) for i, c in enumerate(rng.integers(0, 50, rng.integers(1, 7)))}
        n = int(rng.integers(1, 200))
        q = stratified_quota(counts, n)
        assert sum(q.values()) == min(n, sum(counts.values())) and all(0 <= q[x] <= counts[x] for x in counts)
        present = [x for x in counts if counts[x]]
        assert n < len(present) or all(q[x] >= 1 for x in present)


# ---------------------------------------------------------------- review round-trip
def _label_studio_answers(tasks: list[dict], truth: pd.Series, n: int) -> list[dict]:
    """What Label Studio's JSON export holds after a person labelled the first ``n`` tasks
    with the true label (confirming or correcting cotrain's)."""
    out = []
    for i, t in enumerate(tasks):
        task = {"id": i + 1, "data": t["data"], "predictions": t["predictions"], "annotations": []}
        if i < n:
            task["annotations"].append({
                "id": 100 + i, "completed_by": {"id": 7, "email": "ann@example.org"}, "was_cancelled": False,
                "created_at": "2026-11-20T10:00:00.000000Z", "updated_at": f"2026-11-20T10:{i:02d}:00.000000Z",
                "result": [{"from_name": "label", "to_name": "id", "type": "choices",
                            "value": {"choices": [truth[t["data"]["item_id"]]]}}]})
        out.append(task)
    return out


def test_label_studio_round_trip_trains_the_next_round_on_reviews(fresh, tmp_path: Path):
    cfg, store, truth = fresh
    before = _pseudo(store)
    with Store(store, read_only=True) as st:
        rounds_before = st.scalar("SELECT count(*) FROM rounds")
        gold_before = st.scalar("SELECT n_gold FROM rounds ORDER BY round DESC LIMIT 1")
    api.export(store, tmp_path / "tasks.json", "label-studio", include_gold=False)
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    wrong = [t for t in tasks if truth[t["data"]["item_id"]] != t["data"]["cotrain_label"]]
    right = [t for t in tasks if truth[t["data"]["item_id"]] == t["data"]["cotrain_label"]]
    assert wrong and right
    picked = wrong[:5] + right[:10]
    (tmp_path / "export.json").write_text(json.dumps(_label_studio_answers(picked, truth, len(picked)) +
                                                     _label_studio_answers(right[10:12], truth, 0)))
    rep = api.import_reviews(store, tmp_path / "export.json")
    assert rep.file_format == "label_studio" and rep.imported == 15 and rep.skipped == 2
    assert rep.outcomes == {"confirmed": 10, "corrected": len(wrong[:5]), "new": 0} and rep.gold_corrected == 0
    after = _pseudo(store).set_index("item_id")
    for t in wrong[:5]:
        assert after.loc[t["data"]["item_id"], "status"] == "revoked"  # kept in history, not deleted
    for t in right[:10]:
        assert after.loc[t["data"]["item_id"], "status"] == "confirmed"
    assert len(after) == len(before) and (after["status"] == "accepted").sum() == len(before) - 15
    with Store(store, read_only=True) as st:
        rv = st.con.sql("SELECT reviewer, reviewed_at, outcome, prior_source, prior_views FROM reviews").df()
        assert st.scalar("SELECT status FROM runs") == "running"
    assert set(rv["reviewer"]) == {"ann@example.org"} and rv["reviewed_at"].notna().all()
    assert set(rv["prior_source"]) == {"k_best"} and all(len(v) for v in rv["prior_views"])
    # precision per source, measured by the reviewers
    by_view = {x["name"]: x for x in rep.by_source if x["kind"] == "view"}
    assert sum(x["confirmed"] for x in rep.by_source if x["kind"] == "policy") == 10
    assert all(0 <= x["precision"] <= 1 for x in by_view.values()) and by_view

    res = api.run(cfg)  # the next run continues the reopened run: one round that labels, then the final fit
    assert res.run_id == 1 and res.status == "finished"
    with Store(store, read_only=True) as st:
        assert st.scalar("SELECT count(*) FROM rounds") == rounds_before + 2
        last = st.con.execute("SELECT n_gold FROM rounds ORDER BY round DESC LIMIT 1").fetchall()[0][0]
        assert last == gold_before + 15  # the reviewed items are gold now
        n_train = dict(st.con.execute("SELECT view, n_train FROM metrics WHERE round = ? AND view <> 'ensemble'",
                                      [rounds_before]).fetchall())
        # revoked labels are still in the history, and no longer trained on
        assert st.scalar("SELECT count(*) FROM pseudo_labels WHERE status = 'revoked'") == len(wrong[:5])
    assert min(n_train.values()) >= gold_before + 15
    api.export(store, tmp_path / "after.csv")
    exported = pd.read_csv(tmp_path / "after.csv").set_index("item_id")
    for t in picked:
        item = t["data"]["item_id"]
        assert exported.loc[item, "source"] == "review" and exported.loc[item, "label"] == truth[item]


def test_argilla_json_min_and_csv_reviews_are_read(fresh, tmp_path: Path):
    cfg, store, truth = fresh
    items = _pseudo(store)["item_id"].tolist()
    api.export(store, tmp_path / "records.json", "argilla", include_gold=False)
    records = json.loads((tmp_path / "records.json").read_text())[:3]
    user = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    for r in records:
        r["responses"] = {"label": [{"value": truth[r["id"]], "user_id": user, "status": "submitted"}]}
        r["status"] = "completed"
    (tmp_path / "argilla.json").write_text(json.dumps(records))
    assert api.import_reviews(store, tmp_path / "argilla.json", rounds=0).imported == 3
    flat = [{"id": items[5], "label.responses": [truth[items[5]]], "label.responses.users": [user],
             "label.responses.status": ["submitted"], "metadata": {"item_id": items[5]}}]
    (tmp_path / "flat.json").write_text(json.dumps(flat))
    assert api.import_reviews(store, tmp_path / "flat.json", rounds=0).file_format == "argilla"
    (tmp_path / "min.json").write_text(json.dumps([{"item_id": items[6], "label": truth[items[6]],
                                                   "annotator": "bo@example.org", "id": 1}]))
    assert api.import_reviews(store, tmp_path / "min.json", rounds=0).file_format == "label_studio_min"
    with open(tmp_path / "r.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "reviewer"])
        w.writerow([items[7], truth[items[7]], "cy"])
        w.writerow([items[8], "", "cy"])  # not answered: skipped
    rep = api.import_reviews(store, tmp_path / "r.csv", reviewer="fallback", rounds=0)
    assert (rep.imported, rep.skipped) == (1, 1)
    with Store(store, read_only=True) as st:
        who = dict(st.con.execute("SELECT file_format, reviewer FROM reviews").fetchall())
        assert st.scalar("SELECT status FROM runs") == "finished"  # rounds=0 does not reopen
    assert who == {"argilla": user, "label_studio_min": "bo@example.org", "csv": "cy"}


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl", ".parquet"])
def test_a_review_file_imports_only_the_answers_and_a_label_export_is_refused(fresh, tmp_path: Path,
                                                                               suffix: str):
    """``export --select`` writes a review file: 'label' empty, cotrain's in 'cotrain_label';
    only the rows a reviewer answered come back. A plain label export holds cotrain's own labels
    in 'label', so importing it would make every pseudo-label gold: it is refused, nothing stored."""
    cfg, store, truth = fresh
    n = api.export(store, tmp_path / f"pick{suffix}", select="random", sample=6, seed=2)
    read = {".csv": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False), ".json": pd.read_json,
            ".jsonl": lambda p: pd.read_json(p, lines=True), ".parquet": pd.read_parquet}[suffix]
    pick = read(tmp_path / f"pick{suffix}")
    assert n == len(pick) == 6 and (pick["label"].fillna("") == "").all()
    answered = pick.iloc[:2].copy()
    pick["label"] = [truth[i] for i in answered["item_id"]] + [""] * 4
    {".csv": lambda p: pick.to_csv(p, index=False), ".json": lambda p: pick.to_json(p, orient="records"),
     ".jsonl": lambda p: pick.to_json(p, orient="records", lines=True),
     ".parquet": lambda p: pick.to_parquet(p)}[suffix](tmp_path / f"rev{suffix}")
    rep = api.import_reviews(store, tmp_path / f"rev{suffix}", rounds=0)
    assert (rep.imported, rep.skipped) == (2, 4)
    with Store(store, read_only=True) as st:
        assert dict(st.con.execute("SELECT item_id, label FROM reviewed_labels").fetchall()) == \
            {i: truth[i] for i in answered["item_id"]}
    api.export(store, tmp_path / f"all{suffix}")
    with pytest.raises(ReviewError, match=r"a cotrain label export, not a review file: this row's 'label' is "
                                          r"cotrain's own \(source 'k_best'\); export the items to review"):
        api.import_reviews(store, tmp_path / f"all{suffix}", rounds=0)
    with Store(store, read_only=True) as st:
        assert st.scalar("SELECT count(*) FROM reviewed_labels") == 2
    # an export of human labels only (gold, reviews) carries them over: here, the same labels again,
    # which are not filed (the run's gold stays gold); the reviews filed above with rounds=0 still wait
    # for the run, so the first such import reopens it (they were stranded), the second has nothing to add
    for source, n_human, granted in (("review", 2, 2), ("gold", None, 0)):
        api.export(store, tmp_path / f"human{suffix}", source=source, force=True)
        rep = api.import_reviews(store, tmp_path / f"human{suffix}")
        assert (rep.imported, rep.rounds_granted) == (0, granted) and rep.unchanged == (n_human or rep.unchanged) > 0
    with Store(store, read_only=True) as st:
        assert st.scalar("SELECT count(*) FROM reviews") == 2 and st.scalar("SELECT status FROM runs") == "running"


def test_a_review_file_of_other_data_is_refused_and_the_same_data_in_a_new_run_takes_it(tmp_path: Path):
    """Two stores whose items share ids (it00000...) and labels but not data: a review file from
    one was filed in the other as gold for unrelated items. Each exported item carries its content
    fingerprint (``cotrain_item``); an item whose data differs is refused, nothing filed. A new run
    over the same data file has the same fingerprints and takes the file."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    df_a = synthetic_frame(n=200, n_gold=40, n_test=30)
    df_b = synthetic_frame(n=200, n_gold=40, n_test=30, seed=1)
    cfg_a = write_config(tmp_path / "a", df_a, max_rounds=1)
    api.run(cfg_a)
    api.run(write_config(tmp_path / "b", df_b, max_rounds=1))
    store_a, store_b = tmp_path / "a" / "run.duckdb", tmp_path / "b" / "run.duckdb"
    truth_b = df_b.set_index("id")["truth"]
    api.export(store_b, tmp_path / "pick.csv", select="uncertainty", sample=6)
    pick = pd.read_csv(tmp_path / "pick.csv", dtype=str, keep_default_na=False)
    assert pick["cotrain_item"].str.fullmatch("[0-9a-f]{16}").all()
    pick["label"] = [truth_b[i] for i in pick["item_id"]]
    pick.to_csv(tmp_path / "rev.csv", index=False)
    api.export(store_b, tmp_path / "tasks.json", "label-studio", include_gold=False, sample=4)
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert all(len(t["data"]["cotrain_item"]) == 16 for t in tasks)
    (tmp_path / "ls.json").write_text(json.dumps(_label_studio_answers(tasks, truth_b, len(tasks))))
    for review_file, first in (("rev.csv", pick["item_id"][0]), ("ls.json", tasks[0]["data"]["item_id"])):
        with pytest.raises(ReviewError, match=rf"row 1 item '{first}': the item's data is not what the reviewer saw "
                                              r"\(fingerprint [0-9a-f]{16} in the file, [0-9a-f]{16} in run 1\)"):
            api.import_reviews(store_a, tmp_path / review_file, rounds=0)
    with Store(store_a, read_only=True) as st:
        assert st.scalar("SELECT count(*) FROM reviews") == 0
    assert api.import_reviews(store_b, tmp_path / "rev.csv", rounds=0).imported == 6
    # store a's own review file, imported into a new run over the same data file
    api.export(store_a, tmp_path / "pick_a.parquet", select="random", sample=5, seed=3)
    pick_a = pd.read_parquet(tmp_path / "pick_a.parquet")
    pick_a["label"] = [df_a.set_index("id")["truth"][i] for i in pick_a["item_id"]]
    pick_a.to_parquet(tmp_path / "rev_a.parquet")
    assert api.run(cfg_a, new_run=True).run_id == 2
    rep = api.import_reviews(store_a, tmp_path / "rev_a.parquet", rounds=0)
    assert (rep.run_id, rep.imported) == (2, 5)


def test_fields_named_like_what_a_review_file_carries_are_renamed(tmp_path: Path):
    """A data column named cotrain_task or reviewer was read back as the task's fingerprint
    (a same-task import was refused) or as the reviewer; it is exported as data_<name>."""
    df = synthetic_frame(n=200, n_gold=40, n_test=30)
    df["cotrain_task"], df["reviewer"] = "zzz", "mallory"
    api.run(write_config(tmp_path, df, max_rounds=1))
    store = tmp_path / "run.duckdb"
    api.export(store, tmp_path / "ls.json", "label-studio")
    data = json.loads((tmp_path / "ls.json").read_text())[0]["data"]
    assert data["cotrain_fields"]["data_cotrain_task"] == "zzz" and data["cotrain_task"] != "zzz"
    api.export(store, tmp_path / "pick.csv", select="random", sample=3)
    pick = pd.read_csv(tmp_path / "pick.csv", dtype=str)
    assert {"data_cotrain_task", "data_reviewer"} <= set(pick.columns) and "reviewer" not in pick.columns
    pick["label"] = df.set_index("id").loc[pick["item_id"], "truth"].to_numpy()
    pick.to_csv(tmp_path / "rev.csv", index=False)
    assert api.import_reviews(store, tmp_path / "rev.csv", reviewer="ann", rounds=0).imported == 3
    with Store(store, read_only=True) as st:
        assert {r[0] for r in st.con.execute("SELECT DISTINCT reviewer FROM reviews").fetchall()} == {"ann"}


def test_the_same_reviews_imported_again_are_not_filed_twice(fresh, tmp_path: Path):
    """A file imported twice counted its reviews "confirmed" again (even the ones it had
    corrected), filed them twice and reopened the run; records that repeat the item's review
    are now left out, and an import with nothing else grants no round."""
    cfg, store, truth = fresh
    items = _pseudo(store)["item_id"].tolist()
    wrong = next(lab for lab in LABELS if lab != truth[items[0]])
    (tmp_path / "r.csv").write_text(f"id,label\n{items[0]},{wrong}\n{items[1]},{truth[items[1]]}\n")
    first = api.import_reviews(store, tmp_path / "r.csv")
    assert (first.imported, first.unchanged, first.rounds_granted) == (2, 0, 2)
    with Store(store, read_only=True) as st:
        limit = st.scalar("SELECT round_limit FROM runs")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ReviewError, match=r"empty\.json: holds no records"):
        api.import_reviews(store, tmp_path / "empty.json")
    again = api.import_reviews(store, tmp_path / "r.csv")
    assert (again.imported, again.unchanged, again.rounds_granted) == (0, 2, 0)
    assert again.outcomes == {"confirmed": 0, "corrected": 0, "new": 0}
    (tmp_path / "r2.csv").write_text(f"id,label\n{items[0]},{wrong}\n{items[2]},{truth[items[2]]}\n")
    more = api.import_reviews(store, tmp_path / "r2.csv")
    assert (more.imported, more.unchanged) == (1, 1)
    with Store(store, read_only=True) as st:
        assert st.scalar("SELECT count(*) FROM reviews") == 3
        assert st.scalar("SELECT round_limit FROM runs") == limit  # the run was already reopened that far
        assert dict(st.con.execute("SELECT item_id, label FROM reviewed_labels").fetchall()) == {
            items[0]: wrong, items[1]: truth[items[1]], items[2]: truth[items[2]]}


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_a_review_file_reads_only_the_answer_whatever_the_items_fields_are_named(tmp_path: Path, suffix: str):
    """An item field named 'annotations' made a JSON review file look like a Label Studio export
    (an AttributeError), and one named 'created_at' was filed as the review's time."""
    df = synthetic_frame(n=200, n_gold=40, n_test=30)
    df["annotations"], df["created_at"], df["fields"] = "x", "2001-02-03 04:05:06", "y"
    api.run(write_config(tmp_path, df, max_rounds=1))
    store = tmp_path / "run.duckdb"
    api.export(store, tmp_path / f"pick{suffix}", select="random", sample=3)
    pick = {".json": pd.read_json, ".jsonl": lambda p: pd.read_json(p, lines=True),
            ".parquet": pd.read_parquet}[suffix](tmp_path / f"pick{suffix}")
    pick["label"] = df.set_index("id").loc[pick["item_id"], "truth"].to_numpy()
    {".json": lambda p: pick.to_json(p, orient="records"), ".jsonl": lambda p: pick.to_json(p, orient="records",
     lines=True), ".parquet": lambda p: pick.to_parquet(p)}[suffix](tmp_path / f"rev{suffix}")
    rep = api.import_reviews(store, tmp_path / f"rev{suffix}", rounds=0)
    assert (rep.file_format, rep.imported) == (suffix[1:], 3)
    with Store(store, read_only=True) as st:
        assert st.scalar("SELECT count(*) FROM reviews WHERE reviewed_at IS NOT NULL") == 0


def test_a_review_of_a_review_and_another_reviewers_agreement_are_filed(fresh, tmp_path: Path):
    """A later answer that differs corrects the earlier review; the same answer from another
    reviewer is filed (the audit trail); a duplicate in one file is filed once."""
    cfg, store, truth = fresh
    item = _pseudo(store)["item_id"].iloc[0]
    wrong = next(lab for lab in LABELS if lab != truth[item])
    (tmp_path / "a.csv").write_text(f"id,label,reviewer\n{item},{wrong},ann\n{item},{wrong},ann\n")
    assert (lambda r: (r.imported, r.unchanged))(api.import_reviews(store, tmp_path / "a.csv")) == (1, 1)
    (tmp_path / "b.csv").write_text(f"id,label,reviewer\n{item},{truth[item]},bo\n")
    assert api.import_reviews(store, tmp_path / "b.csv").outcomes == {"confirmed": 0, "corrected": 1, "new": 0}
    (tmp_path / "c.csv").write_text(f"id,label,reviewer\n{item},{truth[item]},cy\n")
    assert api.import_reviews(store, tmp_path / "c.csv").outcomes == {"confirmed": 1, "corrected": 0, "new": 0}
    with Store(store, read_only=True) as st:
        assert st.con.execute("SELECT reviewer, label, prior_source FROM reviews ORDER BY review_id").fetchall() == [
            ("ann", wrong, "k_best"), ("bo", truth[item], "review"), ("cy", truth[item], "review")]
        assert st.scalar("SELECT label FROM reviewed_labels WHERE item_id = ?", [item]) == truth[item]


def test_a_relabelled_gold_item_counts_once_in_status_the_report_and_the_export(fresh, tmp_path: Path):
    """A gold item a reviewer relabels is reviewed, not gold too: status, the report's counts
    and the run's result add up to the rows an export writes, by source."""
    from store.report.data import report_data

    _, store, _ = fresh
    with Store(store, read_only=True) as st:
        item, gold = st.con.execute("SELECT item_id, gold_label FROM items WHERE split = 'train' AND gold_label"
                                    " IS NOT NULL ORDER BY row_idx LIMIT 1").fetchone()
    other = next(lab for lab in LABELS if lab != gold)
    (tmp_path / "r.csv").write_text(f"id,label\n{item},{other}\n")
    rep = api.import_reviews(store, tmp_path / "r.csv", rounds=0)
    assert rep.outcomes["corrected"] == 1 and rep.gold_corrected == 1  # the CLI says a gold label was replaced
    n = api.export(store, tmp_path / "all.csv")
    by_source = pd.read_csv(tmp_path / "all.csv")["source"].value_counts()
    run = api.status(store).runs[0]
    assert (run["n_gold"], run["n_reviewed"]) == (by_source["gold"], by_source["review"]) == (14, 1)
    assert run["n_gold"] + run["n_reviewed"] + run["n_pseudo"] == n
    with Store(store, read_only=True) as st:
        counts = report_data(st, None)["counts"]
    assert (counts["gold"], counts["reviewed"], counts["accepted"]) == (14, 1, run["n_pseudo"])


def test_a_new_run_says_which_reviews_it_starts_without_and_how_to_bring_them(fresh, tmp_path: Path, caplog):
    """--new-run started without the reviews filed on the earlier run and said nothing; it
    warns now, and the two commands it names file them on the new run."""
    import logging

    cfg, store, truth = fresh
    items = _pseudo(store)["item_id"].tolist()[:4]
    (tmp_path / "r.csv").write_text("id,label\n" + "".join(f"{i},{truth[i]}\n" for i in items))
    api.import_reviews(store, tmp_path / "r.csv", rounds=0)
    with caplog.at_level(logging.WARNING, logger="cotrain"):
        assert api.run(cfg, new_run=True).n_reviewed == 0
    said = [r.getMessage() for r in caplog.records if "starts without" in r.getMessage()]
    assert said == [f"run 2 starts without the 4 reviewed label(s) filed on earlier runs for its items (reviews "
                    f"belong to their run); to train on them: cotrain export {store} reviews.csv --run 1 --source "
                    f"review, then cotrain import-reviews {store} reviews.csv"]
    assert api.export(store, tmp_path / "reviews.csv", run_id=1, source="review") == 4
    assert api.import_reviews(store, tmp_path / "reviews.csv", rounds=0).run_id == 2
    assert api.status(store).runs[-1]["n_reviewed"] == 4


def test_json_lines_reviews_are_read_by_either_suffix(fresh, tmp_path: Path):
    """export writes JSON Lines to .jsonl and .ndjson: import-reviews reads both back."""
    cfg, store, truth = fresh
    items = _pseudo(store)["item_id"].tolist()
    for j, suffix in enumerate((".jsonl", ".ndjson")):
        rows = [{"item_id": i, "label": truth[i], "annotator": "dee", "id": n}
                for n, i in enumerate(items[2 * j:2 * j + 2])]
        (tmp_path / f"min{suffix}").write_text("".join(json.dumps(r) + "\n" for r in rows))
        rep = api.import_reviews(store, tmp_path / f"min{suffix}", rounds=0)
        assert (rep.file_format, rep.imported) == ("label_studio_min", 2)


@pytest.mark.parametrize("rows, match", [
    ([["it00000", "ant"], ["nope", "ant"]], r"r\.csv row 2 item 'nope': unknown item id"),
    ([["it00000", "ant"], ["it00001", "wasp"]], r"r\.csv row 2 item 'it00001': label 'wasp' is not one of"),
    ([["it00000", "ant", "0123456789ab"]], r"r\.csv row 1 item 'it00000': exported from a different task"),
    ([["it00000", "ant"], ["it00001", "bee"], ["it00000", "bee"]],
     r"r\.csv row 3 item 'it00000': reviewed twice in the file with different labels \('ant' at record 1, 'bee' here\)"),
    ([["it00001", "bee"], ["it00600", "ant"]], r"r\.csv row 2 item 'it00600': a held-out test item"),
])
def test_bad_review_files_are_rejected_whole(fresh, tmp_path: Path, rows, match):
    _, store, _ = fresh
    before = _pseudo(store)
    with open(tmp_path / "r.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "cotrain_task"][: len(rows[0])])
        w.writerows(rows)
    with pytest.raises(ReviewError, match=match):
        api.import_reviews(store, tmp_path / "r.csv")
    with Store(store, read_only=True) as st:
        assert st.scalar("SELECT count(*) FROM reviews") == 0
        assert st.scalar("SELECT status FROM runs") == "finished"
    pd.testing.assert_frame_equal(_pseudo(store), before)


def test_other_bad_review_files(fresh, tmp_path: Path):
    _, store, _ = fresh
    (tmp_path / "a.csv").write_text("item,answer\nit00000,ant\n")
    with pytest.raises(ReviewError, match=r"a\.csv: its header needs columns 'id' \(or 'item_id'\) and 'label'; "
                                          r"it has 'item', 'answer'$"):
        api.import_reviews(store, tmp_path / "a.csv")
    (tmp_path / "b.json").write_text('[{"foo": 1}]')
    with pytest.raises(ReviewError, match=r"b\.json row 1: unknown export"):
        api.import_reviews(store, tmp_path / "b.json")
    (tmp_path / "c.json").write_text(json.dumps([{"data": {"item_id": "it00000"}, "annotations": []}]))
    with pytest.raises(ReviewError, match=r"c\.json: no reviewed record in the file \(1 without an answer\)"):
        api.import_reviews(store, tmp_path / "c.json")
    ann = [{"id": i, "completed_by": {"email": who}, "result": [{"type": "choices", "from_name": "label",
                                                                "value": {"choices": [lab]}}]}
           for i, who, lab in ((1, "a@x", "ant"), (2, "b@x", "bee"))]
    (tmp_path / "ls.json").write_text(json.dumps([{"data": {"item_id": "it00000"}, "annotations": ann}]))
    with pytest.raises(ReviewError, match=r"ls\.json row 1 item 'it00000': the task's annotations disagree "
                                          r"\(a@x: 'ant'; b@x: 'bee'\)"):
        api.import_reviews(store, tmp_path / "ls.json")
    ann[1]["result"][0]["value"]["choices"] = ["ant"]  # two annotators who agree: one review
    (tmp_path / "ls.json").write_text(json.dumps([{"data": {"item_id": "it00000"}, "annotations": ann}]))
    assert api.import_reviews(store, tmp_path / "ls.json", rounds=0).imported == 1
    (tmp_path / "d.json").write_text("{not json")
    with pytest.raises(ReviewError, match=r"d\.json: not a JSON export"):
        api.import_reviews(store, tmp_path / "d.json")
    with pytest.raises(ReviewError, match=r"missing\.json: file not found"):
        api.import_reviews(store, tmp_path / "missing.json")
    (tmp_path / "review").mkdir()
    with pytest.raises(ReviewError, match=r"review: is a folder, not a review file$"):
        api.import_reviews(store, tmp_path / "review")
    with pytest.raises(ReviewError, match=r"run\.duckdb: a DuckDB database \(a cotrain store\?\), not a review file"):
        api.import_reviews(store, store)
    with pytest.raises(StoreError, match=r"nostore\.duckdb: no such store file"):  # a mistyped store path
        api.import_reviews(tmp_path / "nostore.duckdb", tmp_path / "c.json")
    assert not (tmp_path / "nostore.duckdb").exists()


def test_cli_import_reviews_reports_precision(fresh, tmp_path: Path):
    """What the command did is read from the store and ``api.status``; of a failure, the
    contract is exit code 1 and one ``error:`` line naming the file."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    _, store, truth = fresh
    item, views = _pseudo(store)[["item_id", "source_views"]].iloc[0]
    (tmp_path / "r.csv").write_text(f"id,label\n{item},{truth[item]}\n")
    res = CliRunner().invoke(app, ["import-reviews", str(store), str(tmp_path / "r.csv"), "--reviewer", "dee"])
    assert res.exit_code == 0, res.output
    with Store(store, read_only=True) as st:
        filed = st.con.execute("SELECT item_id, label, reviewer, outcome, file_format, file_row, prior_label,"
                               " prior_source FROM reviews").fetchall()
        last = st.scalar("SELECT max(round) FROM rounds")  # reopened for two more rounds: one labels, one fits
        assert st.con.execute("SELECT status, termination, round_limit FROM runs").fetchall() == [
            ("running", None, last + 2)]
    assert filed == [(item, truth[item], "dee", "confirmed", "csv", 1, truth[item], "k_best")]
    rep = api.status(store)
    assert rep.runs[0]["status"] == "reopened" and rep.runs[0]["n_reviewed"] == 1  # waits for `cotrain run`
    assert api.unfinished_latest_run(store) == ("run 1 (the latest) is reopened (reviews imported: `cotrain run` "
                                                "continues it): its labels so far")
    assert rep.reviews == [{"kind": "policy", "name": "k_best", "confirmed": 1, "corrected": 0, "precision": 1.0},
                           *({"kind": "view", "name": v, "confirmed": 1, "corrected": 0, "precision": 1.0}
                             for v in sorted(views))]
    status = CliRunner().invoke(app, ["status", str(store)])
    assert status.exit_code == 0, status.output
    bad = CliRunner().invoke(app, ["import-reviews", str(store), str(tmp_path / "nope.csv")])
    lines = bad.output.strip().splitlines()
    assert bad.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error:"), bad.output
    assert str(tmp_path / "nope.csv") in lines[0]
    with Store(store, read_only=True) as st:
        assert st.scalar("SELECT count(*) FROM reviews") == 1  # nothing filed by the failed import


def test_reviews_never_shorten_an_unfinished_run(tmp_path: Path):
    """Reviews imported into a run that stopped early (a crash) keep its planned rounds."""
    df = synthetic_frame()
    cfg = write_config(tmp_path, df, policy="k_best", k=12, max_rounds=5)
    api.run(cfg)
    store = tmp_path / "run.duckdb"
    with Store(store) as st:  # as if it had crashed after round 1
        st.con.execute("DELETE FROM rounds WHERE round > 1")
        st.con.execute("UPDATE runs SET status = 'running', termination = NULL, finished_at = NULL")
        item = st.scalar("SELECT item_id FROM pseudo_labels WHERE round <= 1 LIMIT 1")
    truth = df.set_index("id")["truth"]
    (tmp_path / "r.csv").write_text(f"id,label\n{item},{truth[item]}\n")
    api.import_reviews(store, tmp_path / "r.csv")
    with Store(store, read_only=True) as st:
        assert st.scalar("SELECT round_limit FROM runs") == 5


def test_the_latest_review_decides_a_pseudo_label_and_reviews_filed_with_no_rounds_reopen_later(fresh,
                                                                                                tmp_path: Path):
    """A pseudo-label one reviewer revoked stayed revoked when a later reviewer agreed with it,
    and status counted it corrected; an import with --rounds 0 left its reviews stranded, since
    importing the file again filed nothing and reopened nothing."""
    _, store, _ = fresh
    p = _pseudo(store).iloc[0]
    wrong = next(lab for lab in LABELS if lab != p["label"])
    (tmp_path / "no.csv").write_text(f"id,label,reviewer\n{p['item_id']},{wrong},root\n")
    rep = api.import_reviews(store, tmp_path / "no.csv", rounds=0)
    assert (rep.imported, rep.rounds_granted) == (1, 0)
    assert _pseudo(store).set_index("item_id").loc[p["item_id"], "status"] == "revoked"
    (tmp_path / "yes.csv").write_text(f"id,label,reviewer\n{p['item_id']},{p['label']},bob\n")
    rep = api.import_reviews(store, tmp_path / "yes.csv", rounds=0)
    assert rep.outcomes == {"confirmed": 0, "corrected": 1, "new": 0}  # bob corrected root's review
    assert _pseudo(store).set_index("item_id").loc[p["item_id"], "status"] == "confirmed"
    policy = next(r for r in rep.by_source if r["kind"] == "policy")
    assert (policy["confirmed"], policy["corrected"]) == (1, 0)
    with Store(store, read_only=True) as st:
        assert st.scalar("SELECT status FROM runs") == "finished"
    rep = api.import_reviews(store, tmp_path / "yes.csv")  # the same file: nothing new, but bob's review waits
    assert (rep.imported, rep.unchanged, rep.rounds_granted) == (0, 1, 2)
    with Store(store, read_only=True) as st:
        assert st.scalar("SELECT status FROM runs") == "running"
    assert api.import_reviews(store, tmp_path / "yes.csv").rounds_granted == 0  # already reopened
