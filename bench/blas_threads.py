"""BLAS threads for logistic-regression fits: one against two, on this machine.

Why it exists: ``views.heads.one_blas_thread_if_small`` keeps every fit to one BLAS thread on
a machine of two CPUs or fewer; this is the measurement behind that rule, for anyone to
repeat on their own machine. Each shape (rows, features, classes) is fitted with
scikit-learn's ``LogisticRegression`` (lbfgs, at most 100 iterations) under
``threadpoolctl.threadpool_limits`` of 1 and of 2 BLAS threads, best of ``--repeats``.
Run:  .venv/bin/python bench/blas_threads.py [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import print_table, write_json  # noqa: E402

SHAPES = [(1_000_000, 10, 2), (3_000_000, 10, 2), (200_000, 64, 2), (100_000, 384, 2), (100_000, 384, 10),
          (20_000, 1280, 10)]


def main() -> None:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from views.heads import usable_cpus

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results = []
    for n, d, k in SHAPES:
        y = rng.integers(0, k, n)
        X = rng.standard_normal((n, d), dtype=np.float32)
        X[:, 0] += y  # a signal, so lbfgs stops on its own in the easy cases
        best: dict[int, float] = {}
        for threads in (1, 2):
            for _ in range(args.repeats):
                with threadpool_limits(limits=threads, user_api="blas"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    t = time.perf_counter()
                    LogisticRegression(max_iter=100).fit(X, y)
                    best[threads] = min(best.get(threads, np.inf), time.perf_counter() - t)
        results.append({"rows": n, "features": d, "classes": k, "one_thread_s": best[1], "two_threads_s": best[2],
                        "two_over_one": best[2] / best[1]})
        print(results[-1], flush=True)
    print_table(f"LogisticRegression fit, one BLAS thread against two ({usable_cpus()} usable CPUs, "
                f"{os.cpu_count()} on the machine)", ["rows", "features", "classes", "1 thread s", "2 threads s",
                                                      "2 / 1"],
                [[f"{r['rows']:,}", r["features"], r["classes"], f"{r['one_thread_s']:.2f}",
                  f"{r['two_threads_s']:.2f}", f"{r['two_over_one']:.2f}x"] for r in results])
    path = write_json("blas_threads", {"command": "python bench/blas_threads.py " + " ".join(sys.argv[1:]),
                                       "usable_cpus": usable_cpus(), "results": results})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
