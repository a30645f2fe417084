"""Selection and consensus are pure functions: tested on synthetic label matrices."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from orchestrator.selection import (
    ABSTAIN,
    class_quota,
    ensemble_proba,
    find_disputes,
    label_matrix,
    merge_picks,
    pairwise_agreement,
    select_agreement,
    select_k_best,
    select_threshold,
)

NAN = np.nan


def test_label_matrix_marks_abstentions():
    probs = np.array([[[0.7, 0.3], [NAN, NAN]], [[0.1, 0.9], [0.5, 0.5]]])
    labels, conf = label_matrix(probs)
    assert labels.tolist() == [[0, ABSTAIN], [1, 0]]
    assert conf[0, 0] == pytest.approx(0.7) and np.isnan(conf[0, 1])


def test_threshold_is_strict_like_self_training_classifier():
    labels = np.array([[0], [1], [1]])
    conf = np.array([[0.9], [0.95], [NAN]])
    assert select_threshold(labels, conf, 0.9)[:, 0].tolist() == [False, True, False]


def test_threshold_empty_pool():
    picked = select_threshold(np.zeros((0, 3), dtype=int), np.zeros((0, 3)), 0.5)
    assert picked.shape == (0, 3)


def test_class_quota_follows_prior_with_one_each():
    assert class_quota(np.array([30, 10]), 4).tolist() == [3, 1]
    assert class_quota(np.array([98, 1, 1]), 10).tolist() == [10, 1, 1]
    assert class_quota(np.array([5, 0, 5]), 4).tolist() == [2, 0, 2]  # unseen class: no quota
    assert class_quota(np.array([0, 0]), 4).tolist() == [2, 2]  # no gold at all: uniform


def test_k_best_per_class_breaks_ties_by_item_order():
    labels = np.array([[0], [0], [0], [1], [1]])
    conf = np.array([[0.8], [0.9], [0.9], [0.6], [0.7]])
    picked = select_k_best(labels, conf, np.array([2, 1]))
    # class 0: the two 0.9s (tie kept in item order); class 1: the 0.7
    assert np.flatnonzero(picked[:, 0]).tolist() == [1, 2, 4]


def test_k_best_class_with_no_candidates_and_abstentions():
    labels = np.array([[0, ABSTAIN], [0, ABSTAIN]])
    conf = np.array([[0.6, NAN], [0.7, NAN]])
    picked = select_k_best(labels, conf, np.array([1, 3]))
    assert picked[:, 0].tolist() == [False, True]
    assert not picked[:, 1].any()


def test_k_best_empty_pool():
    assert select_k_best(np.zeros((0, 2), dtype=int), np.zeros((0, 2)), np.array([1, 1])).shape == (0, 2)


def test_agreement_requires_m_confident_views():
    labels = np.array([[1, 1, 0], [1, 1, 1], [2, 0, 2], [0, ABSTAIN, 0]])
    conf = np.array([[0.9, 0.95, 0.99], [0.9, 0.6, 0.9], [0.9, 0.9, 0.91], [0.99, NAN, 0.99]])
    picked = select_agreement(labels, conf, min_agree=2, threshold=0.8)
    assert picked.tolist() == [[True, True, False], [True, False, True], [True, False, True], [True, False, True]]


def test_disputes_need_two_confident_disagreeing_views():
    labels = np.array([[0, 1], [0, 1], [0, 0], [ABSTAIN, 1]])
    conf = np.array([[0.95, 0.95], [0.95, 0.6], [0.99, 0.99], [NAN, 0.99]])
    assert find_disputes(labels, conf, 0.9).tolist() == [True, False, False, False]


def test_merge_accepts_agreeing_picks_and_records_disputes():
    labels = np.array([[0, 0], [0, 1], [1, 1], [1, ABSTAIN]])
    conf = np.array([[0.95, 0.92], [0.99, 0.97], [0.5, 0.99], [0.97, NAN]])
    picked = select_threshold(labels, conf, 0.9)
    m = merge_picks(labels, conf, picked, dispute_threshold=0.9)
    assert m.item.tolist() == [0, 2, 3]
    assert m.label.tolist() == [0, 1, 1]
    assert m.confidence[0] == pytest.approx((0.95 + 0.92) / 2)
    assert m.sources.tolist() == [[True, True], [False, True], [True, False]]
    assert m.disputed.tolist() == [1]
    assert m.voices.tolist() == [[True, True]]  # both confident views took part in the dispute


def test_merge_blocks_pick_when_unpicked_view_is_confidently_against():
    # k_best picked view 0's item, but view 1 is confident of another label
    labels = np.array([[0, 1]])
    conf = np.array([[0.7, 0.95]])
    picked = np.array([[True, False]])
    m = merge_picks(labels, conf, picked, dispute_threshold=0.9)
    assert m.item.size == 0 and m.disputed.tolist() == [0]


def test_merge_on_empty_pool():
    m = merge_picks(np.zeros((0, 2), dtype=int), np.zeros((0, 2)), np.zeros((0, 2), dtype=bool), 0.9)
    assert m.item.size == 0 and m.disputed.size == 0 and m.sources.shape == (0, 2)


def test_ensemble_ignores_abstaining_views():
    probs = np.array([[[0.8, 0.2], [NAN, NAN]], [[NAN, NAN], [NAN, NAN]]])
    ens = ensemble_proba(probs)
    assert ens[0].tolist() == [0.8, 0.2]
    assert np.isnan(ens[1]).all()


def test_pairwise_agreement():
    labels = np.array([[0, 0, 1], [1, 1, ABSTAIN], [0, 1, 0]])
    agr = {(a, b): (n, r) for a, b, n, r in pairwise_agreement(labels)}
    assert agr[(0, 1)] == (3, pytest.approx(2 / 3))
    assert agr[(0, 2)] == (2, pytest.approx(0.5))


def _synthetic_views(n: int, accuracies: list[float], k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent views of known accuracy: each right with prob acc, confident either way."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, size=n)
    labels = np.empty((n, len(accuracies)), dtype=np.int64)
    for j, acc in enumerate(accuracies):
        right = rng.random(n) < acc
        wrong = (truth + rng.integers(1, k, size=n)) % k
        labels[:, j] = np.where(right, truth, wrong)
    conf = rng.uniform(0.85, 1.0, size=labels.shape)
    return truth, labels, conf


def test_agreement_of_independent_views_is_more_precise_than_one_view():
    truth, labels, conf = _synthetic_views(20_000, [0.7, 0.7, 0.7], k=3, seed=1)
    single = merge_picks(labels[:, :1], conf[:, :1], select_threshold(labels[:, :1], conf[:, :1], 0.8), 0.8)
    agree = merge_picks(labels, conf, select_agreement(labels, conf, 3, 0.8), dispute_threshold=1.0)
    p_single = (single.label == truth[single.item]).mean()
    p_agree = (agree.label == truth[agree.item]).mean()
    assert p_single == pytest.approx(0.7, abs=0.02)
    # three independent views at 0.7 that all agree are right with prob 0.343/(0.343+2*0.3^3/4)
    assert p_agree == pytest.approx(0.343 / (0.343 + 0.027 / 4), abs=0.02)


def test_consensus_veto_drops_picks_the_ensemble_disagrees_with():
    labels = np.array([[0, 1], [1, 1], [0, 0]])
    conf = np.array([[0.95, 0.6], [0.99, 0.7], [0.97, 0.5]])
    picked = select_threshold(labels, conf, 0.9)
    consensus = np.array([1, 1, 0])  # e.g. the ensemble's labels
    m = merge_picks(labels, conf, picked, dispute_threshold=0.9, consensus=consensus)
    assert m.item.tolist() == [1, 2]
    assert m.disputed.size == 0  # a vetoed item is not a dispute: it stays in the pool


def test_masked_lists_matches_python_loop():
    from store.writers import masked_lists as _masked_lists

    rng = np.random.default_rng(0)
    mask = rng.random((50, 4)) < 0.4
    names = np.array(["a", "b", "c", "d"], dtype=object)
    vals = rng.random((50, 4)).astype(np.float32)
    assert _masked_lists(mask, names, pa.string()).to_pylist() == \
        [list(names[m]) for m in mask]
    got = _masked_lists(mask, vals, pa.float32()).to_pylist()
    assert got == [vals[i][m].tolist() for i, m in enumerate(mask)]
