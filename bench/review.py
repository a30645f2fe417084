"""Review benchmark: which items should people review after co-training? ``random``,
``uncertainty`` and ``active`` selection (``export --select``) compared at equal budgets,
with a simulated reviewer that answers from the hidden true labels.

Per dataset x seed (the quality benchmark's splits and datasets, ``bench/quality.py``):
cotrain runs once with the default config (the *base* run). Then, per strategy and budget,
on a copy of the base store: ``api.export(select=strategy, sample=budget)`` chooses the
items, the oracle writes their true labels into a review file, ``api.import_reviews``
reads it back (reviewed labels become gold, contradicted pseudo-labels are revoked) and
reopens the run for ``--rounds`` more rounds, and ``api.run`` finishes them. Scored against
the hidden truth: final test accuracy (ensemble) and pseudo-label precision and coverage
(reviewed items excluded). Budget 0 is the base run itself.

Target (issue 15): ``active`` reaches the accuracy ``random`` reaches at 200 reviews with
at most 100 (means over seeds).

    .venv/bin/python bench/review.py                                   # rt, news, segment at 1%, 5 seeds
    .venv/bin/python bench/review.py --datasets segment --seeds 1 --budgets 25,100
Tables on stdout, JSON in bench/results/review.json.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
from bench._common import mean_sd, print_table, stratified_split, write_json  # noqa: E402
from bench.datasets import CACHE, MAKERS, Dataset  # noqa: E402
from bench.quality import read_pseudo, write_items  # noqa: E402

STRATEGIES = ("random", "uncertainty", "active")


def _config(ds: Dataset, data: Path, store: Path, seed: int) -> dict[str, Any]:
    return {"task": {"labels": ds.classes}, "data": {"train": str(data), "split_column": "split", "id_column": "id"},
            "views": ds.view_configs(), "seed": seed, "store": str(store), "cotrain": {"max_rounds": ds.max_rounds}}


def _score(ds: Dataset, store: Path, res: Any, n_pool: int, tmp: Path) -> dict[str, Any]:
    """Final test accuracy and the accepted pseudo-labels' precision and coverage."""
    final = res.final_metrics.get("ensemble", {}).get("test_accuracy")
    pl = read_pseudo(store, res.run_id, tmp)
    truth = np.asarray(ds.classes, dtype=object)[ds.y[pl["item_id"].astype(int).to_numpy()]]
    correct = pl["label"].to_numpy() == truth
    return {"accuracy": final, "precision": float(correct.mean()) if len(pl) else None,
            "coverage": len(pl) / n_pool, "n_pseudo": int(len(pl))}


def review_once(ds: Dataset, cfg: dict[str, Any], base: Path, work: Path, strategy: str, budget: int, seed: int,
                rounds: int, n_pool: int, tmp: Path) -> dict[str, Any]:
    """One simulated review of ``budget`` items chosen by ``strategy``, then ``rounds`` rounds."""
    from orchestrator import api

    shutil.copyfile(base, work)
    chosen = tmp / "chosen.csv"
    t = time.perf_counter()
    api.export(work, chosen, "csv", select=strategy, sample=budget, seed=seed, force=True)
    seconds_select = time.perf_counter() - t
    picked = pd.read_csv(chosen, dtype={"item_id": str, "label": str}, keep_default_na=False)
    truth = np.asarray(ds.classes, dtype=object)[ds.y[picked["item_id"].astype(int).to_numpy()]]
    was_pseudo = picked["label"].to_numpy() != ""
    reviews = tmp / "reviews.csv"
    pd.DataFrame({"item_id": picked["item_id"], "label": truth}).to_csv(reviews, index=False)
    api.import_reviews(work, reviews, rounds=rounds)
    res = api.run(cfg)
    out = _score(ds, work, res, n_pool, tmp)
    out.update(n_reviewed=int(len(picked)), n_unlabelled=int((~was_pseudo).sum()),
               n_corrected=int((was_pseudo & (picked["label"].to_numpy() != truth)).sum()),
               seconds_select=seconds_select)
    return out


def run_seed(ds: Dataset, frame: pd.DataFrame, rate: float, seed: int, budgets: list[int], strategies: list[str],
             rounds: int) -> dict[str, Any]:
    from orchestrator import api

    test, gold, pool = stratified_split(ds.y, rate, ds.n_test, seed)
    row: dict[str, Any] = {"dataset": ds.name, "rate": rate, "seed": seed, "n_gold": len(gold), "n_pool": len(pool),
                           "n_test": len(test), "results": {}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = tmp / "items.parquet"
        write_items(ds, frame, test, gold, pool, data)
        base = tmp / "base.duckdb"
        if ds.cache_store() is not None and ds.cache_store().exists():  # encoded features travel with the store
            shutil.copyfile(ds.cache_store(), base)
        work = tmp / "run.duckdb"
        cfg = _config(ds, data, work, seed)
        t = time.perf_counter()
        res = api.run({**cfg, "store": str(base)}, new_run=True)
        row["base_seconds"] = time.perf_counter() - t
        row["results"]["base"] = _score(ds, base, res, len(pool), tmp)
        shutil.copyfile(base, work)
        res = api.run(cfg)  # the same run under the work path: a finished run, nothing to do
        assert res.already_finished, "the base run did not carry over to the work store"
        for strategy in strategies:
            for budget in budgets:
                t = time.perf_counter()
                r = review_once(ds, cfg, base, work, strategy, budget, seed, rounds, len(pool), tmp)
                r["seconds"] = time.perf_counter() - t
                row["results"][f"{strategy}@{budget}"] = r
                print(f"  {ds.name} seed {seed} {strategy}@{budget}: acc {r['accuracy']:.3f}"
                      f" precision {r['precision'] if r['precision'] is None else round(r['precision'], 3)}"
                      f" ({r['n_unlabelled']} unlabelled, {r['n_corrected']} corrected; {r['seconds']:.0f} s)",
                      flush=True)
    return row


def _mean(rows: list[dict[str, Any]], key: str, field: str) -> float | None:
    xs = [r["results"][key][field] for r in rows if r["results"].get(key, {}).get(field) is not None]
    return float(np.mean(xs)) if xs else None


def summarise(rows: list[dict[str, Any]], budgets: list[int], strategies: list[str]) -> tuple[list[list[str]], dict]:
    """Per strategy and budget: mean ± sd of accuracy and precision; and the target check."""
    table = [["(base run)", "0", mean_sd([r["results"]["base"]["accuracy"] for r in rows]),
              mean_sd([r["results"]["base"]["precision"] for r in rows]),
              mean_sd([r["results"]["base"]["coverage"] for r in rows]), "-"]]
    for s in strategies:
        for b in budgets:
            k = f"{s}@{b}"
            table.append([s, str(b), mean_sd([r["results"][k]["accuracy"] for r in rows]),
                          mean_sd([r["results"][k]["precision"] for r in rows]),
                          mean_sd([r["results"][k]["coverage"] for r in rows]),
                          f"{np.mean([r['results'][k]['n_corrected'] for r in rows]):.1f}"])
    check: dict[str, Any] = {}
    top = max(budgets)
    if "random" in strategies and "active" in strategies:
        ref = _mean(rows, f"random@{top}", "accuracy")
        reach = [b for b in budgets if (_mean(rows, f"active@{b}", "accuracy") or -1) >= (ref or 2)]
        check = {"random_at_max": ref, "max_budget": top, "active_budget_to_match": min(reach) if reach else None,
                 "pass": bool(reach) and min(reach) <= top // 2}
    return table, check


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="rt,news,segment")
    ap.add_argument("--rate", type=float, default=0.01)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budgets", default="25,50,100,200")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--rounds", type=int, default=2, help="rounds run after each review import")
    ap.add_argument("--out", default="review")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    strategies = args.strategies.split(",")
    CACHE.mkdir(exist_ok=True)
    t_all = time.perf_counter()
    runs, summary = [], {}
    for key in args.datasets.split(","):
        ds = MAKERS[key]()
        ds.prepare()
        frame = ds.frame()
        rows = []
        for seed in range(args.seeds):
            rows.append(run_seed(ds, frame, args.rate, seed, budgets, strategies, args.rounds))
        runs.extend(rows)
        table, check = summarise(rows, budgets, strategies)
        summary[ds.name] = check
        print_table(f"{ds.name} at {args.rate:.0%} gold ({rows[0]['n_gold']} gold, {rows[0]['n_pool']} pool), "
                    f"{args.rounds} round(s) after review, mean ± sd over {len(rows)} seed(s)",
                    ["strategy", "reviews", "test accuracy", "PL precision", "PL coverage", "corrected"], table)
        if check:
            print(f"target: random@{check['max_budget']} = {check['random_at_max']:.3f}; active matches it at "
                  f"{check['active_budget_to_match']} reviews -> {'pass' if check['pass'] else 'MISS'}")
    path = write_json(args.out, {"command": "python bench/review.py " + " ".join(sys.argv[1:]),
                                 "seconds": time.perf_counter() - t_all, "summary": summary, "runs": runs})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
