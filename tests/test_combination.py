"""Combining views' probabilities: each method on hand-made arrays, weights from out-of-fold
accuracy (chance gets 0, the best view 1), and ``auto`` on synthetic views of known accuracy
choosing a combination at least as good as majority vote that ignores a view at chance."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.combination import Combination, fit_combination, view_accuracy, view_weights, weighted_mean
from orchestrator.selection import label_matrix
from store.labels import ABSTAIN

NAN2 = [np.nan, np.nan]


def synthetic_probs(n: int, k: int, accuracies: list[float], seed: int, abstain: float = 0.0):
    """Truth y and (n, V, K) probabilities of views that vote the truth with the given
    accuracy (else a uniform other class), putting a random top probability on their vote
    (0.5-0.95 for a view above chance, an overconfident 0.7-0.99 for one at chance); rows
    where a view abstains are NaN."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    probs = np.empty((n, len(accuracies), k))
    for j, acc in enumerate(accuracies):
        vote = np.where(rng.random(n) < acc, y, (y + rng.integers(1, k, n)) % k)
        top = rng.uniform(0.5, 0.95, n) if acc > 1.0 / k + 1e-9 else rng.uniform(0.7, 0.99, n)
        p = np.repeat(((1 - top) / (k - 1))[:, None], k, axis=1)
        p[np.arange(n), vote] = top
        p[rng.random(n) < abstain] = np.nan
        probs[:, j] = p
    return y, probs


def majority_vote_accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the plain vote count (ties to the lowest class, all-abstain wrong)."""
    votes = label_matrix(probs)[0]
    k = probs.shape[2]
    counts = np.zeros((len(y), k))
    for j in range(votes.shape[1]):
        ok = votes[:, j] != ABSTAIN
        counts[np.flatnonzero(ok), votes[ok, j]] += 1
    return float(((counts.argmax(axis=1) == y) & (counts.sum(axis=1) > 0)).mean())


# ---------------------------------------------------------------------- Combination.combine
def test_product_by_hand_with_abstentions():
    p = np.array([[[0.9, 0.1], [0.6, 0.4]],
                  [NAN2, [0.2, 0.8]],
                  [NAN2, NAN2]])
    out = Combination("product", np.ones(2)).combine(p)
    a = 0.9 * 0.6 / (0.9 * 0.6 + 0.1 * 0.4)
    assert np.allclose(out[0], [a, 1 - a])
    assert np.allclose(out[1], [0.2, 0.8])              # an abstaining view is left out
    assert np.isnan(out[2]).all()                        # nobody voted
    # weights are exponents: 0.5 on the second view
    out = Combination("product", np.array([1.0, 0.5])).combine(p[:1])
    b = 0.9 * 0.6 ** 0.5 / (0.9 * 0.6 ** 0.5 + 0.1 * 0.4 ** 0.5)
    assert np.allclose(out[0], [b, 1 - b])


def test_near_uniform_view_barely_moves_the_product():
    sure = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1]])
    flat = np.full((2, 3), 1 / 3) + np.array([[0.01, -0.005, -0.005], [-0.01, 0.0, 0.01]])
    both = Combination("product", np.ones(2)).combine(np.stack([sure, flat], axis=1))
    assert np.abs(both - sure).max() < 0.02
    assert (both.argmax(axis=1) == sure.argmax(axis=1)).all()


@pytest.mark.parametrize("method", ["product", "mean"])
def test_weight_zero_ignores_a_view(method):
    good = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    bad = np.array([[0.01, 0.99], [0.99, 0.01], [0.05, 0.95]])
    out = Combination(method, np.array([1.0, 0.0])).combine(np.stack([good, bad], axis=1))
    assert np.allclose(out, good, atol=1e-6)
    # a zero-weight view alone on an item: the mean has nothing left, the product is flat
    lone = np.stack([np.full((1, 2), np.nan), bad[:1]], axis=1)
    got = Combination(method, np.array([1.0, 0.0])).combine(lone)
    assert np.isnan(got).all() if method == "mean" else np.allclose(got, 0.5)


def test_mean_by_hand_with_abstentions():
    p = np.array([[[0.9, 0.1], [0.5, 0.5]],
                  [NAN2, [0.2, 0.8]],
                  [NAN2, NAN2]])
    out = Combination("mean", np.array([1.0, 0.25])).combine(p)
    assert np.allclose(out[0], [(0.9 + 0.25 * 0.5) / 1.25, (0.1 + 0.25 * 0.5) / 1.25])
    assert np.allclose(out[1], [0.2, 0.8])
    assert np.isnan(out[2]).all()
    assert np.allclose(weighted_mean(p[:2], np.ones(2)), [[0.7, 0.3], [0.2, 0.8]])


def test_single_is_the_view_itself():
    p = np.array([[[0.7, 0.2, 0.1]], [[np.nan] * 3], [[0.1, 0.1, 0.8]]])
    out = Combination("single", np.ones(1)).combine(p)
    assert np.allclose(out[[0, 2]], p[[0, 2], 0], atol=1e-6) and np.isnan(out[1]).all()


def test_label_model_by_hand():
    # two classes, three views; view 0 right 90%, views 1 and 2 right 60%; uniform prior
    confusion = np.array([[[0.9, 0.1], [0.1, 0.9]], [[0.6, 0.4], [0.4, 0.6]], [[0.6, 0.4], [0.4, 0.6]]])
    prior = np.array([0.5, 0.5])
    comb = Combination("label_model", np.ones(3), confusion, prior)
    hot = np.eye(2)
    p = np.stack([np.stack([hot[0], hot[1], hot[1]]),       # strong view against two weak ones
                  np.stack([[np.nan] * 2, hot[1], hot[1]]),   # strong view abstains
                  np.full((3, 2), np.nan)])                   # nobody votes
    out = comb.combine(p)
    l0, l1 = 0.9 * 0.4 * 0.4, 0.1 * 0.6 * 0.6
    assert np.allclose(out[0], [l0 / (l0 + l1), l1 / (l0 + l1)])
    assert np.allclose(out[1], [0.16 / 0.52, 0.36 / 0.52])
    assert np.isnan(out[2]).all()
    # it reads votes, not probabilities: a 0.55 vote counts as much as a 1.0 one
    soft = p.copy()
    soft[0, 0] = [0.55, 0.45]
    assert np.allclose(comb.combine(soft[:1]), out[:1])


# ---------------------------------------------------------------------- view_weights
def test_view_weights():
    w = view_weights(np.array([0.9, 0.25, 0.6, 0.1]), 4, 4)
    assert w[0] == pytest.approx(1.0) and w[1] == 0.0 and w[3] == 0.0     # chance and below: no say
    assert 0 < w[2] < 1
    assert view_weights(np.array([0.6, 0.9]), 2, 4).tolist() == pytest.approx([w[2], 1.0])
    assert np.array_equal(view_weights(None, 3, 4), np.ones(3))
    assert np.array_equal(view_weights(np.full(2, np.nan), 2, 4), np.ones(2))
    assert np.array_equal(view_weights(np.array([0.5, 0.4]), 2, 2), np.ones(2))   # all at chance: equal
    # an unknown view takes the mean of the known accuracies
    w = view_weights(np.array([0.9, np.nan, 0.5]), 3, 4)
    assert w[0] == pytest.approx(1.0) and w[1] == pytest.approx(view_weights(np.array([0.9, 0.7]), 2, 4)[1])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6), st.integers(2, 10))
def test_view_weights_in_unit_interval_and_ordered(acc, k):
    acc = np.asarray(acc)
    w = view_weights(acc, len(acc), k)
    assert ((w >= 0) & (w <= 1 + 1e-12)).all() and w.max() == pytest.approx(1.0)
    above = acc > 1.0 / k
    if above.any():
        assert w[np.argmax(acc)] == pytest.approx(1.0)
        assert (w[acc <= 1.0 / k] == 0).all()
        order = np.argsort(acc[above], kind="stable")
        assert (np.diff(w[above][order]) >= -1e-12).all()   # more accurate, more weight


def test_view_accuracy_counts_only_votes():
    p = np.array([[[0.9, 0.1], [0.4, 0.6]], [[0.2, 0.8], NAN2], [[0.6, 0.4], NAN2]])
    acc = view_accuracy(p, np.array([0, 1, 1]))
    assert acc[0] == pytest.approx(2 / 3) and acc[1] == pytest.approx(0.0)
    assert np.isnan(view_accuracy(np.full((2, 1, 2), np.nan), np.array([0, 1]))).all()


# ---------------------------------------------------------------------- fit_combination
@pytest.mark.parametrize("seed", range(4))
def test_auto_beats_majority_vote_and_ignores_the_chance_view(seed):
    k, accs = 4, [0.8, 0.75, 0.7, 0.25]
    y, oof = synthetic_probs(300, k, accs, seed)
    y_pool, pool = synthetic_probs(3000, k, accs, seed + 100, abstain=0.05)
    comb = fit_combination("auto", oof, y, label_matrix(pool)[0], k, np.random.default_rng(seed))
    assert comb.method in ("product", "mean", "label_model", "best_view")
    assert set(comb.scores) == {"product", "mean", "label_model", "best_view"}
    assert comb.scores[comb.method] >= comb.scores["product"]  # product unless beaten (paired test)
    assert comb.scores[comb.method] >= majority_vote_accuracy(oof, y)
    assert comb.weights[3] <= 0.1 and comb.weights.max() == pytest.approx(1.0)
    assert np.allclose(comb.cv_accuracy, view_accuracy(oof, y))
    # what was kept also beats majority vote on fresh items
    fresh = comb.combine(pool)
    assert (fresh.argmax(axis=1) == y_pool).mean() >= majority_vote_accuracy(pool, y_pool) - 0.01
    if comb.method == "label_model":
        assert comb.label_model_accuracy is not None and comb.label_model_accuracy[3] < 0.4


@pytest.mark.parametrize("seed", range(6))
def test_two_views_never_label_model(seed):
    k = 3
    y, oof = synthetic_probs(200, k, [0.9, 0.6], seed)
    _, pool = synthetic_probs(2000, k, [0.9, 0.6], seed + 1)
    comb = fit_combination("auto", oof, y, label_matrix(pool)[0], k, np.random.default_rng(seed))
    assert comb.method in ("product", "mean", "best_view") and "label_model" not in comb.scores
    assert comb.confusion is None and comb.label_model_accuracy is None
    if comb.method == "best_view":  # the weak view is dropped whole, and that scored better than product
        assert np.array_equal(comb.weights, [1.0, 0.0]) and comb.scores["best_view"] > comb.scores["product"]


def test_auto_keeps_product_unless_gold_says_clearly_otherwise():
    """A candidate replaces ``product`` only when its paired gain on the gold items exceeds
    two standard errors: one more right item in 100 is noise, 30 more is not."""
    from orchestrator.combination import _significantly_better

    base = np.r_[np.ones(70), np.zeros(30)]
    noisy = base.copy()
    noisy[[70, 71]] = 1.0
    noisy[5] = 0.0  # +1 net item: mean 0.71 against 0.70
    assert _significantly_better({"product": base, "mean": noisy}, ["product", "mean"]) == "product"
    clear = np.ones(100)
    assert _significantly_better({"product": base, "mean": noisy, "best_view": clear},
                                 ["product", "mean", "best_view"]) == "best_view"
    assert _significantly_better({"product": clear, "mean": base}, ["product", "mean"]) == "product"
    assert _significantly_better({"product": base[:1], "mean": clear[:1]}, ["product", "mean"]) == "product"


def test_auto_takes_the_strong_view_alone_when_the_other_view_misleads():
    """A view that is confidently wrong on 40% of the items, against a 0.95-accurate but
    diffident view: with accuracy weights the product followed the confident one (0.61
    right against 0.93 for ``mean`` and ``best_view``); with weights fitted to the log loss
    it gives the confident view little say and is as right as the strong view alone."""
    rng = np.random.default_rng(0)
    k, n = 3, 300
    y = rng.integers(0, k, n)
    strong = np.full((n, k), 0.2)
    strong[np.arange(n), np.where(rng.random(n) < 0.95, y, (y + 1) % k)] = 0.6
    weak = np.full((n, k), 0.01)
    weak[np.arange(n), np.where(rng.random(n) < 0.6, y, (y + 1) % k)] = 0.98
    oof = np.stack([strong / strong.sum(1, keepdims=True), weak / weak.sum(1, keepdims=True)], axis=1)
    comb = fit_combination("auto", oof, y, None, k, np.random.default_rng(0))
    assert comb.method == "product" and comb.weights[1] < 0.5 * comb.weights[0]
    assert comb.scores["product"] >= comb.scores["best_view"] - 0.01 and comb.scores["best_view"] > 0.9
    by_accuracy = Combination("product", view_weights(comb.cv_accuracy, 2, k)).combine(oof)
    assert (by_accuracy.argmax(axis=1) == y).mean() < 0.7 < 0.9 < comb.scores["product"]


def test_one_view_is_single_and_explicit_methods_are_kept():
    y, oof = synthetic_probs(100, 3, [0.8], 0)
    assert fit_combination("auto", oof, y, None, 3, np.random.default_rng(0)).method == "single"
    y, oof = synthetic_probs(100, 3, [0.8, 0.7, 0.6], 1)
    _, pool = synthetic_probs(500, 3, [0.8, 0.7, 0.6], 2)
    votes = label_matrix(pool)[0]
    for method in ("product", "mean", "label_model"):
        comb = fit_combination(method, oof, y, votes, 3, np.random.default_rng(0))
        assert comb.method == method and comb.scores == {}


def test_auto_without_enough_pool_votes_skips_the_label_model():
    y, oof = synthetic_probs(100, 3, [0.8, 0.7, 0.6], 3)
    _, pool = synthetic_probs(29, 3, [0.8, 0.7, 0.6], 4)            # fewer than 10 * K votes
    comb = fit_combination("auto", oof, y, label_matrix(pool)[0], 3, np.random.default_rng(0))
    assert set(comb.scores) == {"product", "mean", "best_view"}
    assert fit_combination("auto", oof, y, None, 3, np.random.default_rng(0)).method in ("product", "mean",
                                                                                         "best_view")


def test_no_gold_means_equal_weights_and_the_first_candidate():
    _, pool = synthetic_probs(300, 3, [0.8, 0.7, 0.6], 5)
    comb = fit_combination("auto", np.zeros((0, 3, 3)), np.zeros(0, dtype=np.int64), label_matrix(pool)[0], 3,
                           np.random.default_rng(0))
    assert comb.method == "product" and np.array_equal(comb.weights, np.ones(3)) and comb.cv_accuracy is None


def test_a_lone_view_shortcuts_give_exactly_the_general_combinations():
    """With one view the prediction step skips computing its mean, best view and ensemble
    (they are its own probabilities): the shortcut must equal the general functions bit for bit,
    abstentions included. Its product is the ``single`` combination (the view's probabilities,
    not a renormalised product of one), and all three share one array, filled once."""
    from orchestrator.combination import pool_combiners
    from orchestrator.selection import ensemble_proba
    from orchestrator.steps import empty_prediction, fill_batch

    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(3), size=(200, 1))
    p[::7] = np.nan
    gold_p = rng.dirichlet(np.ones(3), size=(30, 1))
    gold_y = rng.integers(0, 3, 30)
    for oof, oof_y in ((np.zeros((0, 1, 3)), np.zeros(0, dtype=np.int64)), (gold_p, gold_y),
                       (gold_p, gold_p[:, 0].argmax(axis=1))):
        short = pool_combiners(oof, oof_y, 1, 3)
        w = view_weights(view_accuracy(oof, oof_y) if len(oof_y) else None, 1, 3)
        for name, general in (("mean", Combination("mean", w)), ("best_view", Combination("best_view", np.ones(1))),
                              ("product", Combination("single", w))):
            np.testing.assert_array_equal(short[name](p), general.combine(p))
        # the same labels as a product of one (which clips at 1e-6 and renormalises)
        np.testing.assert_array_equal(label_matrix(short["product"](p)[:, None, :])[0],
                                      label_matrix(Combination("product", w).combine(p)[:, None, :])[0])
        shared = empty_prediction([SimpleNamespace(name="v")], 200, 3, short)  # type: ignore[list-item]
        fill_batch(shared, np.arange(200), p, short, None)
        assert shared.combined["product"] is shared.combined["mean"] is shared.combined["best_view"]
        np.testing.assert_array_equal(shared.combined["mean"], p[:, 0].astype(np.float32))
    out = empty_prediction([SimpleNamespace(name="v")], 200, 3, None)  # type: ignore[list-item]
    fill_batch(out, np.arange(200), p, None, None)
    general = label_matrix(ensemble_proba(p)[:, None, :])[0][:, 0]
    np.testing.assert_array_equal(out.ensemble, general)
    assert (out.ensemble[::7] == ABSTAIN).all()


def _views_of_known_accuracy(rng: np.random.Generator, n: int, k: int, acc: float, sharp: float) -> tuple[np.ndarray, np.ndarray]:
    """(n, K) probabilities of a view right on a share ``acc`` of items, whose top class has
    ``sharp`` of the mass (a calibrated view has sharp == acc), and the true labels."""
    y = rng.integers(0, k, n)
    vote = np.where(rng.random(n) < acc, y, (y + rng.integers(1, k, n)) % k)
    p = np.full((n, k), (1 - sharp) / (k - 1))
    p[np.arange(n), vote] = sharp
    return p, y


def test_fitted_weights_silence_an_overconfident_weak_view_and_keep_calibrated_ones_level():
    """The pool's weights come from the log loss on gold, not accuracy alone: a view right
    on 0.3 of items that puts 0.95 on its vote must weigh far less than a calibrated view
    right on 0.6 (accuracy weights gave it 0.6 of the strong view's; calibrated, its vote
    would count 0.26 as much), and the product with those weights
    must be at least as accurate on fresh items as the strong view alone. Two calibrated
    views of equal accuracy keep equal weights (within 0.2)."""
    from orchestrator.combination import fitted_weights

    rng = np.random.default_rng(0)
    k, m = 10, 40
    strong, y = _views_of_known_accuracy(rng, 2 * m + 2000, k, 0.6, 0.6)
    weak = np.full_like(strong, 0.05 / (k - 1))
    wrong = np.where(rng.random(len(y)) < 0.3, y, (y + rng.integers(1, k, len(y))) % k)
    weak[np.arange(len(y)), wrong] = 0.95
    probs = np.stack([strong, weak], axis=1)
    w = fitted_weights(probs[:m], y[:m], k)
    prior = view_weights(view_accuracy(probs[:m], y[:m]), 2, k)
    assert w[0] == 1.0 and w[1] < 0.6 * prior[1] and w[1] < 0.4
    fresh = slice(2 * m, None)
    pooled = Combination("product", w).combine(probs[fresh]).argmax(axis=1)
    assert (pooled == y[fresh]).mean() >= (strong[fresh].argmax(axis=1) == y[fresh]).mean() - 0.01
    assert (pooled == y[fresh]).mean() > (Combination("product", prior).combine(probs[fresh]).argmax(axis=1)
                                          == y[fresh]).mean() + 0.03
    # two calibrated views with independent errors: both keep their say
    a, y2 = _views_of_known_accuracy(rng, 200, k, 0.7, 0.7)
    b = np.full_like(a, 0.3 / (k - 1))
    vote_b = np.where(rng.random(200) < 0.7, y2, (y2 + rng.integers(1, k, 200)) % k)
    b[np.arange(200), vote_b] = 0.7
    w2 = fitted_weights(np.stack([a, b], axis=1), y2, k)
    assert w2.max() == 1.0 and w2.min() > 0.8


def test_fitted_weights_fall_back_to_accuracy_weights_on_too_little_gold():
    """No view voted on 2K gold items or more: the accuracy weights, unchanged."""
    from orchestrator.combination import fitted_weights

    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(4), size=(7, 2))
    y = rng.integers(0, 4, 7)
    np.testing.assert_array_equal(fitted_weights(p, y, 4), view_weights(view_accuracy(p, y), 2, 4))


def test_view_temperatures_recover_a_known_overconfidence():
    """A calibrated view (its top class carries exactly its accuracy) gets an inverse
    temperature near 1; the same view with its log-probabilities tripled (overconfident)
    near 1/3, and halved (diffident) near 2: the temperature undoes what was done to it."""
    from orchestrator.combination import view_temperatures

    rng = np.random.default_rng(5)
    p, y = _views_of_known_accuracy(rng, 3000, 5, 0.7, 0.7)
    sharpened = p ** 3 / (p ** 3).sum(axis=1, keepdims=True)
    flattened = np.sqrt(p) / np.sqrt(p).sum(axis=1, keepdims=True)
    t = view_temperatures(np.stack([p, sharpened, flattened], axis=1), y)
    assert t[0] == pytest.approx(1.0, abs=0.05)
    assert t[1] == pytest.approx(1 / 3, abs=0.03)
    assert t[2] == pytest.approx(2.0, abs=0.1)
    # a view that votes on one gold item has no temperature to fit
    lone = np.full((3000, 1, 5), np.nan)
    lone[0, 0] = p[0]
    assert np.isnan(view_temperatures(lone, y)[0])


def test_a_view_unmeasured_on_gold_takes_the_median_temperature_not_the_lead():
    """Three over-confident views; the third abstains on the gold items (a view whose
    inputs are missing there), or votes on two of them and is right on both. Either way it
    must not outweigh the measured views: it takes their median temperature, so the weights
    of the two measured ones are unchanged relative to each other and the pool stays at
    least as accurate as the best view alone on fresh items (a fit to its two lucky votes
    gave it 15 times the others' weight and the pool fell to 0.40)."""
    from orchestrator.combination import fitted_weights, view_temperatures

    rng = np.random.default_rng(7)
    k, m, n = 5, 500, 3000
    views = []
    y = rng.integers(0, k, m + n)
    for acc in (0.8, 0.75, 0.4):  # calibrated views of the same items, then cubed: over-confident
        vote = np.where(rng.random(m + n) < acc, y, (y + rng.integers(1, k, m + n)) % k)
        p = np.full((m + n, k), (1 - acc) / (k - 1))
        p[np.arange(m + n), vote] = acc
        views.append(p ** 3 / (p ** 3).sum(axis=1, keepdims=True))
    probs = np.stack(views, axis=1)
    fresh = slice(m, None)
    best_alone = (probs[fresh, 0].argmax(axis=1) == y[fresh]).mean()
    for lucky in (0, 2):
        gold = probs[:m].copy()
        gold[lucky:, 2] = np.nan
        if lucky:
            gold[:lucky, 2] = np.eye(k)[y[:lucky]] * 0.9 + 0.1 / k
        w = fitted_weights(gold, y[:m], k)
        t = view_temperatures(gold[:, :2], y[:m])
        assert w[2] == pytest.approx(np.median(t) / t.max()) and w[:2] == pytest.approx(t / t.max())
        pooled = Combination("product", w).combine(probs[fresh]).argmax(axis=1)
        assert (pooled == y[fresh]).mean() >= best_alone - 0.01
