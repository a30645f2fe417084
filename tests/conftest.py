"""Shared fixtures and helpers: an in-memory store, synthetic multi-view data and sentiment
items written to real files, LLM and debate configs, and a check that code leaves the process
as it found it. Test files import helpers from here, never from one another."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
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


def write_estimates(store: Path, rounds: dict[int, dict[str, Any]], views: dict[int, list[dict[str, Any]]],
                    p_correct: dict[str, float | None] | None = None, run_id: int = 1) -> None:
    """Give a finished run's store known selection estimates (migration 008), replacing any the
    run wrote: ``rounds`` (round -> ``round_estimates`` columns; the rest NULL, counts 0),
    ``views`` (round -> one ``view_estimates`` row per view), ``p_correct`` (item -> its
    accepted pseudo-label's value). Rows are written as given (no writer derives a value)."""
    with Store(store) as st, st.transaction():
        st.con.execute("DELETE FROM round_estimates WHERE run_id = ?", [run_id])
        st.con.execute("DELETE FROM view_estimates WHERE run_id = ?", [run_id])
        cols = ["combination", "n_calibration", "calibration_accuracy", "n_candidates", "n_selected", "est_precision",
                "est_precision_all", "coverage", "class_bars", "class_quota", "class_selected", "stopped"]
        for r, given in rounds.items():
            row = {"combination": "product", "n_calibration": 0, "n_candidates": 0, "n_selected": 0, **given}
            st.con.execute(f"INSERT INTO round_estimates (run_id, round, {', '.join(cols)})"
                           f" VALUES (?, ?, {', '.join('?' * len(cols))})", [run_id, r, *(row.get(c) for c in cols)])
        for r, rows in views.items():
            for v in rows:
                st.con.execute("INSERT INTO view_estimates VALUES (?, ?, ?, ?, ?, ?)",
                               [run_id, r, v["view"], v.get("cv_accuracy"), v.get("label_model_accuracy"),
                                v.get("weight")])
        for item, p in (p_correct or {}).items():
            st.con.execute("UPDATE pseudo_labels SET p_correct = ? WHERE run_id = ? AND item_id = ?"
                           " AND status = 'accepted'", [p, run_id, item])


# ---------------------------------------------------------------------- LLM views and debates
GOOD = ["good", "great", "wonderful", "excellent"]
BAD = ["dull", "boring", "awful", "tedious"]
TOPICS = ["acting", "plot", "score", "pacing", "dialogue", "camera work", "ending", "cast", "script", "editing"]


def sentiment_frame(n_gold: int = 8, n_pool: int = 40, n_test: int = 20, seed: int = 0) -> pd.DataFrame:
    """Short reviews whose label is told by one GOOD or BAD word (the rule of
    ``tests.openai_server``): ``n_gold`` labelled, ``n_pool`` unlabelled, ``n_test`` held out."""
    rng = np.random.default_rng(seed)
    n = n_gold + n_pool + n_test
    y = np.arange(n) % 2
    words = [(GOOD if lab else BAD)[rng.integers(0, 4)] for lab in y]
    text = [f"the {TOPICS[rng.integers(0, 10)]} was {w}, {TOPICS[rng.integers(0, 10)]} {i}" for i, w in enumerate(words)]
    labels = np.where(y == 1, "positive", "negative").astype(object)
    gold = labels.copy()
    gold[n_gold:n_gold + n_pool] = None
    split = ["train"] * (n_gold + n_pool) + ["test"] * n_test
    return pd.DataFrame({"id": [f"r{i:03d}" for i in range(n)], "text": text, "label": gold, "split": split})


def one_value(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> object:
    """The first column of the first row ``sql`` returns."""
    return con.execute(sql, params or []).fetchall()[0][0]


def tiny_llama(folder: Path) -> Path:
    """A real, untrained two-layer Llama with the packaged SmolLM2's tokenizer and chat
    template, saved into ``folder`` as transformers saves any model (weights seeded without
    touching torch's global RNG): batching, padding, cache and ledger checked in seconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from views.llm.local import local_model

    gguf = local_model("smollm2-135m").path()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def llm_config(tmp: Path, base_url: str, *, key_env: str | None = "COTRAIN_TEST_KEY", max_rounds: int = 2,
               df: pd.DataFrame | None = None, **llm: object) -> Path:
    """Write ``items.csv`` (``sentiment_frame`` unless ``df``) and a config with an ``llm`` view
    at ``base_url`` (``llm`` overrides its keys) and a TF-IDF view into ``tmp``."""
    (df if df is not None else sentiment_frame()).to_csv(tmp / "items.csv", index=False)
    view = {"name": "llm", "kind": "llm", "model": "openai/fake", "api_base": base_url, "fields": ["text"],
            "scoring": "logprobs", "concurrency": 2, "timeout_s": 30.0, "backoff_s": 0.01, **llm}
    if key_env:
        view["api_key_env"] = key_env
    cfg = {"task": {"labels": [{"name": "negative", "description": "a bad opinion"},
                               {"name": "positive", "description": "a good opinion"}]},
           "data": {"train": "items.csv", "id_column": "id", "split_column": "split"},
           "views": [view, {"name": "tfidf", "kind": "sklearn", "text": "text"}],
           "cotrain": {"max_rounds": max_rounds, "k": 6}, "seed": 0, "store": "run.duckdb"}
    path = tmp / "cotrain.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def debate_config(tmp: Path, base_url: str, **debate: Any) -> Path:
    """``llm_config`` (no key) plus a ``debate`` section: 3 agents at ``base_url``, 2 rounds;
    ``debate`` overrides its keys."""
    cfg_path = llm_config(tmp, base_url, key_env=None)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["debate"] = {"fields": ["text"], "agents": [{"name": f"a{i}", "model": "openai/fake", "api_base": base_url}
                                                     for i in range(3)], "rounds": 2, "consensus": 0.95,
                     "timeout_s": 2.0, **debate}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg_path


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
