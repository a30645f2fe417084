"""The label matrix's conventions, shared by every package: a view's vote on an item is a
class index into the task's labels, or ``ABSTAIN``.

It lives in ``store`` (the lowest layer) so views, agents, the orchestrator and the store's
writers all read the one definition.
"""
from __future__ import annotations

#: The class index of a view (or agent) that gives no label for an item.
ABSTAIN = -1

__all__ = ["ABSTAIN"]
