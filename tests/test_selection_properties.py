"""Invariants of the pure selection core on random label matrices (hypothesis): whatever the
views say, merge_picks never accepts a disputed item, every accepted label is what its
pickers said, the veto only removes, and feeding masks never teach a view its own pick."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.selection import (
    ABSTAIN,
    aligned_scale,
    feeding_masks,
    find_disputes,
    merge_picks,
    select_round,
    select_threshold,
    termination,
)


@st.composite
def label_matrices(draw, max_items: int = 30, max_views: int = 4, max_classes: int = 4):
    n = draw(st.integers(0, max_items))
    v = draw(st.integers(1, max_views))
    k = draw(st.integers(2, max_classes))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, k, size=(n, v)).astype(np.int16)
    conf = rng.uniform(1.0 / k, 1.0, size=(n, v)).astype(np.float32)
    conf[labels == ABSTAIN] = np.nan
    picked = rng.random((n, v)) < draw(st.floats(0, 1))
    threshold = draw(st.floats(0.0, 0.99))
    return labels, conf, picked, threshold, k


@settings(max_examples=300, deadline=None)
@given(label_matrices(), st.booleans())
def test_merge_picks_invariants(m, with_consensus):
    labels, conf, picked, threshold, k = m
    n = len(labels)
    consensus = np.random.default_rng(0).integers(0, k, n) if with_consensus else None
    out = merge_picks(labels, conf, picked, threshold, consensus=consensus)
    assert not np.intersect1d(out.item, out.disputed).size            # a disputed item is never accepted
    assert np.array_equal(out.item, np.unique(out.item)) and np.array_equal(out.disputed, np.unique(out.disputed))
    real = picked & (labels != ABSTAIN)
    for row, i in enumerate(out.item):
        src = out.sources[row]
        assert src.any() and np.array_equal(src, real[i])              # made by exactly its pickers
        assert (labels[i, src] == out.label[row]).all()                # who all said this label
        assert np.isclose(out.confidence[row], np.nanmean(conf[i, src]), atol=1e-5)
        if consensus is not None:
            assert consensus[i] == out.label[row]                      # the veto let it through
    # every disputed item really has two voices that differ
    confident = select_threshold(labels, conf, threshold) | real
    for row, i in enumerate(out.disputed):
        said = labels[i, confident[i]]
        assert len(set(said.tolist())) >= 2 and np.array_equal(out.voices[row], confident[i])
    # the veto only removes accepted items, never adds or disputes
    free = merge_picks(labels, conf, picked, threshold)
    assert set(out.item.tolist()) <= set(free.item.tolist())
    assert np.array_equal(out.disputed, free.disputed)
    # find_disputes uses the same rule for confident views alone
    assert set(np.flatnonzero(find_disputes(labels, conf, threshold)).tolist()) <= set(out.disputed.tolist())


@settings(max_examples=200, deadline=None)
@given(label_matrices(), st.sampled_from(["threshold", "k_best", "agreement", "self"]), st.integers(1, 20))
def test_select_round_accepts_only_labels_some_view_gave(m, policy, k_best):
    labels, conf, _, threshold, k = m
    prior = np.ones(k, dtype=np.int64)
    ens = labels.max(axis=1) if labels.size else np.zeros(0, dtype=np.int16)
    out = select_round(policy, labels, conf, threshold=threshold, k=k_best, min_agree=1, prior=prior, ensemble=ens)
    for row, i in enumerate(out.item):
        assert out.label[row] in labels[i].tolist() and out.label[row] != ABSTAIN
        if policy != "self":
            assert out.label[row] == ens[i]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 40), st.integers(1, 5), st.integers(0, 2**32 - 1),
       st.sampled_from(["threshold", "k_best", "agreement", "self"]), st.sampled_from(["cross", "shared"]))
def test_feeding_masks(n, v, seed, policy, feeding):
    rng = np.random.default_rng(seed)
    is_gold = rng.random(n) < 0.3
    sources = (rng.random((n, v)) < 0.4) & ~is_gold[:, None]
    shared = ~is_gold & ~sources.any(axis=1) & (rng.random(n) < 0.2)
    masks = feeding_masks(is_gold, sources, shared, policy=policy, feeding=feeding)
    assert len(masks) == v
    for j, m in enumerate(masks):
        assert m[is_gold].all() and m[shared].all()                    # gold and verdicts train everyone
        only_mine = sources[:, j] & (sources.sum(axis=1) == 1)
        if policy == "self":
            assert np.array_equal(m & ~is_gold & ~shared, sources[:, j] & ~is_gold & ~shared)
        elif feeding == "cross" and v == 1:                            # a lone view has no peer: its own picks
            assert m[sources[:, 0]].all()
        elif feeding == "cross":
            assert not (m & only_mine).any()                          # never taught what only it said
            others = np.delete(sources, j, axis=1).any(axis=1)
            assert m[others].all()
        else:
            assert m.all()


def test_termination_order():
    assert termination(3, 3, 10) == "max_rounds"
    assert termination(3, 3, 0) == "max_rounds"       # the last round only fits and evaluates
    assert termination(1, 3, 0) == "pool_exhausted"
    assert termination(1, 3, 5) is None
    assert termination(1, 3, 5, added=0) == "no_change"
    assert termination(1, 3, 5, added=2) is None


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 60), st.integers(2, 6), st.integers(0, 2**32 - 1))
def test_aligned_scale_caps_each_class_at_its_gold_share_and_never_raises(n, k, seed):
    """Gold rows keep weight 1; no pseudo-label is up-weighted; after scaling, each class
    with gold holds at most its gold share of the pseudo-labels' total count (up to rounding),
    and a class at or under its share keeps every label at full weight."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    is_gold = rng.random(n) < 0.3
    f = aligned_scale(y, is_gold)
    assert f.shape == (n,) and (f[is_gold] == 1.0).all() and ((f > 0) & (f <= 1.0)).all()
    pseudo = ~is_gold
    if not pseudo.any() or not is_gold.any():
        assert (f == 1.0).all()
        return
    share = np.bincount(y[is_gold], minlength=k) / is_gold.sum()
    for c in range(k):
        mine = pseudo & (y == c)
        if not mine.any() or share[c] == 0:
            assert (f[mine] == 1.0).all()
            continue
        assert f[mine].sum() <= share[c] * pseudo.sum() + 1e-9 or (f[mine] == 1.0).all()
        if mine.sum() <= share[c] * pseudo.sum():
            assert (f[mine] == 1.0).all()
