"""The label model on synthetic views of known accuracy: it recovers each view's accuracy
within 0.05, its posterior beats majority vote, and a near-random view gets no weight."""
from __future__ import annotations

import numpy as np
import pytest

from orchestrator.labelmodel import accuracy_weights, dawid_skene, log_linear_pool
from store.labels import ABSTAIN


def synthetic_views(n: int, k: int, accuracies: list[float], abstain: float, seed: int, n_gold: int = 0):
    """Truth y, and views that say the truth with the given accuracy (else a uniform other
    class) and abstain at rate ``abstain``; plus ``n_gold`` revealed labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    labels = np.empty((n, len(accuracies)), dtype=np.int64)
    for j, acc in enumerate(accuracies):
        right = rng.random(n) < acc
        other = (y + rng.integers(1, k, n)) % k
        labels[:, j] = np.where(right, y, other)
        labels[rng.random(n) < abstain, j] = ABSTAIN
    gold = np.full(n, ABSTAIN)
    gold[:n_gold] = y[:n_gold]
    return y, labels, gold


@pytest.mark.parametrize("k,accs,abstain,n_gold", [
    (2, [0.9, 0.75, 0.6], 0.1, 0),
    (4, [0.85, 0.7, 0.55, 0.4], 0.2, 20),
    (10, [0.8, 0.65, 0.5, 0.3, 0.1], 0.3, 50),   # 0.1 is right at chance for 10 classes
])
def test_recovers_view_accuracies(k, accs, abstain, n_gold):
    y, labels, gold = synthetic_views(4000, k, accs, abstain, seed=k, n_gold=n_gold)
    fit = dawid_skene(labels, k, gold)
    assert fit.converged
    for j, acc in enumerate(accs):
        voted = labels[:, j] != ABSTAIN
        true_acc = float((labels[voted, j] == y[voted]).mean())
        assert abs(fit.accuracy[j] - true_acc) <= 0.05, (j, fit.accuracy[j], true_acc)
    # the posterior is at least as accurate as majority vote
    pred = fit.posterior.argmax(axis=1)
    votes = np.zeros((len(y), k))
    for j in range(len(accs)):
        ok = labels[:, j] != ABSTAIN
        votes[np.flatnonzero(ok), labels[ok, j]] += 1
    mv = votes.argmax(axis=1)
    unlabelled = gold == ABSTAIN
    assert (pred[unlabelled] == y[unlabelled]).mean() >= (mv[unlabelled] == y[unlabelled]).mean() - 0.005
    assert np.allclose(fit.posterior.sum(axis=1), 1.0)
    assert (fit.posterior[~unlabelled].argmax(axis=1) == y[~unlabelled]).all()   # gold is clamped


def test_posterior_is_calibrated_on_synthetic_views():
    y, labels, gold = synthetic_views(6000, 3, [0.85, 0.7, 0.6], 0.1, seed=7)
    post = dawid_skene(labels, 3, gold).posterior
    conf, pred = post.max(axis=1), post.argmax(axis=1)
    bins = np.clip((conf * 10).astype(int), 0, 9)
    ece = sum(abs((pred[bins == b] == y[bins == b]).mean() - conf[bins == b].mean()) * (bins == b).mean()
              for b in range(10) if (bins == b).any())
    assert ece < 0.05


def test_log_linear_pool():
    p = np.array([[[0.9, 0.1], [0.6, 0.4]], [[np.nan, np.nan], [0.2, 0.8]], [[np.nan, np.nan], [np.nan, np.nan]]])
    out = log_linear_pool(p)
    a = 0.9 * 0.6 / (0.9 * 0.6 + 0.1 * 0.4)
    assert np.allclose(out[0], [a, 1 - a]) and np.allclose(out[1], [0.2, 0.8]) and np.isnan(out[2]).all()
    assert np.allclose(log_linear_pool(p, np.array([1.0, 0.0]))[0], [0.9, 0.1])   # weight 0 ignores a view


def test_accuracy_weights():
    w = accuracy_weights(np.array([0.95, 0.5, 0.1, 0.05]), 10)
    assert w[0] > w[1] > 0 and w[2] == 0 and w[3] == 0   # at or below chance: no say
