"""Reading agents' answers and turning a debate's last round into a verdict: pure functions.

An answer is ``{"label": ..., "confidence": ..., "rationale": ...}``; anything else is an
abstention (label -1, confidence 0), which never counts as agreeing or as a vote.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from store.labels import ABSTAIN
from views.llm.scoring import json_answer, match_label


@dataclass(frozen=True)
class Vote:
    """One agent's answer in one debate round."""

    agent: str
    label: int          # index into the task's labels, or ABSTAIN
    confidence: float   # 0 for an abstention
    rationale: str = ""


def read_answer(text: str | None, verbalisers: Sequence[Sequence[str]]) -> tuple[int, float, str]:
    """(label, confidence, rationale) from an agent's JSON answer; (-1, 0, "") when unreadable.

    Small models often answer in prose instead: a text without JSON that names exactly one
    label counts as that label. A missing confidence counts as 0.5: the agent named a label
    without saying how sure it is. Text naming two labels, or JSON naming none, is unreadable."""
    if not text:
        return ABSTAIN, 0.0, ""
    if "{" not in text:  # a plain answer naming exactly one label ('The answer is: "positive".')
        named = {i for i, vs in enumerate(verbalisers) for v in vs
                 if re.search(rf"\b{re.escape(v.lower())}\b", text.lower())}
        return (named.pop(), 0.5, "") if len(named) == 1 else (ABSTAIN, 0.0, "")
    found = json_answer(text)
    if found is None:
        return ABSTAIN, 0.0, ""
    ans, raw = found
    idx = match_label(ans.label, verbalisers)
    if idx is None:
        return ABSTAIN, 0.0, ""
    return idx, float(ans.confidence if ans.confidence is not None else 0.5), str(raw.get("rationale") or "")[:500]


def consensus(votes: Sequence[Vote], min_confidence: float) -> bool:
    """Every agent answered, all with the same label, each at least ``min_confidence`` sure."""
    return bool(votes) and all(v.label != ABSTAIN and v.confidence >= min_confidence for v in votes) \
        and len({v.label for v in votes}) == 1


def majority(votes: Sequence[Vote], k: int) -> tuple[int, float]:
    """(label, share of all agents voting it); a tie or no vote gives (ABSTAIN, 0)."""
    counts = np.bincount([v.label for v in votes if v.label != ABSTAIN], minlength=k)
    if counts.sum() == 0:
        return ABSTAIN, 0.0
    top = np.flatnonzero(counts == counts.max())
    if len(top) > 1:
        return ABSTAIN, 0.0
    return int(top[0]), float(counts[top[0]] / len(votes))


def confidence_weighted(votes: Sequence[Vote], k: int) -> tuple[int, float]:
    """(label, its summed confidence / number of agents), as ReConcile's weighted vote; a tie
    or no vote gives (ABSTAIN, 0)."""
    mass = np.zeros(k)
    for v in votes:
        if v.label != ABSTAIN:
            mass[v.label] += v.confidence
    if mass.sum() <= 0:
        return ABSTAIN, 0.0
    top = np.flatnonzero(np.isclose(mass, mass.max()))
    if len(top) > 1:
        return ABSTAIN, 0.0
    return int(top[0]), float(mass[top[0]] / len(votes))
