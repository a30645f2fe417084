"""What an LLM call is, apart from making it: the endpoint, the price, the completion kept,
totals, the cache key of a request, and offline token and cost estimates."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from store.errors import ViewError
from store.secrets import SCRUB_RUN, Scrubber, scrub
from views.llm.litellm_import import import_litellm
from views.llm.prompt import estimate_tokens


@dataclass(frozen=True)
class Price:
    """Dollars per million tokens; overrides litellm's price map (local or unknown models)."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


@dataclass(frozen=True)
class Endpoint:
    """How to reach a model. ``identity`` keys the cache: the model string plus the
    api_base for remote models; ``local:<name>`` for an embedded model, whose port
    changes every run."""

    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    identity: str = ""

    def key_identity(self) -> str:
        return self.identity or (f"{self.model}@{self.api_base}" if self.api_base else self.model)


@dataclass
class Completion:
    """What a request produced. ``ok`` is False when every attempt failed or the budget
    was spent; the caller then treats the item as an abstention."""

    key: str
    content: str | None = None
    top_logprobs: list[list[tuple[str, float]]] | None = None  # per generated token
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False
    status: str = "ok"
    error: str | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class ClientStats:
    """Totals since the client was built (the ledger has the per-call detail)."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    budget_refused: int = 0

    def count(self, prompt_tokens: int, completion_tokens: int, cost: float) -> None:
        """A request that went to the server (answered or not), with what it was billed."""
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cost_usd += cost


def call_record(view: str, endpoint: Endpoint, request: dict[str, Any], comp: Completion,
                response: dict[str, Any] | None) -> Any:
    """The ledger row (``store.contracts.CallRecord``) of one request's outcome; an answer
    from the cache costs nothing and has no tokens of its own."""
    from store.contracts import CallRecord

    return CallRecord(
        view=view, key=comp.key, model=endpoint.key_identity(), request=request, response=response,
        cached=comp.cached, status=comp.status, error=comp.error, attempts=comp.attempts,
        prompt_tokens=None if comp.cached else comp.prompt_tokens,
        completion_tokens=None if comp.cached else comp.completion_tokens,
        cost_usd=0.0 if comp.cached else comp.cost_usd, latency_s=comp.latency_s)


def cancelled_record(view: str, endpoint: Endpoint, request: dict[str, Any], key: str, attempts: int,
                     latency_s: float, billed: list[int], charged: float) -> Any:
    """The ledger row of a request cancelled after an attempt was made (a fatal answer to
    another request of its batch, Ctrl-C: in flight, or waiting to retry). A call was made and
    the server may answer, and bill, it after all, so it is filed and counted as a call,
    ``cancelled``; its tokens and cost are
    unknown (None) beyond what its earlier attempts were billed (``billed``: prompt and
    completion tokens; ``charged``: dollars). Nothing is cached: a resumed run asks again."""
    from store.contracts import CallRecord

    return CallRecord(
        view=view, key=key, model=endpoint.key_identity(), request=request, response=None, cached=False,
        status="cancelled", error="cancelled once sent (or being sent): the server may have answered it, and billed it",
        attempts=attempts, prompt_tokens=billed[0] or None, completion_tokens=billed[1] or None,
        cost_usd=charged or None, latency_s=latency_s)


def count_tokens(model: str, messages: list[dict[str, str]]) -> int:
    """Prompt tokens of ``messages`` for ``model`` by litellm's tokenizers (offline). Embedded
    local models are counted with a GPT tokenizer; a model litellm has no tokenizer for falls
    back to about 4 characters a token."""
    litellm = import_litellm()
    name = "gpt-3.5-turbo" if model.startswith("local:") else model
    try:
        return int(litellm.token_counter(model=name, messages=messages))
    except Exception:  # no tokenizer for this model name
        return sum(estimate_tokens(m["content"]) + 4 for m in messages)


def estimate_cost(model: str, price: Price | None, prompt_tokens: float, completion_tokens: float) -> float | None:
    """Dollars for a call of that size: the configured price, $0 for an embedded local model,
    else litellm's price map; None when the price is unknown."""
    if price is not None:
        return price.cost(prompt_tokens, completion_tokens)  # type: ignore[arg-type]
    if model.startswith("local:"):
        return 0.0
    litellm = import_litellm()
    try:
        p, c = litellm.cost_per_token(model=model, prompt_tokens=int(prompt_tokens),
                                      completion_tokens=int(completion_tokens))
        return float(p + c)
    except Exception:  # not in litellm's price map
        return None


def request_key(identity: str, request: dict[str, Any]) -> str:
    """Cache key: sha256 of the model identity and the canonical JSON of the request."""
    blob = json.dumps({"model": identity, **request}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


#: More tokens than any model reads or writes in one call: a usage count above it is the
#: server's mistake (10^30 overflowed the ledger's column and failed the commit).
MAX_CALL_TOKENS = 10**9


class MalformedResponse(ValueError):
    """A completion that is no answer: no choice, or token counts that cannot be (negative,
    too large). Retried as a transient fault, then filed as an error; never cached, since a
    cached empty answer made every later run abstain without asking. ``usage``: the
    (prompt, completion) tokens it reports when those are counts, since a server that
    reports them has likely billed them; ``response`` the raw answer (for its price)."""

    def __init__(self, message: str, usage: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.usage = usage
        self.response: Any = None


def _token_count(usage: dict[str, Any], name: str) -> int:
    value = usage.get(name) or 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_CALL_TOKENS \
            or value != int(value):
        raise MalformedResponse(f"usage.{name} is {str(value)[:40]!r}, not a count of tokens")
    return int(value)


def parse_response(resp: Any, secret: str | None = None) -> dict[str, Any]:
    """The part of a chat completion cotrain keeps: content, top logprobs, usage, with the
    request's key ``secret`` (8 characters or more) scrubbed from the text, and the logprobs
    dropped when the generated tokens spell it (a server that echoes the key had it stored in
    ``llm_cache`` and ``debate_turns``). Raises :class:`MalformedResponse` for a completion
    that answers nothing."""
    data = resp.model_dump() if hasattr(resp, "model_dump") else dict(resp)
    usage = data.get("usage") or {}
    if not isinstance(usage, dict):
        raise MalformedResponse(f"usage is {str(usage)[:40]!r}, not an object")
    counts = (_token_count(usage, "prompt_tokens"), _token_count(usage, "completion_tokens"))
    billed = counts if any(counts) else None
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse(f"the answer holds no choice (choices: {str(choices)[:40]})", billed)
    choice = choices[0]
    msg = choice.get("message") or {}
    lp = choice.get("logprobs") or None
    if not isinstance(msg, dict):
        raise MalformedResponse(f"the answer's message is {str(msg)[:40]!r}, not an object", billed)
    # a choice with no content and no logprobs is an answer all the same (a refusal, a
    # content filter, a reasoning model out of tokens): billed, filed, and it names no label
    top: list[list[list[Any]]] | None = None
    if isinstance(lp, dict) and lp.get("content"):
        top = []
        for tok in lp["content"]:
            alts = tok.get("top_logprobs") or [{"token": tok.get("token"), "logprob": tok.get("logprob")}]
            top.append([[a.get("token") or "", float(a.get("logprob") if a.get("logprob") is not None else -math.inf)]
                        for a in alts])
    content = msg.get("content")
    if secret and len(secret) >= SCRUB_RUN:  # a throwaway key ('none', 'EMPTY') would mangle answers
        scrub = Scrubber([secret])
        content = scrub(content) if isinstance(content, str) else content
        spelled = "".join(str(tok.get("token") or "") for tok in lp["content"]) if top else ""
        if top and scrub(spelled) != spelled:  # the tokens spell the key, a piece each: none is kept
            top = None
        top = [[[scrub(str(t)), v] for t, v in pos] for pos in top] if top else top
    return {"content": content, "top_logprobs": top, "finish_reason": choice.get("finish_reason"),
            "usage": {"prompt_tokens": counts[0], "completion_tokens": counts[1]}}


def usable_key(view: str, env: str, value: str | None) -> str:
    """The key in environment variable ``env``, or ``ViewError``: unset, or holding a control
    character (a CR or newline read from a key file), which the HTTP client refuses to put in
    a header: every request failed before it was sent, and the run went on without the view."""
    if not value:
        raise ViewError(view, f"environment variable {env} (api_key_env) is not set")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ViewError(view, f"environment variable {env} (api_key_env) holds a control character (a CR or newline "
                        "read from a key file?); no request can carry it")
    if any(ord(ch) > 255 for ch in value):  # HTTP headers are Latin-1
        raise ViewError(view, f"environment variable {env} (api_key_env) holds a character no HTTP header can carry "
                        "(a pasted typographic quote?)")
    return value


def redacted_error(exc: BaseException, secret: str | None) -> str:
    """A failed call's error as one line of at most 300 characters, the key redacted first
    (``store.secrets.scrub``: whole, and any 8 of its characters together, as it is, escaped
    or base64-encoded). Cutting first let a long key (a JWT, an Azure AD token) through: only
    its first characters were found whole."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return scrub(text, [secret] if secret else [])[:300]
