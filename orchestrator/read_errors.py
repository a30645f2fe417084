"""A file reader's failure as one line: DuckDB's reason without its advice, control
characters escaped, cut to a length a terminal shows."""
from __future__ import annotations

import re

#: Lines of DuckDB's reader errors that give advice or repeat options, not the reason.
_NOISE = ("original line", "possible", "*", "file =", "column ", "this type", "it was not possible",
          "the search space", "delimiter", "quote", "escape", "comment", "encoding", "new_line", "header",
          "skip_rows", "strict_mode", "date_format", "timestamp_format", "null_padding", "sample_size",
          "ignore_errors", "all_varchar")


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line: control characters escaped, cut to ``limit`` characters."""
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return text if len(text) <= limit else text[:limit] + "…"


def reason(exc: Exception, *, shown: str | None = None, actual: str | None = None) -> str:
    """DuckDB's reason in one line: its first line, plus the line that says what was wrong."""
    msg = str(exc)
    if shown and actual:
        msg = msg.replace(actual, shown)
    lines = [x.strip() for x in msg.splitlines()]
    head = re.sub(r"^(Invalid Input|Conversion|IO|Parser) Error: ", "", lines[0] if lines else msg)
    why = next((x for x in lines[1:] if x and not x.lower().startswith(_NOISE)), None)
    return one_line(f"{head.rstrip('. ')}: {why}" if why else head)


__all__ = ["one_line", "reason"]
