"""Adapters giving views the store's protocols (``store.contracts``): a problem log and a
feature cache, each writing through the store's connection."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from store.database import Store, utcnow


class StoreProblems:
    """Adapter giving views the ``ProblemLog`` protocol: an item a view could not read
    (a missing or broken image) is filed once per run and view, with the file it names.

    Writes go through the store's connection, so inside a round they commit with it."""

    def __init__(self, store: Store, run_id: int) -> None:
        self._store = store
        self.run_id = run_id
        self.round: int | None = None

    def report(self, view: str, item_id: str, problem: str, location: str | None = None) -> None:
        self._store.con.execute(
            "INSERT INTO item_problems VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [self.run_id, view, item_id, problem, location, self.round, utcnow()])


class StoreCache:
    """Adapter giving views the ``FeatureCache`` protocol over a store namespace."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, namespace: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        return self._store.cache_get(namespace, keys)

    def put(self, namespace: str, keys: Sequence[str], vectors: np.ndarray) -> None:
        self._store.cache_put(namespace, keys, vectors)


__all__ = ["StoreCache", "StoreProblems"]
