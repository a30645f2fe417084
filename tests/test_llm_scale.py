"""LLM calls at scale (issue 14, items 3a and 4): the AIMD limit as pure logic, and against a
real local server on 127.0.0.1 (the asyncio engine of tests/openai_server.py): the view backs
off on 429s and still answers every item, answers are committed in groups with one ledger
row per answer, and a client SIGKILLed mid-batch re-asks at most one group (besides what was
in flight) when the same requests run again."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from store.database import Store
from store.llm_ledger import LLMLedger
from tests.openai_server import MisbehavingServer
from views.base import ViewContext
from views.llm.aimd import AIMD
from views.llm.client import Endpoint, LLMClient, Price
from views.llm.view import LLMView

REPO = Path(__file__).parents[1]


def _req(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"item {i}: a good film"}], "max_tokens": 1,
            "temperature": 0.0, "logprobs": True, "top_logprobs": 4}


# ---------------------------------------------------------------------- AIMD, pure logic
def test_slow_start_doubles_per_window_up_to_the_maximum():
    c = AIMD(initial=4, maximum=20)
    for _ in range(4):           # one window of 4 answers: 4 -> 8
        c.on_success(0.2, c.epoch)
    assert c.current == 8
    for _ in range(100):
        c.on_success(0.2, c.epoch)
    assert c.current == 20 and c.peak == 20 and c.cuts == 0


def test_overload_halves_once_per_window_then_growth_is_additive():
    c = AIMD(initial=32, maximum=64)
    started = c.epoch
    assert c.on_overload(started) and c.current == 16
    assert not c.on_overload(started) and c.current == 16   # same window of requests: no second cut
    for _ in range(15):
        c.on_success(0.2, c.epoch)
    assert c.current == 16                                  # +1 only after a full window of 16
    c.on_success(0.2, c.epoch)
    assert c.current == 17
    for _ in range(10):
        c.on_overload(c.epoch)
    assert c.current == 1 and c.cuts == 11                  # never below the minimum


def test_rising_latency_is_overload_and_idle_slots_do_not_grow_the_limit():
    c = AIMD(initial=8, maximum=64, latency_factor=3.0, smoothing=0.5)
    for _ in range(8):
        c.on_success(0.1, c.epoch)
    assert c.current == 16
    for _ in range(4):
        c.on_success(0.8, c.epoch)   # the mean climbs past 3x the fastest answer
    assert c.cuts == 1 and c.current <= 10
    c.on_success(5.0, c.epoch - 1)   # a straggler from before the cut says nothing about now
    assert c.cuts == 1
    before = c.current
    for _ in range(50):
        c.on_success(0.1, c.epoch, saturated=False)
    assert c.current == before


# ---------------------------------------------------------------------- against a real server
def test_view_backs_off_on_429s_and_answers_every_item(mem_store):
    """The server turns away (429) any request beyond 6 in flight; the view, allowed 64,
    cuts its limit, retries what was turned away, and ends with every item answered."""
    ledger = LLMLedger(mem_store, run_id=None)
    with MisbehavingServer(engine="asyncio", delay_s=0.05, capacity=6) as srv:
        view = LLMView.from_params("llm", ViewContext(labels=("negative", "positive"), seed=0, ledger=ledger),
                                   model="openai/fake", api_base=srv.base_url, fields=["text"], scoring="logprobs",
                                   concurrency=4, max_concurrency=64, backoff_s=0.01, max_retries=10,
                                   price={"input_per_mtok": 1.0, "output_per_mtok": 2.0})
        try:
            proba = view.predict_proba(pd.DataFrame({"text": [f"item {i}: a good film" for i in range(120)]}))
            client = view.client()
        finally:
            view.close()
    assert not np.isnan(proba).any() and (proba.argmax(axis=1) == 1).all()
    assert srv.rejected > 0 and client.stats.retries > 0 and client.stats.errors == 0
    assert client.control is not None and client.control.cuts >= 1 and client.control.current < 64
    rows = mem_store.query("SELECT status, cached, attempts, prompt_tokens, cost_usd, latency_s FROM llm_calls").to_pylist()
    assert len(rows) == 120 and {r["status"] for r in rows} == {"ok"} and not any(r["cached"] for r in rows)
    assert max(r["attempts"] for r in rows) > 1 and all(r["cost_usd"] > 0 and r["latency_s"] > 0 for r in rows)


def test_answers_are_committed_in_groups_one_ledger_row_each(mem_store):
    ledger = LLMLedger(mem_store, run_id=3)
    with MisbehavingServer(engine="asyncio", delay_s=0.05) as srv, \
            LLMClient(Endpoint(model="openai/fake", api_base=srv.base_url), view="v", ledger=ledger, concurrency=4,
                      max_concurrency=128, price=Price()) as c:
        # the client's own controller, with its latency rule off: rising latency cuts the window by
        # design, and on a loaded machine it did (peak 26 after one cut, two benchmarks beside the
        # suite), which is not what this test measures; growth on answers alone is deterministic
        c.control = AIMD(initial=4, maximum=128, latency_factor=float("inf"))
        comps = c.complete([_req(i) for i in range(400)])
        assert all(x.ok for x in comps) and srv.count == 400
        assert c.commits < 200 and c.control.peak > 64 and c.control.cuts == 0   # grouped, and it grew
        again = c.complete([_req(i) for i in range(400)])
        assert all(x.cached for x in again) and srv.count == 400
    calls = mem_store.query("SELECT cached, count(*) AS n FROM llm_calls GROUP BY cached ORDER BY cached").to_pylist()
    assert calls == [{"cached": False, "n": 400}, {"cached": True, "n": 400}]
    assert mem_store.query("SELECT count(*) AS n FROM llm_cache").to_pylist()[0]["n"] == 400
    assert ledger.usage()["calls"] == 400


CHILD = """
from store.database import Store
from store.llm_ledger import LLMLedger
from views.llm.client import Endpoint, LLMClient, Price
import sys
reqs = [{"messages": [{"role": "user", "content": f"item {i}: a good film"}], "max_tokens": 1,
         "temperature": 0.0, "logprobs": True, "top_logprobs": 4} for i in range(300)]
with Store(sys.argv[1]) as st:
    c = LLMClient(Endpoint(model="openai/fake", api_base=sys.argv[2]), view="v", ledger=LLMLedger(st, None),
                  concurrency=8, commit_group=16, commit_wait_s=5.0, price=Price())
    c.complete(reqs)
"""


def test_a_killed_client_re_asks_at_most_one_group(tmp_path):
    group, inflight = 16, 8
    db = tmp_path / "s.duckdb"
    with MisbehavingServer(engine="asyncio", delay_s=0.01, faults={150: "kill"}) as srv:
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CHILD), str(db), srv.base_url], cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        srv.kill_pid = proc.pid
        assert proc.wait(timeout=120) == -9
        answered = sum(srv.answered.values())
        with Store(db) as st:
            filed = st.query("SELECT count(*) AS n FROM llm_calls").to_pylist()[0]["n"]
            assert st.query("SELECT count(*) AS n FROM llm_cache").to_pylist()[0]["n"] == filed
            assert answered - filed <= group + inflight   # lost: one group, and what was in flight
            assert filed >= 150 - group - inflight        # committed as it went, not at the end
            with LLMClient(Endpoint(model="openai/fake", api_base=srv.base_url), view="v", ledger=LLMLedger(st, None),
                           concurrency=8, commit_group=group, price=Price()) as c:
                comps = c.complete([_req(i) for i in range(300)])
        assert all(x.ok for x in comps)
        re_asked = sum(1 for v in srv.answered.values() if v > 1)
        assert max(srv.answered.values()) <= 2 and re_asked == answered - filed
        assert len(srv.answered) == 300
