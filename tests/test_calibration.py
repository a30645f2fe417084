"""Honest estimates from gold only: gold folds spread every class, the calibration map is a
monotone Beta-posterior step function that stays modest on little evidence and is
calibrated on fresh data, and the ECE is what a hand computation gives."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.calibration import (Calibrator, ScoreMap, accuracy_prior, expected_calibration_error, fit_calibrator,
                                      fit_score_map, gold_folds)
from orchestrator.evidence import assess, top


# ---------------------------------------------------------------------- gold_folds
@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=0, max_size=60), st.integers(2, 7), st.integers(0, 2**32 - 1))
def test_gold_folds_spread_every_class(y, n_folds, seed):
    y = np.asarray(y, dtype=np.int64)
    fold = gold_folds(y, n_folds, np.random.default_rng(seed))
    assert fold.shape == y.shape and fold.dtype.kind == "i"
    for c in np.unique(y):
        f = fold[y == c]
        if f.size < 2:                                   # a singleton class is held out
            assert (f == -1).all()
            continue
        assert ((f >= 0) & (f < n_folds)).all()
        counts = np.bincount(f, minlength=n_folds)
        assert counts.max() - counts.min() <= 1          # dealt round-robin: as even as can be
        assert len(np.unique(f)) == min(f.size, n_folds)  # so no fold's training part loses the class
    # deterministic for a seeded generator
    assert np.array_equal(fold, gold_folds(y, n_folds, np.random.default_rng(seed)))


def test_gold_folds_singleton_with_support_gets_a_fold():
    y = np.array([0, 0, 0, 1, 2, 2])
    alone = gold_folds(y, 3, np.random.default_rng(0))
    assert alone[3] == -1 and (alone[[0, 1, 2, 4, 5]] >= 0).all()
    supported = gold_folds(y, 3, np.random.default_rng(0), support=np.array([0, 4, 0]))
    assert 0 <= supported[3] < 3                         # pseudo-labels of class 1 train the fold's views
    # support for another class does not rescue the singleton
    assert gold_folds(y, 3, np.random.default_rng(0), support=np.array([5, 0, 5]))[3] == -1


def test_gold_folds_fewer_than_two_folds_holds_everything_out():
    y = np.array([0, 0, 1, 1])
    assert (gold_folds(y, 1, np.random.default_rng(0)) == -1).all()
    assert (gold_folds(y, 0, np.random.default_rng(0)) == -1).all()


def test_gold_folds_differ_across_seeds():
    y = np.repeat(np.arange(3), 20)
    folds = {tuple(gold_folds(y, 5, np.random.default_rng(s))) for s in range(5)}
    assert len(folds) > 1


# ---------------------------------------------------------------------- fit_calibrator
@settings(max_examples=200, deadline=None)
@given(st.integers(1, 80), st.integers(0, 2**32 - 1), st.booleans())
def test_calibrator_is_monotone_and_in_unit_interval(n, seed, continuous):
    rng = np.random.default_rng(seed)
    score = rng.uniform(0, 1, n) if continuous else rng.integers(0, 5, n) / 4.0   # with ties
    correct = rng.random(n) < score
    cal = fit_calibrator(score, correct)
    assert cal.n == n and cal.accuracy == pytest.approx(correct.mean())
    grid = np.sort(np.r_[np.linspace(-0.5, 1.5, 201), score])
    out = cal(grid)
    assert ((out >= 0) & (out <= 1)).all()
    assert (np.diff(out) >= -1e-12).all()                  # non-decreasing in the score
    assert (np.diff(np.asarray(cal.edges)) >= 0).all() and len(cal.edges) == len(cal.values)
    # never certain: every value is a Beta(1, 1) posterior mean of a block of at most n items,
    # and never more than the score itself
    assert out.max() <= (n + 1) / (n + 2) + 1e-12
    assert (out <= np.clip(grid, 0, 1) + 1e-12).all()
    assert (cal(np.clip(grid, 0, 1)) >= np.minimum(1 / (n + 2), np.clip(grid, 0, 1)) - 1e-12).all()


@pytest.mark.parametrize("n", [1, 10, 12, 200])
def test_all_right_vouches_for_beta_posterior_mean(n):
    score = np.linspace(0.4, 1.0, n)
    cal = fit_calibrator(score, np.ones(n, dtype=bool))
    grid = np.linspace(0, 1, 51)
    assert np.allclose(cal(grid), np.minimum((n + 1) / (n + 2), grid))   # never above the score
    assert np.allclose(cal(score), np.minimum((n + 1) / (n + 2), score))
    all_wrong = fit_calibrator(score, np.zeros(n, dtype=bool))
    assert np.allclose(all_wrong(grid), np.minimum(1 / (n + 2), grid))


def test_calibrator_two_blocks_by_hand():
    # 4 wrong at low scores, 4 right at high: two blocks, (0+1)/(4+2) and (4+1)/(4+2)
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    correct = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    cal = fit_calibrator(score, correct)
    assert cal.edges == (-np.inf, 0.6) and cal.values == pytest.approx((1 / 6, 5 / 6))
    assert np.allclose(cal(np.array([0.0, 0.55, 0.6, 0.95, 2.0])), [0.0, 1 / 6, 0.6, 5 / 6, 5 / 6])
    # a custom prior: (right + a) / (n + a + b)
    cal = fit_calibrator(score, correct, prior=(2.0, 1.0))
    assert cal.values == pytest.approx((2 / 7, 6 / 7))


def test_calibrator_pools_violators():
    # right, wrong, right, right: PAV pools the first two (0.5), the last two stand at 1.0
    cal = fit_calibrator(np.array([0.1, 0.2, 0.3, 0.4]), np.array([1, 0, 1, 1]))
    assert cal.values == pytest.approx(((1 + 1) / (2 + 2), (2 + 1) / (2 + 2)))
    assert cal.edges == (-np.inf, 0.3)


def test_well_calibrated_score_stays_calibrated_on_fresh_data():
    rng = np.random.default_rng(11)
    fit_score = rng.uniform(0.3, 1.0, 5000)
    cal = fit_calibrator(fit_score, rng.random(5000) < fit_score)
    fresh = rng.uniform(0.3, 1.0, 5000)
    fresh_correct = rng.random(5000) < fresh
    p = cal(fresh)
    assert expected_calibration_error(p, fresh_correct) <= 0.03
    assert np.abs(p - fresh).mean() <= 0.03                 # and close to the true map itself


def test_miscalibrated_score_is_corrected():
    # an overconfident score: right with probability score**3
    rng = np.random.default_rng(5)
    s = rng.uniform(0.5, 1.0, 5000)
    cal = fit_calibrator(s, rng.random(5000) < s ** 3)
    fresh = rng.uniform(0.5, 1.0, 5000)
    ok = rng.random(5000) < fresh ** 3
    assert expected_calibration_error(fresh, ok) > 0.1
    assert expected_calibration_error(cal(fresh), ok) <= 0.03


def test_identity_without_evidence():
    cal = fit_calibrator(np.zeros(0), np.zeros(0, dtype=bool))
    assert cal == Calibrator() and cal.n == 0 and cal.accuracy is None
    s = np.array([0.0, 0.3, 0.77, 1.0])
    out = cal(s)
    assert np.array_equal(out, s) and out is not s


def test_tied_scores_share_one_value_whatever_the_order():
    score = np.ones(8)
    correct = np.array([0, 0, 1, 1, 1, 1, 1, 1], dtype=bool)
    a = fit_calibrator(score, correct)(np.array([1.0]))[0]
    b = fit_calibrator(score, correct[::-1])(np.array([1.0]))[0]
    assert a == pytest.approx(b) == pytest.approx((6 + 1) / (8 + 2))


# ---------------------------------------------------------------------- expected_calibration_error
def test_ece_by_hand():
    # one bin (0.9 -> bin 13 of 15): accuracy 0.5, mean p 0.9
    assert expected_calibration_error(np.array([0.9, 0.9]), np.array([1, 0])) == pytest.approx(0.4)
    # perfectly calibrated bins
    assert expected_calibration_error(np.array([0.5, 0.5, 1.0]), np.array([1, 0, 1])) == pytest.approx(0.0)
    # two bins, weighted by their items: bin of 0.2 (acc 0, 3 items), bin of 1.0 (acc 1)
    p = np.array([0.2, 0.2, 0.2, 1.0])
    assert expected_calibration_error(p, np.array([0, 0, 0, 1])) == pytest.approx(3 * 0.2 / 4)
    # 10 bins: 0.05 and 0.15 fall in different bins; 1.0 goes to the last one
    p = np.array([0.05, 0.15, 1.0, 1.0])
    got = expected_calibration_error(p, np.array([1, 0, 1, 0]), n_bins=10)
    assert got == pytest.approx((0.95 + 0.15 + 2 * 0.5) / 4)
    # NaN probabilities are left out; nothing left: None
    assert expected_calibration_error(np.array([np.nan, 0.7]), np.array([0, 1])) == pytest.approx(0.3)
    assert expected_calibration_error(np.array([np.nan]), np.array([1])) is None
    assert expected_calibration_error(np.zeros(0), np.zeros(0)) is None


def test_scores_below_all_evidence_are_not_vouched_for():
    rng = np.random.default_rng(0)
    cal = fit_calibrator(rng.uniform(0.95, 1.0, 20), np.ones(20, dtype=bool))
    assert cal(np.array([0.3]))[0] < 0.9


# ---------------------------------------------------------------------- fit_score_map
def test_a_score_map_between_equal_distributions_is_about_the_identity():
    rng = np.random.default_rng(3)
    run, shadows = rng.uniform(0.5, 1.0, 4000), rng.uniform(0.5, 1.0, 6000)
    s = np.linspace(0.55, 0.95, 9)
    assert np.abs(fit_score_map(run, shadows)(s) - s).max() <= 0.02


def test_a_sharper_run_is_put_back_on_the_shadows_scale():
    # the run's views say x ** 0.25 where the shadows' say x (same items, same ranks): a run
    # score is taken back to the shadows' score of the same rank, so the calibrator fitted
    # on the shadows reads it as it would theirs
    rng = np.random.default_rng(4)
    x = rng.uniform(0.5, 1.0, 20000)
    smap = fit_score_map(x ** 0.25, rng.uniform(0.5, 1.0, 20000))
    probe = np.array([0.6, 0.7, 0.8, 0.9])
    assert smap(probe ** 0.25) == pytest.approx(probe, abs=0.01)
    # a duller run is not raised: it holds more gold than any shadow, so its scores are only
    # ever taken down to theirs, never vouched for beyond what its own views say
    dull = fit_score_map(x ** 4, rng.uniform(0.5, 1.0, 20000))
    assert np.array_equal(dull(probe ** 4), probe ** 4)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=80), st.lists(st.floats(0.0, 1.0), min_size=1, max_size=80),
       st.lists(st.floats(0.0, 1.0), min_size=2, max_size=20))
def test_a_score_map_is_monotone_and_only_lowers(run, ref, probe):
    smap = fit_score_map(np.array(run), np.array(ref))
    probe = np.sort(np.array(probe))
    out = smap(probe)
    assert (np.diff(out) >= -1e-12).all()
    assert (out <= probe).all() and (out <= max(ref) + 1e-12).all()
    assert (out >= np.minimum(probe, min(ref)) - 1e-12).all()


def test_a_score_map_without_scores_is_the_identity_and_ties_share_a_value():
    s = np.array([0.2, 0.9])
    assert fit_score_map(np.zeros(0), np.ones(3))(s) == pytest.approx(s)
    assert fit_score_map(np.array([np.nan]), np.ones(3)) == ScoreMap()
    assert fit_score_map(np.ones(3), np.zeros(0)) == ScoreMap()
    # half the run says exactly 0.9: those items share the mean of their quantiles' reference
    smap = fit_score_map(np.r_[np.full(50, 0.9), np.linspace(0.5, 0.8, 50)], np.linspace(0.5, 1.0, 100))
    assert smap(np.array([0.9]))[0] == pytest.approx(0.875, abs=0.01)


def _probs(top_p: np.ndarray, label: np.ndarray) -> np.ndarray:
    """(n, 1, 2) one view's probabilities with ``top_p`` on ``label``."""
    p = np.where(label[:, None] == np.arange(2), top_p[:, None], 1.0 - top_p[:, None])
    return p[:, None, :]


def test_the_prior_is_uniform_unless_most_gold_items_are_wrong():
    assert accuracy_prior(np.ones(10, dtype=bool)) == (1.0, 1.0)
    assert accuracy_prior(np.r_[np.ones(5), np.zeros(5)].astype(bool)) == (1.0, 1.0)    # half right: uniform
    assert accuracy_prior(np.zeros(0, dtype=bool)) == (1.0, 1.0)
    a, b = accuracy_prior(np.r_[np.ones(11), np.zeros(14)].astype(bool))              # 11 of 25 right
    assert (a, b) == (pytest.approx(0.88), pytest.approx(1.12))
    assert accuracy_prior(np.zeros(4, dtype=bool)) == (0.0, 2.0)


def test_a_few_right_gold_items_among_mostly_wrong_ones_do_not_vouch_for_the_bar():
    # Animal-MNIST at 1% gold, one seed: 25 out-of-fold gold items, 11 right, the top 8 by
    # score all right. Under a uniform prior that block vouched for (8 + 1) / (8 + 2) = 0.9 and
    # 134 labels passed the 0.9 bar, 0.78 of them right; centred on 0.44 it says 0.888
    score = np.r_[np.linspace(0.50, 0.60, 3), np.linspace(0.61, 0.80, 14), np.linspace(0.95, 0.99, 8)]
    right = np.r_[np.ones(3), np.zeros(14), np.ones(8)].astype(bool)
    label = np.zeros(25, dtype=np.int64)
    y = np.where(right, 0, 1)
    assert fit_calibrator(score, right)(np.array([0.99]))[0] == pytest.approx(0.9)     # the uniform prior
    pool = _probs(np.array([0.99, 0.97]), np.array([0, 1]))[:, 0]
    combined = {"product": pool, "mean": pool, "best_view": pool}
    ev = assess("auto", _probs(score, label), y, combined, np.array([[0], [1]], dtype=np.int16), np.array([11, 14]),
                2, np.random.default_rng(0))
    assert ev.calibrator.accuracy == pytest.approx(11 / 25)
    assert ev.p_correct == pytest.approx([8.88 / 10, 8.88 / 10])                      # below the 0.9 bar
    # with most gold items right the prior stays uniform: 8 right of the top 8 still vouch for 0.9
    y_good = np.where(np.r_[np.ones(17), np.ones(8)].astype(bool), 0, 1)
    good = assess("auto", _probs(score, label), y_good, combined, np.array([[0], [1]], dtype=np.int16),
                  np.array([25, 0]), 2, np.random.default_rng(0))
    assert good.p_correct == pytest.approx([26 / 27, 26 / 27])


def test_assess_scores_the_runs_pool_on_the_shadows_scale():
    # out-of-fold gold: right with probability equal to the shadows' score; the run's pool
    # scores are sharper (x ** 0.25) for the same items: without the shadows' scores of the
    # items, p_correct takes the sharp scores at their word; with them, it reads them as the
    # shadows' scores
    rng = np.random.default_rng(7)
    s_oof = rng.uniform(0.5, 1.0, 3000)
    y = rng.integers(0, 2, 3000)
    right = rng.random(3000) < s_oof
    oof = _probs(s_oof, np.where(right, y, 1 - y))
    x = rng.uniform(0.5, 1.0, 5000)
    lab = rng.integers(0, 2, 5000)
    run = _probs(x ** 0.25, lab)[:, 0]
    combined = {"product": run, "mean": run, "best_view": run}
    votes = lab[:, None].astype(np.int16)
    plain = assess("auto", oof, y, combined, votes, np.array([10, 10]), 2, np.random.default_rng(0))
    # three shadows, each with 2,000 of the pool items left, which it scores as x
    seen = [np.sort(rng.choice(5000, 2000, replace=False)) for _ in range(3)]
    shadow_pool = [(at, _probs(x[at], lab[at])) for at in seen]
    mapped = assess("auto", oof, y, combined, votes, np.array([10, 10]), 2, np.random.default_rng(0), shadow_pool)
    assert plain.combination.method == mapped.combination.method == "single"
    truth = x  # each pool item is right as often as the shadows' score of its rank says
    assert np.abs(plain.p_correct - truth).mean() > 0.05            # the sharp scores, taken at their word
    assert np.abs(mapped.p_correct - truth).mean() <= 0.03          # on the shadows' scale
    assert mapped.p_correct_of(np.arange(5000), lab) == pytest.approx(mapped.p_correct)
    assert top(mapped.posterior) == pytest.approx(x ** 0.25)                # the posterior itself is the run's


def test_items_one_side_abstains_on_do_not_skew_the_map():
    # the run and the shadows score the same items alike, but the run's views abstain on the
    # 1,000 items the shadows score lowest: compared over the items both scored, nothing moves
    rng = np.random.default_rng(8)
    x = np.sort(rng.uniform(0.5, 1.0, 5000))
    lab = rng.integers(0, 2, 5000)
    run = _probs(x, lab)[:, 0]
    run[:1000] = np.nan
    s_oof = rng.uniform(0.5, 1.0, 500)
    y = rng.integers(0, 2, 500)
    oof = _probs(s_oof, np.where(rng.random(500) < s_oof, y, 1 - y))
    combined = {"product": run, "mean": run, "best_view": run}
    votes = np.where(np.isnan(run[:, 0]), -1, lab)[:, None].astype(np.int16)
    ev = assess("auto", oof, y, combined, votes, np.array([5, 5]), 2, np.random.default_rng(0),
                [(np.arange(5000), _probs(x, lab))])
    probe = np.array([0.75, 0.85, 0.95])
    assert ev.score_map(probe) == pytest.approx(probe, abs=0.01)
    assert np.isnan(ev.p_correct[:1000]).all() and not np.isnan(ev.p_correct[1000:]).any()
