"""The ``llm`` view inside real co-training runs, against a real OpenAI-compatible server on
127.0.0.1 (tests/openai_server.py): no repeated calls on re-run or resume, nothing
unreadable becomes a label, demonstrations are filed, no key reaches the store, logs or
exports, and the dry run calls nothing."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from orchestrator import api
from orchestrator.config import parse_config
from store.errors import ConfigError
from tests.conftest import llm_config, one_value
from tests.openai_server import MisbehavingServer

REPO = Path(__file__).parents[1]
SECRET = "sk-test-SECRET-fedcba9876543210"


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("COTRAIN_TEST_KEY", SECRET)
    return "COTRAIN_TEST_KEY"


def accepting_at(cfg: Path, min_precision: float) -> Path:
    """``cfg`` with ``cotrain.min_precision`` set. The test server's LLM answers every item
    right at 0.89 (0.8 on the label's tokens, 0.1 on the other's), and the pool's product,
    weighted by each view's temperature on gold, is never scored above what its most
    trusted view says: at the default bar of 0.9 nothing is accepted, which is honest, but
    these tests are about what accepting does to the cache and the ledger."""
    data = yaml.safe_load(cfg.read_text())
    data["cotrain"]["min_precision"] = min_precision
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    return cfg


def test_an_endpoint_failing_every_request_stops_the_round_and_the_run_resumes(tmp_path, key_env):
    """A server answering 500 to everything (or gone): every request was filed as an error, the
    run committed its rounds without the view, ended "finished" and could not be resumed."""
    from store.errors import ViewError

    with MisbehavingServer(default="500") as srv:
        cfg = llm_config(tmp_path, srv.base_url, max_retries=0)
        with pytest.raises(ViewError, match=r"view 'llm': all \d+ requests of a batch failed .*running again resumes"):
            api.run(cfg)
        assert [r["status"] for r in api.status(tmp_path / "run.duckdb").runs] == ["failed"]
        srv.default = "ok"  # the server is back
        res = api.run(cfg)
    assert res.run_id == 1 and res.status == "finished"  # the failed run, resumed: no second run
    assert res.final_metrics["llm"]["test_accuracy"] == 1.0  # the view took part this time


def test_scoring_logprobs_against_an_endpoint_without_them_says_so(tmp_path, key_env):
    """The run went on without the view, warning that the answers named no label."""
    from store.errors import ViewError

    with MisbehavingServer(default="no_logprobs") as srv:
        with pytest.raises(ViewError, match=r"no log-probabilities with any of \d+ answers.*set scoring: sample"):
            api.run(llm_config(tmp_path, srv.base_url, scoring="logprobs", max_rounds=1))
        res = api.run(llm_config(tmp_path, srv.base_url, scoring="auto", samples=1, max_rounds=1), new_run=True)
    assert res.status == "finished" and res.final_metrics["llm"]["test_accuracy"] == 1.0  # auto found out


@pytest.mark.slow  # 13 s; the default suite keeps auto finding out from a server without logprobs
def test_auto_whose_probe_failed_finds_out_from_the_batch_and_a_refused_item_still_abstains(tmp_path, key_env):
    """Under ``scoring: auto`` a failed probe left the batch to logprobs, and against an endpoint
    without them the run failed, telling the user to set the auto they had (a review's finding).
    Now the batch's own answers decide. And every item refused for itself (400: a prompt too
    long) is an abstention, not an endpoint that is down."""
    with MisbehavingServer(faults={1: "500"}, default="no_logprobs") as srv:
        res = api.run(llm_config(tmp_path, srv.base_url, scoring="auto", samples=1, max_retries=0, max_rounds=1))
    assert res.status == "finished" and res.final_metrics["llm"]["test_accuracy"] == 1.0
    (tmp_path / "b").mkdir()
    with MisbehavingServer(default="400") as srv:
        res = api.run(llm_config(tmp_path / "b", srv.base_url, max_retries=0, max_rounds=1))
    assert res.status == "finished"  # the items abstain; the other view labels


def test_a_dry_run_bounds_scoring_auto_by_sampling(tmp_path):
    """``scoring: auto`` samples when the endpoint returns no logprobs: the dry run priced one
    call per item, and a run made five times the calls of its "upper bound"."""
    cfg = llm_config(tmp_path, "http://127.0.0.1:9/v1", key_env=None, scoring="auto", samples=5,
                     price={"input_per_mtok": 0.15, "output_per_mtok": 0.6})
    [v] = api.plan(cfg)["views"]
    assert v["mode"] == "auto (bounded as sample)" and v["calls_per_item"] == 5


def test_run_labels_with_the_llm_and_reruns_call_nothing(tmp_path, key_env):
    with MisbehavingServer() as srv:
        cfg = accepting_at(llm_config(tmp_path, srv.base_url), 0.85)
        res = api.run(cfg)
        first = srv.count
        assert res.status == "finished" and res.n_pseudo > 0
        assert res.final_metrics["llm"]["test_accuracy"] == 1.0  # the server's rule is the truth here
        again = api.run(cfg)  # finished run: nothing to do
        assert again.already_finished and srv.count == first
        fresh = api.run(cfg, new_run=True)  # a new run over the same store: every prompt is cached
        assert fresh.run_id == res.run_id + 1 and srv.count == first
    con = duckdb.connect(str(tmp_path / "run.duckdb"), read_only=True)
    usage = con.sql("SELECT run_id, count(*) FILTER (WHERE NOT cached), count(*) FILTER (WHERE cached)"
                    " FROM llm_calls GROUP BY run_id ORDER BY run_id").fetchall()
    assert usage[0][1] == first and usage[1][1] == 0 and usage[1][2] > 0
    assert one_value(con, "SELECT count(*) FROM predictions WHERE view = 'llm' AND label IS NULL") == 0
    rep = api.status(tmp_path / "run.duckdb", res.run_id)
    assert {(u["round"], u["view"]) for u in rep.llm} >= {(0, "llm"), (1, "llm")}
    assert sum(u["calls"] for u in rep.llm) == first


def test_shadow_runs_of_a_zero_shot_llm_view_cost_no_call(tmp_path, key_env):
    """A zero-shot LLM view's prompts never change, so ``shadows: auto`` keeps shadows and
    their predictions are cache hits: the server answers as many calls as without shadows."""
    counts, shadow_rows = [], []
    for shadows in ("auto", False):
        with MisbehavingServer() as srv:
            d = tmp_path / str(shadows)
            d.mkdir()
            cfg = accepting_at(llm_config(d, srv.base_url), 0.85)
            data = yaml.safe_load(cfg.read_text())
            data["cotrain"]["shadows"] = shadows
            cfg.write_text(yaml.safe_dump(data))
            assert api.run(cfg).status == "finished"
            counts.append(srv.count)
        con = duckdb.connect(str(d / "run.duckdb"), read_only=True)
        shadow_rows.append(one_value(con, "SELECT count(*) FROM shadow_labels"))
        assert one_value(con, "SELECT count(*) FROM llm_calls WHERE NOT cached") == srv.count
        con.close()
    assert shadow_rows[0] > 0 and shadow_rows[1] == 0
    assert counts[0] == counts[1] > 0


def test_unreadable_answers_are_abstentions_never_labels(tmp_path, key_env, caplog):
    # no logprobs, so `auto` switches to sampled JSON answers; every answer is unreadable
    import logging

    with MisbehavingServer(default="garbage") as srv, caplog.at_level(logging.WARNING, logger="cotrain"):
        cfg = llm_config(tmp_path, srv.base_url, scoring="auto", samples=3, max_rounds=1)
        res = api.run(cfg)
    assert res.status == "finished"
    said = [r.getMessage() for r in caplog.records if "named none of the task's labels" in r.getMessage()]
    assert len(said) == 1 and "'Hmm, hard to say. It could go either way!'" in said[0]  # once, with an example
    con = duckdb.connect(str(tmp_path / "run.duckdb"), read_only=True)
    # one logprobs probe, then 3 sampled answers (seeds 0, 1, 2) for each of the 40 pool and 20 test items
    # and the 8 gold items (cross-validation over the gold labels asks about each once, out of fold)
    asked = con.sql("SELECT json_extract_string(request, '$.seed'), json_extract(request, '$.logprobs') IS NOT NULL,"
                    " count(*) FROM llm_cache GROUP BY ALL ORDER BY ALL").fetchall()
    assert asked == [("0", False, 68), ("1", False, 68), ("2", False, 68), (None, True, 1)]
    assert one_value(con, "SELECT count(*) FROM predictions WHERE view = 'llm' AND label IS NOT NULL") == 0
    assert one_value(con, "SELECT count(*) FROM pseudo_labels WHERE list_contains(source_views, 'llm')") == 0
    assert res.final_metrics["llm"]["test_accuracy"] is None  # abstained on every item: not measured


def test_failing_server_files_each_error_and_stops_the_run(tmp_path, key_env):
    """Every request failing ended in abstentions and a finished run; now the run stops, failed
    and resumable (test_an_endpoint_failing_every_request_stops_the_round_and_the_run_resumes),
    and each failed request is still filed, nothing cached."""
    from store.errors import ViewError

    with MisbehavingServer(default="500") as srv, pytest.raises(ViewError, match="requests of a batch failed"):
        api.run(llm_config(tmp_path, srv.base_url, max_retries=1, max_rounds=1))
    con = duckdb.connect(str(tmp_path / "run.duckdb"), read_only=True)
    assert one_value(con, "SELECT count(*) FROM llm_calls WHERE status = 'error'") > 0
    assert one_value(con, "SELECT count(*) FROM llm_cache") == 0


def test_sampled_answers_vote(tmp_path, key_env):
    with MisbehavingServer(default="no_logprobs") as srv:
        res = api.run(llm_config(tmp_path, srv.base_url, scoring="sample", samples=2, max_rounds=1))
    assert res.final_metrics["llm"]["test_accuracy"] == 1.0


def test_demonstrations_come_from_the_training_set_and_are_filed(tmp_path, key_env):
    with MisbehavingServer() as srv:
        res = api.run(llm_config(tmp_path, srv.base_url, demonstrations={"strategy": "balanced", "k": 4},
                                 calibration="bias"))
    con = duckdb.connect(str(tmp_path / "run.duckdb"), read_only=True)
    rows = con.sql("SELECT round, item_id, demo_ids FROM llm_demonstrations WHERE run_id = ? ORDER BY round",
                   params=[res.run_id]).fetchall()
    assert rows and {r[0] for r in rows} == {0, 1, 2}
    gold = {r[0] for r in con.sql("SELECT item_id FROM items WHERE gold_label IS NOT NULL AND split = 'train'").fetchall()}
    round0 = [set(r[2]) for r in rows if r[0] == 0]
    assert all(d <= gold and len(d) == 4 for d in round0)  # round 0 trains on gold only
    assert all(r[1] not in r[2] for r in rows)  # an item never demonstrates itself
    # the prompts really carried them: a cached request has 4 demo turns (8 messages + system + item)
    req = one_value(con, "SELECT request FROM llm_cache WHERE request LIKE '%assistant%' LIMIT 1")
    assert '"role":"assistant"' in req.replace(" ", "")


def test_no_key_in_store_logs_or_exports(tmp_path, key_env, caplog):
    with MisbehavingServer(faults={3: "429", 5: "500"}) as srv, caplog.at_level(logging.DEBUG):
        res = api.run(llm_config(tmp_path, srv.base_url, max_rounds=1))
        assert set(srv.auth_headers) == {f"Bearer {SECRET}"}
    out = tmp_path / "labels.jsonl"
    api.export(tmp_path / "run.duckdb", out)
    con = duckdb.connect(str(tmp_path / "run.duckdb"), read_only=True)
    dump = []
    for (table,) in con.sql("SELECT table_name FROM information_schema.tables").fetchall():
        dump.append(str(con.sql(f'SELECT * FROM "{table}"').fetchall()))
    text = "\n".join(dump) + caplog.text + out.read_text()
    assert res.status == "finished" and "fake" in text
    for probe in (SECRET, SECRET[:12], SECRET[-12:]):
        assert probe not in text


def test_an_api_key_in_the_config_is_refused():
    with pytest.raises(ConfigError, match=r"views\[0\].*api_key must not be written"):
        parse_config({"task": {"labels": ["a", "b"]}, "data": {"train": "x.csv"},
                      "views": [{"name": "l", "kind": "llm", "fields": ["t"], "api_key": "sk-123"}],
                      "cotrain": {"policy": "self"}})


def test_killed_run_resumes_without_repeating_an_answered_call(tmp_path, key_env):
    """SIGKILL the CLI while a request is in flight; the resumed run asks again only that
    request (its answer never arrived), never one already answered."""
    proc = None
    with MisbehavingServer() as srv:
        cfg = llm_config(tmp_path, srv.base_url, concurrency=1, max_rounds=2)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(cfg), "--quiet"], cwd=REPO,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        srv.kill_pid = proc.pid
        srv.faults[45] = "kill"  # mid round 0's pool (8 gold calibration-free, 20 test, 40 pool)
        assert proc.wait(timeout=120) == -9
        killed_at = srv.count
        assert max(srv.answered.values()) == 1
        res = api.run(cfg)
        assert res.status == "finished" and res.resumed is False  # round 0 never committed
        assert srv.count > killed_at
        assert max(srv.answered.values()) == 1  # no answered request was asked twice


def test_dry_run_estimates_and_calls_nothing(tmp_path, key_env):
    with MisbehavingServer() as srv:
        cfg = llm_config(tmp_path, srv.base_url, price={"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                         budget_usd=1.0)
        plan = api.plan(cfg)
        assert srv.count == 0
    assert not (tmp_path / "run.duckdb").exists()
    [v] = plan["views"]
    assert (plan["n_gold"], plan["n_pool"], plan["n_test"]) == (8, 40, 20)
    assert v["calls"] == 40 + 20 + 8  # pool, test and gold (asked out of fold); later rounds are cache hits
    assert v["prompt_tokens"] > 0 and v["cost_usd"] == pytest.approx(
        (v["prompt_tokens"] * 1.0 + v["completion_tokens"] * 2.0) / 1e6, rel=0.05)


@pytest.mark.parametrize(("params", "match"), [
    ({"fields": ["body"]}, r"view 'llm': field 'body' is not a column"),
    ({"verbalizers": {"neutral": ["meh"]}}, r"verbalizers name unknown label 'neutral'"),
    ({"model": "local:gpt-9"}, r"unknown local model 'gpt-9'"),
    ({"demonstrations": {"strategy": "knn", "text": "body"}}, r"demonstrations.text field 'body'"),
    ({"template": "{{ item.text }"}, r"'template' is not a valid template"),
    ({"budget_usd": 1.0}, r"budget_usd is set but the price of 'openai/fake' is unknown"),  # filed at $0: no budget
])
def test_bad_llm_view_fails_at_build_naming_the_problem(tmp_path, params, match):
    from store.errors import CotrainError

    cfg = llm_config(tmp_path, "http://127.0.0.1:9/v1", key_env=None, **params)
    with pytest.raises(CotrainError, match=match):
        api.run(cfg)
    assert not (tmp_path / "run.duckdb").exists()  # nothing stored: the store the run created is gone
