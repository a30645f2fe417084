"""The secret values a command must never print: what the environment holds for the keys a
config names (``api_key_env`` and every other ``*_env`` key) and for variables whose names
say they hold a credential (``OPENAI_API_KEY``, ``HF_TOKEN``).

A key without a known shape (a self-hosted or vLLM server's ``--api-key``) passed
``store.secrets.redact_text``, which only knows shapes: a plug-in that put it in an
exception had it printed on the error line and written to the crash log. These are the
values to scrub (``store.secrets.Scrubber``) from what the command line shows and logs."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from store.secrets import SCRUB_RUN, credential_name

#: Shorter values are not scrubbed from text by themselves (``none``, ``EMPTY``, ``true``: a
#: self-hosted server's throwaway key), nor are their pieces.
MIN_SECRET_CHARS = SCRUB_RUN


def _env_names(data: Any) -> set[str]:
    """Every value of a ``*_env`` key (the *name* of an environment variable) in a config,
    walked without recursion (the config's reader has bounded its size)."""
    names, stack = set(), [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            names |= {v for k, v in node.items() if str(k).lower().endswith("_env") and isinstance(v, str)}
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return names


def _read(config: str | Path) -> Any:
    """The config file's document as the config loader reads it (a regular file, YAML of a
    bounded size: an alias bomb is refused, not walked), or None when it is not one."""
    from orchestrator.config_yaml import check_config_size, read_yaml
    from store.errors import CotrainError

    p = Path(config)
    try:
        if not p.is_file():  # a FIFO would block; a folder or a missing file names nothing
            return None
        data = read_yaml(p)
        check_config_size(data, str(p))
        return data
    except (CotrainError, OSError):  # the config's own error is the one being reported
        return None


def _looks_like_a_place(value: str) -> bool:
    """A path or a URL (``HF_TOKEN_PATH``, ``ACTIONS_ID_TOKEN_REQUEST_URL``): not a key, and
    its pieces (``https://``, ``/home/user/``) are in every other line printed."""
    v = value.strip()
    return "://" in v or v.startswith(("/", "~", "./", "../")) or os.path.exists(v)


def known_secrets(config: str | Path | Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The values of the environment variables ``config`` (a YAML file or its mapping; a file
    that cannot be read adds nothing) names with ``*_env`` keys, and of every variable named
    like a credential that holds no path or URL; each of at least :data:`MIN_SECRET_CHARS`
    characters (surrounding whitespace dropped), longest first."""
    env = os.environ if environ is None else environ
    data = _read(config) if isinstance(config, (str, Path)) else config
    named = {env[n] for n in _env_names(data) if n in env}
    named |= {v for n, v in env.items() if credential_name(n) and not _looks_like_a_place(v)}
    values = {v.strip() for v in named if len(v.strip()) >= MIN_SECRET_CHARS}
    return tuple(sorted(values, key=len, reverse=True))


__all__ = ["MIN_SECRET_CHARS", "known_secrets"]
