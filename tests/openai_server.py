"""A real OpenAI-compatible HTTP server on 127.0.0.1 that misbehaves on purpose.

It answers ``POST /v1/chat/completions`` by a fixed rule (the item's user message mentions a
``positive`` cue word -> "positive", else "negative"), with label-word log-probabilities
when asked for them and a JSON answer otherwise. Faults are scheduled per request number
(1-based) or set as the default: ``slow``, ``429``, ``500``, ``malformed`` (a body that is
not JSON), ``no_logprobs``, ``garbage`` (an unreadable answer), ``401`` (echoing the key,
as some providers do). ``kill`` SIGKILLs the process ``kill_pid`` before answering.

It records every request: how many, their bodies' hashes, the Authorization headers seen,
the most requests in flight at once. Used by the tests and by ``bench/llm.py``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import signal
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
                 delay_s: float = 0.0, kill_pid: int | None = None) -> None:
        self.faults = dict(faults or {})
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

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> MisbehavingServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server._lock:
                    server.count += 1
                    n = server.count
                    server.auth_headers.append(self.headers.get("Authorization", ""))
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                try:
                    server._handle(self, n, body)
                finally:
                    with server._lock:
                        server.inflight -= 1

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
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

    def _handle(self, h: BaseHTTPRequestHandler, n: int, body: bytes) -> None:
        mode = self.faults.get(n, self.default)
        if self.delay_s:
            time.sleep(self.delay_s)
        if mode == "kill" and self.kill_pid:
            os.kill(self.kill_pid, signal.SIGKILL)
            time.sleep(0.5)
            return self._send(h, 500, b'{"error": {"message": "client killed"}}')
        if mode == "slow":
            time.sleep(self.slow_s)
        if mode == "429":
            return self._send(h, 429, b'{"error": {"message": "rate limited", "type": "rate_limit"}}',
                              {"Retry-After": "0"})
        if mode == "500":
            return self._send(h, 500, b'{"error": {"message": "internal error"}}')
        if mode == "malformed":
            return self._send(h, 200, b'{"id": "x", "choices": [{"message": {"content": "posi')
        if mode == "401":
            key = h.headers.get("Authorization", "").removeprefix("Bearer ")
            msg = json.dumps({"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error",
                                        "code": "invalid_api_key"}}).encode()
            return self._send(h, 401, msg)
        req = json.loads(body)
        users = [m["content"] for m in req["messages"] if m["role"] == "user"]
        # the item is in the last user turn, or in the first one when later turns are a
        # debate's "the other agents answered ..." follow-up
        text = users[-1] if len(users) == 1 or "other agents answered" not in users[-1] else users[0]
        label = rule_label(text)
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
        pt = sum(len(m["content"].split()) for m in req["messages"])
        payload = {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
                   "model": req.get("model", "fake"),
                   "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                                "message": {"role": "assistant", "content": content}}],
                   "usage": {"prompt_tokens": pt, "completion_tokens": 1, "total_tokens": pt + 1}}
        with self._lock:
            self.answered[hashlib.sha256(body).hexdigest()] += 1
        self._send(h, 200, json.dumps(payload).encode())

