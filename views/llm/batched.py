"""``backend: transformers``: label-word scoring in this process, many prompts per forward pass.

The embedded llama.cpp server answers one request per slot; on a GPU, one batched forward
pass over many prompts is what keeps the device busy. This backend takes the chat
completion requests of label-word scoring (``max_tokens: 1`` with ``logprobs``) as the
client sends them, concurrently, gathers up to ``max_batch`` of them, applies the model's
chat template, runs one left-padded forward pass that keeps only the last position's logits
(``logits_to_keep=1``), and answers each request with the body an OpenAI-compatible server
would send: the top token as content, its ``top_logprobs``, and the token usage. The client
above it is unchanged, so the cache (only uncached items are asked), the ledger (every
answer filed in ``llm_calls``), budgets and retries hold exactly as for a server.

The packaged SmolLM2 ships only as GGUF: transformers reads it offline (``gguf_file=``,
dequantised to float32; needs the ``gguf`` and ``accelerate`` packages, the ``batched``
extra). The model runs on CUDA when torch sees a GPU, else on the CPU. ``backend: vllm``
answers through the same seam with vLLM's engine (``views.llm.vllm_model``).
"""
from __future__ import annotations

import asyncio
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger("cotrain")


def batched_installed() -> bool:
    """Whether the packages this backend loads a packaged (GGUF) model with are installed
    (``cotrain[batched]``), without importing them."""
    from importlib.util import find_spec

    return all(find_spec(m) is not None for m in ("torch", "transformers", "gguf", "accelerate"))


class PassLost(RuntimeError):
    """A pass was lost with the process that ran it (another now stands in): the client asks
    its requests again, as after a dropped connection."""


class BatchedModel:
    """One causal LM loaded in this process (lazily, at the first request) that answers
    label-word scoring requests in batches of at most ``max_batch``.

    ``model_path``: a GGUF file, or a folder transformers loads. ``device``: ``cuda``,
    ``cpu`` or None (CUDA when available). Fitted attributes: ``batches_`` (forward passes
    run) and ``largest_batch_``."""

    def __init__(self, model_path: Path | str, max_batch: int = 32, device: str | None = None) -> None:
        self.model_path, self.max_batch, self.device = Path(model_path), max_batch, device
        self._model: Any = None
        self._tokenizer: Any = None
        self._pending: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._kicked = False
        self._executor: ThreadPoolExecutor | None = None
        self.batches_ = 0
        self.largest_batch_ = 0

    # ------------------------------------------------------------------ the model
    def load(self) -> None:
        """Load the tokenizer and model (idempotent; the first request does it otherwise)."""
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.model_path.suffix == ".gguf":
            where, kw = str(self.model_path.parent), {"gguf_file": self.model_path.name}
        else:
            where, kw = str(self.model_path), {}
        tok = AutoTokenizer.from_pretrained(where, **kw)
        tok.padding_side = "left"  # the last position is every prompt's own last token
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = AutoModelForCausalLM.from_pretrained(where, **kw)
        self._model, self._tokenizer, self.device = model.to(device).eval(), tok, device
        log.info("batched backend: %s on %s", self.model_path.name, device)

    def forward(self, requests: list[dict[str, Any]]) -> list[Any]:
        """Answer label-word scoring requests with one forward pass (a blocking call): a body
        per request, or an Exception in the place of one that failed alone."""
        import torch

        self.load()
        check_label_word(requests, "transformers")
        tok = self._tokenizer
        texts = [tok.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True) for r in requests]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        mask = enc["attention_mask"]
        # left padding: each prompt's positions count from its own first token, as unpadded
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self._model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions,
                                 logits_to_keep=1).logits[:, -1].float()
        logp = torch.log_softmax(logits, dim=-1)
        n_top = max(int(r.get("top_logprobs") or 1) for r in requests)
        values, ids = (t.cpu().tolist() for t in logp.topk(n_top, dim=-1))
        prompt_tokens = mask.sum(dim=1).cpu().tolist()
        self._count(len(requests))
        return [self._body(r, ids[i], values[i], int(prompt_tokens[i])) for i, r in enumerate(requests)]

    def _count(self, n: int) -> None:
        """Record a pass of ``n`` requests (``batches_``, ``largest_batch_``)."""
        self.batches_ += 1
        self.largest_batch_ = max(self.largest_batch_, n)

    def _body(self, request: dict[str, Any], ids: list[int], values: list[float], prompt_tokens: int) -> dict[str, Any]:
        """An OpenAI chat completion body for one request."""
        words = [self._tokenizer.decode([i]) for i in ids[: max(1, int(request.get("top_logprobs") or 1))]]
        return label_word_body(self.model_path.name, words, values, prompt_tokens)

    # ------------------------------------------------------------------ batching
    #: forward passes that may run at once (one model in this process: one after another)
    parallel = 1

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request's response body; requests arriving together share a forward pass."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((request, fut))
        self._kick()
        return await fut

    def _kick(self) -> None:
        """Dispatch the pending requests at the loop's next turn, so that the callers
        scheduled with this one enqueue first and share its pass."""
        if not self._kicked:
            self._kicked = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """Start a pass of at most ``max_batch`` pending requests while fewer than
        ``parallel`` run; a pass that ends dispatches again (the event loop keeps taking
        requests while passes run)."""
        self._kicked = False
        while self._pending and len(self._running) < self.parallel:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            batch = [(r, f) for r, f in batch if not f.cancelled()]
            if batch:
                task = asyncio.get_running_loop().create_task(self._run(batch))
                self._running.add(task)
                task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._pending:
            self._kick()

    async def _run(self, batch: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]]) -> None:
        """One pass; every caller of it gets its body, or the pass's error."""
        try:
            bodies = await self._pass([r for r, _ in batch])
            if len(bodies) != len(batch):
                raise RuntimeError(f"a pass of {len(batch)} prompts gave {len(bodies)} answers")
        except Exception as exc:  # noqa: BLE001 - every caller of the pass gets its error
            for _, f in batch:
                if not f.done():
                    f.set_exception(exc)
        else:
            for (_, f), body in zip(batch, bodies):
                if not f.done():  # a pass may fail one request alone (an Exception in its place)
                    f.set_exception(body) if isinstance(body, Exception) else f.set_result(body)
        finally:  # cancelled mid-pass: no caller is left waiting on it
            for _, f in batch:
                if not f.done():
                    f.cancel()

    async def _pass(self, requests: list[dict[str, Any]]) -> list[Any]:
        """One forward pass, in the pass thread (the event loop is not blocked by it)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cotrain-batched")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.forward, requests)

    def close(self) -> None:
        """Release the model and the pass thread (idempotent)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._model = self._tokenizer = None
        self._pending, self._running, self._kicked = [], set(), False  # a closed loop runs no pass again


def label_word_body(model: str, words: list[str], values: list[float], prompt_tokens: int) -> dict[str, Any]:
    """The OpenAI chat completion body a server sends for a one-token answer: ``words`` (the
    most likely first, decoded) with their log-probabilities ``values`` as its
    ``top_logprobs``, the first as the content. A log-probability of minus infinity (a token
    the model cannot produce) is written as -1e30: JSON has no infinity."""
    top = [{"token": w, "logprob": v if math.isfinite(v) else -1e30} for w, v in zip(words, values)]
    return {"object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": words[0]},
                         "logprobs": {"content": [{"token": words[0], "logprob": top[0]["logprob"],
                                                   "top_logprobs": top}]}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1}}


def check_label_word(requests: list[dict[str, Any]], backend: str) -> None:
    """Refuse a request that is not label-word scoring (one token with log-probabilities)."""
    for r in requests:
        if int(r.get("max_tokens") or 1) != 1 or not r.get("logprobs"):
            raise ValueError(f"backend '{backend}' scores label words only (max_tokens 1 with logprobs); "
                             "use scoring: logprobs or auto")


__all__ = ["BatchedModel", "PassLost", "batched_installed", "check_label_word", "label_word_body"]
