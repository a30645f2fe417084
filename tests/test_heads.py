"""The default head, ``TunedLogisticRegression``: which C it uses in each regime, that the
cross-validated choice is the grid's best log-loss, and that it fits few labels better than C=1."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold

from views.heads import RoundC, TunedLogisticRegression, _log_loss, _stratified_subset, head_fit_params


def _blobs(n_per_class: int, k: int = 4, d: int = 30, sep: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, sep, size=(k, d))
    y = np.repeat(np.arange(k), n_per_class)
    return centres[y] + rng.normal(0, 1.0, size=(len(y), d)), y


def test_the_c_used_in_each_regime():
    X, y = _blobs(5)
    assert TunedLogisticRegression(C=3.0).fit(X, y).C_ == 3.0          # the user's C is kept
    one = np.concatenate([y[:-4], [0, 1, 2, 3]]).copy()
    one[y == 3] = 0
    one[-1] = 3                                                       # class 3 has a single item
    assert TunedLogisticRegression(few_labels_C=7.0).fit(X, one).C_ == 7.0
    Xb, yb = _blobs(100)
    assert TunedLogisticRegression(large_C=2.0).fit(Xb, yb).C_ == 2.0  # given: untuned above cv_max_items
    # by default, above cv_max_items C is tuned on a stratified subset of that many items
    big = TunedLogisticRegression(cv_max_items=60, random_state=0).fit(Xb, yb)
    sub = _stratified_subset(yb, 60, 0)
    assert len(sub) == 60 and np.bincount(yb[sub]).tolist() == [15, 15, 15, 15]
    ref = TunedLogisticRegression(cv_max_items=60, random_state=0).fit(Xb[sub], yb[sub])
    assert big.cv_scores_ == ref.cv_scores_ and big.C_ == ref.C_
    assert big.model_.coef_.shape == ref.model_.coef_.shape and not np.allclose(big.model_.coef_, ref.model_.coef_)


def test_the_tuned_c_is_the_grids_best_cross_validated_log_loss():
    X, y = _blobs(8, seed=1)
    w = np.random.default_rng(2).uniform(0.5, 1.0, len(y))
    head = TunedLogisticRegression(random_state=0).fit(X, y, sample_weight=w)
    assert set(head.cv_scores_) == {0.1, 1.0, 10.0, 100.0}
    assert head.C_ == min(head.cv_scores_, key=head.cv_scores_.get)
    # each score is the mean over stratified folds of sklearn's weighted log-loss
    split = StratifiedKFold(3, shuffle=True, random_state=0)
    for C, score in head.cv_scores_.items():
        ref = np.mean([log_loss(y[te], LogisticRegression(C=C, max_iter=1000).fit(X[tr], y[tr], sample_weight=w[tr])
                                .predict_proba(X[te]), sample_weight=w[te], labels=np.unique(y))
                       for tr, te in split.split(X, y)])
        assert score == pytest.approx(ref, rel=1e-3, abs=1e-3)
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert _log_loss(np.array([0, 2]), p, np.arange(3), np.array([1.0, 3.0])) == pytest.approx(
        log_loss([0, 2], p, sample_weight=[1.0, 3.0], labels=[0, 1, 2]))


def _gold_and_picks(n_gold: int = 8, n_pseudo: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gold rows then pseudo-label rows (a quarter of them wrong): X, y, weights, trusted."""
    X, y = _blobs(n_gold, seed=4)
    Xp, yp = _blobs(n_pseudo, seed=5)
    yp = yp.copy()
    yp[::4] = (yp[::4] + 1) % 4
    w = np.concatenate([np.ones(len(y)), np.full(len(yp), 0.3)])
    trusted = np.r_[np.ones(len(y), dtype=bool), np.zeros(len(yp), dtype=bool)]
    return np.vstack([X, Xp]), np.concatenate([y, yp]), w, trusted


def _gold_cv(X, y, w, trusted, C, n_folds=3):
    """Reference: folds over the trusted rows, each fit on the rest of them plus every
    untrusted row, scored on the held-out trusted rows."""
    gold, pseudo = np.flatnonzero(trusted), np.flatnonzero(~trusted)
    split = StratifiedKFold(n_folds, shuffle=True, random_state=0)
    out = []
    for tr, te in split.split(gold, y[gold]):
        rows = np.r_[gold[tr], pseudo]
        m = LogisticRegression(C=C, max_iter=1000).fit(X[rows], y[rows], sample_weight=w[rows])
        out.append(log_loss(y[gold[te]], m.predict_proba(X[gold[te]]), labels=np.arange(4)))
    return float(np.mean(out))


def test_c_is_scored_on_the_trusted_rows_and_the_picks_only_train():
    """Told which rows are trusted (gold), the head deals only them into folds and scores
    only them; the pseudo-label rows only ever train. Not told, told that every row is
    trusted, or score_on='all': every row is dealt and scored, as before."""
    X, y, w, trusted = _gold_and_picks()
    head = TunedLogisticRegression(random_state=0).fit(X, y, sample_weight=w, trusted=trusted)
    assert head.tuned_ and set(head.cv_scores_) == {0.1, 1.0, 10.0, 100.0}
    for C, score in head.cv_scores_.items():
        assert score == pytest.approx(_gold_cv(X, y, w, trusted, C), rel=1e-3, abs=1e-3)
    assert head.C_ == min(head.cv_scores_, key=head.cv_scores_.get)
    split = StratifiedKFold(3, shuffle=True, random_state=0)
    every_row = np.mean([log_loss(y[te], LogisticRegression(C=1.0, max_iter=1000).fit(X[tr], y[tr], sample_weight=w[tr])
                                  .predict_proba(X[te]), sample_weight=w[te], labels=np.arange(4))
                         for tr, te in split.split(X, y)])
    for classic in (TunedLogisticRegression(random_state=0).fit(X, y, sample_weight=w),
                    TunedLogisticRegression(random_state=0).fit(X, y, sample_weight=w, trusted=np.ones(len(y), bool)),
                    TunedLogisticRegression(random_state=0, score_on="all").fit(X, y, sample_weight=w, trusted=trusted)):
        assert classic.cv_scores_[1.0] == pytest.approx(every_row, rel=1e-3, abs=1e-3)
    assert every_row != pytest.approx(head.cv_scores_[1.0], rel=1e-3)
    # one trusted label a class: no fold can hold gold out, so few_labels_C, not a tuned C
    one = np.r_[[np.flatnonzero(y[:32] == c)[0] for c in range(4)], np.arange(32, len(y))]
    few = TunedLogisticRegression(few_labels_C=7.0).fit(X[one], y[one], sample_weight=w[one], trusted=trusted[one])
    assert few.C_ == 7.0 and not few.tuned_
    refit = TunedLogisticRegression(random_state=0).fit(X, y, sample_weight=w, trusted=trusted)
    refit.set_params(C=5.0).fit(X, y)
    assert refit.C_ == 5.0 and not refit.tuned_ and not hasattr(refit, "cv_scores_")  # no stale scores
    with pytest.raises(ValueError, match="score_on"):
        TunedLogisticRegression(score_on="gold").fit(X, y)
    with pytest.raises(ValueError, match="trusted has 3 rows"):
        TunedLogisticRegression().fit(X, y, trusted=np.ones(3, bool))


def test_each_part_is_cut_to_cv_max_items():
    """Above cv_max_items, each part (trusted, untrusted) is cross-validated on a stratified
    subset of that many rows, weights as given."""
    X, y, w, trusted = _gold_and_picks(n_gold=8, n_pseudo=100)       # 32 gold, 400 picks
    head = TunedLogisticRegression(random_state=0, cv_max_items=60).fit(X, y, sample_weight=w, trusted=trusted)
    picks = np.flatnonzero(~trusted)
    sub = np.r_[np.flatnonzero(trusted), picks[_stratified_subset(y[picks], 60, 0)]]
    assert len(sub) == 92
    for C, score in head.cv_scores_.items():
        assert score == pytest.approx(_gold_cv(X[sub], y[sub], w[sub], trusted[sub], C), rel=1e-3, abs=1e-3)


def test_few_labels_generalise_better_than_the_usual_c():
    # unit-norm features, as sentence embeddings are: C=1 shrinks 3 labels a class towards
    # uniform; the tuned C must give a lower log-loss on the items it never saw
    gains = []
    for seed in range(5):
        X, y = _blobs(3 + 200, seed=seed, sep=0.35)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        gold = np.concatenate([np.flatnonzero(y == c)[:3] for c in range(4)])
        rest = np.setdiff1d(np.arange(len(y)), gold)
        tuned = TunedLogisticRegression(random_state=0).fit(X[gold], y[gold])
        plain = LogisticRegression(C=1.0, max_iter=1000).fit(X[gold], y[gold])
        gains.append(log_loss(y[rest], plain.predict_proba(X[rest])) - log_loss(y[rest], tuned.predict_proba(X[rest])))
    assert np.mean(gains) > 0.05 and tuned.C_ > 1.0, gains


def test_a_round_tunes_c_once_for_its_large_fits():
    """The round's first fit over cv_max_items tunes C; its later fits of about that size
    (the folds over gold, the final fit) reuse it; a new round, or data of another size,
    tunes again; small fits always tune, and a user's C or large_C is never replaced."""
    X, y = _blobs(100, seed=3)
    rc = RoundC()
    first = TunedLogisticRegression(cv_max_items=60, random_state=0)
    rc.before(first, 400)
    first.fit(X, y)
    rc.after(first, 400)
    assert first.cv_scores_ and rc.C == first.C_
    again = TunedLogisticRegression(cv_max_items=60, random_state=0)
    rc.before(again, 380)
    again.fit(X[:380], y[:380])
    assert again.C == first.C_ and not hasattr(again, "cv_scores_")     # reused: no cross-validation
    other = TunedLogisticRegression(cv_max_items=60, random_state=0)
    rc.before(other, 200)
    assert other.C is None                                              # half the size: tunes afresh
    small = TunedLogisticRegression(random_state=0)
    rc.before(small, 40)
    assert small.C is None                                              # a small fit always tunes
    given = TunedLogisticRegression(C=0.5, cv_max_items=60)
    rc.before(given, 400)
    assert given.C == 0.5
    rc.reset()
    fresh = TunedLogisticRegression(cv_max_items=60, random_state=0)
    rc.before(fresh, 400)
    assert fresh.C is None and rc.C is None                             # a new round tunes again
    # a fold that leaves a class one trusted label falls back to few_labels_C: not the round's C
    trusted = np.zeros(len(y), dtype=bool)
    trusted[[0, 1, 100, 101, 200, 201, 300]] = True                     # class 3: one gold row
    fold = TunedLogisticRegression(cv_max_items=60, few_labels_C=7.0, random_state=0)
    fold.fit(X, y, trusted=trusted)
    rc.after(fold, 400)
    assert fold.C_ == 7.0 and rc.C is None


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.fixture
def two_blas_threads():
    """BLAS on two threads for the test, so a limit to one is seen whatever CI's default is."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):
        if set(_blas_threads()) != {2}:
            pytest.skip("this BLAS cannot run two threads")
        yield


def test_small_and_sparse_fits_run_on_one_blas_thread_and_large_ones_keep_every_thread(monkeypatch,
                                                                                      two_blas_threads):
    """OpenBLAS's threads made the default demo's small lbfgs fits 3.5x slower on 2 cores."""
    import scipy.sparse as sp

    from views import heads
    from views.heads import SMALL_FIT_CELLS, one_blas_thread_if_small

    monkeypatch.setattr(heads, "usable_cpus", lambda: 16)  # a machine where large fits keep their threads
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with one_blas_thread_if_small(np.zeros((1430, 1280))):
        assert set(_blas_threads()) == {1}
    with one_blas_thread_if_small(sp.csr_matrix((100_000, 50_000))):  # a big, empty sparse matrix
        assert set(_blas_threads()) == {1}
    with one_blas_thread_if_small(np.zeros((SMALL_FIT_CELLS // 8 + 1, 8), dtype=np.float32)):
        assert set(_blas_threads()) == {2}
    assert set(_blas_threads()) == {2}


def test_on_two_cpus_every_fit_runs_on_one_blas_thread_unless_the_user_set_it(monkeypatch, two_blas_threads):
    """On two CPUs OpenBLAS's second thread made even large lbfgs fits slower (20k x 1,280, ten
    classes: 8.5 s against 3.4 s), so there the limit holds whatever the fit's size; a user's
    own OPENBLAS_NUM_THREADS is left to rule."""
    from views import heads

    large = np.zeros((heads.SMALL_FIT_CELLS // 8 + 1, 8), dtype=np.float32)
    monkeypatch.setattr(heads, "usable_cpus", lambda: 2)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with heads.one_blas_thread_if_small(large):
        assert set(_blas_threads()) == {1}
    assert set(_blas_threads()) == {2}
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    with heads.one_blas_thread_if_small(large):
        assert set(_blas_threads()) == {2}


def test_usable_cpus_read_the_affinity_mask_and_the_cgroup_quota(monkeypatch, tmp_path):
    import os

    from views.heads import usable_cpus

    quota = tmp_path / "cpu.max"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert usable_cpus(str(tmp_path / "absent")) == 4
    quota.write_text("max 100000\n")
    assert usable_cpus(str(quota)) == 4
    quota.write_text("150000 100000\n")  # docker --cpus 1.5: two CPUs' worth of threads
    assert usable_cpus(str(quota)) == 2
    quota.write_text("50000 100000\n")
    assert usable_cpus(str(quota)) == 1
    quota.write_text("garbage\n")
    assert usable_cpus(str(quota)) == 4
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    assert usable_cpus(str(tmp_path / "absent")) == 5
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cpus(str(tmp_path / "absent")) == 1



def test_the_trusted_rows_go_only_to_a_head_whose_fit_takes_them():
    class OldSubclass(TunedLogisticRegression):
        def fit(self, X, y, sample_weight=None):  # a user's subclass from before ``trusted``
            return super().fit(X, y, sample_weight)

    mask = np.ones(3, dtype=bool)
    assert head_fit_params(TunedLogisticRegression(), mask) == {"trusted": mask}
    assert head_fit_params(OldSubclass(), mask) == {}
    assert head_fit_params(LogisticRegression(), mask) == {}
    assert head_fit_params(TunedLogisticRegression(), None) == {}
