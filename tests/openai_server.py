"""A real OpenAI-compatible HTTP server on 127.0.0.1 that misbehaves on purpose.

It answers ``POST /v1/chat/completions`` by a fixed rule (the item's user message mentions a
``positive`` cue word -> "positive", else "negative"; ``rule`` replaces it, e.g. an oracle
of set accuracy), with label-word log-probabilities
when asked for them and a JSON answer otherwise. Faults are scheduled per request number
(1-based) or set as the default: ``slow``, ``429``, ``500``, ``400`` (an item's own refusal,
a prompt over the context length), ``malformed`` (a body that is
not JSON), ``no_logprobs``, ``garbage`` (an unreadable answer), ``401`` (echoing the key,
as some providers do), ``echo_key`` (an answer that reflects the key: whole, its head and
base64-encoded). ``kill`` SIGKILLs the process ``kill_pid`` before answering.

It records every request: how many, their bodies' hashes, the Authorization headers seen,
the most requests in flight at once. Used by the tests and by ``bench/llm.py``.

``engine="asyncio"`` serves from one event loop instead of a thread per connection: a request
waits ``delay_s`` without holding a thread, so parallelism is unlimited (a stand-in for a vLLM
box). Overload can be injected: ``p429`` answers that share of requests 429 at random, and
``capacity`` answers 429 at once to any request arriving while ``capacity`` are in flight.
``python -m tests.openai_server --delay 0.2`` serves in its own process and prints its URL.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

POSITIVE_CUES = ("good", "great", "love", "wonderful", "excellent", "superb", "best")


def rule_label(text: str) -> str:
    low = text.lower()
    return "positive" if any(w in low for w in POSITIVE_CUES) else "negative"


class MisbehavingServer:
    """``with MisbehavingServer(faults={1: "429"}) as srv: srv.base_url``."""

    def __init__(self, faults: dict[int, str] | None = None, default: str = "ok", slow_s: float = 2.0,
                 delay_s: float = 0.0, kill_pid: int | None = None, engine: str = "threads", p429: float = 0.0,
                 capacity: int | None = None, seed: int = 0, port: int = 0,
                 rule: Any = None) -> None:
        self.faults = dict(faults or {})
        self.rule = rule or rule_label  # the item's user message -> the label answered
        self.engine, self.p429, self.capacity, self.port = engine, p429, capacity, port
        self._rng = random.Random(seed)
        self.rejected = 0  # requests answered 429 (scheduled, random or over capacity)
        self.default = default
        self.slow_s = slow_s
        self.delay_s = delay_s
        self.kill_pid = kill_pid
        self.count = 0
        self.answered: Counter[str] = Counter()   # body hash -> successful answers sent
        self.auth_headers: list[str] = []
        self.inflight = 0
        self.max_inflight = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._aserver: asyncio.base_events.Server | None = None
        self._aport = 0

    @property
    def base_url(self) -> str:
        port = self._aport if self.engine == "asyncio" else (self._httpd.server_address[1] if self._httpd else 0)
        assert port, "the server is not started"
        return f"http://127.0.0.1:{port}/v1"

    def _arrive(self, auth: str) -> tuple[int, str]:
        """Count a request in; its number and the mode it gets."""
        with self._lock:
            self.count += 1
            n = self.count
            self.auth_headers.append(auth)
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            mode = self.faults.get(n, self.default)
            if mode == "ok" and ((self.capacity is not None and self.inflight > self.capacity)
                                 or (self.p429 and self._rng.random() < self.p429)):
                mode = "429"
            self.rejected += mode == "429"
        return n, mode

    def _leave(self) -> None:
        with self._lock:
            self.inflight -= 1

    def __enter__(self) -> MisbehavingServer:
        if self.engine == "asyncio":
            return self._start_asyncio()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                n, mode = server._arrive(self.headers.get("Authorization", ""))
                try:
                    server._handle(self, n, mode, body)
                finally:
                    server._leave()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._aloop is not None:
            loop, srv = self._aloop, self._aserver

            async def _stop() -> None:
                assert srv is not None
                srv.close()
                for t in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                    t.cancel()

            asyncio.run_coroutine_threadsafe(_stop(), loop).result(timeout=5)
            loop.call_soon_threadsafe(loop.stop)
            self._aloop = None
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    # ------------------------------------------------------------------ behaviour
    def _send(self, h: BaseHTTPRequestHandler, status: int, payload: bytes,
              headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        try:
            h.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _wait_s(self, mode: str) -> float:
        if mode == "429" and self.capacity is not None:
            return 0.0  # turned away on arrival
        return self.delay_s + (self.slow_s if mode == "slow" else 0.0)

    def _handle(self, h: BaseHTTPRequestHandler, n: int, mode: str, body: bytes) -> None:
        if self._wait_s(mode):
            time.sleep(self._wait_s(mode))
        if mode == "kill" and self.kill_pid:
            os.kill(self.kill_pid, signal.SIGKILL)
            time.sleep(0.5)
        self._send(h, *self._reply(n, mode, body, h.headers.get("Authorization", "")))

    def _reply(self, n: int, mode: str, body: bytes, auth: str) -> tuple[int, bytes, dict[str, str]]:
        """Status, body and extra headers of the answer to request ``n``."""
        if mode == "kill":
            return 500, b'{"error": {"message": "client killed"}}', {}
        if mode == "429":
            return 429, b'{"error": {"message": "rate limited", "type": "rate_limit"}}', {"Retry-After": "0"}
        if mode == "500":
            return 500, b'{"error": {"message": "internal error"}}', {}
        if mode == "400":  # the item's own refusal (a prompt over the context length), not the server's state
            return 400, b'{"error": {"message": "maximum context length exceeded", "type": "invalid_request_error"}}', {}
        if mode == "malformed":
            return 200, b'{"id": "x", "choices": [{"message": {"content": "posi', {}
        if mode == "401":
            key = auth.removeprefix("Bearer ")
            msg = json.dumps({"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error",
                                        "code": "invalid_api_key"}}).encode()
            return 401, msg, {}
        req = json.loads(body)
        users = [m["content"] for m in req["messages"] if m["role"] == "user"]
        # the item is in the last user turn, or in the first one when later turns are a
        # debate's "the other agents answered ..." follow-up
        text = users[-1] if len(users) == 1 or "other agents answered" not in users[-1] else users[0]
        label = self.rule(text)
        other = "negative" if label == "positive" else "positive"
        logprobs = None
        if mode == "garbage":  # neither logprobs nor a readable answer
            content = "Hmm, hard to say. It could go either way!"
        elif req.get("logprobs") and mode != "no_logprobs":
            top = [(label.capitalize(), math.log(0.6)), (label, math.log(0.2)), (other, math.log(0.1)),
                   ("The", math.log(0.05))][: int(req.get("top_logprobs") or 1)]
            logprobs = {"content": [{"token": top[0][0], "logprob": top[0][1],
                                     "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top]}]}
            content = top[0][0]
        else:
            content = json.dumps({"label": label, "confidence": 0.9, "rationale": f"the text reads {label}"})
        if mode == "echo_key":  # a server (or proxy) that reflects the request's key into its answer
            key = auth.removeprefix("Bearer ")
            content = f"{content} (asked with key {key}; its head {key[:10]}, its base64 " \
                      f"{base64.b64encode(key.encode()).decode()})"
            if logprobs:  # and as the tokens a tokenizer makes of it: a few characters each
                logprobs["content"] += [{"token": key[i:i + 3], "logprob": -0.1,
                                         "top_logprobs": [{"token": key[i:i + 3], "logprob": -0.1}]}
                                        for i in range(0, len(key), 3)]
        pt = sum(len(m["content"].split()) for m in req["messages"])
        payload = {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
                   "model": req.get("model", "fake"),
                   "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                                "message": {"role": "assistant", "content": content}}],
                   "usage": {"prompt_tokens": pt, "completion_tokens": 1, "total_tokens": pt + 1}}
        if mode == "no_choices":          # a 200 that answers nothing
            payload["choices"] = []
        elif mode == "null_content":      # a choice with neither content nor logprobs
            payload["choices"][0].update(message={"role": "assistant", "content": None}, logprobs=None)
        elif mode in ("huge_usage", "negative_usage"):  # token counts no call can have
            payload["usage"]["prompt_tokens"] = 10**30 if mode == "huge_usage" else -1_000_000
        else:
            with self._lock:
                self.answered[hashlib.sha256(body).hexdigest()] += 1
        return 200, json.dumps(payload).encode(), {}

    # ------------------------------------------------------------------ asyncio engine
    def _start_asyncio(self) -> MisbehavingServer:
        started = threading.Event()
        self._aloop = loop = asyncio.new_event_loop()

        async def _open() -> None:
            self._aserver = await asyncio.start_server(self._connection, "127.0.0.1", self.port, backlog=4096)
            self._aport = self._aserver.sockets[0].getsockname()[1]
            started.set()

        threading.Thread(target=loop.run_forever, daemon=True, name="openai-test-server").start()
        asyncio.run_coroutine_threadsafe(_open(), loop).result(timeout=10)
        started.wait(10)
        return self

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """HTTP/1.1 with keep-alive, one request at a time per connection (as clients send them)."""
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                n, mode = self._arrive(headers.get("authorization", ""))
                try:
                    if self._wait_s(mode):
                        await asyncio.sleep(self._wait_s(mode))
                    if mode == "kill" and self.kill_pid:
                        os.kill(self.kill_pid, signal.SIGKILL)
                        await asyncio.sleep(0.5)
                    status, payload, extra = self._reply(n, mode, body, headers.get("authorization", ""))
                finally:
                    self._leave()
                head = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}", "Content-Type: application/json",
                        f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in extra.items())]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # shutdown: end quietly, since Python 3.11's stream callback
            pass                        # logs a cancelled connection task as an error
        finally:
            writer.close()


def main() -> None:
    """Serve in this process until stdin closes; print the base URL first (for benchmarks)."""
    ap = argparse.ArgumentParser(description="a local OpenAI-compatible test server")
    ap.add_argument("--delay", type=float, default=0.2, help="seconds before every answer")
    ap.add_argument("--engine", default="asyncio", choices=["asyncio", "threads"])
    ap.add_argument("--p429", type=float, default=0.0)
    ap.add_argument("--capacity", type=int, default=None)
    args = ap.parse_args()
    with MisbehavingServer(delay_s=args.delay, engine=args.engine, p429=args.p429, capacity=args.capacity) as srv:
        print(srv.base_url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()

