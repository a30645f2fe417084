"""``engine: ray`` on real Ray clusters on this machine: a local one the run starts, a
two-node cluster (``ray.cluster_utils.Cluster``) the run joins, and a worker killed mid-round.
Every case must give the labels of the local engine, and commit each round exactly once."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml

from orchestrator import api
from orchestrator.engine_config import EngineConfig
from orchestrator.ray_engine import actor_count, shard_prefix, write_shards
from store.database import Store
from store.errors import ConfigError, ViewError
from tests.conftest import synthetic_frame, write_config

ray = pytest.importorskip("ray", reason="engine 'ray' needs the ray extra")


#: Two views that travel to the workers, and a graph view that stays on the driver (it
#: spreads labels within the batch it is asked about, so it must see the local engine's batches).
VIEWS = [{"name": "va", "kind": "sklearn", "column_prefix": "a_"},
         {"name": "vb", "kind": "sklearn", "column_prefix": "b_"},
         {"name": "vg", "kind": "graph", "column_prefix": "b_", "n_neighbors": 5}]


def _config(d: Path, engine: dict[str, Any] | None, views: list[dict[str, Any]] | None = VIEWS,
            **cotrain: Any) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    cfg = write_config(d, synthetic_frame(n=1500, n_gold=20, n_test=100, noise=1.2), **{
        "policy": "auto", "max_rounds": 2, "batch_size": 256, "store_predictions": True, **cotrain})
    c = yaml.safe_load(cfg.read_text())
    if engine is not None:
        c["engine"] = engine
    if views is not None:
        c["views"] = views
    cfg.write_text(yaml.safe_dump(c))
    return cfg


def _outcome(store: Path) -> dict[str, Any]:
    """What a run decided: its pseudo-labels, every stored prediction, its rounds."""
    with Store(store, read_only=True) as st:
        return {
            "labels": st.query("SELECT item_id, label, round, confidence FROM pseudo_labels ORDER BY item_id").to_pylist(),
            "predictions": st.query("SELECT round, item_id, view, label, confidence FROM predictions "
                                    "ORDER BY round, item_id, view").to_pylist(),
            "rounds": st.query("SELECT round, labels_added FROM rounds ORDER BY round").to_pylist(),
        }


def _probe_views(probe: Path, die_once: bool = False) -> list[dict[str, Any]]:
    probe.mkdir(parents=True, exist_ok=True)
    kind = "tests.plugin_views:WorkerProbeView"
    return [{"name": "va", "kind": kind, "columns": [f"a_{j}" for j in range(4)], "probe_dir": str(probe),
             "die_once": die_once},
            {"name": "vb", "kind": "sklearn", "column_prefix": "b_"}]


@pytest.fixture(scope="module")
def local_outcome(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("local")
    api.run(_config(d, None, max_rounds=1))  # one pool round and the final fit: each Ray pass costs seconds
    return _outcome(d / "run.duckdb")


def test_a_local_cluster_gives_the_local_engines_labels(tmp_path: Path, local_outcome: dict[str, Any]):
    cfg = _config(tmp_path, {"kind": "ray", "object_store_mb": 512, "shard_rows": 1000}, max_rounds=1)
    # what a kill -9 of an earlier attempt of this run left: a full copy of the pool's fields
    stale = tmp_path / "run.duckdb.shards" / f"{shard_prefix(str(tmp_path / 'run.duckdb'), 1)}deadbeef"
    stale.mkdir(parents=True)
    (stale / "part-00000.parquet").write_bytes(b"PAR1")
    api.run(cfg)
    got = _outcome(tmp_path / "run.duckdb")
    assert local_outcome["labels"] and got["labels"] == local_outcome["labels"]
    assert got["predictions"] == local_outcome["predictions"]  # every view's vote on every pool item, every round
    assert got["rounds"] == local_outcome["rounds"]
    assert not ray.is_initialized()  # the cluster the run started is stopped with it
    assert not (tmp_path / "run.duckdb.shards").exists()  # its shards removed, and those a killed attempt left


@pytest.mark.slow  # about 20 s on CI: a cluster started for one failing pass
def test_a_views_error_on_a_worker_reaches_the_user_whole(tmp_path: Path):
    views = _probe_views(tmp_path / "probe")
    views[0]["fail_in_worker"] = True
    with pytest.raises(ViewError) as err:
        api.run(_config(tmp_path, {"kind": "ray", "object_store_mb": 512}, views=views))
    assert err.value.view == "va" and "holds 'n/a' at item 'it" in err.value.detail
    assert not ray.is_initialized() and not (tmp_path / "run.duckdb.shards").exists()
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        assert st.scalar("SELECT status FROM runs WHERE run_id = 1") == "failed"
        assert st.scalar("SELECT count(*) FROM rounds") == 0  # round 0 rolled back whole


def test_the_engine_is_not_part_of_the_runs_identity(tmp_path: Path):
    cfg = _config(tmp_path, None, max_rounds=0)
    first = api.run(cfg)
    c = yaml.safe_load(cfg.read_text())
    c["engine"] = {"kind": "ray", "address": "auto"}
    cfg.write_text(yaml.safe_dump(c))
    again = api.run(cfg)  # the same run, found finished: nothing is redone, no cluster is joined
    assert again.already_finished and again.run_id == first.run_id
    assert not ray.is_initialized()


@pytest.mark.slow  # about 35 s: two Ray nodes and a restarted actor
def test_a_two_node_cluster_shares_the_pool_and_survives_a_killed_worker(tmp_path: Path):
    """Two nodes (``ray.cluster_utils.Cluster``), an actor on each; the first batch a worker
    predicts kills its process. Ray restarts the actor and retries the batch: the run
    gives the local engine's labels, both nodes did work, and no round commits twice."""
    from ray.cluster_utils import Cluster

    local = tmp_path / "local"
    api.run(_config(local, None, views=_probe_views(tmp_path / "unused"), policy="k_best", k=30))
    # two logical CPUs a node, 1.5 an actor: one actor fits a node, so each node holds one
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        probe = tmp_path / "probe"
        engine = {"kind": "ray", "address": cluster.address, "actors": 2, "cpus_per_actor": 1.5, "shard_rows": 1000}
        api.run(_config(tmp_path / "ray", engine, views=_probe_views(probe, die_once=True), policy="k_best", k=30))
        assert (probe / "died").exists()  # a worker did die mid-round
        nodes = {p.name.split("-")[0] for p in probe.iterdir() if p.name != "died"}
        assert len(nodes) == 2  # both nodes predicted part of the pool
        got = _outcome(tmp_path / "ray" / "run.duckdb")
        assert got == _outcome(local / "run.duckdb")
        assert [r["round"] for r in got["rounds"]] == [0, 1, 2]  # each round committed once
        assert all(r["labels_added"] > 0 for r in got["rounds"][:2])
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_actors_that_would_starve_the_reads_are_refused(tmp_path: Path):
    assert actor_count(EngineConfig(), 2.0) == 1  # one actor, and room for a shard read
    assert actor_count(EngineConfig(), 16.0) == 15
    assert actor_count(EngineConfig(cpus_per_actor=0.5), 4.0) == 7
    assert actor_count(EngineConfig(actors=2, cpus_per_actor=1.5), 4.0) == 2
    assert actor_count(EngineConfig(gpus_per_actor=1), 16.0, 2.0) == 2  # as many as there are GPUs
    with pytest.raises(ConfigError) as err:
        actor_count(EngineConfig(gpus_per_actor=1), 16.0, 0.0)
    assert err.value.key == "engine.gpus_per_actor"
    with pytest.raises(ConfigError) as err:
        actor_count(EngineConfig(actors=2), 2.0)
    assert err.value.key == "engine.actors"
    with pytest.raises(ConfigError) as err:  # a run asking for more than this machine has starts no cluster
        api.run(_config(tmp_path, {"kind": "ray", "actors": 4096}))
    assert err.value.key == "engine.actors" and not ray.is_initialized()


def test_shards_hold_every_row_in_order_with_its_id(tmp_path: Path):
    import pyarrow.parquet as pq

    cfg = _config(tmp_path, None, max_rounds=0)
    api.run(cfg)
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        ids = st.query("SELECT item_id FROM items WHERE run_id = 1 ORDER BY row_idx").column("item_id").combine_chunks()
        write_shards(st, 1, ["a_0", "b_3"], ids, str(tmp_path / "shards"), 1000)
        want = st.fetch_rows(1, np.arange(len(ids)), ["a_0", "b_3"])
    files = sorted((tmp_path / "shards").iterdir())
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet"]
    got = pa.concat_tables([pq.read_table(f) for f in files])
    assert got.column("__row").to_pylist() == list(range(len(ids)))
    assert got.column("__item_id").to_pylist() == ids.to_pylist()
    assert got.select(["a_0", "b_3"]).equals(want)


@pytest.mark.slow  # a Ray cluster and MiniLM loaded in its worker
def test_embedding_views_encode_in_the_workers_when_asked(tmp_path: Path):
    """``encode_in_workers``: the embedding view travels, encodes its batches in a worker (no
    store cache there), and the run adds the local engine's labels; without it the view stays
    on the driver and the store's cache serves it."""
    from tests.conftest import sentiment_frame

    outcomes = []
    for name, engine in (("local", None), ("ray", {"kind": "ray", "object_store_mb": 512, "encode_in_workers": True})):
        d = tmp_path / name
        d.mkdir()
        sentiment_frame(n_gold=8, n_pool=120, n_test=20).to_csv(d / "items.csv", index=False)
        cfg = {"task": {"labels": ["negative", "positive"]},
               "data": {"train": "items.csv", "id_column": "id", "split_column": "split"},
               "views": [{"name": "tfidf", "kind": "sklearn", "text": "text"},
                         {"name": "minilm", "kind": "embedding", "text": "text"}],
               "cotrain": {"policy": "k_best", "k": 10, "max_rounds": 2, "store_predictions": True},
               "store": "run.duckdb", **({"engine": engine} if engine else {})}
        (d / "c.yaml").write_text(yaml.safe_dump(cfg))
        api.run(d / "c.yaml")
        outcomes.append(_outcome(d / "run.duckdb"))
        with Store(d / "run.duckdb", read_only=True) as st:
            outcomes[-1]["cached"] = st.scalar("SELECT count(*) FROM feature_cache")
    # locally every text is encoded once and cached; under Ray the driver caches what it fits and
    # evaluates on (gold, test, accepted labels), while the workers' pool vectors stay in the workers
    assert outcomes[0]["cached"] == 148 and 28 <= outcomes[1]["cached"] < 148
    assert outcomes[0]["labels"] and outcomes[1]["labels"] == outcomes[0]["labels"]
    assert outcomes[1]["rounds"] == outcomes[0]["rounds"]
