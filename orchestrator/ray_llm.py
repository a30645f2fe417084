"""``backend: transformers`` or ``vllm`` under ``engine: ray``: the local LLM's batched passes
run in Ray actors, on the cluster's GPUs when ``engine.llm_gpus_per_actor`` reserves them
(``vllm`` runs only there: each actor holds a vLLM engine on its GPU).

The LLM view itself stays on the driver, with its client: only the prompts missing from
``llm_cache`` are sent, every answer is filed in ``llm_calls``, budgets and retries hold, as
with the in-process backend. What moves is the model. :class:`RayBatchedModel` has the
in-process :class:`views.llm.batched.BatchedModel`'s interface, so the client cannot tell
them apart: it gathers the concurrent requests into passes of at most ``max_batch`` and sends
each pass to an idle actor, ``actors`` passes at once. Each actor holds one
:class:`~views.llm.batched.BatchedModel` (the same code, so the same answers and the same
cache identity), loaded from the packaged model as installed on the actor's own node.

Faults: Ray restarts an actor that dies and retries its pass (a pass is a pure function of
its prompts), ``RESTARTS`` times; an actor dead for good is replaced by a new one, and the
pass fails with :class:`~views.llm.batched.PassLost`, which the client retries.

Ray Data is not used for this stage: its batches would have to be the pool's, every item
asked, where the client sends only uncached prompts, a few at a time as answers come back.
"""
from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from views.llm.batched import BatchedModel, PassLost
from views.llm.connect import in_process_model
from views.llm.local import local_model

log = logging.getLogger("cotrain")

#: a dead actor is restarted, and its pass retried, this many times before the pass fails
RESTARTS = 2
#: how often a run waiting for its LLM actors to be placed says so
WAIT_LOG_S = 30.0


def model_file(model: str) -> Path:
    """The file (or folder) of ``model``: a packaged model's name (``smollm2-135m``), found
    where it is installed on this node, or a path every node can read."""
    return Path(model) if "/" in model or os.sep in model else local_model(model).path()


class Scorer:
    """A Ray actor: one :class:`BatchedModel` of ``name`` (:func:`model_file`, resolved on
    this node), or with ``backend`` ``vllm`` one :class:`views.llm.vllm_model.VllmModel`, one
    pass at a time. ``threads``: torch's CPU threads (Ray leaves an actor one); ``device``:
    ``cpu``, or None for CUDA when the actor sees a GPU; ``n_ctx``: a vLLM model's context."""

    def __init__(self, name: str, max_batch: int, threads: int, device: str | None,
                 backend: str = "transformers", n_ctx: int = 8192) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.model: BatchedModel = in_process_model(backend, model_file(name), max_batch, n_ctx, device)

    def load(self) -> str:
        """Load the model; its device."""
        self.model.load()
        return str(self.model.device)

    def forward(self, requests: list[dict[str, Any]]) -> list[Any]:
        return self.model.forward(requests)


def _unwrapped(exc: BaseException) -> BaseException:
    """The actor's own error out of Ray's wrapper (whose text is a remote traceback)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, Exception) else exc


class RayBatchedModel(BatchedModel):
    """A :class:`BatchedModel` of ``name`` (:func:`model_file`) whose passes run on ``actors``
    Ray actors, ``actors`` passes at once. Each reserves ``cpus`` CPUs and ``gpus`` GPUs; an
    actor with no GPU runs on its CPU (Ray no longer hides a node's GPUs from it), with
    ``cpus`` threads, or its node's cores shared between the actors when it reserves none.
    Needs a connected Ray (``ray.init``). Fitted attributes: ``batches_``,
    ``largest_batch_`` (as in-process), ``devices_`` (each actor's device) and
    ``replaced_`` (actors started again after dying for good)."""

    def __init__(self, name: str, max_batch: int = 32, actors: int = 1, cpus: float = 0.0,
                 gpus: float = 0.0, backend: str = "transformers", n_ctx: int = 8192) -> None:
        super().__init__(model_file(name), max_batch=max_batch)
        self.name, self.parallel, self.cpus, self.gpus, self.backend = name, actors, cpus, gpus, backend
        self.n_ctx = n_ctx
        self._actors: list[Any] = []
        self._idle: asyncio.Queue[Any] | None = None
        self.devices_: list[str] = []
        self.replaced_ = 0

    def _start(self) -> Any:
        import ray

        threads = max(1, round(self.cpus)) if self.cpus else max(1, (os.cpu_count() or 1) // self.parallel)
        actor = ray.remote(Scorer).options(num_cpus=self.cpus, num_gpus=self.gpus or None,
                                          max_restarts=RESTARTS, max_task_retries=RESTARTS)
        return actor.remote(self.name, self.max_batch, threads, None if self.gpus else "cpu", self.backend,
                            self.n_ctx)

    def load(self) -> None:
        """Start the actors and load the model in each (idempotent); a model that cannot load
        raises here, once, with the actor's error. While the cluster cannot place them yet,
        says so every ``WAIT_LOG_S`` seconds."""
        if self._actors:
            return
        import ray

        self._actors = [self._start() for _ in range(self.parallel)]
        try:
            pending = refs = [a.load.remote() for a in self._actors]
            while pending:
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=WAIT_LOG_S)
                if pending:
                    log.warning("batched backend: waiting for %d of %d LLM actor(s) (%g CPU, %g GPU each) to be "
                                "placed and load %s", len(pending), len(refs), self.cpus, self.gpus, self.name)
            self.devices_ = ray.get(refs)
        except Exception as exc:
            self.close()
            raise _unwrapped(exc) from None
        except BaseException:
            self.close()
            raise
        log.info("batched backend: %s in %d Ray actor(s) on %s", self.name, len(self._actors),
                 ", ".join(sorted(set(self.devices_))))

    async def _pass(self, requests: list[dict[str, Any]]) -> list[Any]:
        """One pass on an idle actor (the dispatcher never starts more passes than actors)."""
        from ray.exceptions import RayActorError

        if not self._actors:
            self.load()
        if self._idle is None:  # made on the client's loop, where every pass runs
            self._idle = asyncio.Queue()
            for a in self._actors:
                self._idle.put_nowait(a)
        actor = await self._idle.get()
        try:
            bodies: list[Any] = await actor.forward.remote(requests)
        except RayActorError:  # dead for good (restarts spent, or its node gone): start another
            actor = self._replace(actor)
            raise PassLost(f"an LLM actor of {self.name} died; a new one was started") from None
        except Exception as exc:
            raise _unwrapped(exc) from None
        finally:
            self._idle.put_nowait(actor)
        self._count(len(requests))
        return bodies

    def _replace(self, dead: Any) -> Any:
        new = self._start()
        self._actors = [new if a is dead else a for a in self._actors]
        self.replaced_ += 1
        log.warning("batched backend: an LLM actor of %s died for good; started another", self.name)
        return new

    def forward(self, requests: list[dict[str, Any]]) -> list[Any]:
        """One pass on the first actor (a blocking call, outside the client)."""
        import ray

        self.load()
        try:
            bodies: list[Any] = ray.get(self._actors[0].forward.remote(requests))
        except Exception as exc:
            raise _unwrapped(exc) from None
        self._count(len(requests))
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


__all__ = ["RayBatchedModel", "Scorer", "model_file"]
