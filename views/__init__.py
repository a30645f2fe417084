"""Model views: each reads some fields of an item and returns class probabilities.

Kinds: ``sklearn`` (any scikit-learn model over columns or text), ``embedding``
(sentence-transformers encoder + head), or a plug-in class by dotted path.
Never imports the orchestrator.
"""
from views.base import FeatureCache, View, ViewContext
from views.registry import BUILTIN_KINDS, build_view, resolve_kind

__all__ = ["BUILTIN_KINDS", "FeatureCache", "View", "ViewContext", "build_view", "resolve_kind"]
