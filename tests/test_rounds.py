"""Invariants of co-training rounds on real sklearn views, a real DuckDB file and real files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.semi_supervised import SelfTrainingClassifier

from orchestrator import api
from orchestrator.config import load_config
from store.database import Store
from store.errors import DataError, RunError, StoreError
from tests.conftest import LABELS, synthetic_frame, write_config


def _pseudo(store_path: Path, run_id: int | None = None) -> list[tuple]:
    with Store(store_path, read_only=True) as st:
        rid = run_id or st.latest_run()
        return st.con.execute(
            "SELECT item_id, label, round, source_views, round(confidence, 5) FROM pseudo_labels"
            " WHERE run_id = ? ORDER BY item_id", [rid]).fetchall()


def _edit(cfg_path: Path, **changes) -> Path:
    cfg = yaml.safe_load(cfg_path.read_text())
    for key, value in changes.items():
        section, _, leaf = key.partition("__")
        if leaf:
            cfg[section][leaf] = value
        else:
            cfg[section] = value
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg_path


def test_run_records_rounds_metrics_and_labels(tmp_path: Path):
    res = api.run(write_config(tmp_path))
    assert res.status == "finished" and res.termination_condition == "max_rounds"
    assert res.n_rounds == 5 and res.labels_added[-1] == 0 and sum(res.labels_added) == res.n_pseudo > 0
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        assert st.scalar("SELECT count(DISTINCT round) FROM metrics") == 5
        assert st.scalar("SELECT count(*) FROM metrics WHERE view = 'ensemble' AND test_accuracy IS NULL") == 0
        # every round's predictions cover the pool of that round, once per view
        for r, pool in st.con.execute("SELECT round, pool_size FROM rounds WHERE round < 4").fetchall():
            assert st.scalar("SELECT count(*) FROM predictions WHERE round = ?", [r]) == 2 * pool
        assert st.scalar("SELECT count(*) FROM view_agreement") == 4


def test_max_rounds_zero_equals_supervised_fit(tmp_path: Path):
    df = synthetic_frame()
    res = api.run(write_config(tmp_path, df, max_rounds=0))
    assert res.n_rounds == 1 and res.n_pseudo == 0 and res.termination_condition == "max_rounds"
    gold = df[(df.split == "train") & df.label.notna()]
    test = df[df.split == "test"]
    for view, prefix in (("va", "a_"), ("vb", "b_")):
        cols = [c for c in df.columns if c.startswith(prefix)]
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(gold[cols], gold.label)
        expected = (model.predict(test[cols]) == test.label).mean()
        assert res.final_metrics[view]["test_accuracy"] == pytest.approx(expected)


def test_self_policy_reproduces_self_training_classifier(tmp_path: Path):
    df = synthetic_frame(n=400, n_gold=12, n_test=50, seed=3)
    cfg = write_config(tmp_path, df, policy="self", threshold=0.75, max_rounds=10)
    # C fixed at scikit-learn's default: the built-in logistic regression otherwise tunes it
    cfg = _edit(cfg, views=[{"name": "all", "kind": "sklearn", "columns": [f"a_{j}" for j in range(4)],
                             "estimator_params": {"C": 1.0}}])
    res = api.run(cfg)
    train = df[df.split == "train"].reset_index(drop=True)
    cols = [f"a_{j}" for j in range(4)]
    y = np.array([LABELS.index(v) if isinstance(v, str) else -1 for v in train.label])
    st = SelfTrainingClassifier(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
                                threshold=0.75, max_iter=10).fit(train[cols].to_numpy(), y)
    expected = {train.id[i]: (LABELS[st.transduction_[i]], int(st.labeled_iter_[i]) - 1)
                for i in np.flatnonzero((y == -1) & (st.labeled_iter_ > 0))}
    got = {item: (label, rnd) for item, label, rnd, _, _ in _pseudo(tmp_path / "run.duckdb")}
    assert got == expected and len(got) > 50
    # same number of labelling iterations; sklearn says 'max_iter' even when its last allowed
    # iteration added nothing, where cotrain records the more precise 'no_change'
    assert res.n_rounds == st.n_iter_
    assert res.termination_condition in ("no_change", "max_rounds")


def test_given_labels_never_change(tmp_path: Path):
    df = synthetic_frame()
    api.run(write_config(tmp_path, df, policy="agreement", threshold=0.6, feeding="shared"))
    gold = df[(df.split == "train") & df.label.notna()].set_index("id").label
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        pseudo_ids = {r[0] for r in st.con.execute("SELECT item_id FROM pseudo_labels").fetchall()}
        test_ids = {r[0] for r in st.con.execute("SELECT item_id FROM items WHERE split = 'test'").fetchall()}
        stored_gold = dict(st.con.execute("SELECT item_id, gold_label FROM items WHERE split = 'train'"
                                          " AND gold_label IS NOT NULL").fetchall())
    assert not pseudo_ids & set(gold.index)      # a gold item is never pseudo-labelled
    assert not pseudo_ids & test_ids             # held-out items are never labelled
    assert stored_gold == gold.to_dict()
    out = tmp_path / "out.parquet"
    api.export(tmp_path / "run.duckdb", out)
    exported = pd.read_parquet(out)
    g = exported[exported.source == "gold"].set_index("item_id").label
    assert g.to_dict() == gold.to_dict()
    assert exported.item_id.is_unique


@pytest.mark.parametrize("policy", ["auto", *(pytest.param(p, marks=pytest.mark.slow)
                                              for p in ("threshold", "k_best", "agreement"))])
def test_same_seed_same_labels(tmp_path: Path, policy: str):
    results = []
    for name in ("one", "two"):
        d = tmp_path / name
        d.mkdir()
        cfg = write_config(d, policy=policy, pool_sample=300, k=6, threshold=0.7)
        api.run(cfg)
        results.append(_pseudo(d / "run.duckdb"))
    assert results[0] == results[1] and len(results[0]) > 0
    d = tmp_path / "other_seed"
    d.mkdir()
    api.run(_edit(write_config(d, policy=policy, pool_sample=300, k=6, threshold=0.7), seed=7))
    assert _pseudo(d / "run.duckdb") != results[0]


def test_cross_feeding_trains_each_view_on_the_others_picks(tmp_path: Path):
    api.run(write_config(tmp_path, policy="k_best", k=9, max_rounds=3))
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        n_gold = st.scalar("SELECT count(*) FROM items WHERE split = 'train' AND gold_label IS NOT NULL")
        for r in range(1, 4):
            for view, other in (("va", "vb"), ("vb", "va")):
                n_train = st.scalar("SELECT n_train FROM metrics WHERE round = ? AND view = ?", [r, view])
                from_other = st.scalar("SELECT count(*) FROM pseudo_labels WHERE round < ?"
                                       " AND list_contains(source_views, ?)", [r, other])
                assert n_train == n_gold + from_other
        own_only = st.scalar("SELECT count(*) FROM pseudo_labels WHERE source_views = ['va']")
        assert own_only > 0  # so the check above is not vacuous


def test_k_best_adds_class_balanced_picks(tmp_path: Path):
    res = api.run(write_config(tmp_path, policy="k_best", k=9, max_rounds=1, veto="none"))
    assert res.labels_added == [18, 0]  # 9 per view (3 per class, the gold being balanced)
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        picks = st.con.execute("SELECT source_views, label, list_sort(list(item_id)), min(round), max(round),"
                               " list_distinct(list(source)) FROM pseudo_labels GROUP BY ALL ORDER BY ALL").fetchall()
        # each view's picks of a class are its 3 most confident pool predictions of that class
        top = {(v, lab): sorted(r[0] for r in st.con.execute(
            "SELECT item_id FROM predictions WHERE round = 0 AND view = ? AND label = ?"
            " ORDER BY confidence DESC, item_id LIMIT 3", [v, lab]).fetchall())
            for v in ("va", "vb") for lab in LABELS}
    assert [(tuple(views), lab) for views, lab, *_ in picks] == [(v, lab) for v in (("va",), ("vb",)) for lab in LABELS]
    for views, lab, ids, first, last, sources in picks:
        assert ids == top[(views[0], lab)] and (first, last, sources) == (0, 0, ["k_best"])


def test_no_change_termination(tmp_path: Path):
    res = api.run(write_config(tmp_path, threshold=0.99999))
    assert res.termination_condition == "no_change" and res.n_rounds == 1 and res.n_pseudo == 0


def test_pool_exhausted_termination(tmp_path: Path):
    cfg = write_config(tmp_path, policy="self", threshold=0.0)
    _edit(cfg, views=[{"name": "va", "kind": "sklearn", "column_prefix": "a_"}])
    res = api.run(cfg)
    assert res.termination_condition == "pool_exhausted"
    assert res.labels_added == [585, 0]


def test_rerun_of_finished_run_does_nothing(tmp_path: Path):
    cfg = write_config(tmp_path)
    first = api.run(cfg)
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        before = st.scalar("SELECT count(*) FROM predictions")
    again = api.run(cfg)
    assert again.already_finished and again.run_id == first.run_id
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        assert st.scalar("SELECT count(*) FROM predictions") == before
        assert st.scalar("SELECT count(*) FROM runs") == 1


def test_unfinished_run_with_other_config_is_refused(tmp_path: Path):
    cfg = write_config(tmp_path)
    api.run(cfg)
    with Store(tmp_path / "run.duckdb") as st:  # make it look interrupted
        st.con.execute("UPDATE runs SET status = 'running'")
    with pytest.raises(RunError, match="holds unfinished run 1 made with a different config or data"):
        api.run(_edit(cfg, seed=5))


def test_plugin_view_by_dotted_path_and_confidence_weights(tmp_path: Path):
    cfg = write_config(tmp_path, pseudo_weight="confidence", feeding="shared")
    _edit(cfg, views=[{"name": "va", "kind": "sklearn", "column_prefix": "a_"},
                      {"name": "cent", "kind": "tests.plugin_views:CentroidView",
                       "columns": [f"b_{j}" for j in range(4)], "temperature": 2.0}])
    res = api.run(cfg)
    assert res.n_pseudo > 0 and res.final_metrics["cent"]["test_accuracy"] > 0.4


def test_cotraining_beats_supervised_on_synthetic_views(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    df = synthetic_frame(n=1500, n_gold=9, n_test=500, seed=11, noise=2.0)
    base = api.run(write_config(tmp_path / "a", df, max_rounds=0))
    co = api.run(write_config(tmp_path / "b", df, policy="k_best", k=30, max_rounds=10))
    assert co.final_metrics["ensemble"]["test_accuracy"] > base.final_metrics["ensemble"]["test_accuracy"]


def test_changed_data_file_starts_a_new_run(tmp_path: Path):
    cfg = write_config(tmp_path, max_rounds=1)
    first = api.run(cfg)
    df = pd.read_csv(tmp_path / "items.csv")
    df.loc[df.label.isna().idxmax(), "a_0"] += 1.0  # edit one unlabelled item in place
    df.to_csv(tmp_path / "items.csv", index=False)
    second = api.run(cfg)
    assert not second.already_finished and second.run_id == first.run_id + 1
    assert api.run(cfg).already_finished  # unchanged again: nothing to redo


def test_held_out_scores_count_an_abstention_as_wrong_and_a_view_that_never_voted_as_unmeasured():
    from orchestrator.steps import metrics

    y = np.array([0, 1, 1, 0])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [np.nan, np.nan], [0.3, 0.7]])
    acc, f1 = metrics(y, p)
    assert acc == 0.5 and f1 is not None
    assert metrics(y, np.full((4, 2), np.nan)) == (None, None)
    assert metrics(np.zeros(0, dtype=int), np.zeros((0, 2))) == (None, None)


def test_rerunning_a_finished_config_finds_its_run_when_a_later_run_came_between(tmp_path: Path):
    """Re-running a finished run does nothing (README), also after another config ran on the
    same store: it used to compare with the latest run only and start a third run."""
    cfg = write_config(tmp_path, max_rounds=1)
    first = api.run(cfg)
    original = cfg.read_text()
    cfg.write_text(original.replace("max_rounds: 1", "max_rounds: 2"))
    second = api.run(cfg)
    assert second.run_id != first.run_id
    cfg.write_text(original)
    again = api.run(cfg)
    assert again.already_finished and again.run_id == first.run_id
    assert len(api.status(tmp_path / "run.duckdb").runs) == 2


def _interrupted_copy(tmp_path: Path) -> tuple[Path, Path]:
    """A project folder (data, config, store) whose run stopped after round 1, and a copy of
    it in another folder."""
    import shutil

    src = tmp_path / "project"
    src.mkdir()
    cfg = write_config(src, max_rounds=3)
    api.run(write_config(src, max_rounds=1))  # rounds 0-1, then the same run asked for more
    cfg.write_text(cfg.read_text().replace("max_rounds: 1", "max_rounds: 3"))
    with Store(src / "run.duckdb") as st:  # the state a Ctrl-C after round 1 leaves
        st.con.execute("UPDATE runs SET status = 'running', config_hash = ?", [load_config(cfg).fingerprints()[0]])
    dst = tmp_path / "moved"
    shutil.copytree(src, dst)
    return src, dst


def test_a_moved_project_folder_resumes_its_run(tmp_path: Path):
    """The data files' absolute paths were part of a run's identity: a copied or moved project
    refused to resume ('made with a different config or data') and re-ran finished runs."""
    _, dst = _interrupted_copy(tmp_path)
    res = api.run(dst / "cotrain.yaml")
    assert res.run_id == 1 and res.resumed and res.status == "finished"
    again = api.run(dst / "cotrain.yaml")
    assert again.already_finished and again.run_id == 1
    with pytest.raises(StoreError, match="refusing to overwrite run 1's input data"):  # the moved input is its input
        api.export(dst / "run.duckdb", dst / "items.csv", force=True)


def test_a_run_hashed_by_an_earlier_release_still_resumes(tmp_path: Path):
    src, _ = _interrupted_copy(tmp_path)
    old = load_config(src / "cotrain.yaml").fingerprints()[1]
    with Store(src / "run.duckdb") as st:
        st.con.execute("UPDATE runs SET config_hash = ?", [old])
    res = api.run(src / "cotrain.yaml")
    assert res.run_id == 1 and res.resumed and res.status == "finished"


def test_a_missing_data_file_on_resume_is_named(tmp_path: Path):
    src, _ = _interrupted_copy(tmp_path)
    (src / "items.csv").unlink()
    with pytest.raises(DataError, match=r"items.csv.*file not found"):
        api.run(src / "cotrain.yaml")


def test_one_gold_label_per_class_says_its_estimate_is_uncalibrated(tmp_path: Path, caplog):
    """With one gold label per class nothing can be held out at round 0, so p_correct is the
    views' own estimate: a probe's run accepted at an estimated 0.99 what was 0.84 right,
    without a word. It says so now, in the round that had no held-out gold."""
    import logging

    df = synthetic_frame(n_gold=3)
    assert df["label"].iloc[:600].notna().sum() == 3
    with caplog.at_level(logging.WARNING, logger="cotrain"):
        api.run(write_config(tmp_path, df, max_rounds=1))
    said = [r.getMessage() for r in caplog.records if "no gold label can be held out" in r.getMessage()]
    assert said and all("may be optimistic" in m for m in said)
    caplog.clear()
    (tmp_path / "more").mkdir()
    with caplog.at_level(logging.WARNING, logger="cotrain"):  # five a class: held out, no warning
        api.run(write_config(tmp_path / "more", synthetic_frame(n_gold=15), max_rounds=1))
    assert not [r for r in caplog.records if "no gold label can be held out" in r.getMessage()]


def test_a_committed_rounds_cached_blocks_are_given_back(tmp_path: Path, monkeypatch):
    """Each round's rows are written to the file and their cached blocks dropped once it
    commits, when they exceed ``ROUND_CACHE_BYTES`` (lowered here to 1 MB, for a pool of 40k
    items): kept, they only raised later rounds' peak memory. Read through a second
    connection to the same file, which shares the run's database."""
    import duckdb

    monkeypatch.setattr("orchestrator.rounds.ROUND_CACHE_BYTES", 2**20)

    cfg = write_config(tmp_path, synthetic_frame(n=40_000, n_gold=60, n_test=300), fmt="parquet", max_rounds=2)
    cached: list[int] = []

    class Probe:
        def __getattr__(self, name):  # every other reporter event: nothing to do
            return lambda *a, **k: None

        def round_finished(self, summary):
            with duckdb.connect(str(tmp_path / "run.duckdb")) as con:
                cached.append(int(con.execute("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()"
                                              " WHERE tag = 'BASE_TABLE'").fetchall()[0][0]))  # tables' blocks

    res = api.run(cfg, reporter=Probe())
    assert res.n_pseudo > 0 and len(cached) == 3
    assert max(cached) < 3 * 2**20, cached  # kept, 8-9 MB from the second round on (80,000 prediction rows a round)
