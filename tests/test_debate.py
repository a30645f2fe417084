"""Debates among LLM agents: aggregation as pure functions, the langgraph debate against a
real OpenAI-compatible server on 127.0.0.1 (that misbehaves on purpose for one agent),
inside co-training and standalone, with budgets, dry runs and resume from the cache."""
from __future__ import annotations

import logging

import duckdb
import pandas as pd
import pytest
import yaml

from agents.aggregate import ABSTAIN, Vote, confidence_weighted, consensus, majority, read_answer
from agents.debate import AgentSpec, DebateSpec, Prompts
from agents.runner import Budget, Debater
from orchestrator import api
from orchestrator.debate import WORST_CASE_PAD
from orchestrator.debate_items import read_debate_items
from store.database import Store
from store.errors import ConfigError, DataError, StoreError, ViewError
from tests.conftest import debate_config, one_value, sentiment_frame
from tests.openai_server import MisbehavingServer

VERB = [["negative"], ["positive"]]


# ---------------------------------------------------------------------- pure parts
def test_answers_are_read_or_abstain():
    assert read_answer('{"label": "positive", "confidence": 0.8, "rationale": "nice"}', VERB) == (1, 0.8, "nice")
    assert read_answer('{"label": "negative"}', VERB) == (0, 0.5, "")
    assert read_answer('The answer to the question is: "positive".', VERB) == (1, 0.5, "")
    for bad in (None, "", "both positive and negative", "unclear", '{"label": "neutral", "confidence": 0.9}',
                '{"confidence": 0.9}', '{"label": one of negative, positive}'):
        assert read_answer(bad, VERB) == (ABSTAIN, 0.0, "")


def test_aggregations():
    v = [Vote("a", 1, 0.9), Vote("b", 1, 0.6), Vote("c", 0, 0.95), Vote("d", ABSTAIN, 0.0)]
    assert majority(v, 2) == (1, 0.5)                       # 2 of 4 agents
    assert confidence_weighted(v, 2) == (1, pytest.approx(1.5 / 4))
    assert majority([Vote("a", 1, 0.9), Vote("b", 0, 0.9)], 2) == (ABSTAIN, 0.0)  # a tie is no verdict
    assert confidence_weighted([Vote("a", 1, 0.4), Vote("b", 0, 0.9)], 2) == (0, pytest.approx(0.45))
    assert majority([Vote("a", ABSTAIN, 0.0)], 2) == (ABSTAIN, 0.0)
    assert consensus([Vote("a", 1, 0.9), Vote("b", 1, 0.85)], 0.8)
    assert not consensus([Vote("a", 1, 0.9), Vote("b", 1, 0.7)], 0.8)
    assert not consensus([Vote("a", 1, 0.9), Vote("b", ABSTAIN, 0.0)], 0.8)  # an abstention never agrees


# ---------------------------------------------------------------------- the graph
def _debater(srv: MisbehavingServer, n: int = 3, bad: MisbehavingServer | None = None, **spec_kw) -> Debater:
    agents = [AgentSpec(f"a{i}", model="openai/fake", api_base=srv.base_url) for i in range(n)]
    if bad is not None:
        agents[-1] = AgentSpec("flaky", model="openai/flaky", api_base=bad.base_url)
    judge = AgentSpec("judge", model="openai/fake", api_base=srv.base_url) \
        if spec_kw.get("aggregation") == "judge" else None
    budget = spec_kw.pop("budget", None)
    spec = DebateSpec(agents=tuple(agents), judge=judge, **spec_kw)
    prompts = Prompts(labels=["negative", "positive"], verbalisers=VERB, fields=["text"])
    return Debater(spec, prompts, timeout_s=1.0, max_retries=1, backoff_s=0.01, concurrency=2, budget=budget)


ITEMS = [("i1", {"text": "a great film"}, [{"view": "v1", "label": "negative", "confidence": 0.95}]),
         ("i2", {"text": "a dull film"}, [])]


def test_consensus_stops_early_else_all_rounds_run():
    with MisbehavingServer() as srv:  # every answer has confidence 0.9
        with _debater(srv, rounds=3, consensus=0.85) as d:
            early = d.run(ITEMS)
        with _debater(srv, rounds=3, consensus=0.95) as d:
            full = d.run(ITEMS)
    assert [(o.verdict, o.rounds_used, o.early_stopped) for o in early] == [(1, 1, True), (0, 1, True)]
    assert [(o.verdict, o.rounds_used, o.early_stopped) for o in full] == [(1, 3, False), (0, 3, False)]
    assert len(full[0].turns) == 9 and {t["debate_round"] for t in full[0].turns} == {0, 1, 2}
    assert all(t["rationale"] for t in full[0].turns)


@pytest.mark.parametrize("aggregation", ["majority", "confidence", "judge"])
def test_each_aggregation_reaches_the_verdict(aggregation):
    with MisbehavingServer() as srv, _debater(srv, rounds=2, consensus=1.0, aggregation=aggregation) as d:
        outs = d.run(ITEMS)
    assert [o.verdict for o in outs] == [1, 0]
    judged = [t for t in outs[0].turns if t["agent"] == "judge"]
    assert len(judged) == (1 if aggregation == "judge" else 0)
    expected = {"majority": 1.0, "confidence": 0.9, "judge": 0.9}[aggregation]
    assert outs[0].confidence == pytest.approx(expected)


@pytest.mark.parametrize("fault", ["500", "429", "slow", "garbage"])
def test_a_failing_agent_abstains_and_never_counts(fault):
    with MisbehavingServer() as srv, MisbehavingServer(default=fault, slow_s=3.0) as bad, \
            _debater(srv, bad=bad, rounds=2, consensus=0.85) as d:
        outs = d.run(ITEMS)
    assert bad.count > 0
    for o in outs:
        flaky = [t for t in o.turns if t["agent"] == "flaky"]
        assert flaky and all(t["label"] is None and t["confidence"] == 0.0 for t in flaky)
        assert {t["status"] for t in flaky} == ({"unreadable"} if fault == "garbage" else {"error"})
        assert not o.early_stopped and o.rounds_used == 2  # an abstention never makes a consensus
        assert o.status == "verdict" and o.confidence == pytest.approx(2 / 3)  # 2 of 3 agents
    if fault in ("500", "429"):
        assert bad.count == 2 * 2 * 2  # 2 items x 2 rounds x (1 try + 1 retry)


def test_budget_stops_the_debate_and_says_so(caplog):
    with MisbehavingServer() as srv, _debater(srv, rounds=1, budget=Budget(tokens=1)) as d:
        with caplog.at_level(logging.WARNING, logger="cotrain"):
            outs = d.run(ITEMS * 3)
        asked = srv.count
        usd, tokens = d.spent()
    # under a budget the first debate runs alone, to learn what one costs; the next batch is as
    # wide as the budget left pays for, so it overshoots by one debate at most, not by a batch
    assert outs[0].status == "verdict"
    assert {o.status for o in outs[1:]} == {"budget"} and not any(o.turns for o in outs[1:])
    assert [o.calls for o in outs] == [3, 0, 0, 0, 0, 0] and asked == 3  # 3 agents x 1 round, one debate
    assert tokens == sum(o.tokens for o in outs) > 1 and usd == 0.0  # no price: tokens are the budget
    # it says so once, with the spend and the number of items left undebated as the warning's values
    warned = [r for r in caplog.records if r.name.startswith("cotrain") and r.levelno >= logging.WARNING]
    assert len(warned) == 1 and warned[0].args == ("debate", usd, tokens, 5)


def test_a_debate_budget_is_overshot_by_one_debate_at_most():
    """A 4-wide batch checked only before it started spent three times a small budget (a
    probe's finding); now batches are sized by the budget left at the cost seen so far."""
    items = [(f"i{k}", {"text": t}, []) for k, t in enumerate(["a great film", "a dull film"] * 6)]
    with MisbehavingServer() as srv, _debater(srv, rounds=1) as free:
        free.run(items[:1])
        one = free.spent()[1]  # tokens of one debate
    with MisbehavingServer() as srv, _debater(srv, rounds=1, budget=Budget(tokens=int(3.5 * one))) as d:
        d.concurrency = 4
        outs = d.run(items)
        spent = d.spent()[1]
    assert sum(o.status != "budget" for o in outs) == 4  # 1 alone, then 2 (what the rest pays for), then 1
    assert spent <= 3.5 * one + one


def test_with_a_worst_case_a_debate_budget_is_never_exceeded():
    """Given each item's worst case (the orchestrator's dry-run estimate of that item), a batch
    starts only what the budget left pays for even then: never over the budget, and a first
    debate dearer than the whole budget (a 480 KB item spent $720 of $0.50) never starts."""
    items = [(f"i{k}", {"text": t}, []) for k, t in enumerate(["a great film", "a dull film"] * 6)]
    with MisbehavingServer() as srv, _debater(srv, rounds=1) as free:
        free.run(items[:1])
        one = free.spent()[1]  # tokens of one debate
    budget = int(3.5 * one)
    with MisbehavingServer() as srv, _debater(srv, rounds=1, budget=Budget(tokens=budget)) as d:
        d.concurrency, d.worst_case = 4, lambda fields: (0.0, int(1.2 * one))  # a worst case above the real
        outs = d.run(items)
        spent = d.spent()[1]
    assert sum(o.status != "budget" for o in outs) == 3 and spent <= budget
    with MisbehavingServer() as srv, _debater(srv, rounds=1, budget=Budget(tokens=budget)) as d:
        d.worst_case = lambda fields: (0.0, budget + 1)
        outs = d.run(items)
    assert srv.count == 0 and {o.status for o in outs} == {"budget"}


@pytest.mark.parametrize("budgeted", [False, True])
def test_a_budgeted_debate_does_not_ask_again_after_a_billed_empty_answer(budgeted: bool):
    """An answer with no choice that reports its tokens is billed; the client retries it, but
    a debate's budget holds one worst-case answer per turn, and retries of billed attempts
    could pass it (a review). Under a budget such a turn fails after one attempt."""
    items = [("i0", {"text": "a great film"}, [])]
    budget = Budget(tokens=10**6) if budgeted else None
    with MisbehavingServer(default="no_choices") as srv, _debater(srv, n=2, rounds=1, budget=budget) as d:
        d.worst_case = lambda fields: (0.0, 1000)
        outs = d.run(items)
    assert srv.count == (2 if budgeted else 4)  # 2 agents, one turn each; max_retries 1 without a budget
    assert [o.status for o in outs] == ["no_verdict"]


def test_debate_budget_is_read_from_the_ledger_across_a_resume(tmp_path):
    """The debate's dollars and tokens are what the run's ledger holds: a Debater built over the
    same store and run (a resumed run) refuses at once when the stored spend already reaches the
    budget, or after one more debate when it nearly does; another run, a fresh store or a
    standalone debate (no run) start from zero."""
    from store.database import Store
    from store.llm_ledger import LLMLedger

    def debater(srv, ledger, budget):
        agents = tuple(AgentSpec(f"a{i}", model="openai/fake", api_base=srv.base_url) for i in range(2))
        return Debater(DebateSpec(agents=agents, rounds=1), Prompts(labels=["negative", "positive"], verbalisers=VERB,
                                                                    fields=["text"]),
                       ledger=ledger, concurrency=2, timeout_s=2.0, max_retries=0, budget=budget,
                       price={"input_per_mtok": 100.0, "output_per_mtok": 300.0})

    items = [(f"i{k}", {"text": t}, []) for k, t in enumerate(
        ["a great film", "a dull film", "superb acting", "boring plot", "the best score", "awful pacing",
         "wonderful cast", "flat jokes"])]
    ran = lambda outs: [o.status != "budget" for o in outs]  # noqa: E731
    with MisbehavingServer() as srv, Store(tmp_path / "s.duckdb") as st:
        with debater(srv, LLMLedger(st, run_id=1), Budget()) as d:
            first = d.run(items[:2])  # what the run spent before it stopped
        usd, tokens = d.spent()
        assert usd == pytest.approx(sum(o.cost_usd for o in first)) and usd > 0
        assert tokens == sum(o.tokens for o in first) > 0
        asked = srv.count
        for budget in (Budget(usd=usd), Budget(tokens=tokens)):  # resumed: nothing left to spend
            with debater(srv, LLMLedger(st, run_id=1), budget) as d:
                assert d.spent() == (pytest.approx(usd), tokens)
                assert ran(d.run(items[2:])) == [False] * 6
        assert srv.count == asked
        with debater(srv, LLMLedger(st, run_id=1), Budget(usd=usd)) as d:  # worst cases held: the paid ones replay
            d.worst_case = lambda fields: (1.0, 10_000)
            assert ran(d.run(items[:4])) == [True, True, False, False] and srv.count == asked
        with debater(srv, LLMLedger(st, run_id=1), Budget(tokens=tokens + 1)) as d:  # room for one debate
            assert ran(d.run(items[2:6])) == [True, False, False, False]
        with debater(srv, LLMLedger(st, run_id=2), Budget(tokens=1)) as d:  # another run: from zero
            assert d.spent() == (0.0, 0) and ran(d.run(items[4:8])) == [True, False, False, False]
        with debater(srv, LLMLedger(st, run_id=None), Budget()) as d:  # a standalone debate, filed under NULL
            d.run(items[:1])
        with debater(srv, LLMLedger(st, run_id=None), Budget(tokens=1)) as d:  # the next one counts from its start
            assert d.spent() == (0.0, 0) and ran(d.run(items[6:8])) == [True, False]
    with MisbehavingServer() as srv, Store(tmp_path / "fresh.duckdb") as st, \
            debater(srv, LLMLedger(st, run_id=1), Budget(tokens=1)) as d:
        assert d.spent() == (0.0, 0) and ran(d.run(items[:4])) == [True, False, False, False]


# ---------------------------------------------------------------------- standalone and in co-training
def test_standalone_debate_files_turns_and_resumes_from_the_cache(tmp_path):
    items = tmp_path / "to_debate.csv"
    pd.DataFrame({"id": ["x1", "x2", "x3"], "text": ["great acting", "boring plot", "wonderful score"],
                  "label": ["positive", "negative", "negative"]}).to_csv(items, index=False)
    with MisbehavingServer() as srv:
        cfg = debate_config(tmp_path, srv.base_url)
        plan = api.debate(cfg, items, dry_run=True)
        assert srv.count == 0 and plan.plan["calls"] == 3 * 3 * 2 and plan.plan["cost_usd"] is None
        rep = api.debate(cfg, items)
        first = srv.count
        again = api.debate(cfg, items)  # every turn is cached: nothing is asked twice
        assert srv.count == first == 18
    assert rep.verdicts == 3 and rep.accuracy == pytest.approx(2 / 3) and rep.calls == 18
    assert again.calls == 0 and again.verdicts == 3
    t = api.debate_transcript(tmp_path / "run.duckdb", "x1")
    assert t["debate"]["verdict"] == "positive" and len(t["turns"]) == 6
    assert t["debate"]["run_id"] is None and t["debate"]["trigger"] == "given"
    status = api.status(tmp_path / "run.duckdb")  # a store of standalone debates showed nothing
    assert status.runs == [] and status.run_id is None and len(status.debates) == 1
    assert status.debates[0] == {**status.debates[0], "round": None, "calls": 18, "debated": 6, "verdicts": 6}
    with pytest.raises(StoreError, match="no run 5"):  # it answered with the standalone debates
        api.status(tmp_path / "run.duckdb", run_id=5)


def test_a_standalone_debates_items_are_checked_before_a_store_is_made(tmp_path):
    """A repeated id was refused as 'item ids are not unique' without saying which, ids were
    sniffed (``007`` filed as ``7``), and a debate refused at its first check left an empty
    store behind (probe findings)."""
    items = tmp_path / "bad.csv"
    with MisbehavingServer() as srv:
        cfg = debate_config(tmp_path, srv.base_url)
        for ids, match in ((["a", "b", "a"], r"bad\.csv row 3 item 'a': duplicate id"),
                           (["a", None, "c"], r"bad\.csv row 2: missing id \(column 'id'\)")):
            pd.DataFrame({"id": ids, "text": ["x", "y", "z"]}).to_csv(items, index=False)
            with pytest.raises(DataError, match=match):
                api.debate(cfg, items)
        pd.DataFrame({"id": ["007"], "text": ["great acting"], "label": ["positive"]}).to_csv(items, index=False)
        bad_key = yaml.safe_load(cfg.read_text())
        for agent in bad_key["debate"]["agents"]:
            agent["api_key_env"] = "COTRAIN_TEST_UNSET_KEY"
        with pytest.raises(ViewError, match="COTRAIN_TEST_UNSET_KEY"):
            api.debate(bad_key, items)
        assert srv.count == 0 and not (tmp_path / "run.duckdb").exists()  # refused: no empty store left
        rep = api.debate(cfg, items)
    assert rep.verdicts == 1 and rep.accuracy is not None
    assert api.debate_transcript(tmp_path / "run.duckdb", "007")["debate"]["item_id"] == "007"


def test_a_standalone_debates_labels_are_read_as_a_runs_are(tmp_path):
    """A label cell padded with spaces, blank, or an integer label written as a float was an
    unknown label in a debate's items, while a run's loader reads them (review finding); a
    named id column the file lacks is refused, as a run refuses it."""
    items = tmp_path / "items.csv"
    cfg_path = debate_config(tmp_path, "http://127.0.0.1:9")
    cfg = api.resolve_config(cfg_path)[0]
    pd.DataFrame({"id": ["a", "b", "c"], "text": ["x", "y", "z"],
                  "label": [" positive", " ", "negative "]}).to_csv(items, index=False)
    got = read_debate_items(cfg, items)
    assert got.ids == ["a", "b", "c"] and got.gold == ["positive", None, "negative"]
    numeric = yaml.safe_load(cfg_path.read_text())
    numeric["task"]["labels"] = [0, 1]
    pd.DataFrame({"id": ["a", "b"], "text": ["x", "y"], "label": [1.0, None]}).to_parquet(tmp_path / "n.parquet")
    assert read_debate_items(api.resolve_config(numeric)[0], tmp_path / "n.parquet").gold == ["1", None]
    pd.DataFrame({"text": ["x"]}).to_csv(items, index=False)
    with pytest.raises(DataError, match=r"items\.csv: column 'id' \(data\.id_column\) is missing"):
        read_debate_items(cfg, items)
    # tabs and line ends are trimmed as a run trims them; a no-break space is not (str.strip took it)
    pd.DataFrame({"id": ["a", "b"], "text": ["x", "y"], "label": ["\tpositive\r\n", "negative\u00a0"]}).to_parquet(
        tmp_path / "t.parquet")
    with pytest.raises(DataError, match="row 2 item 'b': unknown label 'negative\u00a0'"):
        read_debate_items(cfg, tmp_path / "t.parquet")


def test_a_standalone_debates_dollar_budget_holds_against_the_ledger(tmp_path):
    """A probe's standalone debate spent $1.43 of a $0.50 budget (batches sized by the mean
    cost so far, three debates of all rounds at once); with the dry run's worst case of each
    item held, what the ledger bills stays within the budget, and the undebated items say so."""
    items = tmp_path / "to_debate.csv"
    texts = ["great acting", "boring plot", "wonderful score", "dull", "fine film", "bad film"] * 2
    pd.DataFrame({"id": [f"x{i}" for i in range(12)], "text": texts}).to_csv(items, index=False)
    with MisbehavingServer() as srv:
        cfg = debate_config(tmp_path, srv.base_url, price={"input_per_mtok": 1000.0, "output_per_mtok": 1000.0},
                            concurrency=4)
        whole = api.debate(cfg, items, dry_run=True).plan["cost_usd"]  # every round, every answer at its longest
        budget = 1.5 * WORST_CASE_PAD * whole / 12  # one and a half debates at their worst
        rep = api.debate(cfg, items, overrides={"budget_usd": budget})
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        billed = st.scalar("SELECT sum(cost_usd) FROM llm_calls WHERE view LIKE 'debate:%'")
    # debates cost far less than their worst case here, so several run, one at a time at the margin
    assert 0 < billed <= budget and 1 < 12 - rep.over_budget < 12 and rep.cost_usd == pytest.approx(billed)
    gold = pd.DataFrame({"id": [f"x{i}" for i in range(12)], "text": texts, "label": ["negative"] * 12})
    gold.to_csv(items, index=False)
    with MisbehavingServer() as srv:  # nothing debated: no accuracy, not 0 (undebated items counted as wrong)
        none = api.debate(cfg, items, store=tmp_path / "other.duckdb", overrides={"budget_usd": 1e-9})
        assert none.accuracy is None and none.over_budget == 12 and srv.count == 0
    # status sums the ledger, not the debates' rows: an invocation killed before it filed its
    # debates (here: rows deleted) still shows what it was billed
    with Store(tmp_path / "run.duckdb") as st:
        st.con.execute("DELETE FROM debates WHERE item_id IN ('x0', 'x1')")
    summary = api.status(tmp_path / "run.duckdb").debates[0]
    assert summary["cost_usd"] == pytest.approx(billed) and summary["calls"] == rep.calls


def test_debate_inside_cotraining_adds_labels_with_source_debate(tmp_path):
    with MisbehavingServer() as srv:
        cfg = debate_config(tmp_path, srv.base_url, trigger="both", low_confidence=0.95, max_items=4,
                             evaluate_test=3, accept_confidence=0.6)
        res = api.run(cfg)
        asked = srv.count
        plan = api.plan(cfg)
        again = api.run(cfg, new_run=True)  # every view prompt and every debate turn is cached
        assert srv.count == asked and again.status == "finished"
    assert plan["debate"]["items"] == 2 * (4 + 3) and plan["debate"]["calls"] == 14 * 3 * 2
    big = yaml.safe_load(cfg.read_text())
    big["debate"].update(max_items=500, evaluate_test=500, budget_tokens=1000)  # at most the pool's and test's items
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(big))
    big_plan = api.plan(tmp_path / "big.yaml")["debate"]
    assert big_plan["items"] == 2 * (plan["n_pool"] + plan["n_test"])
    assert plan["debate"]["budget_tokens"] is None and big_plan["budget_tokens"] == 1000 < big_plan["tokens"]
    assert res.status == "finished"
    con = duckdb.connect(str(tmp_path / "run.duckdb"), read_only=True)
    accepted = con.sql("SELECT p.item_id, p.label, d.split FROM pseudo_labels p JOIN debates d"
                       " ON d.item_id = p.item_id AND d.accepted WHERE p.source = 'debate'").fetchall()
    assert accepted and one_value(con, "SELECT count(*) FROM debates WHERE split = 'test' AND accepted") == 0
    truth = dict(zip(sentiment_frame()["id"], sentiment_frame()["text"]))
    assert all((lab == "positive") == any(w in truth[i] for w in ("good", "great", "wonderful", "excellent"))
               for i, lab, _ in accepted)
    rep = api.status(tmp_path / "run.duckdb", res.run_id)
    assert all(d["calls"] == 0 for d in api.status(tmp_path / "run.duckdb", again.run_id).debates)
    assert rep.debates and rep.debates[0]["debated"] > 0 and rep.debates[0]["test_verdict_accuracy"] == 1.0
    # verdicts train every view: the round after reports them in the views' training sets
    # (this run's rows: the store also holds the cached re-run)
    n_train = dict(con.execute("SELECT view, n_train FROM metrics WHERE round = 1 AND run_id = ?",
                               [res.run_id]).fetchall())
    n_debate_r0 = con.execute("SELECT count(*) FROM pseudo_labels WHERE source = 'debate' AND round = 0"
                              " AND run_id = ?", [res.run_id]).fetchall()[0][0]
    assert n_debate_r0 > 0 and n_train["tfidf"] >= 8 + n_debate_r0


def test_bad_debate_config_is_named(tmp_path):
    with MisbehavingServer() as srv:
        with pytest.raises(ConfigError, match=r"'debate': aggregation 'judge' needs a 'judge' agent"):
            api.run(debate_config(tmp_path, srv.base_url, aggregation="judge"))
        with pytest.raises(ConfigError, match=r"'debate.fields': 'body' is not a column"):
            api.run(debate_config(tmp_path, srv.base_url, fields=["body"]))


def test_a_debate_dollar_budget_without_the_agents_price_is_refused_before_anything_runs(tmp_path):
    """Calls of a model litellm has no price for are filed at $0, so a dollar budget would
    never be reached (a probe's finding); the run refuses at once, storing nothing."""
    with MisbehavingServer() as srv:
        cfg = debate_config(tmp_path, srv.base_url, budget_usd=0.5)
        with pytest.raises(ConfigError, match=r"debate\.price.*budget_usd is set but the price of 'openai/fake'"):
            api.run(cfg)
        items = tmp_path / "hard.csv"
        pd.DataFrame({"id": ["x1"], "text": ["great acting"]}).to_csv(items, index=False)
        with pytest.raises(ConfigError, match=r"debate\.price"):  # the dry run refuses what the run would
            api.debate(cfg, items, dry_run=True)
        assert srv.count == 0
    assert not (tmp_path / "run.duckdb").exists()  # nothing stored: the store the run created is gone


def test_an_abstained_turn_keeps_what_the_model_said_or_why_the_call_failed(tmp_path, monkeypatch):
    """`debate show` said only 'abstained (unreadable)' or 'abstained (error)': the answer that
    could not be read and the failed call's message were not stored. Both are now, in
    ``debate_turns`` (migration 012), the message redacted as the seam redacts it."""
    from store.queries import abstention_reason

    secret = "sk-test-0123456789abcdefXYZ"
    monkeypatch.setenv("COTRAIN_DEBATE_KEY", secret)
    items = tmp_path / "d.jsonl"
    pd.DataFrame({"id": ["q1"], "text": ["great film"]}).to_json(items, orient="records", lines=True)
    with MisbehavingServer() as srv, MisbehavingServer(default="garbage") as garbled, \
            MisbehavingServer(default="500") as failing:
        agents = [{"name": "a0", "model": "openai/fake", "api_base": srv.base_url},
                  {"name": "a1", "model": "openai/fake", "api_base": garbled.base_url},
                  {"name": "a2", "model": "openai/fake", "api_base": failing.base_url,
                   "api_key_env": "COTRAIN_DEBATE_KEY"}]
        cfg = debate_config(tmp_path, srv.base_url, agents=agents, rounds=1, max_retries=1)
        rep = api.debate(cfg, items)
        assert failing.count > 0 and rep.verdicts == 1
    store = tmp_path / "run.duckdb"
    turns = {t["agent"]: t for t in api.debate_transcript(store, "q1")["turns"]}
    assert (turns["a0"]["status"], turns["a0"]["error"]) == ("ok", None)
    assert turns["a0"]["answer"] == '{"label": "positive", "confidence": 0.9, "rationale": "the text reads positive"}'
    assert (turns["a1"]["status"], turns["a1"]["label"], turns["a1"]["error"]) == ("unreadable", None, None)
    assert turns["a1"]["answer"] == "Hmm, hard to say. It could go either way!"
    assert abstention_reason(turns["a1"]) == "answered: Hmm, hard to say. It could go either way!"
    assert (turns["a2"]["status"], turns["a2"]["label"], turns["a2"]["answer"]) == ("error", None, None)
    assert "InternalServerError" in turns["a2"]["error"] and "internal error" in turns["a2"]["error"]
    assert abstention_reason(turns["a2"]) == f"error: {turns['a2']['error']}" and abstention_reason(turns["a0"]) == ""
    with duckdb.connect(str(store), read_only=True) as con:  # the agent's key reached no table
        rows = con.execute("SELECT * FROM debate_turns").fetchall() + con.execute("SELECT * FROM llm_calls").fetchall()
    assert rows and not any(secret in str(v) for row in rows for v in row)


def test_debate_flags_apply_to_a_config_without_a_split_column(tmp_path):
    """The CLI's debate flags re-validate the whole config from its snapshot, which names every
    default: with no split column, the default ``test_value`` would read as given alone and be
    refused. A ``test_value`` the config did not give is not re-read as given."""
    items = tmp_path / "d.jsonl"
    pd.DataFrame({"id": ["q1", "q2"], "text": ["great film", "dull film"]}).to_json(items, orient="records", lines=True)
    with MisbehavingServer() as srv:
        cfg = debate_config(tmp_path, srv.base_url)
        data = yaml.safe_load(cfg.read_text())
        del data["data"]["split_column"]
        cfg.write_text(yaml.safe_dump(data))
        plan = api.debate(cfg, items, dry_run=True, overrides={"rounds": 3, "n_agents": 2}).plan
        assert (plan["items"], plan["calls"]) == (2, 2 * 2 * 3) and srv.count == 0
