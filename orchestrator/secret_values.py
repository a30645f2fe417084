"""The secret values a command must never print: what the environment holds for the keys a
config names (``api_key_env`` and every other ``*_env`` key) and for variables whose names
say they hold a credential (``OPENAI_API_KEY``, ``HF_TOKEN``).

A key without a known shape (a self-hosted or vLLM server's ``--api-key``) passed
``store.secrets.redact_text``, which only knows shapes: a plug-in that put it in an
exception had it printed on the error line and written to the crash log. These are the
values to scrub (``store.secrets.scrub``) from what the command line shows and logs."""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from store.secrets import credential_name

#: Shorter values are not scrubbed from text by themselves (``1``, ``true``, a user name).
MIN_SECRET_CHARS = 6


def _env_names(obj: Any) -> Iterator[str]:
    """Every value of a ``*_env`` key (the *name* of an environment variable) in a config."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if str(k).lower().endswith("_env") and isinstance(v, str):
                yield v
            yield from _env_names(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _env_names(v)


def known_secrets(config: str | Path | Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The values of the environment variables ``config`` (a YAML file or its mapping; a file
    that cannot be read adds nothing) names with ``*_env`` keys, and of every variable named
    like a credential (unless it names an existing file); each of at least
    :data:`MIN_SECRET_CHARS` characters, longest first."""
    env = os.environ if environ is None else environ
    data: Any = config
    if isinstance(config, (str, Path)):
        try:
            import yaml

            data = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - an unreadable config is the error being reported, not a new one
            data = None
    named = {env[n] for n in set(_env_names(data)) if n in env}
    # a variable named like a credential may hold a path (SSH_AUTH_SOCK, HF_TOKEN_PATH), whose
    # pieces would be scrubbed from every path printed: only values that name no file
    named |= {v for n, v in env.items() if credential_name(n) and not os.path.exists(v)}
    values = {v for v in named if len(v.strip()) >= MIN_SECRET_CHARS}
    return tuple(sorted(values, key=len, reverse=True))


__all__ = ["MIN_SECRET_CHARS", "known_secrets"]
