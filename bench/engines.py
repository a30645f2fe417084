"""Engine benchmark, one machine: the local engine against ``engine: ray`` on the same run.

The work (issue 14): two logistic-regression views (columns a_0-a_4 and a_5-a_9), policy
``threshold`` 0.9 with cross feeding, ``max_rounds`` 2 (rounds 0-1 predict the pool and
select; round 2 is the final fit), 1,000 gold labels, 2,000 held-out items, two classes, N
pool items read from one Parquet file, ``store_predictions`` off. Each run is a fresh process
(``api.run``); the Ray run starts a local cluster on this machine's CPUs (one actor beside the
shard reads on 2 CPUs) and exports the shards itself, both inside its time.

Reported per engine and N: seconds in all, seconds per pool round (rounds 0-1 from the store's
``rounds`` table), pool items predicted per second, the driver's own peak RSS (``VmHWM``; Ray's
worker processes are not the driver), the labels added, whether the two engines' labels are
identical (a hash of every pseudo-label's item, label and round), and per engine a least-squares
fit of the total seconds against N with its R² (target: >= 0.98).
Run:  .venv/bin/python bench/engines.py [--sizes 1000000,3000000,10000000]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench._common import print_table, write_json  # noqa: E402
from bench.scale import make_data  # noqa: E402

CHILD = r"""
import json, sys, time
t = time.perf_counter()
from orchestrator import api
api.run(sys.argv[1])
wall = time.perf_counter() - t
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print(json.dumps({"seconds": wall, "driver_peak_rss_mb": hwm}))
"""


def config(data: Path, store: Path, engine: str) -> dict:
    views = [{"name": name, "kind": "sklearn", "columns": [f"a_{j}" for j in cols], "estimator": "logistic_regression",
              "estimator_params": {"C": 1.0}, "scale": False}
             for name, cols in (("va", range(0, 5)), ("vb", range(5, 10)))]
    return {"task": {"labels": ["neg", "pos"]},
            "data": {"train": str(data), "id_column": "id", "split_column": "split"},
            "views": views,
            "cotrain": {"policy": "threshold", "threshold": 0.9, "feeding": "cross", "max_rounds": 2,
                        "calibration_folds": 0, "store_predictions": False, "batch_size": 65536},
            "engine": {"kind": engine, "shard_rows": 500_000} if engine == "ray" else {"kind": "local"},
            "store": str(store)}


def run_one(n: int, engine: str, data: Path, tmp: Path) -> dict:
    import duckdb

    store, cfg = tmp / f"s_{n}_{engine}.duckdb", tmp / f"c_{n}_{engine}.json"
    cfg.write_text(json.dumps(config(data, store, engine)))
    (tmp / "child.py").write_text(CHILD)
    proc = subprocess.run([sys.executable, str(tmp / "child.py"), str(cfg)], cwd=tmp, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode:
        raise SystemExit(f"{engine} at {n} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    con = duckdb.connect(str(store), read_only=True)
    labels = con.execute("SELECT item_id, label, round FROM pseudo_labels ORDER BY item_id").fetchall()
    rounds = con.execute("SELECT round, pool_size, seconds_predict, seconds_total FROM rounds ORDER BY round").fetchall()
    con.close()
    store.unlink()
    pool_rounds = [r for r in rounds if r[2] is not None and r[2] > 0]
    predicted = sum(r[1] for r in pool_rounds)
    round_s = sum(r[3] for r in pool_rounds)
    digest = hashlib.sha256(repr(labels).encode()).hexdigest()[:16]
    r = {"n": n, "engine": engine, "seconds": out["seconds"], "driver_peak_rss_mb": out["driver_peak_rss_mb"],
         "pool_rounds": len(pool_rounds), "seconds_per_pool_round": round_s / max(len(pool_rounds), 1),
         "items_per_s": predicted / round_s if round_s else None, "added": len(labels), "labels_sha": digest}
    print(json.dumps(r), flush=True)
    return r


def linear_fit(ns: list[int], secs: list[float]) -> tuple[float, float, float]:
    """(seconds per million items, intercept seconds, R²) of a least-squares line."""
    x, y = np.asarray(ns, float) / 1e6, np.asarray(secs, float)
    slope, icpt = np.polyfit(x, y, 1)
    ss_res = float(((y - (slope * x + icpt)) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return float(slope), float(icpt), 1.0 - ss_res / ss_tot if ss_tot else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,3000000,10000000")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for n in sizes:
            data = Path(tmp) / f"pool_{n}.parquet"
            make_data(n, data)
            pair = [run_one(n, engine, data, Path(tmp)) for engine in ("local", "ray")]
            same = pair[0]["labels_sha"] == pair[1]["labels_sha"]
            for r in pair:
                r["labels_equal"] = same
            results.extend(pair)
            data.unlink()
    fits = {}
    for engine in ("local", "ray"):
        rs = [r for r in results if r["engine"] == engine]
        if len(rs) >= 2:
            slope, icpt, r2 = linear_fit([r["n"] for r in rs], [r["seconds"] for r in rs])
            fits[engine] = {"seconds_per_million": slope, "intercept_s": icpt, "r2": r2}
    rows = [[f"{r['n']:,}", r["engine"], f"{r['seconds']:.1f}", f"{r['seconds_per_pool_round']:.1f}",
             f"{r['items_per_s']:,.0f}" if r["items_per_s"] else "-", f"{r['driver_peak_rss_mb']:.0f}",
             f"{r['added']:,}", "yes" if r["labels_equal"] else "NO"] for r in results]
    print_table("two logistic-regression views, threshold 0.9, cross feeding, 2 pool rounds (process start to end)",
                ["pool", "engine", "seconds", "s / pool round", "items/s in rounds", "driver peak RSS MB", "labels added",
                 "labels equal"], rows)
    print_table("seconds against N (least squares)", ["engine", "s per 1M items", "intercept s", "R²"],
                [[e, f"{f['seconds_per_million']:.1f}", f"{f['intercept_s']:.1f}", f"{f['r2']:.4f}"]
                 for e, f in fits.items()])
    path = write_json("engines", {"command": "python bench/engines.py " + " ".join(sys.argv[1:]), "results": results,
                                  "fits": fits, "cpus": os.cpu_count()})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
