"""How one chat completion travels: straight HTTP for OpenAI-compatible servers, litellm else.

An endpoint with an ``api_base`` and an ``openai/`` or ``hosted_vllm/`` model (vLLM,
llama.cpp, the embedded local model, any OpenAI-compatible server) is called with one shared
aiohttp session per client: ``POST {api_base}/chat/completions``, the JSON body read as it
came. litellm's ``acompletion`` manages some 60-85 requests/s on a 2-core machine and the
``openai`` async client 120-170, both in their own request and response objects; this path
sustains several hundred, so a fast server, not the client, sets the pace. Every other model
string goes through litellm, which knows the providers.

Failures raise exceptions named as litellm and openai name them, so the client classifies
both paths alike; they carry the response headers (``Retry-After``).
"""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

#: Model prefixes that mean "an OpenAI-compatible server" (the wire name is what follows).
OPENAI_COMPATIBLE = ("openai/", "hosted_vllm/")


class HTTPStatusError(Exception):
    """A non-2xx answer; subclasses are named after the status, as litellm names them."""

    def __init__(self, status: int, text: str, headers: Any = None) -> None:
        super().__init__(f"Error code: {status} - {text}")
        self.status_code = status
        self.response = SimpleNamespace(headers=headers or {}, status_code=status)


def _named(name: str) -> type[HTTPStatusError]:
    return type(name, (HTTPStatusError,), {})


BY_STATUS = {400: _named("BadRequestError"), 401: _named("AuthenticationError"), 402: _named("PaymentRequiredError"),
             403: _named("PermissionDeniedError"), 404: _named("NotFoundError"), 408: _named("Timeout"),
             422: _named("UnprocessableEntityError"), 429: _named("RateLimitError"),
             500: _named("InternalServerError"), 502: _named("BadGatewayError"),
             503: _named("ServiceUnavailableError"), 504: _named("Timeout")}


class APIConnectionError(Exception):
    """The server could not be reached or dropped the connection."""


class Timeout(Exception):
    """No answer within ``timeout_s``."""


def status_error(status: int, text: str, headers: Any = None) -> HTTPStatusError:
    cls = BY_STATUS.get(status) or (BY_STATUS[500] if status >= 500 else BY_STATUS[400])
    return cls(status, text, headers)


def fast_path(model: str, api_base: str | None) -> bool:
    """Whether ``model`` at ``api_base`` is an OpenAI-compatible server this module calls directly."""
    return bool(api_base) and model.startswith(OPENAI_COMPATIBLE)


def completions_url(api_base: str) -> str:
    """``{api_base}/chat/completions``, the path added before any query the base carries
    (``http://h/v1?api-version=2`` gave ``http://h/v1?api-version=2/chat/completions``)."""
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(api_base)
    return urlunsplit(u._replace(path=u.path.rstrip("/") + "/chat/completions"))


class HTTPTransport:
    """One aiohttp session (created on the client's loop at the first call) for one endpoint."""

    def __init__(self, model: str, api_base: str, timeout_s: float) -> None:
        self.wire_model = model.split("/", 1)[1]
        self.url = completions_url(api_base)
        self.timeout_s = timeout_s
        self._session: Any = None

    async def complete(self, request: dict[str, Any], api_key: str | None) -> dict[str, Any]:
        """The response body as a dict; raises the named errors above."""
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300), trust_env=True,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s), json_serialize=json.dumps)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        try:
            async with self._session.post(self.url, json={"model": self.wire_model, **request},
                                          headers=headers) as resp:
                body = await resp.read()
                if resp.status >= 300:
                    raise status_error(resp.status, " ".join(body.decode("utf-8", "replace").split())[:300],
                                       dict(resp.headers))
        except asyncio.TimeoutError:
            raise Timeout(f"no answer within {self.timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise APIConnectionError(f"{type(exc).__name__}: {exc}") from None
        return json.loads(body)  # a body that is not JSON raises JSONDecodeError: retried

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def litellm_complete(litellm: Any, model: str, api_base: str | None, api_key: str | None,
                           timeout_s: float, request: dict[str, Any]) -> Any:
    """One call through litellm (its own retries off: the client retries)."""
    return await litellm.acompletion(model=model, api_base=api_base, api_key=api_key, timeout=timeout_s,
                                     num_retries=0, max_retries=0, drop_params=True, **request)


def retry_after(exc: Exception) -> float | None:
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None)
    if not headers:
        return None
    val = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return max(0.0, float(val)) if val is not None else None
    except (TypeError, ValueError):
        return None
