"""Shared fixtures: an in-memory store, synthetic multi-view data written to real files."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from store.database import Store

LABELS = ["ant", "bee", "cat"]


@pytest.fixture
def mem_store():
    with Store(":memory:") as st:
        yield st


def synthetic_frame(n: int = 600, n_gold: int = 15, n_test: int = 150, seed: int = 0,
                    noise: float = 1.6) -> pd.DataFrame:
    """Two numeric views (a_*, b_*) of 3 classes; each view alone is noisy, together better."""
    rng = np.random.default_rng(seed)
    total = n + n_test
    y = rng.integers(0, 3, size=total)
    centers_a = rng.normal(0, 1.5, size=(3, 4))
    centers_b = rng.normal(0, 1.5, size=(3, 4))
    a = centers_a[y] + rng.normal(0, noise, size=(total, 4))
    b = centers_b[y] + rng.normal(0, noise, size=(total, 4))
    df = pd.DataFrame({**{f"a_{j}": a[:, j] for j in range(4)}, **{f"b_{j}": b[:, j] for j in range(4)}})
    df.insert(0, "id", [f"it{i:05d}" for i in range(total)])
    labels = np.asarray(LABELS, dtype=object)[y]
    gold = np.full(total, None, dtype=object)
    # stratified gold among the first n rows
    for c in range(3):
        idx = np.flatnonzero(y[:n] == c)[: max(1, n_gold // 3)]
        gold[idx] = labels[idx]
    gold[n:] = labels[n:]
    df["label"] = gold
    df["split"] = ["train"] * n + ["test"] * n_test
    df["truth"] = labels  # for tests only: never named by a view
    return df


def write_config(tmp: Path, df: pd.DataFrame | None = None, *, fmt: str = "csv", store: str = "run.duckdb",
                 **cotrain: Any) -> Path:
    """Write data + a two-view config into ``tmp``; return the config path."""
    df = synthetic_frame() if df is None else df
    data = tmp / f"items.{fmt}"
    if fmt == "csv":
        df.drop(columns=["truth"]).to_csv(data, index=False)
    elif fmt == "jsonl":
        df.drop(columns=["truth"]).to_json(data, orient="records", lines=True)
    else:
        df.drop(columns=["truth"]).to_parquet(data, index=False)
    cfg = {
        "task": {"labels": LABELS},
        "data": {"train": data.name, "id_column": "id", "split_column": "split"},
        "views": [
            {"name": "va", "kind": "sklearn", "column_prefix": "a_"},
            {"name": "vb", "kind": "sklearn", "column_prefix": "b_"},
        ],
        "cotrain": {"max_rounds": 4, "policy": "threshold", "threshold": 0.8, **cotrain},
        "seed": 0,
        "store": store,
    }
    path = tmp / "cotrain.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# ---------------------------------------------------------------------- process-wide state
_PROBE_HEAD = '''
import json, logging, os, warnings
for _n in ("LiteLLM", "httpx", "transformers", "huggingface_hub"):  # loggers a user has configured
    logging.getLogger(_n).setLevel(logging.INFO)

def _state():
    lg = {n: [lg.level, lg.propagate, lg.disabled, [repr(h) for h in lg.handlers], [repr(f) for f in lg.filters]]
          for n, lg in [("", logging.getLogger()), *logging.Logger.manager.loggerDict.items()]
          if isinstance(lg, logging.Logger)}
    return {"env": dict(os.environ), "filters": [repr(f) for f in warnings.filters], "loggers": lg}

'''
_PROBE_SNAP = '''
_before = _state()
'''
_PROBE_TAIL = '''
print("\\n" + json.dumps({"before": _before, "after": _state()}))
'''


@pytest.fixture
def leaves_process_as_found():
    """``check(body, cwd, setup)`` runs ``body`` in a fresh Python between two snapshots of what
    library code must not change (``os.environ``, ``warnings.filters``, every logger that existed
    before, the root included: level, propagate, handlers, filters) and asserts they are equal;
    returns the child's stderr and ``before``. ``setup`` runs before the first snapshot: the
    base dependencies (numpy adds warning filters as it is imported, as it does for anyone).
    Loggers a library creates for itself keep its defaults."""
    import json
    import os
    import subprocess
    import sys
    import textwrap

    root = Path(__file__).resolve().parent.parent

    def check(body: str, cwd: Path, setup: str = "import duckdb, numpy, pandas, pyarrow",
              timeout: float = 300) -> tuple[str, dict[str, Any]]:
        script = _PROBE_HEAD + textwrap.dedent(setup) + _PROBE_SNAP + textwrap.dedent(body) + _PROBE_TAIL
        p = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True,
                           timeout=timeout, env={**os.environ, "PYTHONPATH": str(root)})
        assert p.returncode == 0, p.stderr[-4000:]
        snap = json.loads(p.stdout.strip().splitlines()[-1])
        before, after = snap["before"], snap["after"]
        env_b, env_a = before["env"], after["env"]
        env_diff = {k for k in env_b.keys() | env_a.keys() if env_b.get(k) != env_a.get(k)}
        assert not env_diff, f"environment variables changed: {sorted(env_diff)}"
        assert after["filters"] == before["filters"]
        changed = [n for n, st in before["loggers"].items() if after["loggers"].get(n) != st]
        assert not changed, f"loggers changed: {changed}"
        return p.stderr, before

    return check
