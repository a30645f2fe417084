"""``backend: vllm``: label-word scoring by vLLM's offline engine, on a CUDA GPU.

Everywhere: the answer format (the top tokens of vLLM's logprob entries, made into the body
the client parses), the refusals (a remote model, sampled scoring, no vLLM or no GPU: one
line naming the view) and the cache identity. Where torch sees CUDA and vLLM is installed:
the packaged SmolLM2 through an ``llm`` view, its answers filed and cached like every other
backend's, and its labels those of ``backend: transformers`` on the same reviews."""
from __future__ import annotations

import math
from importlib.util import find_spec

import numpy as np
import pandas as pd
import pytest

from store.errors import ViewError
from views.base import ViewContext
from views.llm.batched import label_word_body
from views.llm.calls import parse_response
from views.llm.connect import endpoint_for
from views.llm.vllm_model import NoGPU, VllmModel, check_vllm, top_tokens


def _gpu_and_vllm() -> bool:
    if find_spec("vllm") is None or find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


needs_gpu = pytest.mark.skipif(not _gpu_and_vllm(), reason="backend 'vllm' runs only where vLLM is installed and "
                                                            "torch sees a CUDA GPU")


def test_the_top_tokens_are_the_n_most_likely_and_read_as_a_servers_answer():
    # vLLM's entry: the top 3 and the sampled token outside them (rank 7); an undecodable piece
    entries = [(" positive", -0.2), ("neg", -2.5), (None, -1.9), (" maybe", -4.0)]
    words, values = top_tokens(entries, 3)
    assert words == [" positive", "", "neg"] and values == [-0.2, -1.9, -2.5]
    body = label_word_body("m.gguf", words, values, prompt_tokens=97)
    got = parse_response(body)
    assert got["content"] == " positive" and [tuple(t) for t in got["top_logprobs"][0]] == [(" positive", -0.2), ("", -1.9), ("neg", -2.5)]
    assert got["usage"] == {"prompt_tokens": 97, "completion_tokens": 1}
    assert top_tokens([("a", -math.inf), ("b", -1.0)], 1) == (["b"], [-1.0])
    assert top_tokens([("a", -0.1)], 0) == (["a"], [-0.1])  # at least one: the content


@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_an_in_process_backend_is_checked_with_the_view_params(backend: str):
    from views.llm.view import LLMView

    ctx = ViewContext(labels=("negative", "positive"), seed=0)
    with pytest.raises(ViewError, match=f"backend '{backend}' runs an embedded local"):
        LLMView.from_params("llm", ctx, fields=["text"], model="openai/gpt-4o-mini", backend=backend)
    with pytest.raises(ViewError, match=f"backend '{backend}' scores label words"):
        LLMView.from_params("llm", ctx, fields=["text"], backend=backend, scoring="sample")


def test_its_answers_are_another_models_in_the_cache():
    ids = {endpoint_for("local:smollm2-135m", backend=b).identity for b in ("server", "transformers", "vllm")}
    assert endpoint_for("local:smollm2-135m", backend="vllm").identity == "local:smollm2-135m+vllm" and len(ids) == 3


@pytest.mark.skipif(_gpu_and_vllm(), reason="this machine runs vLLM: the refusal cannot happen here")
def test_without_vllm_or_a_gpu_the_view_stops_with_one_line_naming_it():
    from views.llm.view import LLMView

    expected = "needs vllm: pip install 'cotrain\\[vllm\\]'" if find_spec("vllm") is None else "NoGPU: vLLM runs on a CUDA"
    with pytest.raises((ImportError, NoGPU)):
        check_vllm()
    ctx = ViewContext(labels=("negative", "positive"), seed=0)
    view = LLMView.from_params("vllm_view", ctx, fields=["text"], backend="vllm")
    try:
        with pytest.raises(ViewError, match=f"vllm_view.*backend 'vllm' {expected}") as info:
            view.client()
    finally:
        view.close()
    assert "\n" not in str(info.value)
    model = VllmModel("/nowhere/model.gguf")
    with pytest.raises((ImportError, NoGPU)):
        model.forward([{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "logprobs": True}])
    assert model.batches_ == 0


@needs_gpu
def test_the_packaged_model_labels_like_the_transformers_backend_and_is_filed_and_cached(tmp_path):
    from store.database import Store
    from store.llm_ledger import LLMLedger
    from tests.test_llm_local import EASY
    from views.llm.view import LLMView

    items = pd.DataFrame({"text": [t for t, _ in EASY]})
    labels = {}
    with Store(tmp_path / "s.duckdb") as st:
        for backend in ("vllm", "transformers", "vllm"):
            ctx = ViewContext(labels=("negative", "positive"), seed=0, ledger=LLMLedger(st, run_id=None),
                              label_descriptions=("a negative opinion of the film", "a positive opinion of the film"))
            view = LLMView.from_params("llm", ctx, fields=["text"], backend=backend, max_batch=8, scoring="logprobs",
                                       instructions="Classify the sentiment of a movie review.")
            try:
                view.resolve_fields(["text"])
                view.fit(items.iloc[:0], np.zeros(0, dtype=int), np.zeros(0))
                proba = view.predict_proba(items)
                passes = view.client().batched.batches_
            finally:
                view.close()
            assert not np.isnan(proba).any() and np.allclose(proba.sum(axis=1), 1.0)
            if backend in labels:  # the second vLLM view: every answer from the cache, no pass
                assert passes == 0 and (proba.argmax(axis=1) == labels[backend]).all()
            else:
                assert passes >= 1
            labels[backend] = proba.argmax(axis=1)
        filed = st.scalar("SELECT count(*) FROM llm_calls WHERE NOT cached AND status = 'ok' "
                          "AND model = 'local:smollm2-135m+vllm'")
    assert filed == len(EASY)
    assert (labels["vllm"] == np.array([y for _, y in EASY])).mean() >= 4 / 6
    assert (labels["vllm"] == labels["transformers"]).mean() >= 5 / 6  # GGUF kernels against dequantised float32


def test_a_load_failure_is_one_line_that_names_its_cause():
    from pydantic import BaseModel

    from views.llm.connect import _load_error

    class ModelConfig(BaseModel):
        max_model_len: int

    try:
        ModelConfig(max_model_len="many")
    except Exception as exc:  # noqa: BLE001
        line = _load_error(exc)
    assert line.startswith("max_model_len: Input should be a valid integer") and "\n" not in line
    assert _load_error(RuntimeError("\nEngine core initialization failed.\nmore")) == "Engine core initialization failed."


def test_a_prompt_vllm_refuses_fails_alone_and_its_pass_is_answered(monkeypatch):
    """vLLM refuses a whole ``LLM.chat`` call for one prompt longer than its context: the pass
    is asked again a prompt at a time. (The engine is stood in for: no GPU runs one here.)"""
    model = VllmModel("/nowhere/model.gguf", max_batch=8)
    model._model = object()  # loaded, as far as forward can tell
    calls: list[int] = []

    def chat(requests: list[dict]) -> list[dict]:
        calls.append(len(requests))
        if any(r["messages"][0]["content"] == "long" for r in requests):
            raise ValueError("The decoder prompt (length 9000) is longer than the maximum model length of 8192")
        return [label_word_body("m", [" yes"], [-0.1], 5) for _ in requests]

    monkeypatch.setattr(model, "_chat", chat)
    reqs = [{"messages": [{"role": "user", "content": t}], "max_tokens": 1, "logprobs": True}
            for t in ("good", "long", "bad")]
    got = model.forward(reqs)
    assert calls == [3, 1, 1, 1] and model.batches_ == 1
    assert isinstance(got[1], ValueError) and "maximum model length" in str(got[1])
    assert [parse_response(got[i])["content"] for i in (0, 2)] == [" yes", " yes"]
    with pytest.raises(ValueError, match="maximum model length"):  # alone, its error is the pass's
        model.forward(reqs[1:2])
    with pytest.raises(ValueError, match="label words only"):
        model.forward([{"messages": [], "max_tokens": 8}])


@pytest.mark.skipif(_gpu_and_vllm(), reason="this machine runs vLLM: the refusal cannot happen here")
def test_a_run_whose_vllm_view_cannot_run_here_is_refused_before_it_is_recorded(tmp_path):
    import yaml

    from orchestrator import api

    rows = [{"id": f"i{i}", "text": f"{'great' if i % 2 else 'awful'} film {i}", "split": "test" if i >= 40 else "train",
             "label": ("positive" if i % 2 else "negative") if i < 10 or i >= 40 else None} for i in range(50)]
    pd.DataFrame(rows).to_csv(tmp_path / "items.csv", index=False)
    cfg = {"task": {"labels": ["negative", "positive"]},
           "data": {"train": "items.csv", "id_column": "id", "split_column": "split"},
           "views": [{"name": "gen", "kind": "llm", "fields": ["text"], "backend": "vllm"},
                     {"name": "tfidf", "kind": "sklearn", "text": "text"}],
           "cotrain": {"max_rounds": 1}, "store": "run.duckdb"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ViewError, match="view 'gen': backend 'vllm' (needs vllm|cannot run here)"):
        api.run(tmp_path / "c.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "items.csv"]  # no store, no progress file
