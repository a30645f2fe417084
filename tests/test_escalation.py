"""The escalation cascade: uncertain items go to a stronger model (a real OpenAI-compatible
server on 127.0.0.1 whose accuracy the test sets), within a budget, and its answers enter
the evidence as one more voter of estimated accuracy."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from orchestrator import api
from orchestrator.config import parse_config
from orchestrator.escalation import acceptance_chance, calibrated_prior, estimate_accuracy, one_coin_update
from store.database import Store
from store.errors import ConfigError
from tests.conftest import sentiment_frame
from tests.openai_server import MisbehavingServer, rule_label


# ---------------------------------------------------------------- pure functions
def test_one_coin_update_is_bayes_with_a_voter_of_known_accuracy():
    prior = np.array([[0.6, 0.3, 0.1], [0.5, 0.5, 0.0], [0.2, 0.2, 0.6]])
    post = one_coin_update(prior, np.array([1, 0, -1]), 0.9)
    expected0 = np.array([0.6 * 0.05, 0.3 * 0.9, 0.1 * 0.05])
    assert np.allclose(post[0], expected0 / expected0.sum())
    assert np.allclose(post[1], [0.9 / (0.9 + 0.05), 0.05 / (0.9 + 0.05), 0.0])
    assert np.allclose(post[2], prior[2])  # an abstention changes nothing
    chance = one_coin_update(prior, np.array([2, 2, 2]), 1 / 3)
    assert np.allclose(chance, prior)  # a voter at chance tells nothing


def test_acceptance_chance_skips_items_no_answer_can_settle():
    prior = np.array([[0.5, 0.5], [0.6, 0.4], [0.2, 0.8]])
    chance = acceptance_chance(prior, 0.87, 0.9)
    assert chance[0] == 0.0  # a coin flip: one 0.87-accurate answer reaches only 0.87
    assert np.isclose(chance[1], 0.6 * 0.87 + 0.4 * 0.13)  # only the answer "class 0" gets it over 0.9
    assert np.isclose(chance[2], 0.8 * 0.87 + 0.2 * 0.13)
    assert np.allclose(acceptance_chance(prior, 0.999, 0.9), 1.0)  # a near-perfect model settles anything


def test_calibrated_prior_puts_p_correct_on_the_top_class():
    post = np.array([[0.7, 0.2, 0.1], [np.nan, np.nan, np.nan]])
    q = calibrated_prior(post, np.array([0.5, np.nan]))
    assert np.allclose(q.sum(axis=1), 1.0) and np.isclose(q[0, 0], 0.5)
    assert np.isclose(q[0, 1] / q[0, 2], 2.0, rtol=1e-2) and np.allclose(q[1], 1 / 3)
    sure = calibrated_prior(np.array([[1.0, 0.0, 0.0]]), np.array([0.6]))  # a saturated view
    assert np.isclose(sure[0, 0], 0.6) and (sure[0, 1:] > 0.1).all()
    assert one_coin_update(sure, np.array([2]), 0.95).argmax() == 2  # a strong vote can move it


def test_accuracy_estimate_skips_abstentions_and_is_smoothed():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [np.nan, np.nan], [0.6, 0.4]])
    acc, n = estimate_accuracy(probs, np.array([0, 1, 1, 1]))
    assert n == 3 and np.isclose(acc, (2 + 1) / (3 + 2))
    assert estimate_accuracy(np.full((2, 2), np.nan), np.array([0, 1])) == (0.5, 0)


# ---------------------------------------------------------------- config
def _config(tmp: Path, base_url: str, df=None, **escalate) -> dict:
    (df if df is not None else sentiment_frame(n_gold=8, n_pool=60, n_test=20)).to_csv(tmp / "items.csv", index=False)
    esc = {"model": "openai/strong", "api_base": base_url, "fields": ["text"], "scoring": "logprobs",
           "concurrency": 2, "timeout_s": 30.0, "backoff_s": 0.01, "budget_usd": 1.0, "chunk": 8,
           "demonstrations": {"strategy": "none"},
           "price": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}, **escalate}
    return {"task": {"labels": ["negative", "positive"]},
            "data": {"train": str(tmp / "items.csv"), "id_column": "id", "split_column": "split"},
            "views": [{"name": "tfidf", "kind": "sklearn", "text": "text"}],
            "cotrain": {"max_rounds": 2, "calibration_folds": 0}, "escalate": esc, "seed": 0,
            "store": str(tmp / "run.duckdb")}


def test_escalation_config_is_checked_where_it_is_written(tmp_path: Path):
    cfg = _config(tmp_path, "http://127.0.0.1:9")
    del cfg["escalate"]["budget_usd"]
    with pytest.raises(ConfigError, match=r"escalate\.budget_usd"):
        parse_config(cfg)
    cfg = _config(tmp_path, "http://127.0.0.1:9", scoring="guess")
    with pytest.raises(ConfigError, match=r"escalate\.scoring"):
        parse_config(cfg)
    cfg = _config(tmp_path, "http://127.0.0.1:9")
    cfg["views"].append({"name": "escalated", "kind": "sklearn", "text": "text"})
    with pytest.raises(ConfigError, match="'escalated' is reserved"):
        parse_config(cfg)


# ---------------------------------------------------------------- a real run
def _noisy(accuracy: float):
    """The server's rule, wrong on a fixed share of items (by a hash of the message)."""
    def rule(text: str) -> str:
        right = rule_label(text)
        bucket = int(hashlib.sha256(text.encode()).hexdigest(), 16) % 1000
        return right if bucket < accuracy * 1000 else ("negative" if right == "positive" else "positive")
    return rule


def _truth() -> dict[str, str]:
    df = sentiment_frame(n_gold=8, n_pool=60, n_test=20)
    y = np.arange(len(df)) % 2
    return dict(zip(df["id"], np.where(y == 1, "positive", "negative")))


def test_uncertain_items_are_escalated_billed_and_filed(tmp_path: Path):
    with MisbehavingServer() as srv:
        cfg = _config(tmp_path, srv.base_url)
        plan = api.plan(cfg)
        assert srv.count == 0  # a dry run calls nothing
        e = plan["escalation"]
        assert e["items"] > 0 and e["calls"] == e["items"] + e["gold_items"] and 0 < e["cost_usd"] <= 1.0
        assert e["items_bound"] >= e["items"]  # the budget's items are an estimate; the pool bounds them
        assert e["gold_items"] == 8 and e["calibration_items"] == 0  # no demonstrations: asked once
        # with demonstrations drawn per round and calibration, both are paid again every round
        per_round = {**cfg, "escalate": {**cfg["escalate"], "demonstrations": {"strategy": "balanced", "k": 2},
                                         "calibration": "bias", "gold_items": 5}}
        e2 = api.plan(per_round)["escalation"]
        assert e2["gold_items"] == 2 * 5 and e2["calibration_items"] == 2 * 3  # 2 rounds; 8 gold = 5 + 3
        assert e2["calls"] == e2["items"] + e2["gold_items"] + e2["calibration_items"]
        assert srv.count == 0
        res = api.run(cfg)
        calls = srv.count
        again = api.run(cfg)
        assert again.already_finished and srv.count == calls  # a finished run asks nothing again
    truth = _truth()
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        esc = st.con.execute("SELECT item_id, label, p_correct, source_views FROM pseudo_labels"
                             " WHERE source = 'escalated'").fetchall()
        answers = st.scalar("SELECT count(*) FROM predictions WHERE view = 'escalated'")
        spent = st.scalar("SELECT coalesce(sum(cost_usd), 0) FROM llm_calls WHERE view = 'escalated'")
        est = st.con.execute("SELECT round, cv_accuracy FROM view_estimates WHERE view = 'escalated'").fetchall()
    assert esc and all(label == truth[i] for i, label, _, _ in esc)  # the strong model is right here
    assert all(views == ["escalated"] for _, _, _, views in esc)
    assert answers >= len(esc) and 0 < spent <= 1.0
    # escalated labels train every view, on resume too (the state is rebuilt from the store)
    from orchestrator.state import LabelState

    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        state = LabelState.load(st, 1, ["negative", "positive"], ["tfidf"])
        ids = st.con.execute("SELECT i.row_idx FROM items i JOIN pseudo_labels p USING (run_id, item_id)"
                             " WHERE p.source = 'escalated' ORDER BY i.row_idx").fetchall()
    assert state.shared[[r for (r,) in ids]].all()
    assert est and all(np.isclose(a, (8 + 1) / (8 + 2)) for _, a in est)  # 8 gold answered, all right
    assert res.n_pseudo >= len(esc)


def test_the_budget_stops_the_cascade(tmp_path: Path):
    with MisbehavingServer() as srv:
        cfg = _config(tmp_path, srv.base_url, budget_usd=0.004, chunk=4)  # a few calls' worth
        api.run(cfg)
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        spent = st.scalar("SELECT coalesce(sum(cost_usd), 0) FROM llm_calls WHERE view = 'escalated'")
        refused = st.scalar("SELECT count(*) FROM llm_calls WHERE view = 'escalated' AND status = 'budget'")
        per_call = st.scalar("SELECT max(cost_usd) FROM llm_calls WHERE view = 'escalated'")
        asked = st.scalar("SELECT count(*) FROM predictions WHERE view = 'escalated'")
    assert spent <= 0.004 + 2 * per_call  # at most the calls in flight (concurrency 2) when it ran out
    assert refused > 0 and asked == 0  # the gold answers spent it: no pool item was sent


def test_the_budget_caps_the_items_sent(tmp_path: Path):
    with MisbehavingServer() as srv:
        # one call costs about $0.02 here: the budget pays the 8 gold answers and a handful of items
        cfg = _config(tmp_path, srv.base_url, budget_usd=0.3, chunk=4)
        api.run(cfg)
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        spent = st.scalar("SELECT coalesce(sum(cost_usd), 0) FROM llm_calls WHERE view = 'escalated'")
        per_call = st.scalar("SELECT max(cost_usd) FROM llm_calls WHERE view = 'escalated'")
        asked = st.scalar("SELECT count(DISTINCT item_id) FROM predictions WHERE view = 'escalated'")
    assert 0 < asked < 60 and spent <= 0.3 + 2 * per_call


def test_random_order_and_a_precision_target(tmp_path: Path):
    for d in "abc":
        (tmp_path / d).mkdir()
    with MisbehavingServer() as srv:
        api.run(_config(tmp_path / "a", srv.base_url, order="random", below=1.0, max_items_per_round=10))
        api.run(_config(tmp_path / "b", srv.base_url, target_precision=0.6, chunk=4))
        api.run(_config(tmp_path / "c", srv.base_url, target_precision=0.5, chunk=4))
    with Store(tmp_path / "a" / "run.duckdb", read_only=True) as st:
        per_round = st.con.execute("SELECT round, count(*) FROM predictions WHERE view = 'escalated'"
                                   " GROUP BY round").fetchall()
    assert per_round and all(n <= 10 for _, n in per_round)
    with Store(tmp_path / "b" / "run.duckdb", read_only=True) as st:
        first = st.scalar("SELECT count(*) FROM predictions WHERE view = 'escalated' AND round = 0")
    assert 0 < first < 22 and first % 4 == 0  # the pool's estimated precision passed 0.6 after a chunk
    with Store(tmp_path / "c" / "run.duckdb", read_only=True) as st:  # two labels: 0.5 is met before any call
        assert st.scalar("SELECT count(*) FROM predictions WHERE view = 'escalated'") == 0


def test_an_unknown_price_is_refused_before_the_run_starts(tmp_path: Path):
    cfg = _config(tmp_path, "http://127.0.0.1:9")
    del cfg["escalate"]["price"]
    cfg["escalate"]["model"] = "openai/no-such-model-priced"
    with pytest.raises(ConfigError, match=r"escalate\.price.*unknown"):
        api.run(cfg)
    assert not (tmp_path / "run.duckdb").exists() or Store(tmp_path / "run.duckdb", read_only=True).scalar(
        "SELECT count(*) FROM runs") == 0


def test_a_noisy_strong_model_weighs_by_its_estimated_accuracy(tmp_path: Path):
    with MisbehavingServer(rule=_noisy(0.7)) as srv:
        df = sentiment_frame(n_gold=30, n_pool=60, n_test=20)
        cfg = _config(tmp_path, srv.base_url, df=df, gold_items=30)
        api.run(cfg)
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        acc = st.scalar("SELECT max(cv_accuracy) FROM view_estimates WHERE view = 'escalated'")
        esc = st.con.execute("SELECT p_correct, item_id, label FROM pseudo_labels WHERE source = 'escalated'").fetchall()
    assert 0.5 < acc < 0.95  # about 0.7 on 30 gold answers
    # a 0.7-accurate voter is accepted only where the views already leant its way: fewer
    # labels than a perfect one would give, and mostly right
    truth = dict(zip(df["id"], np.where(np.arange(len(df)) % 2 == 1, "positive", "negative")))
    assert len(esc) < 60 and all(p >= 0.9 for p, _, _ in esc)
    if esc:
        assert np.mean([label == truth[i] for _, i, label in esc]) >= 0.8


def test_an_answer_is_bought_once_and_weighed_again_in_later_rounds(tmp_path: Path):
    """A 0.7-accurate model leaves many answers short of min_precision. Those items are not
    asked again in later rounds (with demonstrations drawn per round their prompts would
    differ, so each repeat would be paid for): every answer is filed once, even with
    ``store_predictions: false``, and later rounds weigh it against their new evidence."""
    with MisbehavingServer(rule=_noisy(0.7)) as srv:
        df = sentiment_frame(n_gold=30, n_pool=60, n_test=20)
        cfg = _config(tmp_path, srv.base_url, df=df, gold_items=30)
        cfg["cotrain"].update(max_rounds=4, store_predictions=False)
        api.run(cfg)
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        rows, items = st.con.execute("SELECT count(*), count(DISTINCT item_id) FROM predictions"
                                     " WHERE view = 'escalated'").fetchall()[0]
        rounds = st.scalar("SELECT count(DISTINCT round) FROM predictions WHERE view = 'escalated'")
        others = st.scalar("SELECT count(*) FROM predictions WHERE view <> 'escalated'")
        accepted = st.scalar("SELECT count(*) FROM pseudo_labels WHERE source = 'escalated'")
    assert rows > 0 and others == 0          # answers are kept; the views' predictions are not
    assert rows == items                     # no item asked twice
    assert accepted < items                  # some answers were not enough: they stayed in the pool
    assert rounds >= 1


# ---------------------------------------------------------------- a debate as the escalation
def _debate_escalation(tmp: Path, base_url: str, **escalate) -> dict:
    """The tfidf task escalating to a 2-agent, 1-round debate at ``base_url`` that takes no
    part in the rounds (``enabled: false``)."""
    cfg = _config(tmp, base_url)
    cfg["debate"] = {"enabled": False, "fields": ["text"], "rounds": 1, "timeout_s": 30.0,
                     "agents": [{"name": f"a{i}", "model": "openai/fake", "api_base": base_url} for i in range(2)],
                     "price": {"input_per_mtok": 20.0, "output_per_mtok": 20.0}}
    cfg["escalate"] = {"kind": "debate", "budget_usd": 1.0, "gold_items": 8, "chunk": 8, **escalate}
    return cfg


def test_a_debate_is_one_kind_of_escalation(tmp_path: Path):
    with MisbehavingServer() as srv:
        cfg = _debate_escalation(tmp_path, srv.base_url)
        plan = api.plan(cfg)["escalation"]
        assert srv.count == 0 and plan["model"] == "debate(openai/fake, openai/fake)"
        assert plan["items"] > 0 and plan["calls"] == 2 * (plan["items"] + plan["gold_items"])  # 2 agents, 1 round
        api.run(cfg)
        asked = srv.count
        api.run(cfg, new_run=True)  # same items, same prompts: every turn is a cache hit
        assert srv.count == asked
    truth = _truth()
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        esc = st.con.execute("SELECT item_id, label FROM pseudo_labels WHERE run_id = 1 AND source = 'escalated'"
                             ).fetchall()
        debates = dict(st.con.execute("SELECT trigger, count(*) FROM debates WHERE run_id = 1 GROUP BY trigger"
                                      ).fetchall())
        accepted = st.scalar("SELECT count(*) FROM debates WHERE run_id = 1 AND trigger = 'escalated' AND accepted")
        turns = st.scalar("SELECT count(*) FROM debate_turns t JOIN debates d USING (debate_id) WHERE d.run_id = 1")
        views = {v for (v,) in st.con.execute("SELECT DISTINCT view FROM llm_calls WHERE run_id = 1").fetchall()}
        spent = st.scalar("SELECT sum(cost_usd) FROM llm_calls WHERE run_id = 1")
        acc = st.con.execute("SELECT round, cv_accuracy FROM view_estimates WHERE run_id = 1 AND view = 'escalated'"
                             ).fetchall()
        answers = st.scalar("SELECT count(*) FROM predictions WHERE run_id = 1 AND view = 'escalated'")
        debated = {i for (i,) in st.con.execute("SELECT item_id FROM debates WHERE run_id = 1"
                                                " AND trigger = 'escalated'").fetchall()}
    assert esc and all(label == truth[i] for i, label in esc)      # the agents follow the rule: right
    assert debates["escalated-gold"] == 8 * 2                      # the accuracy sample, each round
    # each pool item debated once; accepted then, or later when its answer met new evidence
    assert debates["escalated"] == answers and 0 < accepted <= len(esc)
    assert {i for i, _ in esc} <= debated
    assert turns == 2 * sum(debates.values())                      # 2 agents x 1 round per debate
    assert views == {"escalated-debate:openai/fake"} and 0 < spent <= 1.0   # apart from the rounds' debates
    assert acc and all(np.isclose(a, (8 + 1) / (8 + 2)) for _, a in acc)
    # status counts the escalation debates' calls and dollars from the ledger, under their prefix
    summary = api.status(tmp_path / "run.duckdb", run_id=1).debates
    assert sum(x["cost_usd"] for x in summary) == pytest.approx(spent) and sum(x["calls"] for x in summary) > 0


def test_a_debate_escalation_is_checked_where_it_is_written(tmp_path: Path):
    cfg = _debate_escalation(tmp_path, "http://127.0.0.1:9", model="openai/strong")
    with pytest.raises(ConfigError, match=r"escalate.*kind 'debate'.*model would not be used"):
        parse_config(cfg)
    cfg = _debate_escalation(tmp_path, "http://127.0.0.1:9")
    del cfg["debate"]
    with pytest.raises(ConfigError, match="kind 'debate' debates with the agents of a 'debate' section"):
        parse_config(cfg)
    cfg = _debate_escalation(tmp_path, "http://127.0.0.1:9")
    cfg["debate"]["fields"] = ["body"]
    with pytest.raises(ConfigError, match=r"debate\.fields.*'body' is not a column"):
        api.run(cfg)
    cfg = _debate_escalation(tmp_path, "http://127.0.0.1:9")
    del cfg["debate"]["price"]
    cfg["debate"]["agents"][0]["model"] = "openai/no-such-model-priced"
    with pytest.raises(ConfigError, match=r"debate\.price.*unknown"):
        api.run(cfg)
