"""The run's label state in memory: which items are gold, pseudo-labelled (and by which
views), debated, reviewed or still in the pool, and each view's training set.

One object per run, loaded from the store when a run starts or resumes and updated as each
round commits; it holds arrays only (ids stay one Arrow string array), so a 10M-item pool
costs a few bytes per item.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from orchestrator.selection import feeding_masks, training_weights
from store.database import Store
from store.errors import RunError
from store.queries import accepted_pseudo_labels, item_labels


@dataclass
class LabelState:
    """Gold, accepted pseudo-labels and who made them, by item position (= data row)."""

    item_id: pa.Array          # (n,) string
    row_idx: np.ndarray        # (n,) int64 data-snapshot row of each item
    is_test: np.ndarray        # (n,) bool
    gold: np.ndarray           # (n,) int16, -1 unlabelled (a reviewer's label counts as gold)
    pseudo: np.ndarray         # (n,) int16, -1 none
    pseudo_conf: np.ndarray    # (n,) float32
    sources: np.ndarray        # (n, V) bool: the views whose picks made the pseudo-label
    shared: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))    # debate verdicts
    reviewed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # gold from a reviewer

    @classmethod
    def load(cls, store: Store, run_id: int, labels: list[str], view_names: list[str]) -> LabelState:
        """Read the run's items and accepted pseudo-labels (columnar: no Python object per item)."""
        t = item_labels(store, run_id, labels)
        row_idx = t.column("row_idx").to_numpy()
        if len(row_idx) and row_idx[-1] != len(row_idx) - 1:
            raise RunError(f"run {run_id}: items do not cover the data snapshot row by row")
        n, v = len(row_idx), len(view_names)
        st = cls(item_id=t.column("item_id").combine_chunks(), row_idx=row_idx,
                 is_test=t.column("is_test").to_numpy(zero_copy_only=False).astype(bool),
                 gold=t.column("gold").to_numpy().astype(np.int16), pseudo=np.full(n, -1, dtype=np.int16),
                 pseudo_conf=np.zeros(n, dtype=np.float32), sources=np.zeros((n, v), dtype=bool),
                 shared=np.zeros(n, dtype=bool),
                 reviewed=t.column("reviewed").to_numpy(zero_copy_only=False).astype(bool))
        p = accepted_pseudo_labels(store, run_id, labels)
        if p.num_rows:
            pos = p.column("row_idx").to_numpy()
            st.pseudo[pos] = p.column("label").to_numpy()
            st.pseudo_conf[pos] = p.column("confidence").to_numpy()
            st.shared[pos] = p.column("shared").to_numpy(zero_copy_only=False)
            vpos = {name: j for j, name in enumerate(view_names)}
            for i, srcs in zip(pos, p.column("source_views").to_pylist()):
                for s in srcs:
                    if s in vpos:
                        st.sources[i, vpos[s]] = True
        return st

    # ------------------------------------------------------------------ reading
    def ids(self, pos: np.ndarray) -> pa.Array:
        """Item ids at positions ``pos``."""
        return self.item_id.take(pa.array(np.asarray(pos, dtype=np.int64)))

    @property
    def test_pos(self) -> np.ndarray:
        """Positions of the held-out items."""
        return np.flatnonzero(self.is_test)

    @property
    def test_y(self) -> np.ndarray:
        return self.gold[self.is_test]

    @property
    def n_gold(self) -> int:
        return int(((self.gold >= 0) & ~self.is_test).sum())

    @property
    def n_pseudo(self) -> int:
        return int((self.pseudo >= 0).sum())

    def gold_prior(self, k: int) -> np.ndarray:
        """Gold label counts per class among the training items (``k_best`` splits its picks
        by them; the held-out items' labels never enter a decision)."""
        return np.bincount(self.gold[(self.gold >= 0) & ~self.is_test], minlength=k)

    def pool(self) -> np.ndarray:
        """Positions of unlabelled training items without an accepted pseudo-label."""
        return np.flatnonzero(~self.is_test & (self.gold < 0) & (self.pseudo < 0))

    def training_sets(self, c: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """Positions, labels and weights of every item some view trains on (in data order, as
        scikit-learn's SelfTrainingClassifier sees them), and each view's mask over them
        (``selection.feeding_masks``)."""
        pos = np.flatnonzero(~self.is_test & ((self.gold >= 0) | (self.pseudo >= 0)))
        is_gold = self.gold[pos] >= 0
        y = np.where(is_gold, self.gold[pos], self.pseudo[pos])
        w = training_weights(y, is_gold, self.pseudo_conf[pos], c.pseudo_weight, bool(c.align_pseudo_labels))
        masks = feeding_masks(is_gold, self.sources[pos], self.shared[pos], policy=c.policy, feeding=c.feeding)
        return pos, y, w, masks

    def label_sources(self, pos: np.ndarray) -> pd.Categorical:
        """Where the training labels at positions ``pos`` came from: ``review``, ``gold`` or
        ``pseudo`` (views' picks and debate verdicts)."""
        pos = np.asarray(pos, dtype=np.int64)
        codes = np.where(self.reviewed[pos], 2, np.where(self.gold[pos] >= 0, 0, 1)).astype(np.int8)
        return pd.Categorical.from_codes(codes, categories=["gold", "pseudo", "review"])  # no str per item

    # ------------------------------------------------------------------ updating
    def accept(self, pos: np.ndarray, label: np.ndarray, conf: np.ndarray, sources: np.ndarray) -> None:
        """Accept views' picks (after their round committed)."""
        self.pseudo[pos] = label
        self.pseudo_conf[pos] = conf
        self.sources[pos] = sources

    def accept_shared(self, pos: np.ndarray, label: np.ndarray, conf: np.ndarray) -> None:
        """Accept labels that no view picked (debate verdicts): every view trains on them."""
        self.pseudo[pos] = label
        self.pseudo_conf[pos] = conf
        self.shared[pos] = True


#: Pseudo-labelled items the cross-validation fits keep at most (all gold items stay).
CROSSFIT_MAX_PSEUDO = 20_000


def crossfit_rows(gold_rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Which of the ``n`` training rows the cross-validation fits use: every gold row and at
    most :data:`CROSSFIT_MAX_PSEUDO` of the others (a random subset), so estimating
    accuracy costs a bounded number of fits however large the pseudo-labelled set grows."""
    keep = np.zeros(n, dtype=bool)
    keep[gold_rows] = True
    rest = np.flatnonzero(~keep)
    if rest.size > CROSSFIT_MAX_PSEUDO:
        rest = rng.choice(rest, CROSSFIT_MAX_PSEUDO, replace=False)
    keep[rest] = True
    return keep


__all__ = ["CROSSFIT_MAX_PSEUDO", "LabelState", "crossfit_rows"]
