"""Choosing few-shot demonstrations from the labelled and pseudo-labelled set: pure
functions over label arrays and vectors, so they are tested without any model.

* ``balanced``: one class-balanced random draw per round, shared by every item of the
  round (the shared prefix also lets llama.cpp reuse its prompt cache);
* ``knn``: each item's nearest labelled neighbours by cosine similarity of encoder vectors.

Both respect a token budget: demonstrations are added nearest (or first drawn) first while
they fit it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def balanced_draw(y: np.ndarray, k: int, rng: np.random.Generator, n_classes: int) -> np.ndarray:
    """Indices of up to ``k`` examples, as even across classes as the data allow, classes
    interleaved (a, b, c, a, b, c, ...) so no label sits last by construction."""
    y = np.asarray(y, dtype=int)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in range(n_classes)]
    order = rng.permutation(n_classes)
    out: list[int] = []
    depth = 0
    while len(out) < k and any(depth < len(p) for p in per_class):
        for c in order:
            if depth < len(per_class[c]) and len(out) < k:
                out.append(int(per_class[c][depth]))
        depth += 1
    return np.asarray(out, dtype=np.int64)


def nearest(query: np.ndarray, pool: np.ndarray, k: int, exclude: np.ndarray | None = None,
            chunk: int = 4096) -> np.ndarray:
    """(n_query, k) indices into ``pool`` of the most similar rows, most similar first
    (-1 pads when the pool is smaller than k). ``exclude[i, j]`` True forbids pool row j for
    query i (an item never demonstrates itself); pass it as a (n_query,) array of pool
    indices (-1: none)."""
    n, m = len(query), len(pool)
    out = np.full((n, k), -1, dtype=np.int64)
    if m == 0 or k == 0:
        return out
    qn = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
    pn = pool / np.maximum(np.linalg.norm(pool, axis=1, keepdims=True), 1e-12)
    kk = min(k, m)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        sim = qn[lo:hi] @ pn.T
        if exclude is not None:
            ex = exclude[lo:hi]
            rows = np.flatnonzero(ex >= 0)
            sim[rows, ex[rows]] = -np.inf
        top = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        valid = np.isfinite(np.take_along_axis(sim, top, axis=1))
        out[lo:hi, :kk] = np.where(valid, top, -1)
    return out


def within_budget(candidates: Sequence[int], cost: Sequence[int], max_tokens: int) -> list[int]:
    """Candidates in order, each kept while the summed token ``cost`` still fits
    ``max_tokens`` (one that would overrun it is skipped; a shorter later one may fit)."""
    out: list[int] = []
    used = 0
    for c in candidates:
        if c < 0:
            continue
        if used + cost[c] <= max_tokens:
            out.append(int(c))
            used += cost[c]
    return out
