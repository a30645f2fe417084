"""From LLM answers to class probabilities: pure functions over tokens, texts and arrays.

Two ways, as the endpoint allows:

* label-word scoring: the probability mass of the first answer token, summed over each
  label's verbalisers (several per label allowed) and renormalised over the labels;
* sampled answers: k structured answers (``{"label": ..., "confidence": ...}``) turned into
  a vote share (self-consistency).

Whatever cannot be read as one of the task's labels is an abstention (``None``), never a
label. Calibration (a per-class bias and/or a temperature on log-probabilities, fitted by
weighted log-loss on labelled items) corrects an LLM's skew towards one label word.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from store.errors import ViewError

_JSON_OBJ = re.compile(r"\{.*?\}", re.DOTALL)
_WORD = re.compile(r"[\w'-]+", re.UNICODE)


def normalise(text: str) -> str:
    return " ".join(text.strip().lower().split())


def token_matches(token: str, verbaliser: str) -> bool:
    """A first answer token counts for a verbaliser when it is a prefix of it (" Pos" for
    "positive"); one- letter tokens only count for one-letter verbalisers ("A", "B")."""
    t = normalise(token).strip("\"'`*:.,")
    v = normalise(verbaliser)
    return bool(t) and v.startswith(t) and (len(t) >= 2 or len(v) == 1)


def label_word_probs(top_logprobs: Sequence[tuple[str, float]],
                     verbalisers: Sequence[Sequence[str]]) -> np.ndarray | None:
    """Class probabilities from the top log-probabilities of the first answer token.

    A token that matches verbalisers of more than one label is ambiguous and ignored.
    Returns None (abstain) when no top token matches any label.
    """
    k = len(verbalisers)
    mass = np.zeros(k)
    for token, lp in top_logprobs:
        if lp is None or not math.isfinite(lp):
            continue
        hits = [i for i, vs in enumerate(verbalisers) if any(token_matches(token, v) for v in vs)]
        if len(hits) == 1:
            mass[hits[0]] += math.exp(lp)
    total = mass.sum()
    if total <= 0:
        return None
    return mass / total


class Answer(BaseModel):
    """The structured answer asked of the model in sampling mode."""

    model_config = ConfigDict(extra="ignore")

    label: str = Field(min_length=1)
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)

    @field_validator("confidence", mode="before")
    @classmethod
    def _percent(cls, v: object) -> object:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 1.0 < v <= 100.0:
            # "confidence": 85 means 85 %; 7 means 7 out of 10 (an answer naming its label is
            # hardly 7 % sure of it); 10 is read as 10 out of 10, 10.5 as a percentage
            return v / 10.0 if v <= 10.0 else v / 100.0
        return v


def match_label(text: str, verbalisers: Sequence[Sequence[str]]) -> int | None:
    """The label whose verbaliser ``text`` is (exactly, ignoring case and punctuation)."""
    t = normalise(text).strip("\"'`*:.,!")
    hits = {i for i, vs in enumerate(verbalisers) for v in vs if normalise(v) == t}
    return hits.pop() if len(hits) == 1 else None


def json_answer(text: str) -> tuple[Answer, dict[str, Any]] | None:
    """The first JSON object in ``text`` that is a valid :class:`Answer`, with its raw
    fields (callers read extra ones, such as a debater's ``rationale``)."""
    for m in _JSON_OBJ.finditer(text):
        try:
            raw = json.loads(m.group(0))
            return Answer.model_validate(raw), raw
        except (json.JSONDecodeError, ValidationError, TypeError):
            continue
    return None


def parse_answer(text: str | None, verbalisers: Sequence[Sequence[str]]) -> tuple[int, float | None] | None:
    """(label index, stated confidence) from a model's answer, or None when unreadable.

    Accepts a JSON object with ``label`` (and optional ``confidence``) anywhere in the text,
    or a bare answer that is exactly one label's verbaliser, or whose first word is. Anything
    else, including JSON naming an unknown label, is None.
    """
    if not text or not text.strip():
        return None
    found = json_answer(text)
    if found is not None:
        idx = match_label(found[0].label, verbalisers)
        return (idx, found[0].confidence) if idx is not None else None
    if "{" in text:  # tried to answer in JSON and failed: do not guess from fragments
        return None
    idx = match_label(text, verbalisers)
    if idx is None:
        words = _WORD.findall(text)
        idx = match_label(words[0], verbalisers) if words else None
    return (idx, None) if idx is not None else None


def vote_probs(answers: Sequence[tuple[int, float | None] | None], k: int) -> np.ndarray | None:
    """Vote share over the readable answers; a single answer's stated confidence is used as
    its probability (the rest spread evenly). None when no answer is readable."""
    votes = [a for a in answers if a is not None]
    if not votes:
        return None
    if len(answers) == 1 and votes[0][1] is not None and k > 1:
        idx, conf = votes[0]
        p = np.full(k, (1.0 - conf) / (k - 1))
        p[idx] = conf
        return p / p.sum()
    counts = np.bincount([v[0] for v in votes], minlength=k).astype(float)
    return counts / counts.sum()


def read_answers(answers: Sequence[Sequence[Any]], mode: str, verbalisers: Sequence[Sequence[str]],
                 k: int) -> tuple[np.ndarray, int, str]:
    """(n, k) probabilities from each item's completions (NaN rows: abstain), with how many
    items were answered without naming a label, and the first such answer (cut to 80
    characters). ``mode``: ``logprobs`` (one completion an item) or ``sample`` (votes)."""
    out = np.full((len(answers), k), np.nan)
    unread, example = 0, ""
    for i, got in enumerate(answers):
        if mode == "logprobs":
            c = got[0]
            p = label_word_probs(c.top_logprobs[0], verbalisers) if c.ok and c.top_logprobs else None
        else:
            p = vote_probs([parse_answer(c.content, verbalisers) if c.ok else None for c in got], k)
        if p is not None:
            out[i] = p
        elif all(c.ok for c in got):
            unread += 1
            example = example or " ".join(str(got[0].content or "").split())[:80]
    return out, unread, example


# ---------------------------------------------------------------------- calibration
def apply_calibration(proba: np.ndarray, bias: np.ndarray | None, temperature: float = 1.0) -> np.ndarray:
    """softmax(log p / T + b) row-wise; NaN rows (abstentions) stay NaN."""
    if bias is None and temperature == 1.0:
        return proba
    out = np.full_like(proba, np.nan, dtype=np.float64)
    ok = ~np.isnan(proba).any(axis=1)
    if ok.any():
        z = np.log(np.clip(proba[ok], 1e-12, 1.0)) / temperature
        if bias is not None:
            z = z + bias
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        out[ok] = e / e.sum(axis=1, keepdims=True)
    return out


def fit_calibration(proba: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None, *,
                    bias: bool = True, temperature: bool = False, l2: float = 1e-2) -> tuple[np.ndarray, float]:
    """Fit a per-class bias and/or a temperature minimising weighted log-loss (+ a small L2
    on the bias). Rows with NaN (abstentions) are skipped. Returns (bias, temperature)."""
    from scipy.optimize import minimize

    proba = np.asarray(proba, dtype=np.float64)
    k = proba.shape[1]
    ok = ~np.isnan(proba).any(axis=1)
    logp = np.log(np.clip(proba[ok], 1e-12, 1.0))
    yy = np.asarray(y)[ok].astype(int)
    w = (np.ones(len(yy)) if weight is None else np.asarray(weight, dtype=np.float64)[ok])
    if len(yy) == 0:
        return np.zeros(k), 1.0
    w = w / w.sum()

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, float]:
        b = theta[:k] if bias else np.zeros(k)
        t = float(np.exp(theta[-1])) if temperature else 1.0
        return b, t

    def loss(theta: np.ndarray) -> float:
        b, t = unpack(theta)
        z = logp / t + b
        z = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        nll = -(w * (z[np.arange(len(yy)), yy] - lse)).sum()
        return float(nll + l2 * (b ** 2).sum())

    theta0 = np.zeros((k if bias else 0) + (1 if temperature else 0))
    if theta0.size == 0:
        return np.zeros(k), 1.0
    res = minimize(loss, theta0, method="L-BFGS-B")
    b, t = unpack(res.x)
    return b - b.mean(), t


def check_batch(view: str, per_item: Sequence[Sequence[Any]], mode: str, explicit: bool,
                endpoint_errors: Sequence[str]) -> None:
    """``ViewError`` for a batch the view cannot read at all, where the run went on as if the
    view had no opinion and ended "finished". ``per_item``: each item's completions.

    * Every item's every request failed with an error of the endpoint itself
      (``endpoint_errors``: connection, timeout, 429, 5xx names): it is down or refuses them
      all; the round stops, failed and resumable, and answers already given are not asked
      again. An item's own refusal (a prompt too long, a content filter) still abstains.
    * ``explicit`` (``scoring: logprobs`` was asked for) and no answer carried log-probabilities
      (the warning blamed the answers for naming no label). Under ``auto`` the view finds out."""
    flat = [c for comps in per_item for c in comps]
    down = [c for c in flat if c.status == "error" and str(c.error).split(":")[0] in endpoint_errors]
    if len(per_item) >= 2 and flat and len(down) == len(flat):
        raise ViewError(view, f"all {len(flat)} requests of a batch failed (e.g. {down[0].error}): the endpoint "
                        "looks down or refuses them; the round stops, what was committed is kept, and running again "
                        "resumes (answers already given are not asked again)")
    answered = [c for c in flat if c.ok]
    if explicit and mode == "logprobs" and len(answered) >= 2 and not any(c.top_logprobs for c in answered):
        raise ViewError(view, f"the endpoint returned no log-probabilities with any of {len(answered)} answers, "
                        "which scoring: logprobs reads; set scoring: sample (or auto, which finds out)")
