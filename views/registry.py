"""Resolve a view kind (built-in name or ``package.module:Class`` / dotted path) to a class.

A plug-in class is built as ``cls(name=..., context=..., **params)`` and must satisfy
``views.base.View``.
"""
from __future__ import annotations

import importlib
from typing import Any

from store.errors import ViewError
from views.base import View, ViewContext

BUILTIN_KINDS: dict[str, str] = {
    "sklearn": "views.sklearn_view:SklearnView",
    "embedding": "views.embedding:EmbeddingView",
    "llm": "views.llm.view:LLMView",
    "vision": "views.vision.view:VisionView",
}


def import_object(path: str) -> Any:
    """Import ``pkg.mod:attr`` or ``pkg.mod.attr``; raise ImportError/AttributeError as-is."""
    if ":" in path:
        mod, _, attr = path.partition(":")
    else:
        mod, _, attr = path.rpartition(".")
        if not mod:
            raise ImportError(f"'{path}' is not a dotted path")
    obj: Any = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def resolve_kind(kind: str) -> type:
    """The class implementing ``kind``; ``ViewError`` when it cannot be found."""
    target = BUILTIN_KINDS.get(kind, kind)
    try:
        cls = import_object(target)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ViewError(kind, f"unknown view kind '{kind}' (built-in kinds: "
                        f"{', '.join(sorted(BUILTIN_KINDS))}; a plug-in is 'package.module:Class'): {exc}") from None
    if not isinstance(cls, type):
        raise ViewError(kind, f"view kind '{kind}' is not a class")
    return cls


def check_call(target: Any, what: str, *args: Any, **kwargs: Any) -> None:
    """Check that ``target(*args, **kwargs)`` would bind to its signature, without calling it
    (a dry run imports user code but never runs it). ``TypeError`` names the problem."""
    import inspect

    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{what}: {exc}") from None


def check_view(name: str, kind: str, params: dict[str, Any], context: ViewContext) -> type:
    """Import a view kind and check its parameters bind, without constructing it: what a
    dry run does for a plug-in kind, whose constructor is user code."""
    cls = resolve_kind(kind)
    try:
        check_call(cls, f"kind '{kind}'", name=name, context=context, **params)
    except TypeError as exc:
        raise ViewError(name, f"bad parameters for {exc}") from None
    return cls


def build_view(name: str, kind: str, params: dict[str, Any], context: ViewContext) -> View:
    cls = resolve_kind(kind)
    try:
        view = cls(name=name, context=context, **params)
    except TypeError as exc:
        raise ViewError(name, f"bad parameters for kind '{kind}': {exc}") from None
    for attr in ("resolve_fields", "fit", "predict_proba"):
        if not callable(getattr(view, attr, None)):
            raise ViewError(name, f"kind '{kind}' does not implement the View protocol (no {attr}())")
    return view
