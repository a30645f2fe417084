"""Helpers shared by the benchmark scripts: splits, result tables and JSON output."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"


def stratified_split(y: np.ndarray, frac_labelled: float, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(test, labelled, unlabelled) index arrays. Labelled = ``frac_labelled`` of the non-test
    items, stratified, at least one per class."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))
    classes = np.unique(y)
    test = np.concatenate([idx[y[idx] == c][: round(n_test * (y == c).mean())] for c in classes])
    rest = np.setdiff1d(idx, test, assume_unique=True)
    rest = rest[rng.permutation(len(rest))]
    n_lab = max(len(classes), round(frac_labelled * len(rest)))
    labelled = []
    for c in classes:
        members = rest[y[rest] == c]
        take = max(1, round(n_lab * len(members) / len(rest)))
        labelled.extend(members[:take].tolist())
    labelled = np.sort(np.asarray(labelled))
    unlabelled = np.setdiff1d(rest, labelled)
    return np.sort(test), labelled, unlabelled


def mean_sd(xs: list[float]) -> str:
    a = np.asarray([x for x in xs if x is not None], dtype=float)
    if a.size == 0:
        return "-"
    return f"{a.mean():.3f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.3f}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": {"python": platform.python_version(), "processor": platform.processor(),
                           "cpus": __import__("os").cpu_count()},
               "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=float))
    return path
