"""Debate benchmark: does a multi-agent debate beat self-consistency at equal budget on the
items co-training's views dispute?

Per seed: one co-training round on Rotten Tomatoes (16 gold labels drawn by the seed, a
400-item pool; views TF-IDF, MiniLM and the embedded SmolLM2-135M) yields the pool items that
confident views disagree on (threshold 0.8; topped up with the least confident items when
there are too few). On up to ``--items`` of them, with their true labels, compare:

* single agent (1 call, temperature 0);
* self-consistency: 6 samples, majority (6 calls: the debate's budget);
* debate: 3 agents x 2 rounds, majority (6 calls); the same turns with a confidence-weighted
  vote; and with a judge reading the transcript (7 calls).

Reports accuracy (no verdict counts as wrong), tokens and wall time per item, mean ± sd over
seeds, all on the embedded local model on this CPU.

    .venv/bin/python bench/debate.py              # ~20 min on 2 cores
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.debate import AgentSpec, DebateSpec, Prompts  # noqa: E402
from agents.runner import Debater  # noqa: E402
from bench._common import mean_sd, print_table, write_json  # noqa: E402
from bench.llm import TASKS, fixed_sets, write_items  # noqa: E402
from orchestrator import api  # noqa: E402
from store.database import Store  # noqa: E402
from store.llm_ledger import LLMLedger  # noqa: E402

CACHE = Path(__file__).parent / "cache" / "debate"
LABELS = ["negative", "positive"]


def disputed_items(seed: int, n_items: int, n_pool: int) -> pd.DataFrame:
    """Pool items of one co-training round that the views dispute (then the least confident)."""
    sets = fixed_sets("rt", n_pool, 50)
    folder = CACHE / f"s{seed}"
    items = write_items(folder, sets, 16, seed)
    cfg = {"task": {"labels": LABELS}, "data": {"train": str(items), "split_column": "split"},
           "views": [{"name": "tfidf", "kind": "sklearn", "text": "text"},
                     {"name": "minilm", "kind": "embedding", "text": "text"},
                     {"name": "llm", "kind": "llm", "fields": ["text"], "template": TASKS["rt"]["template"]}],
           "cotrain": {"max_rounds": 1, "policy": "threshold", "threshold": 0.8}, "seed": seed,
           "store": str(CACHE / "cotrain.duckdb")}
    res = api.run(cfg, new_run=True)
    with Store(CACHE / "cotrain.duckdb", read_only=True) as st:
        disputed = [r[0] for r in st.con.execute(
            "SELECT DISTINCT item_id FROM disputes WHERE run_id = ? ORDER BY item_id", [res.run_id]).fetchall()]
        low = [r[0] for r in st.con.execute(
            "SELECT item_id FROM predictions WHERE run_id = ? AND round = 0 GROUP BY item_id"
            " ORDER BY max(coalesce(confidence, 0)), item_id", [res.run_id]).fetchall()]
        data = st.query(f"SELECT i.item_id, d.text FROM items i JOIN data_{res.run_id} d ON d.__row = i.row_idx"
                        " WHERE i.run_id = ?", [res.run_id]).to_pandas()
    chosen = disputed[:n_items] + [i for i in low if i not in disputed][: max(0, n_items - len(disputed))]
    truth = dict(zip(sets["pool"]["text"], sets["pool"]["label"]))
    out = data.set_index("item_id").loc[chosen].reset_index()
    out["truth"] = [truth[t] for t in out["text"]]
    out["trigger"] = ["disputed" if i in disputed else "low_confidence" for i in out["item_id"]]
    return out


def method_specs(seed: int) -> dict[str, DebateSpec]:
    debaters = tuple(AgentSpec(f"agent{i}", temperature=0.7) for i in range(1, 4))
    judge = AgentSpec("judge", temperature=0.0, persona="You are an impartial judge. Read the debate and decide.")
    return {
        "single agent": DebateSpec(agents=(AgentSpec("solo", temperature=0.0),), rounds=1, seed=seed,
                                   max_answer_tokens=64),
        "self-consistency (6 samples)": DebateSpec(
            agents=tuple(AgentSpec(f"sample{i}", temperature=0.7) for i in range(6)), rounds=1, consensus=1.01,
            seed=seed, max_answer_tokens=64),
        "debate 3x2, majority": DebateSpec(agents=debaters, rounds=2, consensus=1.01, seed=seed, max_answer_tokens=64),
        "debate 3x2, confidence vote": DebateSpec(agents=debaters, rounds=2, consensus=1.01, seed=seed,
                                                  aggregation="confidence", max_answer_tokens=64),
        "debate 3x2, judge": DebateSpec(agents=debaters, rounds=2, consensus=1.01, seed=seed, aggregation="judge",
                                        judge=judge, max_answer_tokens=64),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--pool", type=int, default=400)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    shutil.rmtree(CACHE, ignore_errors=True)
    CACHE.mkdir(parents=True)
    t_start = time.perf_counter()
    prompts = Prompts(labels=LABELS, verbalisers=[[x] for x in LABELS], fields=["text"],
                      instructions="Classify the sentiment of a sentence from a movie review.")
    rows: list[dict[str, Any]] = []
    with Store(CACHE / "debate.duckdb") as st:
        ledger = LLMLedger(st, run_id=None)
        for seed in range(args.seeds):
            items = disputed_items(seed, args.items, args.pool)
            y = np.array([LABELS.index(t) for t in items["truth"]])
            triples = [(i, {"text": t}, []) for i, t in zip(items["item_id"], items["text"])]
            for name, spec in method_specs(seed).items():
                t0 = time.perf_counter()
                with Debater(spec, prompts, ledger=ledger, concurrency=4) as d:
                    outs = d.run(triples)
                wall = time.perf_counter() - t0
                verdicts = np.array([o.verdict for o in outs])
                tokens = [sum(int(t["prompt_tokens"] or 0) + int(t["completion_tokens"] or 0) for t in o.turns)
                          for o in outs]  # cached turns included: what the method costs on its own
                turns = [t for o in outs for t in o.turns]
                rows.append({"seed": seed, "method": name, "n_items": len(outs),
                             "n_disputed": int((items["trigger"] == "disputed").sum()),
                             "accuracy": float((verdicts == y).mean()), "no_verdict": int((verdicts < 0).sum()),
                             "calls_per_item": len(turns) / len(outs), "tokens_per_item": float(np.mean(tokens)),
                             "unreadable_turns": sum(t["status"] != "ok" for t in turns) / max(1, len(turns)),
                             "wall_s_per_item": wall / len(outs),
                             "latency_s_per_item": float(np.mean([sum(t["latency_s"] or 0 for t in o.turns)
                                                                  for o in outs]))})
                if name == "debate 3x2, confidence vote":  # same turns as the majority run, from the cache:
                    rows[-1]["latency_s_per_item"] = rows[-2]["latency_s_per_item"]  # charge their model time
                if name == "debate 3x2, judge":
                    rows[-1]["latency_s_per_item"] += rows[-3]["latency_s_per_item"]
                print(f"seed {seed} {name}: acc {rows[-1]['accuracy']:.3f}, {rows[-1]['tokens_per_item']:.0f} tok/item, "
                      f"unreadable {rows[-1]['unreadable_turns']:.2f}", flush=True)
        ledger.close()
    table = []
    for name in method_specs(0):
        r = [x for x in rows if x["method"] == name]
        table.append([name, mean_sd([x["accuracy"] for x in r]), f"{np.mean([x['calls_per_item'] for x in r]):.1f}",
                      f"{np.mean([x['tokens_per_item'] for x in r]):.0f}",
                      f"{np.mean([x['latency_s_per_item'] for x in r]):.1f}",
                      f"{np.mean([x['unreadable_turns'] for x in r]):.2f}", f"{np.mean([x['no_verdict'] for x in r]):.1f}"])
    n_disp = [x["n_disputed"] for x in rows if x["method"] == "single agent"]
    print_table(f"disputed RT items ({args.items} per seed, of which disputed: {n_disp}), SmolLM2-135M, "
                f"mean ± sd over {args.seeds} seeds",
                ["method", "accuracy", "calls/item", "tokens/item", "model s/item", "unreadable turns",
                 "no verdict/seed"], table)
    path = write_json("debate", {"args": vars(args), "rows": rows, "seconds": time.perf_counter() - t_start})
    print(f"\nwrote {path} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
