"""``backend: transformers`` under ``engine: ray``: the local LLM's batched forward passes run
in Ray actors, on the cluster's GPUs when ``engine.llm_gpus_per_actor`` reserves them.

The LLM view itself stays on the driver, with its client: only the prompts missing from
``llm_cache`` are sent, every answer is filed in ``llm_calls``, budgets and retries hold, as
with the in-process backend. What moves is the model. :class:`RayBatchedModel` has the
in-process :class:`views.llm.batched.BatchedModel`'s interface, so the client cannot tell
them apart: it gathers the concurrent requests into passes of at most ``max_batch`` and sends
each pass to an idle actor, ``actors`` passes at once. Each actor holds one
:class:`~views.llm.batched.BatchedModel` (the same code, so the same answers and the same
cache identity). An actor that dies is restarted by Ray and its pass retried (a pass is a
pure function of its prompts).

Ray Data is not used for this stage: its batches would have to be the pool's, every item
asked, where the client sends only uncached prompts, a few at a time as answers come back.
"""
from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from views.llm.batched import BatchedModel

log = logging.getLogger("cotrain")

#: a dead actor is restarted, and its pass retried, this many times before the pass fails
RESTARTS = 2


class Scorer:
    """A Ray actor: one :class:`BatchedModel` in the actor's process, one pass at a time."""

    def __init__(self, model_path: str, max_batch: int, threads: int | None = None) -> None:
        if threads is not None:  # Ray leaves an actor one intra-op thread: give it its CPUs' worth
            import torch

            torch.set_num_threads(threads or os.cpu_count() or 1)  # 0: the node's cores
        self.model = BatchedModel(model_path, max_batch=max_batch)

    def load(self) -> str:
        """Load the model; its device."""
        self.model.load()
        return str(self.model.device)

    def forward(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.model.forward(requests)


class RayBatchedModel(BatchedModel):
    """A :class:`BatchedModel` whose passes run on ``actors`` Ray actors (reserving ``cpus``
    and ``gpus`` each; a CPU actor that reserves no CPU uses its node's cores), ``actors``
    passes at once. Needs a connected Ray (``ray.init``).
    Fitted attributes: ``batches_``, ``largest_batch_`` (as in-process) and ``devices_``
    (each actor's device)."""

    def __init__(self, model_path: Path | str, max_batch: int = 32, actors: int = 1, cpus: float = 0.0,
                 gpus: float = 0.0) -> None:
        super().__init__(model_path, max_batch=max_batch)
        self.parallel, self.cpus, self.gpus = actors, cpus, gpus
        self._actors: list[Any] = []
        self._idle: asyncio.Queue[Any] | None = None
        self.devices_: list[str] = []

    def load(self) -> None:
        """Start the actors and load the model in each (idempotent); a model that cannot load
        raises here, once, with the actor's error."""
        if self._actors:
            return
        import ray

        actor = ray.remote(Scorer).options(num_cpus=self.cpus, num_gpus=self.gpus or None,
                                          max_restarts=RESTARTS, max_task_retries=RESTARTS)
        threads = int(self.cpus) if not self.gpus else None  # on a GPU, torch's CPU threads hardly matter
        self._actors = [actor.remote(str(self.model_path), self.max_batch, threads) for _ in range(self.parallel)]
        try:
            self.devices_ = ray.get([a.load.remote() for a in self._actors])
        except Exception as exc:
            self.close()
            cause = getattr(exc, "cause", None)  # the actor's own error, out of Ray's wrapper
            if isinstance(cause, Exception):
                raise cause from None
            raise
        except BaseException:
            self.close()
            raise
        log.info("batched backend: %s in %d Ray actor(s) on %s", self.model_path.name, len(self._actors),
                 ", ".join(sorted(set(self.devices_))))

    async def _pass(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One pass on an idle actor (the dispatcher never starts more passes than actors)."""
        if not self._actors:
            self.load()
        if self._idle is None:  # made on the client's loop, where every pass runs
            self._idle = asyncio.Queue()
            for a in self._actors:
                self._idle.put_nowait(a)
        actor = await self._idle.get()
        try:
            bodies: list[dict[str, Any]] = await actor.forward.remote(requests)
        finally:
            self._idle.put_nowait(actor)
        self.batches_ += 1
        self.largest_batch_ = max(self.largest_batch_, len(requests))
        return bodies

    def forward(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One pass on the first actor (a blocking call, outside the client)."""
        import ray

        self.load()
        bodies: list[dict[str, Any]] = ray.get(self._actors[0].forward.remote(requests))
        self.batches_ += 1
        self.largest_batch_ = max(self.largest_batch_, len(requests))
        return bodies

    def close(self) -> None:
        """Stop the actors (idempotent; nothing to do once Ray is shut down)."""
        actors, self._actors, self._idle = self._actors, [], None
        if actors:
            import ray

            if ray.is_initialized():
                for a in actors:
                    ray.kill(a)
        super().close()


__all__ = ["RayBatchedModel", "Scorer"]
