"""The ``graph`` view: label spreading over a kNN graph, on real data (scikit-learn's moons and
digits, the packaged MiniLM encoder), its two paths against each other, and a real run."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_digits, make_moons
from sklearn.linear_model import LogisticRegression

from orchestrator import api
from store.adapters import StoreCache
from store.database import Store
from store.errors import ViewError
from tests.conftest import sentiment_frame, write_config
from views.base import ViewContext
from views.embedding import EmbeddingView
from views.graph import GraphView, knn_indices, spread_small, spread_sparse


def _moons(n: int = 2000, noise: float = 0.1, per_class: int = 10, seed: int = 0):
    """Two interleaved moons, ``per_class`` labelled items per class (1% of 2,000)."""
    X, y = make_moons(n, noise=noise, random_state=seed)
    rng = np.random.default_rng(seed)
    lab = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in (0, 1)])
    return X, y, lab, np.setdiff1d(np.arange(n), lab)


def _view(labels: tuple[str, ...] = ("a", "b"), **params) -> GraphView:
    return GraphView.from_params("g", ViewContext(labels, seed=0), **params)


def _fit_predict(view: GraphView, df: pd.DataFrame, y: np.ndarray, lab: np.ndarray, un: np.ndarray) -> np.ndarray:
    view.resolve_fields(list(df.columns))
    view.fit(df.iloc[lab].reset_index(drop=True), y[lab], np.ones(len(lab)))
    return view.predict_proba(df.iloc[un].reset_index(drop=True))


@pytest.mark.parametrize("small_max_items", [20_000, 0])
def test_graph_beats_logistic_regression_on_moons_with_one_percent_labels(small_max_items: int):
    X, y, lab, un = _moons()
    lr = LogisticRegression().fit(X[lab], y[lab]).score(X[un], y[un])
    view = _view(column_prefix="m_", small_max_items=small_max_items)
    proba = _fit_predict(view, pd.DataFrame(X, columns=["m_0", "m_1"]), y, lab, un)
    assert view.last_path_ == ("small" if small_max_items else "sparse")
    assert not np.isnan(proba).any() and np.allclose(proba.sum(axis=1), 1.0)
    acc = float((proba.argmax(axis=1) == y[un]).mean())
    assert lr == pytest.approx(0.836, abs=0.01)  # a line cannot follow the moons
    assert acc >= 0.96 and acc >= lr + 0.10, (acc, lr)  # measured: 0.970 (small), 0.972 (sparse)


def test_graph_beats_logistic_regression_on_digits_with_one_percent_labels():
    d = load_digits()
    rng = np.random.default_rng(0)
    lab = np.concatenate([rng.choice(np.flatnonzero(d.target == c), 2, replace=False) for c in range(10)])
    un = np.setdiff1d(np.arange(len(d.target)), lab)
    lr = LogisticRegression(max_iter=1000).fit(d.data[lab], d.target[lab]).score(d.data[un], d.target[un])
    df = pd.DataFrame(d.data, columns=[f"px_{i}" for i in range(64)])
    proba = _fit_predict(_view(tuple("0123456789"), column_prefix="px_", scale=False), df, d.target, lab, un)
    acc = float((proba.argmax(axis=1) == d.target[un]).mean())
    assert acc >= lr + 0.05, (acc, lr)  # measured: 0.891 against 0.802


def test_small_and_sparse_paths_agree_on_moons():
    X, y, lab, _ = _moons(n=1500, noise=0.12, per_class=8, seed=1)
    y_local = np.full(len(y), -1)
    y_local[lab] = y[lab]
    a = spread_small(X, y_local, 2, 10, 0.2, 30)
    b = spread_sparse(X, y_local, 2, 10, 0.2, 30)
    unl = y_local < 0
    assert (a[unl].argmax(axis=1) == b[unl].argmax(axis=1)).mean() >= 0.98
    pa, pb = a / a.sum(axis=1, keepdims=True), b / b.sum(axis=1, keepdims=True)
    assert np.abs(pa - pb).max(axis=1).mean() < 0.05  # the distributions too, not only the argmax


def test_unseen_classes_get_zero_and_an_unreached_cluster_abstains():
    """An item no labelled item reaches (its own graph component) abstains, in both paths."""
    X, y, lab, un = _moons(n=400, per_class=4)
    far = np.random.default_rng(0).normal(50.0, 0.1, size=(20, 2))  # 20 items > n_neighbors: a component
    df = pd.DataFrame(np.vstack([X, far]), columns=["m_0", "m_1"])
    asked = np.concatenate([un, np.arange(400, 420)])
    for small_max_items in (20_000, 0):
        view = _view(("a", "b", "never"), column_prefix="m_", n_neighbors=8, small_max_items=small_max_items)
        proba = _fit_predict(view, df, np.concatenate([y, np.zeros(20, dtype=int)]), lab, asked)
        assert np.isnan(proba[-20:]).all(), small_max_items
        voted = proba[:-20]
        assert not np.isnan(voted).any() and np.allclose(voted.sum(axis=1), 1.0)
        assert (voted[:, 2] == 0).all()  # a class never labelled gets 0
        assert (voted.argmax(axis=1) == y[un]).mean() > 0.9


def test_neighbours_exclude_self_even_for_duplicates():
    X = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    idx = knn_indices(X, 2)
    assert all(i not in row for i, row in enumerate(idx))
    assert set(idx[0]) == {1, 2} and set(idx[1]) == {0, 2}


def test_neighbour_backends_agree(monkeypatch: pytest.MonkeyPatch):
    """64-D features: faiss's exact search (when installed) and scikit-learn's brute force
    (faiss hidden) find the same neighbours as a ball tree."""
    from sklearn.neighbors import NearestNeighbors

    X = load_digits().data[:800] + np.random.default_rng(0).normal(0, 1e-3, size=(800, 64))  # no ties
    ref = NearestNeighbors(n_neighbors=11, algorithm="ball_tree").fit(X).kneighbors(X, return_distance=False)[:, 1:]
    first = knn_indices(X, 10)
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    for idx in (first, knn_indices(X, 10)):
        assert np.mean([set(a) == set(b) for a, b in zip(idx, ref)]) >= 0.99


def test_tfidf_text_features_and_zero_weights():
    df = sentiment_frame(n_gold=8, n_pool=40, n_test=0)
    y = (np.arange(len(df)) % 2).astype(int)
    w = np.ones(8)
    w[0] = 0.0  # dropped: weight 0
    for small_max_items in (20_000, 0):
        view = _view(("negative", "positive"), text="text", features="tfidf", n_neighbors=5,
                     small_max_items=small_max_items)
        view.resolve_fields(list(df.columns))
        view.fit(df.iloc[:8], y[:8], w)
        assert len(view.y_) == 7
        proba = view.predict_proba(df.iloc[8:].reset_index(drop=True))
        voted = ~np.isnan(proba).any(axis=1)
        assert voted.mean() > 0.9 and (proba[voted].argmax(axis=1) == y[8:][voted]).mean() > 0.7


def _topic_frame(n: int = 48) -> tuple[pd.DataFrame, np.ndarray]:
    """Short sentences about football or cooking (label 0 / 1), varied by their words."""
    rng = np.random.default_rng(0)
    sport = (["the striker", "our goalkeeper", "the referee", "the home team", "the coach"],
             ["scored in the final minute", "missed a penalty", "won the league", "lost the derby on Sunday"])
    food = (["my grandmother", "the chef", "our baker", "the cookbook", "a street vendor"],
            ["roasted the garlic slowly", "baked fresh sourdough bread", "simmered a tomato sauce",
             "fried the onions in butter"])
    y = np.arange(n) % 2
    text = [f"{subj[rng.integers(len(subj))]} {verb[rng.integers(len(verb))]}"
            for subj, verb in (food if c else sport for c in y)]
    return pd.DataFrame({"text": text}), y


def test_embedding_features_share_the_embedding_views_cache(tmp_path: Path):
    pytest.importorskip("sentence_transformers")
    df, y = _topic_frame()
    with Store(tmp_path / "s.duckdb") as st:
        view = GraphView.from_params("g", ViewContext(("sport", "food"), 0, cache=StoreCache(st)),
                                     text="text", n_neighbors=8)
        view.resolve_fields(list(df.columns))
        view.fit(df.iloc[:6], y[:6], np.ones(6))  # 3 labelled sentences per topic
        proba = view.predict_proba(df.iloc[6:].reset_index(drop=True))
        assert (proba.argmax(axis=1) == y[6:]).mean() >= 0.95
        encoded = view._embedding_view().encoded_count_
        assert encoded == len(set(df.text))
        again = view.predict_proba(df.iloc[6:].reset_index(drop=True))
        assert np.array_equal(again, proba) and view._embedding_view().encoded_count_ == encoded
    with Store(tmp_path / "s.duckdb") as st:  # an embedding view reads the vectors the graph view cached
        emb = EmbeddingView.from_params("e", ViewContext(("sport", "food"), 0, cache=StoreCache(st)), text="text")
        emb.embed(df.text.tolist())
        assert emb.encoded_count_ == 0


def test_bad_input_is_one_error():
    with pytest.raises(ViewError, match="exactly one of"):
        GraphView.from_params("g", ViewContext(("a", "b"), 0), text="t", columns=["x"])
    with pytest.raises(ViewError, match="'features' applies to a 'text' field only"):
        GraphView.from_params("g", ViewContext(("a", "b"), 0), columns=["x"], features="tfidf")
    tfidf = GraphView.from_params("g", ViewContext(("a", "b"), 0), text="t", features="tfidf")
    tfidf.resolve_fields(["t"])
    tfidf.fit(pd.DataFrame({"t": ["a", "b"]}), np.array([0, 1]), np.ones(2))
    with pytest.raises(ViewError, match=r"view 'g': TF-IDF over field 't' failed: empty vocabulary"):
        tfidf.predict_proba(pd.DataFrame({"t": ["x", ""]}))  # one-letter words only: no vocabulary
    view = _view(columns=["x"])
    view.resolve_fields(["x"])
    with pytest.raises(ViewError, match=r"column 'x' holds 'oops' at item 'row 2'"):
        view.fit(pd.DataFrame({"x": ["1.0", "oops"]}), np.array([0, 1]), np.ones(2))


def _moons_frame(n: int = 600, n_gold: int = 10, n_test: int = 150) -> pd.DataFrame:
    X, y = make_moons(n + n_test, noise=0.1, random_state=0)
    labels = np.where(y == 1, "bee", "ant").astype(object)
    gold = np.full(n + n_test, None, dtype=object)
    for c in (0, 1):
        idx = np.flatnonzero(y[:n] == c)[: n_gold // 2]
        gold[idx] = labels[idx]
    gold[n:] = labels[n:]
    return pd.DataFrame({"id": [f"m{i:04d}" for i in range(n + n_test)], "m_0": X[:, 0], "m_1": X[:, 1],
                         "label": gold, "split": ["train"] * n + ["test"] * n_test, "truth": labels})


def test_a_run_with_a_graph_view_stores_its_metrics(tmp_path: Path):
    cfg_path = write_config(tmp_path, _moons_frame(), max_rounds=2)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["views"] = [{"name": "lr", "kind": "sklearn", "column_prefix": "m_"},
                    {"name": "g", "kind": "graph", "column_prefix": "m_", "n_neighbors": 8}]
    cfg_path.write_text(yaml.safe_dump(cfg))
    res = api.run(cfg_path)
    assert res.status == "finished"
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        rounds = st.con.execute("SELECT round, test_accuracy, n_train FROM metrics WHERE view = 'g'"
                                " ORDER BY round").fetchall()
        added = st.scalar("SELECT labels_added FROM metrics WHERE view = 'g' AND round = 0")
    assert [r for r, _, _ in rounds] == [0, 1, 2] and all(acc is not None for _, acc, _ in rounds)
    # round 0 spreads 10 gold labels over the 590-item pool: most of it is confidently labelled
    assert added > 400 and rounds[1][2] > 200
    final = res.final_metrics
    # the graph's labels teach the logistic regression too (cross feeding): both end high, the
    # graph no lower than the regression it taught
    assert final["g"]["test_accuracy"] >= 0.9 and final["g"]["test_accuracy"] >= final["lr"]["test_accuracy"], final

