"""What a round files in the store, from the orchestrator's arrays: selections, metrics,
held-out predictions and the round's estimates. Each function hands one writer call its
columns; the round's transaction is the caller's."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from orchestrator import steps
from orchestrator.evidence import RoundEvidence
from orchestrator.selection import AdaptiveSelection, Merged, label_matrix
from orchestrator.state import LabelState
from store.writers import RoundWriter
from views.base import View


def selection(write: RoundWriter, state: LabelState, pool: np.ndarray, merged: Merged, pred: steps.PoolPrediction,
              policy: str) -> None:
    """Accepted picks (with who made them and p_correct) and disputes."""
    if merged.item.size:
        write.view_picks(state.ids(pool[merged.item]), merged.label, merged.confidence, policy, merged.sources,
                         merged.p_correct)
    if merged.disputed.size:
        d = merged.disputed
        write.disputes(state.ids(pool[d]), merged.voices, pred.labels[d], pred.conf[d])


def metrics(write: RoundWriter, views: Sequence[View], fit: steps.FitResult, ev: steps.Evaluation,
            pred: steps.PoolPrediction, merged: Merged | None, added: int) -> None:
    """Per view and for the ensemble: training size, labels added, held-out scores, timings."""
    rows = []
    for j, v in enumerate(views):
        acc, f1 = ev.scores[v.name]
        rows.append({"view": v.name, "n_train": fit.n_train[v.name],
                     "labels_added": 0 if merged is None else int(merged.sources[:, j].sum()),
                     "test_accuracy": acc, "test_macro_f1": f1,
                     "pool_agreement": steps.agreement_with_ensemble(pred, j),
                     "seconds_fit": fit.seconds[v.name], "seconds_predict": pred.seconds.get(v.name, 0.0)})
    acc, f1 = ev.scores["ensemble"]
    rows.append({"view": "ensemble", "labels_added": added, "test_accuracy": acc, "test_macro_f1": f1})
    write.metrics(rows)


def test_predictions(write: RoundWriter, state: LabelState, views: Sequence[View], test_probs: np.ndarray,
                     combine: Callable[[np.ndarray], np.ndarray]) -> None:
    """Each view's and the ensemble's (the round's combination) label on every held-out item."""
    ids = state.ids(state.test_pos)
    blocks = [(v.name, test_probs[:, j]) for j, v in enumerate(views)] + [("ensemble", combine(test_probs))]
    for name, probs in blocks:
        lab, conf = label_matrix(probs[:, None, :])
        write.test_predictions(ids, name, lab[:, 0], conf[:, 0])


def estimates(write: RoundWriter, views: Sequence[View], state: LabelState, evidence: RoundEvidence,
              merged: Merged | None, adaptive: AdaptiveSelection | None, oof_y: np.ndarray) -> None:
    """The round's combination, calibration, per-class selection and estimated precision,
    and each view's estimated accuracy and weight."""
    comb, cal = evidence.combination, evidence.calibrator
    n_new = 0 if merged is None else int(merged.item.size)
    p = merged.p_correct if merged is not None and merged.p_correct is not None else np.zeros(0)
    unlabelled = int((~state.is_test & (state.gold < 0)).sum())
    row = {"combination": comb.method, "n_calibration": int(len(oof_y)), "calibration_accuracy": cal.accuracy,
           "n_candidates": int(len(evidence.posterior)), "n_selected": n_new,
           "est_precision": float(np.mean(p)) if p.size else None,
           "coverage": (state.n_pseudo + n_new) / unlabelled if unlabelled else None}
    if adaptive is not None:
        row.update(class_bars=[float(x) for x in adaptive.bars], class_quota=[int(x) for x in adaptive.quota],
                   class_selected=[int(x) for x in adaptive.selected], stopped=adaptive.stopped)
    cv, lm = comb.cv_accuracy, comb.label_model_accuracy
    per_view = [{"view": v.name, "weight": float(comb.weights[j]),
                 "cv_accuracy": None if cv is None or np.isnan(cv[j]) else float(cv[j]),
                 "label_model_accuracy": None if lm is None else float(lm[j])} for j, v in enumerate(views)]
    write.estimates(row, per_view)


__all__ = ["estimates", "metrics", "selection", "test_predictions"]
