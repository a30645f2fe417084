"""Resolve a view kind (built-in name or ``package.module:Class`` / dotted path) to a class,
and a kind to its parameter model.

A view class that declares ``Params`` (a pydantic model, see ``views.params``) is built as
``cls(name=..., context=..., params=<validated Params>)``; one that does not (a legacy
plug-in) as ``cls(name=..., context=..., **params)``. Either must satisfy ``views.base.View``.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from store.errors import ViewError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from views.base import View, ViewContext

BUILTIN_KINDS: dict[str, str] = {
    "sklearn": "views.sklearn_view:SklearnView",
    "embedding": "views.embedding:EmbeddingView",
    "llm": "views.llm.view:LLMView",
    "vision": "views.vision.view:VisionView",
    "graph": "views.graph:GraphView",
}
#: Each built-in kind's ``Params``, named here so that validating a config imports only the
#: light ``views.params`` and no model code; the class declares the same model (tested).
_BUILTIN_PARAMS: dict[str, str] = {
    "sklearn": "views.params:SklearnParams",
    "embedding": "views.params:EmbeddingParams",
    "llm": "views.params:LLMParams",
    "vision": "views.params:VisionParams",
    "graph": "views.params:GraphParams",
}


def import_object(path: str) -> Any:
    """Import ``pkg.mod:attr`` or ``pkg.mod.attr``; raise ImportError/AttributeError as-is."""
    if ":" in path:
        mod, _, attr = path.partition(":")
    else:
        mod, _, attr = path.rpartition(".")
        if not mod:
            raise ImportError(f"'{path}' is not a dotted path")
    if mod.startswith(".") or not all(part.isidentifier() for part in mod.split(".")):
        raise ImportError(f"'{path}' is not a dotted path of a module")  # '...' was a TypeError on a relative import
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


def declared_params(cls: type) -> type[BaseModel] | None:
    """The parameter model a view class declares as ``Params``, or None (a legacy plug-in)."""
    from pydantic import BaseModel

    model = getattr(cls, "Params", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def params_model(kind: str) -> type[BaseModel] | None:
    """The parameter model of a view kind: a built-in's from ``views.params`` (nothing else
    is imported), a plug-in's ``Params`` if its class declares one (the class is imported),
    else None: the plug-in's parameters are passed to its constructor unchecked."""
    if kind in _BUILTIN_PARAMS:
        return import_object(_BUILTIN_PARAMS[kind])
    return declared_params(resolve_kind(kind))


def check_view(name: str, kind: str, params: Mapping[str, Any], context: ViewContext) -> type:
    """Import a view kind and check its parameters, without constructing it: what a dry run
    does for a plug-in kind, whose constructor is user code. A declared ``Params`` model is
    checked by its keys only (unknown, missing), since its validators are user code too."""
    cls = resolve_kind(kind)
    model = declared_params(cls)
    try:
        if model is None:
            check_call(cls, f"kind '{kind}'", name=name, context=context, **params)
        else:
            fields = model.model_fields
            if model.model_config.get("extra") == "forbid":
                unknown = [k for k in params if k not in fields]
                if unknown:
                    raise TypeError(f"kind '{kind}': unknown parameter '{unknown[0]}'")
            missing = [k for k, f in fields.items() if f.is_required() and k not in params]
            if missing:
                raise TypeError(f"kind '{kind}': required parameter '{missing[0]}' is missing")
            check_call(cls, f"kind '{kind}'", name=name, context=context, params=None)
    except TypeError as exc:
        raise ViewError(name, f"bad parameters for {exc}") from None
    return cls


def build_view(name: str, kind: str, params: Mapping[str, Any] | BaseModel, context: ViewContext) -> View:
    """Build a view of ``kind``. ``params`` is the kind's validated ``Params`` (what a loaded
    config holds) or a mapping, validated here for a class that declares ``Params``
    (``ViewError`` naming the key) and passed as keyword arguments to one that does not."""
    from pydantic import BaseModel

    from views.base import validate_params

    cls = resolve_kind(kind)
    model = declared_params(cls)
    try:
        if model is not None:
            if not isinstance(params, model):
                raw = params.model_dump(exclude_unset=True) if isinstance(params, BaseModel) else params
                params = validate_params(model, raw, name)
            view = cls(name=name, context=context, params=params)
        else:
            raw = params.model_dump(exclude_unset=True) if isinstance(params, BaseModel) else dict(params)
            view = cls(name=name, context=context, **raw)
    except TypeError as exc:
        raise ViewError(name, f"bad parameters for kind '{kind}': {exc}") from None
    for attr in ("resolve_fields", "fit", "predict_proba"):
        if not callable(getattr(view, attr, None)):
            raise ViewError(name, f"kind '{kind}' does not implement the View protocol (no {attr}())")
    return view
