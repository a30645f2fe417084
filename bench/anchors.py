"""Anchors for the quality benchmark: what cotrain has to beat, as pure functions of the
per-view feature matrices, the labels and a split.

``train`` matrices hold the gold and the pool items (``y_semi`` is -1 on the pool); the pool's
true labels (``y_pool``) are only used to score pseudo-labels, never to fit. Methods:

* supervised-only: per view and on all features concatenated, StandardScaler + logistic
  regression fitted on the gold items. C is chosen from {0.01, 0.1, 1, 10} by stratified
  k-fold CV on the gold set (k = min(3, smallest class count)) when every class has at least
  two gold items; with a single gold item in some class no fold could hold it out, so C = 1.
* fully supervised: the same models fitted on every training item's true label, C = 1
  (enough items that regularisation matters little); the best of concatenated and best view.
* scikit-learn ``SelfTrainingClassifier`` around the concatenated model (threshold 0.75,
  10 iterations: its defaults).
* scikit-learn ``LabelSpreading(kernel='knn', n_neighbors=7, alpha=0.2)`` on standardised
  concatenated features (text TF-IDF reduced to 100 SVD components first, since the graph
  needs dense rows); rows left NaN (isolated points) become uniform.
* mvlearn ``CTClassifier`` (binary, two views: one-vs-rest over classes on multi-class data).

TF-IDF blocks are sparse: they are scaled without centring (``with_mean=False``) and joined
to the dense blocks with ``scipy.sparse.hstack``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

C_GRID = (0.01, 0.1, 1.0, 10.0)


@dataclass
class Split:
    """One split's matrices: per view (name, train, test); labels aligned with the rows."""

    views: list[tuple[str, Any, Any]]
    y_semi: np.ndarray     # training rows: the gold label, -1 for pool items
    y_train: np.ndarray    # training rows: the true label (pool included; for fully supervised)
    y_test: np.ndarray
    n_classes: int

    @property
    def gold(self) -> np.ndarray:
        return self.y_semi >= 0


def _dense(x: Any) -> np.ndarray:
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def _model(C: float, is_sparse: bool) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(with_mean=not is_sparse), LogisticRegression(C=C, max_iter=2000))


def concat(mats: list[Any]) -> Any:
    """Join feature blocks side by side (sparse when any block is)."""
    if any(sparse.issparse(m) for m in mats):
        return sparse.hstack([sparse.csr_matrix(m) for m in mats]).tocsr()
    return np.hstack([np.asarray(m, dtype=np.float64) for m in mats])


def choose_c(X: Any, y: np.ndarray) -> float:
    """C by stratified CV on the gold items when every class has >= 2 of them, else 1."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    counts = np.bincount(y)
    counts = counts[counts > 0]
    if counts.min() < 2:
        return 1.0
    cv = StratifiedKFold(n_splits=min(3, int(counts.min())), shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = [cross_val_score(_model(c, sparse.issparse(X)), X, y, cv=cv).mean() for c in C_GRID]
    return float(C_GRID[int(np.argmax(scores))])


def _proba_full(model: Any, X: Any, n_classes: int) -> np.ndarray:
    """predict_proba widened to every class (a class absent from the fit gets 0)."""
    p = model.predict_proba(X)
    out = np.zeros((p.shape[0], n_classes))
    out[:, np.asarray(model.classes_, dtype=int)] = p
    return out


def _fit_acc(Xtr: Any, y: np.ndarray, Xte: Any, y_test: np.ndarray, C: float) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = _model(C, sparse.issparse(Xtr)).fit(Xtr, y)
    return float((m.predict(Xte) == y_test).mean())


def supervised(s: Split) -> dict[str, Any]:
    """Gold-only fits: accuracy per view, best view and all features concatenated."""
    g = s.gold
    per_view = {}
    for name, Xtr, Xte in s.views:
        per_view[name] = _fit_acc(Xtr[g], s.y_semi[g], Xte, s.y_test, choose_c(Xtr[g], s.y_semi[g]))
    Xtr, Xte = concat([v[1] for v in s.views]), concat([v[2] for v in s.views])
    cat = _fit_acc(Xtr[g], s.y_semi[g], Xte, s.y_test, choose_c(Xtr[g], s.y_semi[g]))
    best = max(per_view.values())
    return {"per_view": per_view, "best_view": best, "concat": cat, "ensemble": max(best, cat)}


def fully_supervised(s: Split) -> dict[str, Any]:
    """Every training item with its true label (C = 1): the ceiling co-training aims at."""
    per_view = {name: _fit_acc(Xtr, s.y_train, Xte, s.y_test, 1.0) for name, Xtr, Xte in s.views}
    cat = _fit_acc(concat([v[1] for v in s.views]), s.y_train, concat([v[2] for v in s.views]), s.y_test, 1.0)
    best = max(per_view.values())
    return {"per_view": per_view, "best_view": best, "concat": cat, "ensemble": max(best, cat)}


def _pseudo_stats(labels: np.ndarray, taken: np.ndarray, s: Split) -> dict[str, Any]:
    """Precision and coverage of pseudo-labels on the pool (``taken``: pool rows labelled)."""
    pool = ~s.gold
    lab, truth = labels[pool], s.y_train[pool]
    tk = taken[pool]
    return {"precision": float((lab[tk] == truth[tk]).mean()) if tk.any() else None,
            "coverage": float(tk.mean()), "n_pseudo": int(tk.sum()),
            "per_class": np.bincount(lab[tk].astype(int), minlength=s.n_classes).tolist()}


def self_training(s: Split, seed: int) -> dict[str, Any]:
    """SelfTrainingClassifier around the concatenated model; C chosen on the gold set."""
    from sklearn.semi_supervised import SelfTrainingClassifier

    g = s.gold
    Xtr, Xte = concat([v[1] for v in s.views]), concat([v[2] for v in s.views])
    C = choose_c(Xtr[g], s.y_semi[g])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = SelfTrainingClassifier(_model(C, sparse.issparse(Xtr))).fit(Xtr, s.y_semi)
    acc = float((clf.predict(Xte) == s.y_test).mean())
    taken = (clf.labeled_iter_ > 0) & (clf.transduction_ >= 0)
    return {"ensemble": acc, **_pseudo_stats(clf.transduction_, taken, s)}


def _dense_features(s: Split, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardised, dense concatenation (sparse blocks through a 100-component SVD)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import StandardScaler

    tr, te = [], []
    for _, Xtr, Xte in s.views:
        if sparse.issparse(Xtr):
            svd = TruncatedSVD(n_components=min(100, Xtr.shape[1] - 1), random_state=seed).fit(Xtr)
            Xtr, Xte = svd.transform(Xtr), svd.transform(Xte)
        sc = StandardScaler().fit(Xtr)
        tr.append(sc.transform(Xtr))
        te.append(sc.transform(Xte))
    return np.hstack(tr), np.hstack(te)


def label_spreading(s: Split, seed: int) -> dict[str, Any]:
    """LabelSpreading (knn, 7 neighbours, alpha 0.2); every pool item gets a label unless its
    row stayed NaN (isolated), which counts as not covered."""
    from sklearn.semi_supervised import LabelSpreading

    Xtr, Xte = _dense_features(s, seed)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        ls = LabelSpreading(kernel="knn", n_neighbors=7, alpha=0.2).fit(Xtr, s.y_semi)
        dist = ls.label_distributions_
        ok = np.isfinite(dist).all(axis=1) & (np.nan_to_num(dist).sum(axis=1) > 0)
        p_test = ls.predict_proba(Xte)
    p_test = np.where(np.isfinite(p_test).all(axis=1, keepdims=True), p_test, 1.0 / s.n_classes)
    classes = np.asarray(ls.classes_, dtype=int)
    acc = float((classes[p_test.argmax(1)] == s.y_test).mean())
    labels = classes[np.nan_to_num(dist).argmax(1)]
    return {"ensemble": acc, **_pseudo_stats(labels, ok, s)}


def ct_classifier(s: Split, views: tuple[int, int], seed: int) -> dict[str, Any]:
    """mvlearn's CTClassifier (logistic regressions) on two views; one-vs-rest when multi-class
    (it raises on more than two classes): the argmax of the positive-class probabilities."""
    from mvlearn.semi_supervised import CTClassifier

    a, b = (s.views[i] for i in views)
    Xa_tr, Xa_te, Xb_tr, Xb_te = (_dense(x) for x in (a[1], a[2], b[1], b[2]))
    y = s.y_semi.astype(float)
    y[s.y_semi < 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if s.n_classes == 2:
            ct = CTClassifier(_model(1.0, False), _model(1.0, False), random_state=seed).fit([Xa_tr, Xb_tr], y)
            p = ct.predict_proba([Xa_te, Xb_te])
        else:
            p = np.zeros((len(s.y_test), s.n_classes))
            for c in range(s.n_classes):
                yc = np.where(np.isnan(y), np.nan, (y == c).astype(float))
                ct = CTClassifier(_model(1.0, False), _model(1.0, False), random_state=seed).fit([Xa_tr, Xb_tr], yc)
                p[:, c] = ct.predict_proba([Xa_te, Xb_te])[:, 1]
    return {"ensemble": float((p.argmax(1) == s.y_test).mean())}


def ece(conf: np.ndarray, correct: np.ndarray, bins: int = 15) -> float | None:
    """Expected calibration error over ``bins`` equal-width confidence bins on [0, 1]."""
    conf, correct = np.asarray(conf, dtype=float), np.asarray(correct, dtype=float)
    if conf.size == 0:
        return None
    idx = np.clip((conf * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(total)
