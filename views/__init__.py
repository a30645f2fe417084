"""Model views: each reads some fields of an item and returns class probabilities.

Kinds: ``sklearn`` (any scikit-learn model over columns or text), ``embedding``
(sentence-transformers encoder + head), ``llm``, ``vision``, or a plug-in class by dotted
path. Each kind's parameters are one pydantic model (``views.params``). Never imports the
orchestrator. The names below are imported on first use, so that validating a config
(``views.params``, ``views.registry``) loads no model code.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {"FeatureCache": "views.base", "View": "views.base", "ViewContext": "views.base",
            "BUILTIN_KINDS": "views.registry", "build_view": "views.registry", "params_model": "views.registry",
            "resolve_kind": "views.registry"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'views' has no attribute {name!r}")
