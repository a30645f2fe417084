"""``backend: vllm``: label-word scoring by vLLM's offline engine, on a CUDA GPU.

The same seam as ``backend: transformers`` (:class:`views.llm.batched.BatchedModel`): the
client sends its label-word scoring requests (``max_tokens: 1`` with ``logprobs``)
concurrently, up to ``max_batch`` of them are gathered, and each is answered with the body
an OpenAI-compatible server would send. The cache (only uncached items are asked), the
ledger (every answer filed in ``llm_calls``), budgets and retries are the client's, so they
hold exactly as for the other backends; the cache identity is ``local:<name>+vllm``.

What differs is the pass: one ``LLM.chat`` call over the gathered conversations with
``SamplingParams(max_tokens=1, temperature=0, logprobs=N)`` and prefix caching on (every
prompt of a view shares its instructions and demonstrations), which vLLM schedules on the
GPU with its own continuous batching. Under ``engine: ray`` the same model runs in Ray
actors, one vLLM engine on each actor's GPU (``orchestrator.ray_llm.Scorer``).

Written against vLLM's offline API as of 0.12 (``LLM(model, max_model_len=...,
enable_prefix_caching=..., max_logprobs=...)``, ``LLM.chat``, ``RequestOutput.outputs[0].
logprobs``: one ``{token id: Logprob}`` per generated token, holding the top N and the
sampled token). The packaged SmolLM2 is a GGUF file: vLLM reads its config and tokenizer
from it through transformers, "highly experimental" in vLLM's own words, and from about
0.24 only with the separate ``vllm-gguf-plugin``. No GPU was available to this project's
development, so this path is unmeasured; its tests run only where torch sees CUDA and vLLM
is installed (``tests/test_llm_vllm.py``), and the CPU suite covers the answer format and
the refusals.
"""
from __future__ import annotations

import gc
import logging
from collections.abc import Iterable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from views.llm.batched import BatchedModel, check_label_word, label_word_body

#: vLLM's default ``max_logprobs`` (a view asks for at most 20: ``LLMParams.top_logprobs``)
MAX_LOGPROBS = 20


class NoGPU(RuntimeError):
    """vLLM is installed, but torch sees no CUDA device to run it on."""


def check_vllm() -> None:
    """Raise ImportError (named ``vllm``) without vLLM, :class:`NoGPU` without a CUDA device
    that torch sees; imports vLLM only once both hold."""
    if find_spec("vllm") is None:
        raise ImportError("No module named 'vllm'", name="vllm")
    import torch

    if not torch.cuda.is_available():
        raise NoGPU("vLLM runs on a CUDA GPU, and torch sees none here (backend: transformers runs on the CPU)")


def top_tokens(entries: Iterable[tuple[str | None, float]], n: int) -> tuple[list[str], list[float]]:
    """The ``n`` most likely (decoded token, log-probability) pairs of one position, most likely
    first. vLLM's entry holds the top N and also the sampled token when it is not among them
    (N + 1 entries). A token that is part of a UTF-8 character decodes as U+FFFD, kept as
    it is, or as None, kept as the empty string."""
    ranked = sorted(entries, key=lambda e: e[1], reverse=True)[: max(1, n)]
    return [w or "" for w, _ in ranked], [float(v) for _, v in ranked]


class VllmModel(BatchedModel):
    """A local model in vLLM's offline engine, answering label-word scoring requests in
    passes of at most ``max_batch`` (loaded lazily, at the first request, like
    :class:`BatchedModel`; fitted attributes ``batches_`` and ``largest_batch_``).

    ``max_model_len``: the context (the view's ``n_ctx``); ``gpu_memory_utilization``: the
    share of the GPU vLLM may take for weights and its KV cache; ``seed``: vLLM's."""

    def __init__(self, model_path: Path | str, max_batch: int = 32, max_model_len: int = 8192,
                 gpu_memory_utilization: float = 0.5, seed: int = 0) -> None:
        super().__init__(model_path, max_batch=max_batch, device="cuda")
        self.max_model_len, self.gpu_memory_utilization, self.seed = max_model_len, gpu_memory_utilization, seed

    def load(self) -> None:
        """Start vLLM's engine on the model (idempotent); see :func:`check_vllm` for what it
        raises where vLLM cannot run."""
        if self._model is not None:
            return
        check_vllm()
        from vllm import LLM

        # vLLM gives its own logger a stdout handler at INFO (a line per engine step) when
        # imported; only its warnings belong among the CLI's lines
        logging.getLogger("vllm").setLevel(logging.WARNING)
        self._model = LLM(model=str(self.model_path), max_model_len=self.max_model_len,
                          gpu_memory_utilization=self.gpu_memory_utilization, enable_prefix_caching=True,
                          max_logprobs=MAX_LOGPROBS, seed=self.seed)

    def forward(self, requests: list[dict[str, Any]]) -> list[Any]:
        """Answer label-word scoring requests with one ``LLM.chat`` call (a blocking call). vLLM
        refuses a whole call for one prompt it cannot take (longer than ``max_model_len``):
        the pass is then asked again a request at a time, so only that one fails."""
        self.load()
        check_label_word(requests, "vllm")
        try:
            bodies: list[Any] = self._chat(requests)
        except ValueError:
            if len(requests) == 1:
                raise
            bodies = []
            for r in requests:
                try:
                    bodies.extend(self._chat([r]))
                except ValueError as exc:
                    bodies.append(exc)
        self._count(len(requests))
        return bodies

    def _chat(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One ``LLM.chat`` call over ``requests``: their bodies, in order."""
        from vllm import SamplingParams

        wanted = [min(MAX_LOGPROBS, max(1, int(r.get("top_logprobs") or 1))) for r in requests]
        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=max(wanted))
        outs = self._model.chat([r["messages"] for r in requests], params, use_tqdm=False,
                                add_generation_prompt=True)
        bodies = []
        for n, out in zip(wanted, outs):
            first = out.outputs[0].logprobs[0]  # the one generated position: {token id: Logprob}
            words, values = top_tokens(((lp.decoded_token, lp.logprob) for lp in first.values()), n)
            bodies.append(label_word_body(self.model_path.name, words, values, len(out.prompt_token_ids)))
        return bodies

    def close(self) -> None:
        """Stop the engine and give its GPU memory back (idempotent)."""
        engine = self._model
        super().close()
        if engine is not None:
            # the engine core runs in a process of its own: stop it rather than wait for the
            # collector to (a second engine refuses to start while the first holds the GPU)
            shutdown = getattr(getattr(getattr(engine, "llm_engine", None), "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            del engine
            gc.collect()
            import torch

            torch.cuda.empty_cache()


__all__ = ["MAX_LOGPROBS", "NoGPU", "VllmModel", "check_vllm", "top_tokens"]
