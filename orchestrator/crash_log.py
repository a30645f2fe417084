"""Where an unforeseen failure's traceback goes: one file per failure under
``cache_home()/logs``, secrets redacted, so the command line can say one line and name it."""
from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path


def crash_log(exc: BaseException, scrub: Callable[[str], str] = str) -> Path | None:
    """Write ``exc``'s traceback (secrets redacted, then ``scrub``bed: the values the command's
    config names, ``cli_text.scrubber``) to a new file under ``cache_home()/logs``; return its
    path, or None when no file could be written."""
    from store.secrets import redact_text
    from views.encoders import cache_home

    text = scrub(redact_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))
    try:
        folder = cache_home() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"cotrain-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text(scrub(f"cotrain {' '.join(sys.argv[1:])}\n\n") + text, encoding="utf-8")
        return path
    except OSError:
        return None


__all__ = ["crash_log"]
