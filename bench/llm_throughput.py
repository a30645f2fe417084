"""LLM view throughput against a fast server (issue 14, item 4).

A local OpenAI-compatible test server (``tests/openai_server.py``, asyncio engine, in its own
process) answers every request after a fixed delay with unlimited parallelism: a stand-in
for a vLLM box. On it, over the same number of distinct items each:

* a raw ``openai.AsyncOpenAI`` client at a fixed concurrency (a semaphore), and
* the ``llm`` view (``predict_proba``: prompts, cache lookups, ledger rows in a DuckDB file)
  with ``max_concurrency`` set to that concurrency (starting at 4, adapting by AIMD),

alternated ``--reps`` times (raw, view, raw, view, ...), each on fresh items so nothing is
served from the cache. It prints requests/s and the ratio (target >= 0.8) and writes
``bench/results/<--out>.json`` (``llm_throughput``). A last run against the same server answering 10% of
requests arriving while 64 are in flight 429 shows the view backing off without errors.

    .venv/bin/python bench/llm_throughput.py            # 2,000 items, 200 ms, 64 and 256, median of 2
    .venv/bin/python bench/llm_throughput.py --items 400 --concurrency 4 --reps 1 --out llm_throughput_c4
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import print_table, write_json  # noqa: E402

TEMPLATE = "Review: {{ item.text }}\nIs this review positive or negative? Answer with one word."


def start_server(delay: float, capacity: int | None = None) -> tuple[subprocess.Popen[str], str]:
    extra = ["--capacity", str(capacity)] if capacity else []
    proc = subprocess.Popen([sys.executable, "-m", "tests.openai_server", "--delay", str(delay), *extra],
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def stop_server(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)


def texts(n: int, tag: str) -> list[str]:
    words = ["good", "dull", "great", "slow", "fine", "awful"]
    return [f"{tag} review {i}: a {words[i % len(words)]} film" for i in range(n)]


def raw_rate(url: str, view: Any, batch: list[str], concurrency: int) -> float:
    """requests/s of a plain ``openai.AsyncOpenAI`` sending the view's own prompts."""
    import openai

    async def go() -> float:
        client = openai.AsyncOpenAI(base_url=url, api_key="sk-no-key", max_retries=0)
        sem = asyncio.Semaphore(concurrency)

        async def one(t: str) -> None:
            async with sem:
                await client.chat.completions.create(model="local", messages=view.builder.messages({"text": t}, "logprobs"),
                                                     max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=20)
        t0 = time.perf_counter()
        await asyncio.gather(*(one(t) for t in batch))
        dt = time.perf_counter() - t0
        await client.close()
        return len(batch) / dt
    return asyncio.run(go())


def make_view(url: str, ledger: Any, max_concurrency: int) -> Any:
    from views.base import ViewContext
    from views.llm.view import LLMView

    view = LLMView.from_params("llm", ViewContext(labels=("negative", "positive"), seed=0, ledger=ledger),
                               model="openai/local", api_base=url, fields=["text"], template=TEMPLATE,
                               scoring="logprobs", concurrency=min(4, max_concurrency), max_concurrency=max_concurrency,
                               timeout_s=30.0)
    view.resolve_fields(["text"])
    return view


def view_rate(view: Any, batch: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proba = view.predict_proba(pd.DataFrame({"text": batch}))
    dt = time.perf_counter() - t0
    return len(batch) / dt, int(np.isnan(proba).any(axis=1).sum())


def measure(concurrency: int, n: int, reps: int, delay: float, folder: Path) -> dict[str, Any]:
    from store.database import Store
    from store.llm_ledger import LLMLedger

    proc, url = start_server(delay)
    try:
        with Store(folder / f"c{concurrency}.duckdb") as st:
            ledger = LLMLedger(st, run_id=None)
            view = make_view(url, ledger, concurrency)
            view.predict_proba(pd.DataFrame({"text": ["warm-up: a fine film"]}))
            raw_rate(url, view, ["warm-up: a dull film"], concurrency)
            raw, mine, abstained = [], [], 0
            for r in range(reps):
                raw.append(raw_rate(url, view, texts(n, f"raw{concurrency}-{r}"), concurrency))
                rate, nan = view_rate(view, texts(n, f"view{concurrency}-{r}"))
                mine.append(rate)
                abstained += nan
            ctl = view.client().control
            rows = st.con.execute("SELECT count(*) FROM llm_calls WHERE NOT cached").fetchall()[0][0]
            out = {"concurrency": concurrency, "items": n, "reps": reps, "delay_s": delay,
                   "raw_req_s": raw, "view_req_s": mine, "raw_median": float(np.median(raw)),
                   "view_median": float(np.median(mine)), "abstained": abstained, "ledger_rows": int(rows),
                   "commits": view.client().commits, "peak_limit": ctl.peak if ctl else concurrency,
                   "cuts": ctl.cuts if ctl else 0}
            out["ratio"] = out["view_median"] / out["raw_median"]
            view.close()
            ledger.close()
    finally:
        stop_server(proc)
    return out


def backoff(n: int, delay: float, capacity: int, folder: Path) -> dict[str, Any]:
    from store.database import Store
    from store.llm_ledger import LLMLedger

    proc, url = start_server(delay, capacity)
    try:
        with Store(folder / "backoff.duckdb") as st:
            ledger = LLMLedger(st, run_id=None)
            view = make_view(url, ledger, 256)
            rate, nan = view_rate(view, texts(n, "backoff"))
            c = view.client()
            errors = st.con.execute("SELECT count(*) FROM llm_calls WHERE status <> 'ok'").fetchall()[0][0]
            out = {"capacity": capacity, "items": n, "view_req_s": rate, "abstained": nan, "errors": int(errors),
                   "retries": c.stats.retries, "cuts": c.control.cuts if c.control else 0,
                   "peak_limit": c.control.peak if c.control else 0, "final_limit": c.control.current if c.control else 0}
            view.close()
            ledger.close()
    finally:
        stop_server(proc)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--capacity", type=int, default=64, help="the back-off run's server 429s beyond this")
    ap.add_argument("--out", default="llm_throughput",
                    help="JSON name under bench/results (README's concurrency-4 row: --items 400 "
                         "--concurrency 4 --reps 1 --out llm_throughput_c4)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llm_throughput_") as tmp:
        runs = [measure(c, args.items, args.reps, args.delay, Path(tmp)) for c in args.concurrency]
        back = backoff(args.items, args.delay, args.capacity, Path(tmp))
    print_table(f"requests/s against a local server answering after {args.delay * 1000:.0f} ms "
                f"({args.items} items per measurement, median of {args.reps})",
                ["concurrency", "raw openai.AsyncOpenAI", "cotrain LLM view", "ratio", "view peak limit",
                 "ledger rows", "commits"],
                [[r["concurrency"], f"{r['raw_median']:.0f}", f"{r['view_median']:.0f}", f"{r['ratio']:.2f}",
                  r["peak_limit"], r["ledger_rows"], r["commits"]] for r in runs])
    print_table(f"the view (max_concurrency 256) on a server that answers 429 beyond {args.capacity} in flight",
                ["req/s", "retries", "limit cuts", "peak limit", "final limit", "errors", "abstained"],
                [[f"{back['view_req_s']:.0f}", back["retries"], back["cuts"], back["peak_limit"], back["final_limit"],
                  back["errors"], back["abstained"]]])
    path = write_json(args.out, {"command": "python bench/llm_throughput.py " + " ".join(sys.argv[1:]),
                                 "args": vars(args), "runs": runs, "backoff_429": back,
                                         "seconds": time.perf_counter() - t_start})
    print(f"\nwrote {path} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
