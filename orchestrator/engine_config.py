"""The ``engine:`` section of a config: where a round predicts the pool. What the Ray
engine does with it is ``orchestrator.ray_engine``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import ConfigDict, Field

from views.base import BatchedHost, Portable, View
from views.checked import CheckedModel


class EngineConfig(CheckedModel):
    """``kind``: ``local`` (the default: this process predicts the pool in batches) or
    ``ray`` (Ray Data: the pool is read from Parquet shards the store exports, and every
    view that can be copied to a worker predicts it in ``map_batches`` on an actor pool;
    the driver writes the store and selects exactly as the local engine does).

    ``address``: the Ray cluster to join (``auto``, ``ray://host:10001`` or ``host:6379``);
    without one, the cluster ``RAY_ADDRESS`` names (``ray job submit`` sets it), else a local
    cluster started for the run and stopped with it. ``actors``:
    actors per view pass (default: the cluster's CPUs divided by ``cpus_per_actor``);
    ``gpus_per_actor`` reserves GPUs for them. ``shard_rows``: rows per Parquet shard;
    ``shard_dir``: where the shards go (default: a folder beside the store), which every
    node must be able to read (a shared filesystem, or a URI pyarrow writes, e.g. ``s3://``).
    ``object_store_mb``: the object store of a cluster the run starts (Ray's default otherwise).
    ``encode_in_workers``: embedding views travel too and encode their batches in the workers
    every round (the fast path with GPU actors); by default they stay on the driver, where the
    store's cache serves every text encoded before.
    ``llm_actors``: Ray actors per LLM view with ``backend: transformers`` or ``vllm`` (this
    one only on GPU actors), each holding the
    model for the whole run and reserving ``llm_cpus_per_actor`` CPUs and
    ``llm_gpus_per_actor`` GPUs; the view stays on the driver, with its cache and ledger, and
    sends them its uncached prompts (``orchestrator.ray_llm``). By default they reserve no
    CPU: their passes run after the pool pass, never beside it, so a reservation would only
    keep CPUs idle during that pass (CPU actors then share their node's cores).
    ``llm_actors: 0`` keeps the model in the driver's process, as under ``kind: local``.
    The engine never changes a label: it is left out of the run's fingerprint, so a run
    started on one engine resumes on the other."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "ray"] = "local"
    address: str | None = Field(default=None, min_length=1)
    actors: int | None = Field(default=None, ge=1)
    cpus_per_actor: float = Field(default=1.0, gt=0)
    gpus_per_actor: float = Field(default=0.0, ge=0)
    shard_rows: int = Field(default=250_000, ge=1000)
    shard_dir: str | None = Field(default=None, min_length=1)
    object_store_mb: int | None = Field(default=None, ge=100)
    encode_in_workers: bool = False
    llm_actors: int = Field(default=1, ge=0)
    llm_cpus_per_actor: float = Field(default=0.0, ge=0)
    llm_gpus_per_actor: float = Field(default=0.0, ge=0)


def travels(view: View, cfg: EngineConfig) -> bool:
    """Whether the Ray engine sends ``view`` to its workers: when it can travel
    (:class:`views.base.Portable`), unless its prediction encodes items (``encodes``: the
    driver's store cache serves those) and ``encode_in_workers`` is off."""
    return isinstance(view, Portable) and (cfg.encode_in_workers or not getattr(view, "encodes", False))


def pool_travels(views: Sequence[View], cfg: EngineConfig) -> bool:
    """Whether Ray workers predict the pool (``kind: ray`` and some view travels): then they
    read it from the shards, and the driver need not hold its fields in memory."""
    return cfg.kind == "ray" and any(travels(v, cfg) for v in views)


def hosts_batched(view: View, cfg: EngineConfig) -> bool:
    """Whether the Ray engine runs ``view``'s batched local model in its actors."""
    return cfg.llm_actors > 0 and isinstance(view, BatchedHost) and view.batched_model() is not None


def uses_ray(views: Sequence[View], cfg: EngineConfig) -> bool:
    """Whether a run needs the Ray engine: under ``kind: ray``, when some view travels or
    has its batched local model run in actors."""
    return cfg.kind == "ray" and any(travels(v, cfg) or hosts_batched(v, cfg) for v in views)


__all__ = ["EngineConfig", "hosts_batched", "pool_travels", "travels", "uses_ray"]
