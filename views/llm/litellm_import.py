"""Importing litellm without changing the process it is imported into.

litellm, as it is imported, loads a ``.env`` file into the environment, adds warning filters,
sets other libraries' logger levels and (at the first call) an environment variable, and it
would fetch a price list from GitHub. :func:`import_litellm` does the import once, inside
:func:`views.scoped.borrowed_process_state`, so the process is as it was afterwards.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("cotrain")

#: Loggers of other libraries that litellm configures as it is imported (it sets their levels
#: and adds its secret-redacting filters); :func:`import_litellm` puts them back.
LITELLM_TOUCHES = ("httpx", "apscheduler.executors.default", "apscheduler.scheduler", "asyncio", "backoff",
                   "uvicorn.error", "uvicorn.access")
_litellm: Any = None


def import_litellm() -> Any:
    """litellm, imported offline and quiet, leaving the process as it found it.

    For the import only: ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (its price map from the installed
    package; it would otherwise fetch one from GitHub at import) and ``LITELLM_MODE=PRODUCTION``
    (it would otherwise load a ``.env`` file into the environment), unless the user set them.
    The import, and the warm-up of what litellm builds lazily at its first call (pydantic
    models that warn about their ``ReadOnly`` items, the bundled tiktoken encodings, which it
    finds through an environment variable it sets), run inside
    :func:`views.scoped.borrowed_process_state`: the environment, the warning filters and the
    loggers it touches are as before afterwards. What stays is litellm's own:
    ``suppress_debug_info`` (no provider-list banners on stdout) and its loggers' handlers.
    """
    global _litellm
    if _litellm is not None:
        return _litellm
    from views.scoped import borrowed_process_state

    with borrowed_process_state(env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MODE": "PRODUCTION"},
                                loggers=LITELLM_TOUCHES):
        if _litellm is None:  # another thread may have imported it while this one waited
            import litellm

            litellm.suppress_debug_info = True
            _warm_up(litellm)
            _litellm = litellm
    return _litellm


def _warm_up(litellm: Any) -> None:
    """Do now, inside the import's scope, what litellm would otherwise do at the first call and
    cannot be scoped there (the call runs on the client's event loop, concurrently with others).
    Each step is best effort: a litellm that no longer has it simply skips it."""
    from importlib import import_module

    msgs = [{"role": "user", "content": "hi"}]
    steps = (
        lambda: import_module("litellm.llms.github_copilot.per_user_auth"),  # TypeAdapters at import
        lambda: import_module("litellm.types.router").GenericLiteLLMParams.model_validate({}),  # deferred build
        lambda: litellm.ModelResponse(),  # its Message model's deferred build
        lambda: litellm.token_counter(model="gpt-3.5-turbo", messages=msgs),  # cl100k_base
        lambda: litellm.token_counter(model="gpt-4o", messages=msgs),         # o200k_base
        lambda: litellm.cost_per_token(model="gpt-3.5-turbo", prompt_tokens=1, completion_tokens=1),
    )
    for step in steps:
        try:
            step()
        except Exception:  # noqa: BLE001 - a warm-up step that fails costs only a warning later
            log.debug("litellm warm-up step skipped", exc_info=True)
