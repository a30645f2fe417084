"""Where the Ray engine's actors go: how many pool actors a pass gets, beside the shard reads
and the actors that hold LLM views' models for the run. Refuses, with the config key to
change, what would never fit: a pass would wait forever for actors the cluster cannot place."""
from __future__ import annotations

from orchestrator.engine_config import EngineConfig
from store.errors import ConfigError

#: CPUs a shard-read task reserves (reading Parquet is light; the actors need the rest).
READ_CPUS = 0.25


def actor_count(cfg: EngineConfig, cpus: float, gpus: float = 0.0) -> int:
    """Actors per pass on a cluster of ``cpus`` CPUs and ``gpus`` GPUs: ``cfg.actors``, or as
    many as fit beside one shard read (and on the GPUs, with ``gpus_per_actor``).
    ``ConfigError`` when they would not all fit: the pass would wait forever for the rest."""
    fit = int((cpus - READ_CPUS) // cfg.cpus_per_actor)
    if cfg.gpus_per_actor:
        fit = min(fit, int(gpus // cfg.gpus_per_actor))
    actors = cfg.actors or max(1, fit)
    _check_fit(f"{actors} actors", (cfg.cpus_per_actor, cfg.gpus_per_actor), actors, (cpus, gpus),
               ("engine.actors", "engine.gpus_per_actor"), extra_cpus=READ_CPUS)
    return actors


def _check_fit(what: str, each: tuple[float, float], n: int, have: tuple[float, float], keys: tuple[str, str],
               extra_cpus: float = 0.0) -> None:
    """``ConfigError`` naming ``keys[0]`` (CPUs) or ``keys[1]`` (GPUs) when ``n`` actors of
    ``each`` (CPUs, GPUs), plus ``extra_cpus`` for the shard reads, exceed ``have``."""
    for unit, per, extra, avail, key in zip(("CPU", "GPU"), each, (extra_cpus, 0.0), have, keys):
        if n * per + extra > avail:
            reads = " with the shard reads" if extra else ""
            raise ConfigError(key, f"{what} of {per:g} {unit} need {n * per + extra:g} {unit}s{reads}; "
                              f"the cluster has {avail:g}")


def llm_reserve(cfg: EngineConfig, cpus: float, gpus: float, hosted: int) -> tuple[float, float]:
    """The CPUs and GPUs left for the pool's actors once the actors of ``hosted`` LLM views
    (``llm_actors`` each, held for the whole run) are placed; ``ConfigError`` when those do
    not fit."""
    n = hosted * cfg.llm_actors
    each = (cfg.llm_cpus_per_actor, cfg.llm_gpus_per_actor)
    _check_fit(f"{n} LLM actor(s)", each, n, (cpus, gpus), ("engine.llm_actors", "engine.llm_gpus_per_actor"))
    return cpus - n * each[0], gpus - n * each[1]


def place(cfg: EngineConfig, cpus: float, gpus: float, hosted: int, travel: bool) -> int:
    """Actors per pool pass (0 when no view travels) beside the LLM views' actors."""
    left_cpus, left_gpus = llm_reserve(cfg, cpus, gpus, hosted)
    if not travel:
        return 0
    try:
        return actor_count(cfg, left_cpus, left_gpus)
    except ConfigError as exc:
        if (left_cpus, left_gpus) == (cpus, gpus):
            raise
        raise ConfigError(exc.key, f"{exc.message} once the LLM actors hold theirs ({cpus - left_cpus:g} CPU, "
                          f"{gpus - left_gpus:g} GPU; engine.llm_actors)") from None


__all__ = ["READ_CPUS", "actor_count", "llm_reserve", "place"]
