"""``backend: transformers``: label-word scoring in batched forward passes, in this process.

The default suite runs a real transformers model, small and untrained (the packaged
SmolLM2's own tokenizer and chat template, read from its GGUF file; a two-layer Llama of that
vocabulary), so batching, padding, the cache and the ledger are checked in seconds. The slow
test runs the packaged SmolLM2 itself, dequantised from GGUF, through an ``llm`` view."""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import tiny_llama
from store.llm_ledger import LLMLedger
from views.base import ViewContext
from views.llm.calls import parse_response
from views.llm.client import LLMClient
from views.llm.connect import endpoint_for

torch = pytest.importorskip("torch")
pytest.importorskip("gguf", reason="backend 'transformers' reads GGUF with the gguf package (the batched extra)")
pytest.importorskip("accelerate", reason="transformers loads GGUF files through accelerate (the batched extra)")
from views.llm.batched import BatchedModel  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _req(text: str, top: int = 5, **kw) -> dict:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 1, "temperature": 0.0, "logprobs": True,
            "top_logprobs": top, **kw}


TEXTS = ["good", "a long and winding review of a film that goes on and on about nothing", "bad", "fine, I guess",
         "the best thing I have seen", "no"]


def test_a_batch_answers_each_prompt_as_it_would_alone(tiny_model: Path):
    m = BatchedModel(tiny_model, max_batch=8, device="cpu")
    together = m.forward([_req(t, top=3 + i % 3) for i, t in enumerate(TEXTS)])
    alone = [m.forward([_req(t, top=3 + i % 3)])[0] for i, t in enumerate(TEXTS)]
    for i, (a, b) in enumerate(zip(together, alone)):
        pa, pb = parse_response(a), parse_response(b)
        assert len(pa["top_logprobs"][0]) == 3 + i % 3  # each request's own top_logprobs
        assert [t for t, _ in pa["top_logprobs"][0]] == [t for t, _ in pb["top_logprobs"][0]]
        assert np.allclose([v for _, v in pa["top_logprobs"][0]], [v for _, v in pb["top_logprobs"][0]], atol=1e-4)
        lps = [v for _, v in pa["top_logprobs"][0]]
        assert lps == sorted(lps, reverse=True) and pa["content"] == pa["top_logprobs"][0][0][0]
        assert pa["usage"] == pb["usage"] and pa["usage"]["completion_tokens"] == 1
    assert parse_response(together[1])["usage"]["prompt_tokens"] > parse_response(together[0])["usage"]["prompt_tokens"]
    m.close()


def test_concurrent_requests_share_forward_passes(tiny_model: Path):
    m = BatchedModel(tiny_model, max_batch=8, device="cpu")

    async def ask() -> list[dict]:
        return await asyncio.gather(*(m.complete(_req(f"review number {i}")) for i in range(20)))

    bodies = asyncio.run(ask())
    assert len(bodies) == 20 and m.batches_ == 3 and m.largest_batch_ == 8  # 8 + 8 + 4
    assert all(parse_response(b)["top_logprobs"] for b in bodies)
    m.close()


def test_a_failed_pass_fails_every_request_of_it_and_the_next_pass_runs(tiny_model: Path):
    m = BatchedModel(tiny_model, max_batch=4, device="cpu")

    async def ask() -> list:
        bad = [_req("x", max_tokens=8)]  # lands in the first pass with three good ones
        return await asyncio.gather(*(m.complete(r) for r in bad + [_req(f"r{i}") for i in range(7)]),
                                    return_exceptions=True)

    got = asyncio.run(ask())
    failed = [g for g in got if isinstance(g, Exception)]
    assert len(failed) == 4 and all("label words only" in str(g) for g in failed)  # the whole first pass
    assert all(isinstance(g, dict) for g in got[4:]) and m.batches_ == 1  # the second pass answered
    m.close()
    assert m._pending == [] and not m._running


def test_the_client_caches_and_files_every_answer_and_a_rerun_runs_no_pass(tiny_model: Path, mem_store):
    ledger = LLMLedger(mem_store, run_id=None)
    reqs = [_req(t) for t in TEXTS + TEXTS[:2]]  # two repeats: asked once
    first_model = BatchedModel(tiny_model, max_batch=4, device="cpu")
    with LLMClient(endpoint_for("local:smollm2-135m", backend="transformers"), view="v", ledger=ledger,
                   concurrency=16, batched=first_model) as c:
        first = c.complete(reqs)
    assert all(x.ok for x in first) and first_model.batches_ == 2  # 6 distinct prompts, 4 a pass
    assert mem_store.scalar("SELECT count(*) FROM llm_cache") == 6
    assert mem_store.scalar("SELECT count(*) FROM llm_calls WHERE NOT cached AND status = 'ok'") == 6
    again_model = BatchedModel(tiny_model, max_batch=4, device="cpu")
    with LLMClient(endpoint_for("local:smollm2-135m", backend="transformers"), view="v", ledger=ledger,
                   concurrency=16, batched=again_model) as c:
        again = c.complete(reqs)
    assert [x.content for x in again] == [x.content for x in first] and all(x.cached for x in again)
    assert again_model.batches_ == 0 and again_model._model is None  # never even loaded
    # the server-backed model's answers are another model's: they share no cache entry
    assert endpoint_for("local:smollm2-135m").identity != endpoint_for("local:smollm2-135m", backend="transformers").identity


def test_a_request_it_cannot_score_comes_back_as_an_error(tiny_model: Path):
    m = BatchedModel(tiny_model, max_batch=4, device="cpu")
    with LLMClient(endpoint_for("local:smollm2-135m", backend="transformers"), view="v", batched=m) as c:
        [comp] = c.complete([{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}])
    assert comp.status == "error" and "label words only" in comp.error


@pytest.mark.slow  # loads and dequantises the 135M model (about 20 s on 2 CPUs)
def test_the_packaged_model_labels_easy_sentiment_in_batches():
    from tests.test_llm_local import EASY
    from views.llm.view import LLMView

    ctx = ViewContext(labels=("negative", "positive"), seed=0,
                      label_descriptions=("a negative opinion of the film", "a positive opinion of the film"))
    view = LLMView.from_params("llm", ctx, fields=["text"], instructions="Classify the sentiment of a movie review.",
                               backend="transformers", max_batch=8)
    items = pd.DataFrame({"text": [t for t, _ in EASY]})
    try:
        view.resolve_fields(["text"])
        view.fit(items.iloc[:0], np.zeros(0, dtype=int), np.zeros(0))
        proba = view.predict_proba(items)
        batched = view.client().batched
    finally:
        view.close()
    assert view.mode_ == "logprobs"
    assert not np.isnan(proba).any() and np.allclose(proba.sum(axis=1), 1.0)
    assert (proba.argmax(axis=1) == np.array([y for _, y in EASY])).mean() >= 4 / 6
    assert batched.largest_batch_ > 1  # the items shared passes


def test_a_pass_may_fail_one_request_alone(tiny_model: Path):
    """A backend whose pass fails one prompt (vLLM refuses one longer than its context) answers
    the others of the pass: only the failed one's caller gets the error."""
    m = BatchedModel(tiny_model, max_batch=8, device="cpu")
    forward = m.forward
    m.forward = lambda reqs: [ValueError("prompt too long") if r["messages"][0]["content"] == "long" else b
                              for r, b in zip(reqs, forward(reqs))]

    async def ask() -> list:
        return await asyncio.gather(*(m.complete(_req(t)) for t in ("good", "long", "bad")), return_exceptions=True)

    got = asyncio.run(ask())
    assert isinstance(got[1], ValueError) and all(isinstance(g, dict) for g in (got[0], got[2]))
    assert m.batches_ == 1
    m.close()
