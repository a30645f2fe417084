"""Opening an LLM endpoint: the one place that turns a model string into a client (and, for
``local:<name>``, the embedded llama.cpp server behind it). Used by the ``llm`` view and by
the debate agents."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from store.errors import ViewError
from views.llm.client import Endpoint, LLMClient, Price
from views.llm.local import LocalServer, local_model


def endpoint_for(model: str, api_base: str | None = None, api_key_env: str | None = None,
                 backend: str = "server") -> Endpoint:
    """``local:<name>`` is served by llama.cpp on a port that changes every run, so its cache
    identity is the model's name, not its URL; run in-process by transformers (dequantised,
    so its answers differ slightly from llama.cpp's) it is ``local:<name>+transformers``, and
    ``local:<name>+vllm`` in vLLM's engine."""
    if model.startswith("local:"):
        return Endpoint(model="openai/local", identity=model if backend == "server" else f"{model}+{backend}")
    return Endpoint(model=model, api_base=api_base, api_key_env=api_key_env)


def check_model(model: str) -> None:
    """Fail early (naming the pip command) when a local model is not installed."""
    if model.startswith("local:"):
        local_model(model.split(":", 1)[1]).target()


@dataclass
class Connection:
    """A client and, for a local model, the server it talks to; ``close()`` stops both."""

    client: LLMClient
    server: LocalServer | None = None

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()
            self.server = None


def connect(model: str, name: str, *, api_base: str | None = None, api_key_env: str | None = None,
            ledger: Any = None, concurrency: int = 4, max_concurrency: int | None = None, rate_limit: float | None = None, timeout_s: float = 60.0,
            max_retries: int = 4, backoff_s: float = 0.5, price: dict[str, float] | None = None,
            budget_usd: float | None = None, n_ctx: int = 8192, threads: int | None = None,
            backend: str = "server", max_batch: int = 32, batched: Any = None,
            retry_billed: bool = True) -> Connection:
    """Open ``model`` for the caller ``name`` (a view or an agent: the ledger files calls under it).
    ``batched``: for ``backend: transformers`` or ``vllm``, the model to answer with (one that
    runs elsewhere, e.g. in Ray actors, with :class:`views.llm.batched.BatchedModel`'s
    interface), instead of one loaded in this process. ``retry_billed`` False: an answer with no choice that reports
    tokens is not asked again (a caller that holds its own budget per request, as a debate does)."""
    server = None
    override = None
    path = local_model(model.split(":", 1)[1]).path() if model.startswith("local:") else None
    if path is not None and backend in ("transformers", "vllm"):
        if batched is None:
            batched = in_process_model(backend, path, max_batch, n_ctx)
        try:  # now, once: a model that cannot load stops the view with one line, not one error per item
            batched.load()
        except ImportError as exc:
            hint = VLLM_HINT if backend == "vllm" else "pip install 'cotrain[batched]'"
            raise ViewError(name, f"backend '{backend}' needs {exc.name or 'a package'}: {hint}") from None
        except Exception as exc:  # noqa: BLE001 - a bad file, no GPU, or no memory left on the device
            raise ViewError(name, f"backend '{backend}' cannot load {model}: {type(exc).__name__}: "
                                  f"{_load_error(exc)}") from None
        # enough in flight to fill the next pass while each running one runs
        concurrency = max(concurrency, 2 * max_batch * getattr(batched, "parallel", 1))
        max_concurrency = None
    elif path is not None:
        server = LocalServer(path, n_ctx=n_ctx, n_parallel=max(1, concurrency), threads=threads).start()
        override = server.base_url
        max_concurrency = None  # llama.cpp serves n_parallel slots: nothing to adapt
    try:
        client = LLMClient(endpoint=endpoint_for(model, api_base, api_key_env, backend), view=name, ledger=ledger,
                           concurrency=concurrency, max_concurrency=max_concurrency, rate_limit=rate_limit,
                           timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s,
                           price=Price(**price) if price else None, budget_usd=budget_usd,
                           api_base_override=override, batched=batched, retry_billed=retry_billed)
    except BaseException:  # the model, its actors or the server must not outlive a client never made
        if batched is not None:
            batched.close()
        if server is not None:
            server.stop()
        raise
    return Connection(client, server)


#: what a machine without vLLM needs for ``backend: vllm``
VLLM_HINT = "pip install 'cotrain[vllm]' on a machine with a CUDA GPU"


def check_runs_here(name: str, backend: str) -> None:
    """Raise the view's one-line error now when its in-process backend cannot run in this
    process (``vllm`` without vLLM or without a GPU), so a run is refused before it is
    recorded; the model itself loads at the first round."""
    if backend != "vllm":
        return
    from views.llm.vllm_model import NoGPU, check_vllm

    try:
        check_vllm()
    except ImportError as exc:
        raise ViewError(name, f"backend 'vllm' needs {exc.name}: {VLLM_HINT}") from None
    except NoGPU as exc:
        raise ViewError(name, f"backend 'vllm' cannot run here: {exc}") from None


def _load_error(exc: Exception) -> str:
    """One line for a model that failed to load: a validation error's first complaint (its
    first line only says how many there are), else the message's first line."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            return f"{'.'.join(map(str, first.get('loc', ())))}: {first['msg']}".lstrip(": ")
        except Exception:  # noqa: BLE001 - not pydantic's: fall back to the message
            pass
    return next((line for line in str(exc).splitlines() if line.strip()), "")


def in_process_model(backend: str, path: Any, max_batch: int, n_ctx: int, device: str | None = None) -> Any:
    """The model that answers in the calling process (this one, or a Ray actor) under
    ``backend`` (not loaded yet): vLLM's engine, with ``n_ctx`` as its context, or a
    transformers model on ``device`` (None: CUDA when available)."""
    if backend == "vllm":
        from views.llm.vllm_model import VllmModel

        return VllmModel(path, max_batch=max_batch, max_model_len=n_ctx)
    from views.llm.batched import BatchedModel

    return BatchedModel(path, max_batch=max_batch, device=device)
