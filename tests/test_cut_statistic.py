"""Lang et al.'s cut statistic: values by hand, an item whose label disagrees with its
neighbourhood scores high, and ``select: cut_statistic`` ranks a real run's candidates."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from orchestrator import api
from orchestrator.cut_statistic import cut_statistic
from store.database import Store
from store.errors import ConfigError
from store.labels import ABSTAIN
from tests.test_adaptive_selection import blob_frame, write_blob_run


def test_cut_statistic_by_hand():
    # three points on a line, 2 neighbours each (itself and the nearest other)
    X = np.array([[0.0], [1.0], [3.0]])
    labels = np.array([0, 0, 1])
    prior = np.array([0.5, 0.5])
    z = cut_statistic(X, labels, prior, n_neighbors=2)
    # item 0: neighbours {0 (d 0), 1 (d 1)}: w = 1, 0.5; none differs: J = 0
    w = np.array([1.0, 0.5])
    expected0 = (0 - 0.5 * w.sum()) / np.sqrt(0.25 * (w ** 2).sum())
    # item 2: neighbours {2 (d 0), 1 (d 2)}: w = 1, 1/3; item 1 differs: J = 1/3
    w2 = np.array([1.0, 1 / 3])
    expected2 = (1 / 3 - 0.5 * w2.sum()) / np.sqrt(0.25 * (w2 ** 2).sum())
    assert z[0] == pytest.approx(expected0) and z[2] == pytest.approx(expected2)


def test_a_label_against_its_neighbourhood_scores_high():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 0.3, (50, 2)), rng.normal(5, 0.3, (50, 2))])
    labels = np.r_[np.zeros(50, dtype=int), np.ones(50, dtype=int)]
    labels[3] = 1                      # a wrong label inside cluster 0
    labels[60] = ABSTAIN
    z = cut_statistic(X, labels, np.array([0.5, 0.5]))
    assert np.argmax(np.where(np.isinf(z), -np.inf, z)) == 3
    assert np.isinf(z[60]) and z[3] > np.percentile(z[np.isfinite(z)], 95)


def test_select_cut_statistic_runs_and_stays_precise(tmp_path: Path):
    df, truth = blob_frame(seed=1)
    path = write_blob_run(tmp_path, df, max_rounds=3)
    cfg = yaml.safe_load(path.read_text())
    cfg["cotrain"].update(select="cut_statistic", cut_view="vb")
    path.write_text(yaml.safe_dump(cfg))
    api.run(path)
    truth_of = dict(zip(df.id, truth))
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        rows = st.con.execute("SELECT item_id, label FROM pseudo_labels WHERE status = 'accepted'").fetchall()
    right = np.array([truth_of[i] == lab for i, lab in rows])
    assert len(rows) > 100 and right.mean() >= 0.9


def test_a_graph_view_gives_the_cut_statistic_its_space(tmp_path: Path):
    """The graph view's ``features`` option shadowed its ``features()`` method, so ranking in
    its space failed with "'str' object is not callable" in round 0 (a probe's finding)."""
    df, truth = blob_frame(seed=1, n_train=300, n_test=60)
    path = write_blob_run(tmp_path, df, max_rounds=2)
    cfg = yaml.safe_load(path.read_text())
    cfg["views"][1] = {"name": "gr", "kind": "graph", "column_prefix": "b_"}
    cfg["cotrain"].update(select="cut_statistic", cut_view="gr")
    path.write_text(yaml.safe_dump(cfg))
    res = api.run(path)
    assert res.status == "finished"
    truth_of = dict(zip(df.id, truth))
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        rows = st.con.execute("SELECT item_id, label FROM pseudo_labels WHERE status = 'accepted'").fetchall()
    assert rows and np.mean([truth_of[i] == lab for i, lab in rows]) >= 0.9


def test_cut_statistic_needs_policy_auto_and_a_known_view(tmp_path: Path):
    df, _ = blob_frame(n_train=200, n_test=50)
    path = write_blob_run(tmp_path, df)
    cfg = yaml.safe_load(path.read_text())
    cfg["cotrain"].update(select="cut_statistic", cut_view="nope")
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="cut_view 'nope'"):
        api.run(path)
    cfg["cotrain"].update(cut_view="va", policy="k_best")
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="ranks the candidates of policy 'auto'"):
        api.run(path)


def test_a_cut_view_without_features_is_refused_before_round_0(tmp_path: Path):
    """It was refused after round 0's cross-validation, fits and predictions (for an LLM view,
    after round 0's calls were paid for), leaving the run failed."""
    df, _ = blob_frame(n_train=200, n_test=50)
    path = write_blob_run(tmp_path, df)
    cfg = yaml.safe_load(path.read_text())
    cfg["views"][1] = {"name": "cen", "kind": "tests.plugin_views:CentroidView", "columns": ["b_0", "b_1"]}
    cfg["cotrain"].update(select="cut_statistic", cut_view="cen")
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"view 'cen' exposes no features"):
        api.run(path)
    assert not (tmp_path / "run.duckdb").exists()  # refused before any run: the store it created is gone


def test_the_cut_statistic_space_does_not_depend_on_the_batch_size():
    """A graph view fits its TF-IDF (or scaler) over what it is given: with one call per
    batch an item's row lay in another space in each batch, stacked vocabularies failed
    ("incompatible dimensions") and batch_size changed the ranking. The pool is one call now."""
    import pandas as pd

    from orchestrator.cut_statistic import cut_rank
    from views.base import ViewContext
    from views.graph import GraphView

    rng = np.random.default_rng(0)
    words = np.array(["goal", "match", "team", "score", "bread", "oven", "flour", "bake"])
    y = rng.integers(0, 2, 300)
    text = [" ".join(rng.choice(words[4 * c:4 * c + 4], 5)) + " " + " ".join(rng.choice(words, 2)) for c in y]
    frame = pd.DataFrame({"text": text})
    view = GraphView.from_params("g", ViewContext(("sport", "food"), 0), text="text", features="tfidf")
    view.resolve_fields(["text"])
    labels, prior = y.copy(), np.array([0.5, 0.5])
    whole = cut_rank(lambda: iter([frame]), [view], labels, prior, "g", 10)
    batched = cut_rank(lambda: (frame.iloc[i:i + 70] for i in range(0, 300, 70)), [view], labels, prior, "g", 10)
    np.testing.assert_allclose(batched, whole)
