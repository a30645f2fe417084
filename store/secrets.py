"""Credentials never leave memory: how cotrain recognises a secret in a config, and how it
redacts one from anything it stores or shows.

A config is stored with its run (``runs.config``) and printed in reports, so a secret in it
would be published. :func:`find_secret` names the first place a config holds one (a key
named like a credential, a URL carrying a user or password, a query-string key, or a value
shaped like a well-known API key); the config loader refuses it and points at
``api_key_env``. :func:`redact` is the second line of defence for anything that reaches the
store or a report anyway (e.g. a store written by an older cotrain).
"""
from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus, unquote

REDACTED = "<redacted>"

#: Parts of a key name (split at ``_``, ``-``, ``.`` and case changes) that make it a credential.
_WORDS = {"token", "password", "passwd", "pwd", "secret", "secrets", "credential", "credentials", "auth",
          "authorization", "bearer", "apikey", "passphrase", "cookie"}
#: Two-part names ending in ``key`` that are credentials (``api_key``, ``access_key`` ...).
_KEY_OWNERS = {"api", "access", "private", "secret", "client", "signing", "encryption", "master", "auth"}
#: A URL's user info (``scheme://user:pw@``, or scheme-relative ``//user:pw@``).
_URL_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://|(?:^|(?<=[\s\"'(=]))//)([^/\s@?#]+)@")
#: A URL query or fragment parameter: ``?name=value`` (or after ``&``, ``;`` or ``#``: OAuth's
#: ``#access_token=``); the name, percent-decoded, decides (:func:`_query_credential`).
_URL_QUERY = re.compile(r"([?&;#])([^=&#\s;?]+)=([^&#\s;]+)")
#: Query parameter names that carry a credential besides those :func:`credential_name` knows
#: (signed URLs: ``sig``, ``signature``, ``X-Amz-Signature``'s last part; sessions, JWTs).
_QUERY_WORDS = {"sig", "signature", "code", "pass", "jwt", "session", "sessionid", "sid"}
#: Values shaped like well-known API keys (OpenAI, Anthropic, Hugging Face, GitHub's classic and
#: fine-grained tokens, GitLab, Stripe, Slack, AWS, Google) and JSON Web Tokens.
_KEY_SHAPES = re.compile(r"\b(?:sk-[A-Za-z0-9_\-]{16,}|sk-ant-[A-Za-z0-9_\-]{16,}|hf_[A-Za-z0-9]{24,}"
                         r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9]{16,}_[A-Za-z0-9]{30,}"
                         r"|glpat-[A-Za-z0-9_\-]{20,}|[sr]k_(?:live|test)_[A-Za-z0-9]{24,}"
                         r"|xox[abprs]-[A-Za-z0-9\-]{10,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{35}"
                         r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,})"
                         r"(?![A-Za-z0-9_])")  # the whole word: hf_distilbert..._v2.parquet is a file name


def _parts(name: str) -> list[str]:
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))
    return [p for p in re.split(r"[^A-Za-z0-9]+", name.lower()) if p]


def credential_name(name: str) -> bool:
    """True when a key's name says it holds a credential (``api_key``, ``hf_token``,
    ``password``, ``clientSecret`` ...). Names ending in ``_env`` hold the *name* of an
    environment variable and are fine; ``max_tokens`` and ``tokenizer`` are not credentials."""
    parts = _parts(name)
    if not parts or parts[-1] == "env":
        return False
    if any(p in _WORDS for p in parts):
        return True
    return parts == ["key"] or (len(parts) >= 2 and parts[-1] == "key" and parts[-2] in _KEY_OWNERS)


def _query_credential(name: str) -> bool:
    """Whether a URL query parameter named ``name`` carries a credential: a credential name
    (``api_key``, ``api_token``, ``x-api-key``, ``client_secret``, ``private_token`` ...) or
    a signature (``sig``, ``X-Amz-Signature``)."""
    name = unquote(name)  # ?api%5Fkey= reaches the server as ?api_key=
    parts = _parts(name)
    return credential_name(name) or bool(parts and (parts[-1] in _QUERY_WORDS or parts[-1] == "key"))


def _secret_query(text: str) -> bool:
    return any(_query_credential(m.group(2)) for m in _URL_QUERY.finditer(text))


def secret_in_text(text: str) -> str | None:
    """What makes a string a secret, or None: a URL with a user or password, a key in a URL's
    query, or a value shaped like a known API key."""
    if _URL_USERINFO.search(text):
        return "a URL carrying a user name or password"
    if _secret_query(text):
        return "a URL carrying a key in its query"
    if _KEY_SHAPES.search(text):
        return "a value shaped like an API key"
    return None


#: Mappings whose keys are the task's label names, not setting names (a label may be "password").
_LABEL_KEYED = {"verbalizers"}


def _walk(obj: Any, path: str, keys_are_labels: bool = False) -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) for every mapping entry and list item, depth first; ``key`` is None
    for list items and for the entries of a mapping keyed by label names."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            p = f"{path}.{k}" if path else str(k)
            yield p, None if keys_are_labels else k, v
            yield from _walk(v, p, str(k) in _LABEL_KEYED)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            p = f"{path}[{i}]"
            yield p, None, v
            yield from _walk(v, p)


def key_shaped_name(value: str) -> bool:
    """Whether a value given as the *name* of an environment variable (``api_key_env``) looks
    like a key pasted there instead: 20 or more characters mixing lower case, upper case and
    digits (variable names are upper case words: ``OPENAI_API_KEY``)."""
    v = str(value)
    return len(v) >= 20 and any(c.islower() for c in v) and any(c.isupper() for c in v) \
        and any(c.isdigit() for c in v)


def find_secret(data: Any) -> tuple[str, str] | None:
    """The first (key path, reason) where a raw config holds a credential, or None."""
    for path, key, value in _walk(data, ""):
        if key is not None and credential_name(str(key)) and value not in (None, "", [], {}):
            return path, f"{key} must not be written in a config: its name says it holds a credential"
        if key is not None and _parts(str(key))[-1:] == ["env"] and isinstance(value, str) \
                and key_shaped_name(value):
            return path, (f"{key} names an environment variable, and this value looks like a key itself "
                          "(set the variable to the key and give its name)")
        if isinstance(value, str):
            why = secret_in_text(value)
            if why:
                return path, f"must not hold {why}"
    return None


def redact_text(text: str) -> str:
    """``text`` with URL credentials and key-shaped values replaced by ``<redacted>``."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    text = _URL_QUERY.sub(lambda m: f"{m.group(1)}{m.group(2)}={REDACTED}" if _query_credential(m.group(2))
                          else m.group(0), text)
    return _KEY_SHAPES.sub(REDACTED, text)


def redact(obj: Any, keys_are_labels: bool = False) -> Any:
    """A copy of a config-like structure with every credential replaced by ``<redacted>``."""
    if isinstance(obj, dict):
        return {k: (REDACTED if not keys_are_labels and credential_name(str(k)) and v not in (None, "", [], {})
                    else redact(v, str(k) in _LABEL_KEYED)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(redact(v) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


#: Characters of a secret that, found together in any of its forms, are redacted.
SCRUB_RUN = 8


def secret_forms(secret: str) -> set[str]:
    """The spellings a secret travels in besides its own: JSON-escaped (ASCII or not, ``/`` as
    ``\\/`` or not), HTML-escaped, percent-encoded (a query string, a form body), and base64
    (standard and URL-safe) at each of the three byte alignments it may sit at inside a
    longer encoded text (an ``Authorization: Basic`` header, a token echoed in an encoded
    error body), each cut to the characters that depend on it alone."""
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], html.escape(secret),
             json.dumps(secret)[1:-1].replace("/", "\\/"), quote(secret, safe=""), quote_plus(secret, safe="")}
    raw = secret.encode("utf-8")
    for pad in range(3):
        total = 8 * (pad + len(raw))
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            forms.add(enc(b"\0" * pad + raw).decode("ascii")[-(-8 * pad // 6):total // 6])
    return {f for f in forms if f}


class Scrubber:
    """Replaces each of ``secrets`` in a text by ``***``: whole, however short (a self-hosted
    server's ``--api-key dev1234``), and any ``run`` or more of its characters together in any
    of its forms (:func:`secret_forms`): a provider or a proxy echoes a prefix, a suffix or the
    whole key, as it is or escaped, inside a JSON body or an error. Built once for many texts
    (a command's log lines)."""

    def __init__(self, secrets: Iterable[str], run: int = SCRUB_RUN) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.run = run
        self.grams = {f[i:i + run] for s in self.secrets for f in secret_forms(s) for i in range(len(f) - run + 1)}

    def __call__(self, text: str) -> str:
        if not self.secrets or not text:
            return text
        for secret in self.secrets:
            text = text.replace(secret, "***")
        run, hit = self.run, bytearray(len(text))
        for i in range(len(text) - run + 1):
            if text[i:i + run] in self.grams:
                hit[i:i + run] = b"\x01" * run
        if not any(hit):
            return text
        out, i = [], 0
        while i < len(text):
            if hit[i]:
                while i < len(text) and hit[i]:
                    i += 1
                out.append("***")
            else:
                out.append(text[i])
                i += 1
        return "".join(out)


def scrub(text: str, secrets: Iterable[str], run: int = SCRUB_RUN) -> str:
    """``text`` with ``secrets`` scrubbed (:class:`Scrubber`)."""
    return Scrubber(secrets, run)(text)


__all__ = ["REDACTED", "SCRUB_RUN", "Scrubber", "credential_name", "find_secret", "key_shaped_name", "redact", "redact_text",
           "scrub", "secret_forms", "secret_in_text"]
