"""What the command line prints besides tables: a message as one line, a path as printed,
and the log lines of a command, each with its secrets scrubbed.

Secrets: ``store.secrets.redact_text`` replaces what looks like one (a key of a known
shape, a URL's credentials); a :class:`store.secrets.Scrubber` built from the command's
:func:`orchestrator.secret_values.known_secrets` also replaces the values the config names
(``api_key_env``), whatever their shape."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from orchestrator.console import printable

#: What a scrubber is here: text in, the same text with the secrets replaced.
Scrub = Callable[[str], str]


def _no_scrub(text: str) -> str:
    return text


def one_line(text: str, scrub: Scrub = _no_scrub) -> str:
    """A message as one line (a data value may hold newlines), markup-escaped, secrets redacted,
    and what a terminal would act on (an ESC in a store's file name) written as its escape."""
    from rich.markup import escape

    from store.secrets import redact_text

    return escape(printable(scrub(redact_text(" ".join(str(text).split()) or "(no message)"))))


def path_text(p: object) -> str:
    """A path as printed: as it is, or quoted when it holds what a terminal acts on (a newline
    in a file name split the one-line message in two), escaped as ``printable`` escapes it."""
    text = str(p)
    return f"'{printable(text)}'" if printable(text) != text else text


def scrubber(config: str | Path | None) -> Scrub:
    """The scrubber of a command given ``config`` (None: the environment's credentials only)."""
    from orchestrator.secret_values import known_secrets
    from store.secrets import Scrubber

    return Scrubber(known_secrets(config))


class _ScrubbingFormatter(logging.Formatter):
    """A log line as the format makes it, then secrets redacted and scrubbed."""

    def __init__(self, fmt: str, scrub: Scrub) -> None:
        super().__init__(fmt)
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        from store.secrets import redact_text

        return self.scrub(redact_text(super().format(record)))


def setup_logging(verbose: bool, config: str | Path | None = None) -> None:
    """The command's log lines on stderr (``cotrain: ...``; INFO when verbose), secrets
    scrubbed (:func:`scrubber` of ``config``); chatty libraries at WARNING; tqdm off."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ScrubbingFormatter("cotrain: %(message)s", scrubber(config)))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)
    for noisy in ("httpx", "httpx2", "LiteLLM", "sentence_transformers"):  # one line per HTTP request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")  # as main() does: CliRunner calls the app without it


__all__ = ["one_line", "path_text", "scrubber", "setup_logging"]
