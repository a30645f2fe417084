"""The LLM call seam against a real OpenAI-compatible server on 127.0.0.1 that misbehaves
on purpose: retries, give-ups, cache, budget, concurrency and rate limits, secrets."""
from __future__ import annotations

import concurrent.futures
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from store.database import Store
from store.errors import ViewError
from store.llm_ledger import LLMLedger
from tests.openai_server import MisbehavingServer
from views.llm.client import Endpoint, LLMClient, Price

SECRET = "sk-test-SECRET-0123456789abcdef"


def _req(text: str = "a great film") -> dict:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 1, "temperature": 0.0,
            "logprobs": True, "top_logprobs": 4}


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("COTRAIN_TEST_KEY", SECRET)
    return "COTRAIN_TEST_KEY"


def _client(srv: MisbehavingServer, key_env: str, ledger=None, **kw) -> LLMClient:
    kw = {"timeout_s": 0.5, "backoff_s": 0.01, **kw}
    return LLMClient(Endpoint(model="openai/fake", api_base=srv.base_url, api_key_env=key_env), view="v",
                     ledger=ledger, **kw)


def test_transient_failures_are_retried_until_an_answer(key_env):
    with MisbehavingServer(faults={1: "429", 2: "500", 3: "slow", 4: "malformed"}, slow_s=1.5) as srv, \
            _client(srv, key_env) as c:
        [comp] = c.complete([_req()])
    assert comp.ok and comp.attempts == 5 and srv.count == 5
    assert comp.top_logprobs and comp.top_logprobs[0][0][0] == "Positive"
    assert c.stats.retries == 4 and c.stats.errors == 0


def test_persistent_failure_gives_up_as_an_error_not_a_crash(key_env, mem_store, caplog):
    ledger = LLMLedger(mem_store, run_id=None)
    with MisbehavingServer(default="500") as srv, _client(srv, key_env, ledger, max_retries=2) as c:
        comps = c.complete([_req("good"), _req("bad")])
    assert [x.status for x in comps] == ["error", "error"]
    assert srv.count == 6  # 2 requests x (1 + 2 retries)
    rows = mem_store.query("SELECT status, attempts, error FROM llm_calls").to_pylist()
    assert [r["status"] for r in rows] == ["error", "error"] and all(r["attempts"] == 3 for r in rows)
    assert "InternalServerError" in rows[0]["error"]
    assert mem_store.scalar("SELECT count(*) FROM llm_cache") == 0  # failures are never cached


@pytest.mark.parametrize("mode", ["no_choices", "huge_usage", "negative_usage"])
def test_an_answer_that_answers_nothing_is_retried_then_an_error_never_cached(key_env, mem_store, mode):
    """A 200 with empty ``choices`` was filed ``ok`` and cached, so every later run abstained
    without asking; token counts of 10^30 failed the ledger's commit (and hung the run),
    negative ones made the cost negative and raised the budget. Each is now a transient
    fault: retried, then an error, never cached."""
    ledger = LLMLedger(mem_store, run_id=None)
    with MisbehavingServer(default=mode) as srv, _client(srv, key_env, ledger, max_retries=1,
                                                          price=Price(1.0, 1.0)) as c:
        [comp] = c.complete([_req()])
    assert comp.status == "error" and "MalformedResponse" in comp.error and srv.count == 2
    rows = mem_store.query("SELECT status, attempts, cost_usd FROM llm_calls").to_pylist()
    # an empty `choices` that reports its tokens was billed: both attempts are on the bill;
    # counts that cannot be are billed at nothing
    billed = 2 * (3 + 1) / 1e6 if mode == "no_choices" else 0.0  # 3 prompt words, 1 answer token, twice
    assert rows == [{"status": "error", "attempts": 2, "cost_usd": pytest.approx(billed)}]
    assert c.spent() == pytest.approx(billed) and c.stats.cost_usd == pytest.approx(billed)
    assert mem_store.scalar("SELECT count(*) FROM llm_cache") == 0
    with MisbehavingServer({1: mode}) as srv, _client(srv, key_env, ledger, max_retries=1) as c:
        [comp] = c.complete([_req()])  # one bad answer, then a good one: the retry takes it
    assert comp.ok and comp.attempts == 2 and mem_store.scalar("SELECT count(*) FROM llm_cache") == 1


def test_billed_attempts_that_answer_nothing_are_on_the_answers_bill_and_in_the_budget(key_env, mem_store):
    """An empty ``choices`` with its token counts was filed at $0 and settled at $0 against
    the budget, whatever the server billed for it. Its tokens and cost now go into the row
    of the request it was an attempt of, and are charged to the budget at once; a retry is
    made only while the request's hold still fits beside what is spent, so the budget holds
    even when every attempt is billed."""
    from views.llm.budget import worst_cost

    ledger = LLMLedger(mem_store, run_id=None)
    price = Price(5000.0, 5000.0)  # $0.005 a token: "a great film" (3 tokens) + 1 answer token = $0.02
    with MisbehavingServer({1: "no_choices", 2: "no_choices"}) as srv, \
            _client(srv, key_env, ledger, max_retries=3, price=price) as c:
        [comp] = c.complete([_req()])
    assert comp.ok and comp.attempts == 3 and srv.count == 3
    row = mem_store.query("SELECT status, attempts, prompt_tokens, completion_tokens, cost_usd FROM llm_calls"
                          ).to_pylist()
    assert row == [{"status": "ok", "attempts": 3, "prompt_tokens": 9, "completion_tokens": 3,
                    "cost_usd": pytest.approx(0.06)}]
    assert c.spent() == pytest.approx(0.06) and c.stats.cost_usd == pytest.approx(0.06) and c.budget.held == 0

    hold = worst_cost("openai/fake", price, _req())
    budget = hold + 0.03  # the hold fits; after two billed attempts ($0.04 spent) it no longer does
    mem_store.con.execute("DELETE FROM llm_calls")
    with MisbehavingServer(default="no_choices") as srv, \
            _client(srv, key_env, ledger, max_retries=5, price=price, budget_usd=budget) as c:
        [comp] = c.complete([_req("a grand film")])
    assert comp.status == "error" and srv.count == 2 and comp.cost_usd == pytest.approx(0.04)
    assert c.spent() == pytest.approx(0.04) and c.spent() <= budget and c.budget.held == 0
    assert mem_store.scalar("SELECT sum(cost_usd) FROM llm_calls") == pytest.approx(0.04)


def test_a_choice_with_no_content_is_an_answer_billed_and_cached(key_env, mem_store):
    """A refusal, a content filter or a reasoning model out of tokens answers with no content
    and a finish reason: billed once, filed ok and cached (asking again with the same seed
    would be billed again for the same answer); it names no label."""
    ledger = LLMLedger(mem_store, run_id=None)
    with MisbehavingServer(default="null_content") as srv, _client(srv, key_env, ledger,
                                                                   price=Price(1.0, 1.0)) as c:
        [comp] = c.complete([_req()])
        [again] = c.complete([_req()])
    assert comp.ok and comp.content is None and comp.cost_usd > 0 and srv.count == 1 and again.cached
    assert c.spent() == pytest.approx(comp.cost_usd)


def test_an_empty_answer_an_earlier_version_cached_is_asked_again(key_env, mem_store):
    ledger = LLMLedger(mem_store, run_id=None)
    with MisbehavingServer() as srv, _client(srv, key_env, ledger) as c:
        c.complete([_req()])
        mem_store.con.execute("UPDATE llm_cache SET response = json_object('content', NULL, 'top_logprobs', NULL,"
                              " 'finish_reason', NULL, 'usage', json_object('prompt_tokens', 0,"
                              " 'completion_tokens', 0))")
        [comp] = c.complete([_req()])
        [again] = c.complete([_req()])  # the new answer replaced the empty one in the cache
    assert comp.ok and not comp.cached and srv.count == 2 and comp.top_logprobs
    assert again.cached and again.top_logprobs == comp.top_logprobs


def test_a_failed_ledger_commit_ends_the_batch_with_its_error(key_env):
    """The commit loop stops at a failed commit; flush() waited for the answers still
    waiting for ever (a run spun at 100% CPU). It raises the commit's error now."""
    import asyncio

    from views.llm.group_commit import GroupCommitter

    def write(batch: list) -> None:
        if "a" in batch:
            raise OSError("disk full")

    async def go() -> None:
        c = GroupCommitter(write, lambda: 1)
        c.add("a")
        await asyncio.sleep(0.01)
        c.add("b")
        await asyncio.wait_for(c.flush(), timeout=5)

    with pytest.raises(OSError, match="disk full"):
        asyncio.run(go())


def test_a_request_cancelled_while_waiting_to_retry_is_filed(key_env, tmp_path):
    """Cancelled in its backoff, a request had been sent (and its failed attempt may have
    been billed): it is filed ``cancelled`` with its attempts. (A request never sent is not
    filed: the fatal-answer test above.)"""
    with Store(tmp_path / "s.duckdb") as st:
        ledger = LLMLedger(st, run_id=1)
        with MisbehavingServer(default="500") as srv:
            c = _client(srv, key_env, ledger=ledger, concurrency=1, backoff_s=30.0, max_backoff_s=30.0)
            with ThreadPoolExecutor(1) as pool:
                batch = pool.submit(c.complete, [_req("first"), _req("second")])
                deadline = time.monotonic() + 10
                while srv.count < 1 and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(0.3)  # the 500s are back: each request sleeps before its retry (a backoff frees its slot)
                c.close()
                with pytest.raises(concurrent.futures.CancelledError):
                    batch.result(timeout=10)
            sent = srv.count
        rows = st.query("SELECT status, attempts FROM llm_calls").to_pylist()
    assert sent == 2 and rows == [{"status": "cancelled", "attempts": 1}] * 2


def test_a_cancelled_commit_task_loses_nothing_and_flush_writes_the_rest():
    """A closing client cancels every task on its loop, the committer's too, mid-write. The
    cancellation was kept as the commit's error: flush() raised it at once, and the records
    still pending (the batch's cancelled requests) were never written. Now the write goes on
    in its thread and flush() starts another task for what is pending."""
    import asyncio
    import threading

    from views.llm.group_commit import GroupCommitter

    written: list = []
    release = threading.Event()

    def write(batch: list) -> None:
        release.wait(5)
        written.extend(batch)

    async def go() -> None:
        c = GroupCommitter(write, lambda: 1)
        c.add("a")
        await asyncio.sleep(0.05)  # its task is in the write's thread now
        assert c._task is not None and not c._task.done()
        c._task.cancel()
        await asyncio.sleep(0.01)
        c.add("b")
        release.set()
        await asyncio.wait_for(c.flush(), timeout=5)

    asyncio.run(go())
    assert sorted(written) == ["a", "b"]


def test_a_short_key_is_redacted_too():
    from views.llm.calls import redacted_error

    assert redacted_error(ValueError("bad key: Bearer dev1234\n(dev1234)"), "dev1234") == "bad key: Bearer *** (***)"
    assert redacted_error(ValueError(f"Incorrect API key provided: {SECRET[:12]}..."), SECRET) == \
        "Incorrect API key provided: ***..."


def test_a_long_or_escaped_key_echoed_by_a_server_is_redacted_whole():
    """The error was cut to 300 characters before the key was looked for: a 300-character key
    (a JWT or an Azure AD token) echoed by a 401 came through but for its first 12 characters,
    and a key that JSON escapes (a quote, a backslash) came through escaped."""
    import json

    from views.llm.calls import redacted_error

    jwt = "eyJ" + "".join("abcdefghij0123456789"[i % 20] for i in range(300))
    msg = redacted_error(RuntimeError(f'401 {{"error": {{"message": "Incorrect API key provided: {jwt}."}}}}'), jwt)
    assert msg == '401 {"error": {"message": "Incorrect API key provided: ***."}}'
    odd = 'sk-PROBEKEY"quote\\back/slash<tag>&amp-ключ'
    for echoed in (json.dumps(odd)[1:-1], json.dumps(odd, ensure_ascii=False)[1:-1], odd[-12:], odd[5:20]):
        msg = redacted_error(RuntimeError(f"401 bad key {echoed} given"), odd)
        assert msg == "401 bad key *** given", (echoed, msg)
    assert redacted_error(ConnectionError("refused: http://127.0.0.1:9/v1"), jwt) == "refused: http://127.0.0.1:9/v1"


@pytest.mark.parametrize("transport", ["http", "litellm"])
def test_a_key_holding_a_control_character_stops_the_view_before_any_request(monkeypatch, transport: str):
    """A key read from a CRLF file ends in CR: the HTTP client refused every request before
    sending it, 680 calls were filed as errors and the run finished without the view, exit 0."""
    from store.errors import ViewError

    monkeypatch.setenv("COTRAIN_TEST_KEY", SECRET + "\r")
    with MisbehavingServer() as srv, _client(srv, "COTRAIN_TEST_KEY", transport=transport) as c:
        with pytest.raises(ViewError, match=r"COTRAIN_TEST_KEY \(api_key_env\) holds a control character") as err:
            c.complete([_req()])
        assert srv.count == 0 and SECRET not in str(err.value)
    monkeypatch.setenv("COTRAIN_TEST_KEY", SECRET + "\u201d")  # a pasted typographic quote
    with MisbehavingServer() as srv, _client(srv, "COTRAIN_TEST_KEY", transport=transport) as c:
        with pytest.raises(ViewError, match=r"holds a character no HTTP header can carry"):
            c.complete([_req()])
        assert srv.count == 0
    monkeypatch.delenv("COTRAIN_TEST_KEY")
    with MisbehavingServer() as srv, _client(srv, "COTRAIN_TEST_KEY", transport=transport) as c:
        with pytest.raises(ViewError, match=r"COTRAIN_TEST_KEY \(api_key_env\) is not set"):
            c.complete([_req()])
        assert srv.count == 0


def test_a_failing_batch_logs_a_few_failures_and_counts_the_rest_in_one_line(key_env, caplog):
    """A server failing every request printed one warning per request (2,179 lines in a
    probe); now the first few, then one line with the count."""
    import logging

    from views.llm.client import FAILURES_SHOWN

    with MisbehavingServer(default="500") as srv, _client(srv, key_env, max_retries=0) as c, \
            caplog.at_level(logging.WARNING, logger="cotrain"):
        comps = c.complete([_req(f"t{i}") for i in range(12)])
        lines = [r.getMessage() for r in caplog.records if r.name == "cotrain"]
        caplog.clear()
        c.complete([_req(f"u{i}") for i in range(2)])  # another batch of the round (a gold fold's): a count
    assert [x.status for x in comps] == ["error"] * 12 and c.stats.errors == 12 + 2
    assert sum("request failed after 1 attempt(s): InternalServerError" in m for m in lines) == FAILURES_SHOWN
    assert sum("12 of 12 requests failed in this batch (3 shown above)" in m for m in lines) == 1
    assert len(lines) == FAILURES_SHOWN + 1
    assert [r.getMessage() for r in caplog.records if r.name == "cotrain"] == [
        "view v: 2 of 2 requests failed in this batch (0 shown above); each is filed in llm_calls with its error"
        " and its item abstains"]


def test_cache_answers_repeats_without_a_call(key_env, mem_store):
    ledger = LLMLedger(mem_store, run_id=None)
    with MisbehavingServer() as srv:
        with _client(srv, key_env, ledger) as c:
            first = c.complete([_req("good"), _req("bad"), _req("good")])  # the duplicate is asked once
        assert srv.count == 2
        with _client(srv, key_env, ledger) as c2:  # a new client (a re-run) over the same store
            second = c2.complete([_req("bad"), _req("good")])
        assert srv.count == 2
    assert [x.content for x in second] == [first[1].content, first[0].content]
    assert all(x.cached for x in second) and c2.stats.cache_hits == 2
    assert mem_store.scalar("SELECT count(*) FROM llm_cache") == 2
    assert mem_store.scalar("SELECT count(*) FILTER (WHERE cached) FROM llm_calls") == 3


def test_cache_key_ignores_the_port_of_a_local_server():
    a = LLMClient(Endpoint(model="openai/local", identity="local:m"), view="v", api_base_override="http://127.0.0.1:1/v1")
    b = LLMClient(Endpoint(model="openai/local", identity="local:m"), view="v", api_base_override="http://127.0.0.1:2/v1")
    remote = LLMClient(Endpoint(model="openai/local", api_base="http://h:1/v1"), view="v")
    assert a.key(_req()) == b.key(_req()) != remote.key(_req())
    assert a.key(_req()) != a.key({**_req(), "temperature": 0.5})


def test_concurrency_and_rate_limits_hold(key_env):
    with MisbehavingServer(delay_s=0.15) as srv, _client(srv, key_env, concurrency=3, timeout_s=5) as c:
        c.complete([_req(f"good {i}") for i in range(12)])
    assert 2 <= srv.max_inflight <= 3
    with MisbehavingServer(delay_s=0.15) as srv, _client(srv, key_env, concurrency=2, timeout_s=5) as c, \
            ThreadPoolExecutor(3) as pool:  # several callers (debate threads) share one limit
        list(pool.map(lambda i: c.complete([_req(f"good {i} {j}") for j in range(4)]), range(3)))
    assert srv.max_inflight == 2 and srv.count == 12
    with MisbehavingServer() as srv, _client(srv, key_env, rate_limit=20.0) as c:
        t = time.perf_counter()
        c.complete([_req(f"good {i}") for i in range(10)])
        assert time.perf_counter() - t >= 0.44  # 10 starts at 20/s: 9 intervals of 50 ms


@pytest.mark.parametrize("concurrency", [1, 64])
def test_budget_is_never_exceeded_by_requests_in_flight(key_env, mem_store, caplog, concurrency):
    """Each request holds its worst-case cost before it is sent: with 64 in flight, a probe's
    view spent 8.6 times its budget. The server bills 2 prompt tokens ($0.01 at $5,000 per
    million); the hold is the padded offline count, so calls go on while what is spent plus
    one hold fits, one after another at the margin, whatever the concurrency."""
    from views.llm.budget import worst_cost

    ledger = LLMLedger(mem_store, run_id=None)
    price = Price(input_per_mtok=5_000)
    hold = worst_cost("openai/fake", price, _req("good 0"))
    assert all(worst_cost("openai/fake", price, _req(f"good {i}")) == hold for i in range(10))
    budget = hold + 0.05  # room for the hold of a sixth call after five real ones
    with MisbehavingServer() as srv, _client(srv, key_env, ledger, concurrency=concurrency, budget_usd=budget,
                                             price=price) as c:
        with caplog.at_level(logging.WARNING, logger="cotrain"):
            comps = c.complete([_req(f"good {i}") for i in range(10)])
    assert srv.count == 6 and sorted(x.status for x in comps) == ["budget"] * 4 + ["ok"] * 6
    assert mem_store.scalar("SELECT round(sum(cost_usd), 6) FROM llm_calls") == pytest.approx(0.06)
    assert c.spent() == pytest.approx(0.06) and c.spent() <= budget and c.budget.held == 0
    warned = [r for r in caplog.records if r.name.startswith("cotrain") and r.levelno >= logging.WARNING]
    assert len(warned) == 1 and warned[0].args[:3] == ("view v", budget, pytest.approx(0.06))
    with MisbehavingServer() as srv, _client(srv, key_env, budget_usd=hold / 2, price=price) as c:
        assert c.complete([_req("good 1")])[0].status == "budget" and srv.count == 0  # one call would not fit


def test_settled_holds_leave_no_float_residue_to_wait_on():
    """0.1 + 0.2 - 0.1 - 0.2 is 2.8e-17, not 0: a request that did not fit then waited for
    holds that no request in flight would ever settle. None in flight is a count now."""
    import asyncio

    from views.llm.budget import Budget

    async def go() -> bool:
        b = Budget("view v", 1.0, lambda: 0.0)
        assert await b.hold(0.1) and await b.hold(0.2)
        b.settle(0.1, 0.1)
        b.settle(0.2, 0.2)
        assert b.held == 0.0 and b.holding == 0
        return await asyncio.wait_for(b.hold(0.75), timeout=5)

    assert asyncio.run(go()) is False


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_retry_near_the_budget_margin_finishes_and_every_hold_is_settled(key_env, concurrency):
    """A request that held money and had to retry could not get a slot back while every slot
    was taken by requests waiting for that money (a review's finding: the batch never
    returned); holds are taken before a slot now, and each is settled however its request ends."""
    from views.llm.budget import worst_cost

    price = Price(input_per_mtok=5_000)
    hold = worst_cost("openai/fake", price, _req("good 0"))
    with MisbehavingServer(faults={1: "500"}) as srv, _client(srv, key_env, concurrency=concurrency,
                                                                budget_usd=1.5 * hold, price=price) as c:
        with ThreadPoolExecutor(1) as pool:  # a deadlock fails the test, not the suite
            comps = pool.submit(c.complete, [_req(f"good {i}") for i in range(6)]).result(timeout=60)
        assert all(x.status in ("ok", "budget") for x in comps) and c.budget.holding == 0 and c.budget.held == 0
    with MisbehavingServer(default="401") as srv, _client(srv, key_env, budget_usd=1.0, price=price) as c:
        with pytest.raises(ViewError):
            c.complete([_req("good 1")])
        assert c.budget.holding == 0 and c.budget.held == 0  # a fatal error gave its hold back


def test_bad_key_stops_the_view_with_the_key_redacted(key_env, caplog):
    with MisbehavingServer(default="401") as srv, _client(srv, key_env) as c:
        with pytest.raises(ViewError, match="AuthenticationError") as err:
            c.complete([_req()])
    assert srv.auth_headers == [f"Bearer {SECRET}"]  # the key was sent ...
    assert SECRET[:8] not in str(err.value) and SECRET[:8] not in caplog.text  # ... and never repeated


def test_a_fatal_answer_stops_the_other_requests_and_files_those_in_flight(key_env, tmp_path, caplog):
    """After a 401, the batch's other requests went on being sent, and once the client closed
    they failed against its closed session, each logged and filed as a "Session is closed"
    error: the ledger named the wrong cause. Then they were cancelled where they stood, and
    those already sent were filed nowhere, though the server answers (and bills) them. Now
    each request in flight is filed ``cancelled``, counted as a call with unknown tokens and
    cost; those never sent are not filed."""
    with Store(tmp_path / "s.duckdb") as st:
        ledger = LLMLedger(st, run_id=1)
        with MisbehavingServer(faults={1: "401"}, default="slow", slow_s=0.5) as srv, \
                _client(srv, key_env, ledger=ledger, concurrency=4, timeout_s=5.0) as c:
            with pytest.raises(ViewError, match="AuthenticationError"):
                c.complete([_req(f"good {i}") for i in range(16)])
            time.sleep(1.0)  # what the other requests in flight do once they would have been answered
            sent = srv.count
        rows = st.query("SELECT status, error, attempts, prompt_tokens, completion_tokens, cost_usd, latency_s "
                        "FROM llm_calls").to_pylist()
        usage = ledger.usage()
    assert 2 <= sent <= 4, sent  # the 401 and those already in flight; the other 12 were never sent
    # the 401 itself is the view's error, raised, not a request's outcome; the slot it freed may
    # have started one more attempt, cancelled before the server counted it: filed all the same
    assert sent - 1 <= len(rows) <= 4, (sent, rows)
    assert {r["status"] for r in rows} == {"cancelled"} and all(r["attempts"] == 1 for r in rows)
    assert all(r["prompt_tokens"] is None and r["cost_usd"] is None and r["latency_s"] > 0 for r in rows)
    assert all(r["error"].startswith("cancelled once sent") for r in rows), rows
    assert usage["calls"] == len(rows) and usage["errors"] == 0
    assert "Session is closed" not in caplog.text and "request failed" not in caplog.text


def test_closing_the_client_mid_batch_files_what_was_sent_as_cancelled(key_env, tmp_path):
    """Ctrl-C: the run closes the view's client while a batch is in flight. The close used to
    shut the HTTP session first, so the requests in flight failed against it, went into
    backoff or were filed "Session is closed", and it cancelled the ledger's own commit task,
    so what was pending was never written. Now the tasks are cancelled first: every request
    sent is filed once, ``cancelled``, and nothing reads "closed"."""
    with Store(tmp_path / "s.duckdb") as st:
        ledger = LLMLedger(st, run_id=1)
        with MisbehavingServer(default="slow", slow_s=2.0) as srv:
            c = _client(srv, key_env, ledger=ledger, concurrency=4, timeout_s=10.0)
            with ThreadPoolExecutor(1) as pool:
                batch = pool.submit(c.complete, [_req(f"good {i}") for i in range(12)])
                deadline = time.monotonic() + 10
                while srv.count < 4 and time.monotonic() < deadline:
                    time.sleep(0.02)
                c.close()  # what the run's finally does on Ctrl-C
                with pytest.raises(concurrent.futures.CancelledError):  # the caller sees its batch cancelled
                    batch.result(timeout=10)
            sent = srv.count
        rows = st.query("SELECT key, status, error, attempts, cost_usd FROM llm_calls").to_pylist()
    assert sent == 4  # the window; the other 8 were never sent
    assert len(rows) == 4 and len({r["key"] for r in rows}) == 4, rows
    assert {r["status"] for r in rows} == {"cancelled"} and all(r["attempts"] == 1 for r in rows)
    assert not any("closed" in (r["error"] or "").lower() for r in rows), rows
    assert c.stats.calls == 4 and ledger.usage()["calls"] == 4 and ledger.usage()["cancelled"] == 4


def test_missing_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with MisbehavingServer() as srv, LLMClient(Endpoint(model="openai/fake", api_base=srv.base_url,
                                                       api_key_env="NOPE_KEY"), view="v") as c:
        with pytest.raises(ViewError, match="NOPE_KEY"):
            c.complete([_req()])


def test_ledger_files_calls_under_run_and_round(key_env, tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        ledger = LLMLedger(st, run_id=7)
        ledger.round = 3
        with MisbehavingServer() as srv, _client(srv, key_env, ledger) as c:
            c.complete([_req("good")])
        row = st.query("SELECT run_id, round, view, cached, status, prompt_tokens, latency_s FROM llm_calls").to_pylist()
        assert row[0]["run_id"] == 7 and row[0]["round"] == 3 and row[0]["prompt_tokens"] == 1
        assert row[0]["latency_s"] > 0


def test_litellm_leaves_the_process_as_it_found_it(leaves_process_as_found, tmp_path):
    """Importing litellm and a real call through the client (plus token counting and pricing)
    change no environment variable (litellm's .env loading included), warning filter or logger
    level, and litellm's lazy first-call warnings stay quiet."""
    (tmp_path / ".env").write_text("COTRAIN_DOTENV_PROBE=loaded\n")  # litellm loads ./.env at import
    stderr, before = leaves_process_as_found('''
        from tests.openai_server import MisbehavingServer
        from views.llm.client import Endpoint, LLMClient, count_tokens, estimate_cost

        msgs = [{"role": "user", "content": "a great film"}]
        with MisbehavingServer() as srv, LLMClient(Endpoint(model="openai/fake", api_base=srv.base_url), view="v") as c:
            [comp] = c.complete([{"messages": msgs, "max_tokens": 1, "logprobs": True, "top_logprobs": 4}])
        assert comp.ok and comp.content == "Positive", comp
        assert count_tokens("gpt-4o", msgs) > 0 and count_tokens("local:m", msgs) > 0
        assert estimate_cost("gpt-4o", None, 1000, 10) > 0
    ''', tmp_path)
    assert "COTRAIN_DOTENV_PROBE" not in before["env"]
    assert before["loggers"]["LiteLLM"][0] == before["loggers"]["httpx"][0] == logging.INFO
    assert "ReadOnly" not in stderr and "Provider List" not in stderr


@pytest.mark.parametrize("logprobs", [True, False])
def test_a_key_the_server_echoes_in_its_answer_is_stored_nowhere(key_env, tmp_path, logprobs):
    """A self-hosted server (or proxy) that reflects the bearer key into its answer had it
    written verbatim to ``llm_cache.response`` (and a debate's ``debate_turns.answer``): the
    answer's text and tokens are scrubbed of the key, whole, in part and base64-encoded,
    before anything keeps them; the label is still read."""
    req = {**_req("a great film"), **({} if logprobs else {"logprobs": False, "top_logprobs": None})}
    with Store(tmp_path / "s.duckdb") as st:
        with MisbehavingServer(default="echo_key") as srv, _client(srv, key_env, ledger=LLMLedger(st, run_id=1)) as c:
            [comp] = c.complete([req])
        assert comp.ok and srv.auth_headers == [f"Bearer {SECRET}"]
        stored = " ".join(str(v) for t in ("llm_cache", "llm_calls") for r in st.query(f"SELECT * FROM {t}").to_pylist()
                          for v in r.values())
    kept = f"{comp.content} {comp.top_logprobs} {stored}"
    assert "asked with key ***" in kept and "positive" in kept.lower()
    assert comp.top_logprobs is None  # the generated tokens spelled the key, three characters each
    import base64
    for piece in (SECRET, SECRET[:10], SECRET[-8:], base64.b64encode(SECRET.encode()).decode()[:12]):
        assert piece not in kept, piece


def test_a_short_throwaway_key_leaves_the_answer_as_it_is():
    """A self-hosted server's key 'none' or 'EMPTY' is no secret worth mangling answers for:
    'none of the above' stayed '*** of the above', and the label read from it changed."""
    from views.llm.calls import parse_response

    body = {"choices": [{"message": {"content": "none of the above; label: none"},
                         "logprobs": {"content": [{"token": "none", "logprob": -0.1,
                                                   "top_logprobs": [{"token": "none", "logprob": -0.1}]}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    for key in ("none", "EMPTY", "x"):
        got = parse_response(body, key)
        assert got["content"] == "none of the above; label: none" and got["top_logprobs"] == [[["none", -0.1]]]


def test_scrub_finds_a_key_in_its_forms_and_leaves_other_text():
    import base64

    from store.secrets import scrub
    key = "plainSECRET123value9876"  # no known key shape: only the value itself can find it
    assert scrub(f"x {key} y", [key]) == "x *** y"
    assert scrub("prefix plainSEC, suffix e9876 ok", [key]) == "prefix ***, suffix e9876 ok"  # 8+ characters only
    basic = base64.b64encode(f"user:{key}".encode()).decode()  # inside a longer encoded text, at any alignment
    assert key not in scrub(basic, [key]) and basic not in scrub(f"Basic {basic}", [key])
    assert scrub("/home/user/data.csv: no such file", [key]) == "/home/user/data.csv: no such file"
    assert scrub("anything", []) == "anything"
