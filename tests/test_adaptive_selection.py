"""Adaptive selection (``policy: auto``): invariants of select_adaptive on random posteriors
(hypothesis), an under-confident class that still gets picks while the batch's estimated
precision holds, and a real run on Gaussian blobs with one under-confident class in which
every class grows every round while the pseudo-labels' precision stays at least 0.9."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import api
from orchestrator.selection import P_CORRECT_FLOOR, class_bars, class_quota, select_adaptive
from store.database import Store
from store.labels import ABSTAIN


@st.composite
def pools(draw, max_items: int = 40, max_classes: int = 5):
    n = draw(st.integers(0, max_items))
    k = draw(st.integers(2, max_classes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    posterior = rng.dirichlet(np.full(k, draw(st.sampled_from([0.2, 1.0, 5.0]))), size=n)
    posterior[rng.random(n) < draw(st.floats(0, 0.3))] = np.nan          # nobody voted
    p_correct = np.clip(np.nan_to_num(posterior, nan=0.0).max(axis=1) + rng.normal(0, 0.1, n), 0, 1)
    p_correct[rng.random(n) < 0.05] = np.nan
    prior = rng.dirichlet(np.ones(k)) if draw(st.booleans()) else np.full(k, 1.0 / k)
    volume = draw(st.integers(0, 50))
    min_precision = draw(st.floats(0.5, 0.99))
    return posterior, p_correct, prior, volume, min_precision


@settings(max_examples=300, deadline=None)
@given(pools())
def test_select_adaptive_invariants(pool):
    posterior, p_correct, prior, volume, min_precision = pool
    k = posterior.shape[1]
    sel = select_adaptive(posterior, p_correct, prior, volume, min_precision)
    item = sel.item
    assert np.array_equal(item, np.unique(item))                          # sorted, no repeats
    assert ~np.isnan(posterior[item]).any() and ~np.isnan(p_correct[item]).any()
    assert np.array_equal(sel.label, posterior[item].argmax(axis=1))     # only the item's top label
    assert np.array_equal(sel.p_correct, p_correct[item])
    assert (sel.p_correct >= P_CORRECT_FLOOR).all()
    assert (sel.p_correct >= sel.bars[sel.label]).all()                 # each reached its class's bar
    assert np.array_equal(sel.quota, class_quota(prior, volume))
    assert np.array_equal(sel.selected, np.bincount(sel.label, minlength=k)) and sel.selected.sum() == item.size
    assert (sel.selected <= sel.quota).all()
    assert (sel.bars >= P_CORRECT_FLOOR).all() and (sel.bars <= max(min_precision, P_CORRECT_FLOOR) + 1e-12).all()
    for c in np.unique(sel.label):            # each pick reaches the bar, but a class's lone best pick
        mine = sel.p_correct[sel.label == c]
        assert mine.size == 1 or (mine >= min_precision).all()
    assert (sel.p_correct < min_precision).sum() <= np.unique(sel.label).size
    if item.size:
        assert sel.p_correct.mean() >= min_precision - 1e-12 and sel.stopped is None
    else:
        assert sel.stopped == "min_precision"
    again = select_adaptive(posterior.copy(), p_correct.copy(), prior.copy(), volume, min_precision)
    assert np.array_equal(again.item, item) and np.array_equal(again.bars, sel.bars) and again.stopped == sel.stopped


@settings(max_examples=200, deadline=None)
@given(pools())
def test_picks_are_each_classes_best(pool):
    """Within a class, picks go best posterior first: a candidate that reached the bar and has
    a higher posterior than a pick was only left out by the precision trim, which drops the
    least likely first and keeps the class's best pick, so its p_correct is no higher than
    that of the class's most likely pick."""
    posterior, p_correct, prior, volume, min_precision = pool
    sel = select_adaptive(posterior, p_correct, prior, volume, min_precision)
    voted = ~np.isnan(posterior).any(axis=1) & ~np.isnan(p_correct)
    label = np.where(voted, np.nan_to_num(posterior, nan=-1).argmax(axis=1), ABSTAIN)
    for c in range(posterior.shape[1]):
        picked = sel.item[sel.label == c]
        if not picked.size:
            continue
        worst = posterior[picked, c].min()
        better = np.flatnonzero(voted & (label == c) & (p_correct >= sel.bars[c]) & (posterior[:, c] > worst))
        better = np.setdiff1d(better, picked)
        assert (p_correct[better] <= p_correct[picked].max()).all()


def test_class_bars_by_hand():
    # class 0: 4 sure items, class 1: 2, class 2: none; uniform prior
    label = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    p = np.array([0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.7, 0.8])
    bars = class_bars(label, p, np.full(3, 1 / 3), 0.9)
    assert bars[0] == pytest.approx(0.9)                         # the best-learned class: full bar
    assert bars[1] == pytest.approx(max(0.9 * 0.5 / 1.5, P_CORRECT_FLOOR))
    assert bars[2] == P_CORRECT_FLOOR                            # nothing sure yet: the floor
    # relative to the prior: class 1 is rare, 2 sure items of a 1/9 share beat 4 of 2/3
    bars = class_bars(label, p, np.array([2 / 3, 1 / 9, 2 / 9]), 0.9)
    assert bars[1] == pytest.approx(0.9) and bars[0] < 0.9


def under_confident_pool(seed: int = 0, n_per_class: int = 200):
    """3 classes; classes 0 and 1 have top posteriors 0.95-0.99, class 2 only 0.6-0.8;
    p_correct is the top posterior (a calibrated score)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n_per_class)
    top = np.where(y == 2, rng.uniform(0.6, 0.8, y.size), rng.uniform(0.95, 0.99, y.size))
    post = np.repeat(((1 - top) / 2)[:, None], 3, axis=1)
    post[np.arange(y.size), y] = top
    return y, post, top.copy()


@pytest.mark.parametrize("volume", [30, 60, 150, 600])
def test_under_confident_class_still_gets_picks(volume):
    y, post, p = under_confident_pool()
    sel = select_adaptive(post, p, np.full(3, 1 / 3), volume, 0.9)
    assert sel.stopped is None
    assert (sel.selected > 0).all()                              # class 2 is not starved
    assert sel.p_correct.mean() >= 0.9
    assert sel.bars[2] == P_CORRECT_FLOOR and sel.bars[0] == pytest.approx(0.9)
    assert np.array_equal(sel.label, y[sel.item])
    # class 2's picks are its most confident candidates
    c2 = sel.item[sel.label == 2]
    assert p[c2].min() >= np.sort(p[y == 2])[::-1][c2.size - 1] - 1e-12


def test_nothing_qualifies_stops_at_min_precision():
    y, post, p = under_confident_pool()
    # every p_correct under the floor
    sel = select_adaptive(post, np.full(len(y), 0.45), np.full(3, 1 / 3), 60, 0.9)
    assert sel.stopped == "min_precision" and sel.item.size == 0 and sel.selected.sum() == 0
    # all above the floor but the batch can never reach min_precision
    sel = select_adaptive(post, np.full(len(y), 0.7), np.full(3, 1 / 3), 60, 0.9)
    assert sel.stopped == "min_precision" and sel.item.size == 0
    # an empty pool, and a pool nobody voted on
    assert select_adaptive(np.zeros((0, 3)), np.zeros(0), np.full(3, 1 / 3), 10, 0.9).stopped == "min_precision"
    sel = select_adaptive(np.full((4, 3), np.nan), np.full(4, np.nan), np.full(3, 1 / 3), 10, 0.9)
    assert sel.stopped == "min_precision" and sel.item.size == 0


def test_trim_drops_least_likely_first_and_keeps_each_classes_best():
    # class 0: p 0.99, 0.98, 0.97; class 1 (under-confident): 0.8, 0.75, 0.7
    post = np.array([[0.99, 0.01], [0.98, 0.02], [0.97, 0.03], [0.2, 0.8], [0.25, 0.75], [0.3, 0.7]])
    p = post.max(axis=1)
    sel = select_adaptive(post, p, np.array([0.5, 0.5]), 6, 0.9)
    # all six: mean 0.865; dropping 0.7 gives 0.898, dropping 0.75 too gives 0.935
    assert sel.item.tolist() == [0, 1, 2, 3] and sel.selected.tolist() == [3, 1]
    assert sel.p_correct.mean() >= 0.9


def test_each_pick_reaches_the_bar_not_only_the_batch_mean():
    """Picks trimmed to a mean p_correct of 0.9 were 0.89 right on news and Rotten Tomatoes at
    5% gold: a calibrated mean lands on either side of the bar. Class 1 has 5 candidates at
    0.99 and 15 at 0.85 (its bar is low: few of them are sure); the mean of its best 13 still
    reached 0.9, so 8 picks at 0.85 went through. Now only its 5 sure ones do."""
    p = np.r_[np.full(100, 0.99), np.full(5, 0.99), np.full(15, 0.85)]
    label = np.r_[np.zeros(100, dtype=int), np.ones(20, dtype=int)]
    post = np.where(label[:, None] == np.arange(2), p[:, None], 1 - p[:, None])
    sel = select_adaptive(post, p, np.array([0.5, 0.5]), 200, 0.9)
    assert sel.bars[1] < 0.85                                          # class 1's candidates all qualify ...
    assert sel.selected.tolist() == [100, 5] and (sel.p_correct >= 0.9).all()   # ... but only 5 are picks


def test_a_sure_class_does_not_carry_an_unsure_one():
    """30 picks of class 0 at 0.99 would let 20 of class 1 at 0.75 through a batch-wide mean
    (0.93); each class must reach min_precision on its own, so class 1 keeps only its best."""
    p = np.r_[np.full(30, 0.99), np.linspace(0.76, 0.74, 20)]
    post = np.zeros((50, 2))
    post[:30, 0], post[30:, 1] = p[:30], p[30:]
    post[:30, 1], post[30:, 0] = 1 - p[:30], 1 - p[30:]
    sel = select_adaptive(post, p, np.array([0.5, 0.5]), 100, 0.9)
    assert sel.selected.tolist() == [30, 1]
    assert sel.item[sel.label == 1].tolist() == [30]                   # class 1's most likely candidate


# ---------------------------------------------------------------------- a real run
CLASSES = ["ant", "bee", "cat", "dog"]
HARD = 3                           # the under-confident class


def blob_frame(n_train: int = 1500, n_test: int = 300, n_gold: int = 5, seed: int = 0, hard_centre: float = 0.0,
               hard_spread: float = 1.4, spread: float = 0.7) -> tuple[pd.DataFrame, np.ndarray]:
    """4 classes of Gaussian blobs seen through two feature groups (a_*, b_*, 3 columns each):
    classes 0-2 sit 4 apart on the axes (each view puts them on different axes) with
    ``spread``; class 3 (HARD) sits at ``hard_centre`` on every axis with the wider
    ``hard_spread`` in both views, so both views are systematically less sure of it.
    ``n_gold`` gold labels per class among the ``n_train`` training rows; the ``n_test``
    test rows carry their labels. Returns the frame and every row's true label (which the
    store never sees for the unlabelled rows)."""
    rng = np.random.default_rng(seed)
    total = n_train + n_test
    y = rng.integers(0, 4, total)
    sd = np.where(y == HARD, hard_spread, spread)[:, None]
    centres = {"a": np.array([[4, 0, 0], [0, 4, 0], [0, 0, 4], [0, 0, 0]], dtype=float),
               "b": np.array([[0, 0, 4], [4, 0, 0], [0, 4, 0], [0, 0, 0]], dtype=float)}
    cols = {}
    for view, c in centres.items():
        c[HARD] = hard_centre
        x = c[y] + rng.normal(0, 1, (total, 3)) * sd
        cols.update({f"{view}_{j}": x[:, j] for j in range(3)})
    df = pd.DataFrame(cols)
    df.insert(0, "id", [f"b{i:05d}" for i in range(total)])
    names = np.asarray(CLASSES, dtype=object)[y]
    label = np.full(total, None, dtype=object)
    for c in range(4):
        idx = np.flatnonzero(y[:n_train] == c)[:n_gold]
        label[idx] = names[idx]
    label[n_train:] = names[n_train:]
    df["label"] = label
    df["split"] = ["train"] * n_train + ["test"] * n_test
    return df, names


def write_blob_run(tmp: Path, df: pd.DataFrame, max_rounds: int = 5, C: float | None = 1.0) -> Path:
    """The CSV and a config that leaves the ``cotrain`` policy, combination, calibration and
    min_precision at their defaults (``auto``). ``C``: the views' logistic-regression C, fixed
    only so that each fit skips its own cross-validation of C and the run stays fast."""
    df.to_csv(tmp / "items.csv", index=False)
    cfg = {"task": {"labels": CLASSES},
           "data": {"train": "items.csv", "id_column": "id", "split_column": "split"},
           "views": [{"name": v, "kind": "sklearn", "column_prefix": f"{v[1]}_",
                      **({"estimator_params": {"C": C}} if C is not None else {})} for v in ("va", "vb")],
           "cotrain": {"max_rounds": max_rounds}, "seed": 0, "store": "run.duckdb"}
    path = tmp / "cotrain.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_blobs(tmp: Path, **data) -> dict:
    """Run the default policy on ``blob_frame(**data)`` and read back from the store, against
    the hidden truth: ``labels`` (one row per accepted pseudo-label: item, label, round,
    p_correct, right), ``per_round`` (round x class counts), ``precision`` (per round),
    ``estimates`` (round -> round_estimates row), ``added`` (round -> labels_added) and
    ``round0_top`` (per true class, the mean top probability of the product of the two
    views' round-0 pool predictions)."""
    df, truth = blob_frame(**data)
    res = api.run(write_blob_run(tmp, df))
    assert res.status == "finished"
    truth_of = dict(zip(df.id, truth))
    with Store(tmp / "run.duckdb", read_only=True) as st:
        rid = st.latest_run()
        rows = st.con.execute("SELECT item_id, label, round, source, p_correct FROM pseudo_labels"
                              " WHERE run_id = ? AND status = 'accepted'", [rid]).fetchall()
        est = st.con.execute("SELECT round, combination, n_selected, class_selected, stopped, est_precision"
                             " FROM round_estimates WHERE run_id = ? ORDER BY round", [rid]).fetchall()
        added = dict(st.con.execute("SELECT round, labels_added FROM rounds WHERE run_id = ?", [rid]).fetchall())
        preds = st.con.execute("SELECT item_id, view, probs FROM predictions WHERE run_id = ? AND round = 0"
                               " ORDER BY item_id, view", [rid]).fetchall()
    labels = pd.DataFrame(rows, columns=["item", "label", "round", "source", "p_correct"])
    labels["right"] = [truth_of[i] == lab for i, lab in zip(labels.item, labels.label)]
    per_round = labels.groupby(["round", "label"]).size().unstack(fill_value=0).reindex(columns=CLASSES, fill_value=0)
    items = [p[0] for p in preds[::2]]
    assert [p[1] for p in preds] == ["va", "vb"] * len(items)
    prod = np.array([p[2] for p in preds[::2]]) * np.array([p[2] for p in preds[1::2]])
    top = (prod / prod.sum(axis=1, keepdims=True)).max(axis=1)
    true_class = np.array([truth_of[i] for i in items])
    return {"labels": labels, "per_round": per_round, "precision": labels.groupby("round").right.mean(),
            "estimates": {r[0]: r[1:] for r in est}, "added": added,
            "round0_top": {c: float(top[true_class == c].mean()) for c in CLASSES}}


def assert_every_class_grows_at_precision(out: dict) -> None:
    labels, per_round, precision = out["labels"], out["per_round"], out["precision"]
    report = {"per_round": per_round.to_dict("index"), "precision": precision.round(3).to_dict(),
              "est_precision": {r: e[4] for r, e in out["estimates"].items()}}
    assert len(labels) > 0 and (labels.source == "auto").all(), report
    assert not labels.p_correct.isna().any() and (labels.p_correct >= P_CORRECT_FLOOR).all(), report
    selecting = sorted(r for r, n in out["added"].items() if n > 0)
    assert selecting == sorted(per_round.index) and len(selecting) >= 2, report
    for r in selecting:                                                # every class grows every round
        assert (per_round.loc[r] >= 1).all(), report
    assert labels.right.mean() >= 0.9, report                          # precision holds overall ...
    assert (precision >= 0.9).all(), report                            # ... and round by round
    assert per_round[CLASSES[HARD]].sum() > 0, report                  # the under-confident class ends labelled
    for r in selecting:                                                # the estimates agree with the store
        comb, n, sel, stopped, _ = out["estimates"][r]
        assert comb == "product" and stopped is None, report            # two views: the product
        assert n == out["added"][r] == per_round.loc[r].sum() and sum(sel) == n, report
        assert sel == [int(per_round.loc[r, c]) for c in CLASSES], report


def test_every_class_grows_every_round_at_precision(tmp_path: Path):
    out = run_blobs(tmp_path)
    others = [out["round0_top"][c] for c in CLASSES if c != CLASSES[HARD]]
    assert out["round0_top"][CLASSES[HARD]] < min(others) - 0.1        # the pool really has an under-confident class
    assert_every_class_grows_at_precision(out)


# Was a strict xfail while pseudo-labels weighed 0.3 under `auto`: views trained on four rounds of
# them grew over-confident in the overlap, and the last round's labels were 0.74 right at an
# estimated 0.92. At 0.1 they stay on the boundary: rounds 0.996 / 0.988 / 0.981 / 0.945 / 0.903
# right (the last, 28 of 31 labels, at an estimated 0.934), 0.974 overall. The last round has one
# label to spare, so it is the case to watch when selection or weighting changes.
def test_precision_holds_when_the_views_cannot_label_the_whole_pool(tmp_path: Path):
    out = run_blobs(tmp_path, hard_centre=1.0, hard_spread=1.6, spread=0.9)
    assert_every_class_grows_at_precision(out)
