"""``backend: transformers`` under ``engine: ray``: the LLM's batched passes run in Ray actors
of a real local cluster, the view (cache, ledger) stays on the driver.

The default suite runs a real, untrained two-layer Llama (the packaged SmolLM2's tokenizer),
so the actors, passes, cache and ledger are checked in seconds; the slow test runs the
packaged SmolLM2 through a whole run on both engines."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from orchestrator import api
from orchestrator.engine_config import EngineConfig, pool_travels, uses_ray
from orchestrator.ray_engine import open_ray_engine
from orchestrator.ray_placement import llm_reserve, place
from store.database import Store
from store.errors import ConfigError, ViewError
from store.llm_ledger import LLMLedger
from tests.conftest import sentiment_frame, tiny_llama
from views.llm.calls import parse_response
from views.llm.client import LLMClient
from views.llm.connect import connect, endpoint_for

ray = pytest.importorskip("ray", reason="engine 'ray' needs the ray extra")
pytest.importorskip("gguf", reason="backend 'transformers' reads GGUF with the gguf package (the batched extra)")
pytest.importorskip("accelerate", reason="transformers loads GGUF files through accelerate (the batched extra)")
from orchestrator.ray_llm import RayBatchedModel  # noqa: E402
from views.llm.batched import BatchedModel  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of two CPUs for this module's tests."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def _req(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 1, "temperature": 0.0, "logprobs": True,
            "top_logprobs": 5}


TEXTS = [f"review {i}: " + "and on " * (i % 5) for i in range(14)]


def test_actors_answer_as_the_model_in_this_process_and_passes_run_side_by_side(tiny_model: Path, cluster,
                                                                                  mem_store):
    here = BatchedModel(tiny_model, max_batch=4, device="cpu")
    expected = here.forward([_req(t) for t in TEXTS])
    remote = RayBatchedModel(str(tiny_model), max_batch=4, actors=2, cpus=1)
    ledger = LLMLedger(mem_store, run_id=None)
    with LLMClient(endpoint_for("local:smollm2-135m", backend="transformers"), view="v", ledger=ledger,
                   concurrency=32, batched=remote) as c:
        remote.load()
        got = c.complete([_req(t) for t in TEXTS])
        assert len(remote._actors) == 2 and remote.devices_ == ["cpu", "cpu"]
    assert all(x.ok for x in got)
    assert [x.content for x in got] == [parse_response(b)["content"] for b in expected]
    for x, b in zip(got, expected):
        want = dict(parse_response(b)["top_logprobs"][0])
        assert x.top_logprobs is not None and {w for w, _ in x.top_logprobs[0]} == set(want)
        assert all(abs(v - want[w]) < 1e-4 for w, v in x.top_logprobs[0])
    assert remote.batches_ == 4 and remote.largest_batch_ == 4  # 14 prompts: 4 + 4 + 4 + 2
    assert mem_store.scalar("SELECT count(*) FROM llm_calls WHERE NOT cached AND status = 'ok'") == len(TEXTS)
    assert remote._actors == []  # the client's close stopped the actors
    again = RayBatchedModel(str(tiny_model), max_batch=4, actors=2, cpus=1)
    with LLMClient(endpoint_for("local:smollm2-135m", backend="transformers"), view="v", ledger=ledger,
                   concurrency=32, batched=again) as c:
        cached = c.complete([_req(t) for t in TEXTS])
    assert all(x.cached for x in cached) and again.batches_ == 0 and again._actors == []  # no actor started


@pytest.mark.slow  # 27 s; the default suite keeps the actors' answers against the model in this process
def test_passes_never_outnumber_the_actors_and_a_dead_actor_is_restarted_or_replaced(tiny_model: Path, cluster,
                                                                                       mem_store):
    remote = RayBatchedModel(str(tiny_model), max_batch=2, actors=2, cpus=1)
    remote.load()
    busy: list[int] = []
    forward = remote._pass

    async def counting(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        busy.append(len(remote._running))
        return await forward(requests)

    remote._pass = counting  # type: ignore[method-assign]

    async def ask() -> list[dict[str, Any]]:
        return await asyncio.gather(*(remote.complete(_req(t)) for t in TEXTS))

    try:
        bodies = asyncio.run(ask())
        assert len(bodies) == len(TEXTS) and max(busy) == 2 and remote.batches_ == 7
        ray.kill(remote._actors[0], no_restart=False)  # as if its process died: Ray restarts it
        after = remote.forward([_req(TEXTS[0])])  # and retries the pass on the new process
        assert parse_response(after[0])["content"] == parse_response(bodies[0])["content"]
        ray.kill(remote._actors[1], no_restart=True)  # dead for good: the pass fails, the actor is replaced
        with LLMClient(endpoint_for("local:smollm2-135m", backend="transformers"), view="v",
                       ledger=LLMLedger(mem_store, run_id=None), concurrency=8, backoff_s=0.01,
                       batched=remote) as c:
            got = c.complete([_req(t) for t in TEXTS])
            assert len(remote._actors) == 2 and remote.replaced_ == 1
        assert all(x.ok for x in got) and remote._actors == []  # the client's close stopped them
        assert [x.content for x in got] == [parse_response(b)["content"] for b in bodies]
    finally:
        remote.close()


def test_a_pass_the_actor_refuses_fails_with_the_models_own_message(tiny_model: Path, cluster):
    remote = RayBatchedModel(str(tiny_model), max_batch=4, actors=1, cpus=1)
    with LLMClient(endpoint_for("local:smollm2-135m", backend="transformers"), view="v", batched=remote) as c:
        [comp] = c.complete([{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}])
    assert comp.status == "error" and "label words only" in comp.error and "ray::" not in comp.error


def test_a_model_the_actors_cannot_load_stops_the_view_with_one_line(tmp_path: Path, cluster):
    (tmp_path / "config.json").write_text("{}")  # a folder transformers cannot read
    remote = RayBatchedModel(str(tmp_path), max_batch=4, actors=1, cpus=1)
    with pytest.raises(ViewError, match="cannot load local:smollm2-135m") as err:
        connect("local:smollm2-135m", "llm", backend="transformers", batched=remote)
    assert "\n" not in str(err.value) and remote._actors == []


def test_llm_actors_that_do_not_fit_the_cluster_are_refused():
    assert llm_reserve(EngineConfig(kind="ray", llm_actors=4), 2.0, 0.0, hosted=2) == (2.0, 0.0)  # none by default
    cfg = EngineConfig(kind="ray", llm_actors=2, llm_cpus_per_actor=1.0)
    assert llm_reserve(cfg, 4.0, 0.0, hosted=1) == (2.0, 0.0)
    with pytest.raises(ConfigError, match="engine.llm_actors"):
        llm_reserve(cfg, 2.0, 0.0, hosted=2)
    with pytest.raises(ConfigError, match="engine.llm_gpus_per_actor"):
        llm_reserve(EngineConfig(kind="ray", llm_gpus_per_actor=1.0), 4.0, 0.0, hosted=1)
    with pytest.raises(ConfigError, match="once the LLM actors hold theirs"):  # the pool's actors no longer fit
        place(EngineConfig(kind="ray", gpus_per_actor=1.0, llm_gpus_per_actor=1.0), 4.0, 1.0, hosted=1, travel=True)
    assert place(EngineConfig(kind="ray", llm_cpus_per_actor=0.25), 2.0, 0.0, hosted=2, travel=True) == 1
    assert place(EngineConfig(kind="ray", llm_cpus_per_actor=0.25), 2.0, 0.0, hosted=3, travel=False) == 0
    assert place(EngineConfig(kind="ray"), 2.0, 0.0, hosted=3, travel=True) == 1


def test_a_vllm_view_goes_to_gpu_actors_only(mem_store):
    """backend vllm runs in the actors too, each holding a vLLM engine, and only where each
    actor holds a GPU (refused before any cluster starts)."""
    import torch

    from orchestrator.ray_llm import Scorer
    from views.base import ViewContext
    from views.llm.view import LLMView
    from views.llm.vllm_model import VllmModel

    view = LLMView.from_params("gen", ViewContext(labels=("negative", "positive"), seed=0), fields=["text"],
                               backend="vllm", max_batch=64)
    assert view.batched_model() == ("smollm2-135m", 64, "vllm", 8192)
    with pytest.raises(ConfigError, match="'engine.llm_gpus_per_actor': view 'gen' has backend vllm"):
        open_ray_engine(EngineConfig(kind="ray", llm_actors=1), mem_store, 0, ["text"], pa.array([], pa.string()),
                        views=[view])
    threads = torch.get_num_threads()
    try:  # the actor's class, built here: it holds a vLLM model of the packaged file, not loaded yet
        scorer = Scorer("smollm2-135m", 8, 1, None, backend="vllm", n_ctx=2048)
    finally:
        torch.set_num_threads(threads)
    assert isinstance(scorer.model, VllmModel) and (scorer.model.max_batch, scorer.model.max_model_len) == (8, 2048)
    assert scorer.model._model is None
    assert RayBatchedModel("smollm2-135m", 8, backend="vllm", n_ctx=2048).n_ctx == 2048


# ---------------------------------------------------------------- a whole run, both engines
def _run_config(d: Path, engine: dict[str, Any] | None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    sentiment_frame(n_gold=8, n_pool=24, n_test=12).to_csv(d / "items.csv", index=False)
    cfg = {"task": {"labels": [{"name": "negative", "description": "a negative opinion of the film"},
                               {"name": "positive", "description": "a positive opinion of the film"}]},
           "data": {"train": "items.csv", "id_column": "id", "split_column": "split"},
           "views": [{"name": "llm", "kind": "llm", "fields": ["text"], "backend": "transformers", "max_batch": 8,
                      "instructions": "Classify the sentiment of a movie review."},
                     {"name": "tfidf", "kind": "sklearn", "text": "text"}],
           "cotrain": {"max_rounds": 1, "k": 4, "store_predictions": True}, "seed": 0, "store": "run.duckdb"}
    if engine is not None:
        cfg["engine"] = engine
    (d / "cotrain.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return d / "cotrain.yaml"


def _decided(store: Path) -> dict[str, Any]:
    with Store(store, read_only=True) as st:
        return {"labels": st.query("SELECT item_id, label, round FROM pseudo_labels ORDER BY item_id").to_pylist(),
                "calls": st.scalar("SELECT count(*) FROM llm_calls WHERE NOT cached AND status = 'ok'"),
                "answers": st.query("SELECT item_id, view, label FROM predictions WHERE view = 'llm' "
                                    "ORDER BY round, item_id").to_pylist()}


def test_the_engine_hands_a_batched_llm_view_its_actors_and_exports_no_shard_for_it(cluster, mem_store):
    from views.base import ViewContext
    from views.llm.view import LLMView

    ctx = ViewContext(labels=("negative", "positive"), seed=0)
    llm = LLMView.from_params("llm", ctx, fields=["text"], backend="transformers", max_batch=16)
    served = LLMView.from_params("served", ctx, fields=["text"])  # llama.cpp: nothing for the engine to host
    cfg = EngineConfig(kind="ray", llm_actors=2, llm_cpus_per_actor=0.5)
    assert uses_ray([llm], cfg) and not uses_ray([served], cfg) and not uses_ray([llm], EngineConfig())
    assert not uses_ray([llm], EngineConfig(kind="ray", llm_actors=0))  # 0: the model stays in this process
    assert not pool_travels([llm, served], cfg)  # no worker reads the pool: the driver may hold it in memory
    engine = open_ray_engine(cfg, mem_store, 0, ["text"], pa.array([], pa.string()), views=[llm, served])
    try:
        hosted = llm._batched
        assert isinstance(hosted, RayBatchedModel) and served._batched is None
        assert (hosted.parallel, hosted.cpus, hosted.max_batch, engine.folder, engine.actors) == (2, 0.5, 16, "", 0)
        assert hosted.name == "smollm2-135m" and engine.models == [hosted]
        assert not engine.runs([llm, served])  # both predict on the driver: no pool pass
    finally:
        engine.close()  # closes the models it made, even before their views
        llm.close()
    assert ray.is_initialized()  # a cluster the engine joined is left running


@pytest.mark.slow  # the packaged SmolLM2 dequantised twice (here and in an actor), and a Ray cluster
def test_a_run_on_ray_asks_the_same_prompts_and_gives_the_local_engines_labels(tmp_path: Path):
    api.run(_run_config(tmp_path / "local", None))
    # the LLM actor holds half a CPU beside the pool pass's actor and reads (Ray 2.57-2.60 stalled here)
    api.run(_run_config(tmp_path / "ray", {"kind": "ray", "llm_actors": 1, "llm_cpus_per_actor": 0.5}))
    local, got = _decided(tmp_path / "local" / "run.duckdb"), _decided(tmp_path / "ray" / "run.duckdb")
    assert got["calls"] == local["calls"] > 0  # every prompt asked once, on either engine
    assert got["answers"] == local["answers"] and len(got["answers"]) > 0
    assert got["labels"] == local["labels"]
