"""Overhead benchmark: time spent outside model fit/predict in a round, and peak memory.

A synthetic pool of N items (two classes, two views of 10 numeric columns each, 1,000 gold
labels, 2,000 held out), two ``sklearn`` logistic-regression views, one co-training round
(k_best, 1,000 picks per view) followed by the final fit. Each pool size runs in two fresh processes:
the first loads the file into the store (creates the run), the second resumes the run and
does the rounds, so its peak RSS is the rounds' own. Reported per N: round wall time,
model fit + predict time, the share outside them (target <= 5%), rows written, and peak RSS
of the rounds process (target: flat as N grows from 100k to 1M, i.e. predictions streamed
in batches of ``cotrain.batch_size``).
Run:  .venv/bin/python bench/overhead.py  [--sizes 100000,300000,1000000]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import print_table, write_json  # noqa: E402


def make_data(n: int, path: Path, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    total = n + 1000 + 2000
    y = rng.integers(0, 2, size=total)
    cols = {}
    for view in ("a", "b"):
        shift = rng.normal(0, 0.6, size=(2, 10))
        X = shift[y] + rng.normal(0, 1.0, size=(total, 10))
        for j in range(10):
            cols[f"{view}_{j}"] = X[:, j].astype(np.float32)
    label = np.where(y == 1, "pos", "neg").astype(object)
    label[:n] = None  # pool
    split = np.array(["train"] * (n + 1000) + ["test"] * 2000, dtype=object)
    cols["id"] = np.char.add("i", np.arange(total).astype(str))
    cols["label"] = label
    cols["split"] = split
    pq.write_table(pa.table(cols), path)


def config(data: Path, store: Path, store_predictions: bool, estimator: str = "logistic_regression") -> dict:
    return {"task": {"labels": ["neg", "pos"]},
            "data": {"train": str(data), "id_column": "id", "split_column": "split"},
            "views": [{"name": "va", "kind": "sklearn", "column_prefix": "a_", "estimator": estimator},
                      {"name": "vb", "kind": "sklearn", "column_prefix": "b_", "estimator": estimator}],
            "cotrain": {"max_rounds": 1, "policy": "k_best", "k": 1000, "batch_size": 50_000,
                        "store_predictions": store_predictions},
            "store": str(store)}


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM resets at exec, unlike ru_maxrss, which a child inherits)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, cfg_json: str) -> None:
    from orchestrator import api
    from orchestrator.config import parse_config
    from orchestrator.rounds import RoundRunner
    from store.database import Store

    cfg = parse_config(json.loads(cfg_json))
    rss0 = peak_rss_mb()
    t = time.perf_counter()
    if mode == "load":
        with Store(cfg.store) as st:
            RoundRunner(cfg, st).start()
    else:
        api.run(cfg)
    out = {"seconds": time.perf_counter() - t, "rss_before_mb": rss0, "peak_rss_mb": peak_rss_mb()}
    print(json.dumps(out))


def measure(n: int, store_predictions: bool, tmp: Path, estimator: str) -> dict:
    data = tmp / f"pool_{n}.parquet"
    if not data.exists():
        make_data(n, data)
    store = tmp / f"s_{n}_{store_predictions}_{estimator}.duckdb"
    cfg = json.dumps(config(data, store, store_predictions, estimator))
    res = {}
    for mode in ("load", "rounds"):
        p = subprocess.run([sys.executable, __file__, "--child", mode, cfg], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parents[1])
        if p.returncode:
            raise SystemExit(p.stderr)
        res[mode] = json.loads(p.stdout.strip().splitlines()[-1])
    import duckdb

    con = duckdb.connect(str(store), read_only=True)
    r0 = con.execute("SELECT seconds_fit, seconds_predict, seconds_total, pool_size, labels_added"
                     " FROM rounds WHERE round = 0").fetchall()[0]
    n_pred = con.execute("SELECT count(*) FROM predictions").fetchall()[0][0]
    con.close()
    fit, pred, total, pool, added = r0
    return {"n": n, "estimator": estimator, "store_predictions": store_predictions, "load_seconds": res["load"]["seconds"],
            "round_seconds": total, "fit_seconds": fit, "predict_seconds": pred,
            "outside_share": 1 - (fit + pred) / total, "pool": pool, "labels_added": added,
            "prediction_rows": n_pred, "rounds_process_seconds": res["rounds"]["seconds"],
            "rss_after_imports_mb": res["rounds"]["rss_before_mb"], "peak_rss_mb": res["rounds"]["peak_rss_mb"],
            "load_peak_rss_mb": res["load"]["peak_rss_mb"]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,300000,1000000")
    ap.add_argument("--estimators", default="logistic_regression,hist_gradient_boosting")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for estimator in args.estimators.split(","):
            for store_predictions in (True, False):
                for n in sizes:
                    r = measure(n, store_predictions, Path(tmp), estimator)
                    results.append(r)
                    print(json.dumps(r), flush=True)
                    rows.append([estimator, f"{n:,}", "yes" if store_predictions else "no",
                                 f"{r['round_seconds']:.2f}", f"{r['fit_seconds']:.2f}", f"{r['predict_seconds']:.2f}",
                                 f"{r['outside_share']:.1%}", f"{r['prediction_rows']:,}", f"{r['peak_rss_mb']:.0f}",
                                 f"{r['load_seconds']:.1f}"])
    print_table("one co-training round, two sklearn views (2 cores)",
                ["estimator", "pool", "store preds", "round s", "fit s", "predict s", "outside fit+predict", "pred rows",
                 "peak RSS MB", "load s"], rows)
    path = write_json("overhead", {"command": "python bench/overhead.py " + " ".join(sys.argv[1:]),
                                   "results": results})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
