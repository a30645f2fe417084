"""Cotrain settings a config sets that its policy never reads.

Most ``cotrain`` keys apply to every run, but a few belong to one policy or one ranking:
``k`` to ``k_best``, ``min_agree`` to ``agreement``, ``veto`` to the explicit policies that
have peers to veto them, ``feeding`` to every policy but ``self``, ``min_precision`` to
``auto`` (and to shadow runs' picks and an escalation's acceptance), ``cut_view`` and
``cut_neighbors`` to ``select: cut_statistic``. Set under another policy,
such a key is ignored: a user who writes ``k: 50`` under the default policy to get more
labels a round gets the same run, and nothing said so. Not an error: the key is harmless,
and a config kept from a release whose default policy was ``k_best`` still runs.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from orchestrator.config import Config

log = logging.getLogger("cotrain")

#: key -> (who reads it, whether this config's run reads it)
_READERS: dict[str, tuple[str, Callable[[Config], bool]]] = {
    "k": ("policy 'k_best'", lambda cfg: cfg.cotrain.policy == "k_best"),
    "min_agree": ("policy 'agreement'", lambda cfg: cfg.cotrain.policy == "agreement"),
    "veto": ("policies 'threshold', 'k_best' and 'agreement'",
             lambda cfg: cfg.cotrain.policy in ("threshold", "k_best", "agreement")),
    "min_precision": ("policy 'auto', shadow runs and an enabled 'escalate' section",
                      lambda cfg: cfg.cotrain.policy == "auto" or cfg.cotrain.shadows is True
                      or (cfg.escalate is not None and cfg.escalate.enabled)),
    "feeding": ("policies other than 'self' (each view trains on its own picks)",
                lambda cfg: cfg.cotrain.policy != "self"),
    "cut_view": ("select 'cut_statistic'", lambda cfg: cfg.cotrain.select == "cut_statistic"),
    "cut_neighbors": ("select 'cut_statistic'", lambda cfg: cfg.cotrain.select == "cut_statistic"),
}


def unread_settings(cfg: Config) -> list[str]:
    """One line per ``cotrain`` key the config sets explicitly that this run never reads,
    naming the key, the policy in force and what reads it (config order)."""
    c = cfg.cotrain
    return [f"cotrain.{key} is read only by {_READERS[key][0]}; this run (policy '{c.policy}', select "
            f"'{c.select}') ignores it"
            for key in type(c).model_fields if key in c.model_fields_set and key in _READERS
            and not _READERS[key][1](cfg)]


def warn_unread_settings(cfg: Config) -> None:
    """Log each of :func:`unread_settings` as a warning (a run's start says it once)."""
    for line in unread_settings(cfg):
        log.warning("%s", line)


__all__ = ["unread_settings", "warn_unread_settings"]
