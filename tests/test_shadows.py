"""Shadow runs (``orchestrator/shadows.py``): one replay of the rounds per gold fold, without
that fold, so the fold's gold labels score the procedure honestly; stored, and resumed."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from orchestrator import api
from orchestrator.selection import aligned_scale
from orchestrator.shadows import ShadowRound, Shadows, pool_reference, shadow_crossfit, wanted
from store.database import Store
from tests.conftest import synthetic_frame, write_config
from views.base import ITEM_ID_COLUMN, ViewContext
from views.registry import resolve_kind


def _gold(n: int = 60, per_class: tuple[int, ...] = (6, 5, 1), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(gold labels with -1 for the pool, trainable mask): the last 10 items are test items."""
    rng = np.random.default_rng(seed)
    gold = np.full(n, -1, dtype=np.int16)
    at = rng.permutation(n - 10)
    start = 0
    for c, m in enumerate(per_class):
        gold[at[start:start + m]] = c
        start += m
    trainable = np.ones(n, dtype=bool)
    trainable[-10:] = False
    gold[-10:] = rng.integers(0, 3, 10)  # test items have labels too: never folded, never trained on
    return gold, trainable


def test_folds_are_fixed_stratified_and_leave_single_gold_classes_out():
    gold, trainable = _gold()
    sh = Shadows.start(np.where(trainable, gold, -1), trainable, 3, seed=7)
    again = Shadows.start(np.where(trainable, gold, -1), trainable, 3, seed=7)
    assert np.array_equal(sh.fold, again.fold) and np.array_equal(sh.sample, again.sample)
    is_gold = (gold >= 0) & trainable
    assert (sh.fold[~is_gold] == -1).all()
    for c, m in ((0, 6), (1, 5)):
        f = sh.fold[is_gold & (gold == c)]
        assert (f >= 0).all() and np.bincount(f, minlength=3).max() - np.bincount(f, minlength=3).min() <= 1
    assert (sh.fold[is_gold & (gold == 2)] == -1).all()  # a single gold item: no fold could hold it out
    assert set(sh.sample) == set(np.flatnonzero(trainable & (gold < 0)))
    small = Shadows.start(np.where(trainable, gold, -1), trainable, 3, seed=7, sample_size=20)
    assert len(small.sample) == 20 and set(small.sample) <= set(sh.sample)
    assert sh.pseudo.shape == (3, len(sh.sample)) and (sh.pseudo == -1).all()


def test_a_shadow_trains_on_the_other_folds_gold_and_its_own_labels_only():
    gold, trainable = _gold()
    g = np.where(trainable, gold, -1)
    sh = Shadows.start(g, trainable, 3, seed=1)
    mine, other = sh.sample[:4], sh.sample[4:8]
    sh.restore(np.zeros(4, dtype=np.int64), mine, np.array([0, 1, 2, 0]), np.full(4, 0.8))
    sh.restore(np.ones(4, dtype=np.int64), other, np.array([1, 1, 1, 1]), np.full(4, 0.9))
    pos, y, w = sh.training_set(0, g, "confidence", align=True)
    expect = np.flatnonzero(((g >= 0) & (sh.fold != 0)) | np.isin(np.arange(60), mine))
    assert np.array_equal(pos, expect)
    assert not np.isin(pos, np.flatnonzero(sh.fold == 0)).any() and not np.isin(pos, other).any()
    assert np.array_equal(y[np.isin(pos, mine)], [0, 1, 2, 0])
    picked = np.isin(pos, mine)  # confidence 0.8, aligned to the gold class shares as the run's are
    assert np.allclose(w, np.where(picked, 0.8, 1.0) * aligned_scale(y, ~picked)) and np.allclose(w[~picked], 1.0)
    assert np.array_equal(sh.left(0), np.setdiff1d(sh.sample, mine))
    _, y1, w1 = sh.training_set(1, g, 0.5, align=True)
    assert sorted(set(sh.training_set(1, g, 0.5)[2])) == [0.5, 1.0]  # not aligned: the weight as given
    # its four picks are all class 1: they count as the gold share of class 1 of four items
    share1 = float(np.mean(y1[w1 == 1.0] == 1))
    assert 0 < share1 < 1 and sorted(set(np.round(w1, 3))) == [round(0.5 * share1, 3), 1.0]
    gold_pos = np.flatnonzero(g >= 0)[:1]  # not a sample item: picks from another sample are refused whole
    assert not sh.restore(np.array([2, 2]), np.r_[sh.sample[9], gold_pos], np.array([0, 0]), np.ones(2))
    assert not sh.restore(np.array([3]), sh.sample[9:10], np.array([0]), np.ones(1))  # no fold 3
    assert (sh.pseudo[2] == -1).all()


class _Recording:
    """A real (nearest-centroid) view that records the item ids of every fit and prediction."""

    name = "rec"

    def __init__(self) -> None:
        self.fits: list[set[str]] = []
        self.predicted: list[list[set[str]]] = []

    def resolve_fields(self, columns):
        return ["x"]

    def fit(self, items: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray) -> None:
        self.fits.append(set(items[ITEM_ID_COLUMN]))
        self.predicted.append([])  # the prediction batches of this fit
        x = items["x"].to_numpy()
        self.centres = np.array([x[y == c].mean() if (y == c).any() else np.inf for c in range(3)])

    def predict_proba(self, items: pd.DataFrame) -> np.ndarray:
        self.predicted[-1].append(set(items[ITEM_ID_COLUMN]))
        d = -np.abs(items["x"].to_numpy()[:, None] - self.centres[None, :])
        p = np.exp(d - d.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)


def test_shadow_fits_never_see_their_folds_gold_items():
    gold, trainable = _gold(per_class=(6, 6, 6))
    g = np.where(trainable, gold, -1)
    sh = Shadows.start(g, trainable, 3, seed=2)
    sh.restore(np.array([0, 0, 2]), sh.sample[:3], np.array([0, 1, 2]), np.full(3, 0.9))
    ids = np.array([f"it{i}" for i in range(60)])
    x = np.where(gold >= 0, gold, np.arange(60) % 3).astype(float)

    def fetch(pos: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"x": x[pos], ITEM_ID_COLUMN: ids[pos]})

    state = SimpleNamespace(is_test=~trainable, gold=gold,
                            label_sources=lambda pos: pd.Categorical(["gold"] * len(pos)))
    view = _Recording()
    cot = SimpleNamespace(pseudo_weight=1.0, align_pseudo_labels=False)  # the run's cotrain section
    sr = shadow_crossfit([view], sh, state, cot, fetch, 3, 7, lambda *a: None)  # type: ignore[arg-type]
    assert len(view.fits) == 3
    for f, seen in enumerate(view.fits):
        assert not seen & set(ids[sh.fold == f])                     # its fold's gold: never
        assert seen == set(ids[sh.training_set(f, g, 1.0)[0]])     # the rest of gold and its own labels
    assert set(ids[sh.sample[:2]]) <= view.fits[0] and not set(ids[sh.sample[:2]]) & view.fits[1]
    assert sr.oof.shape == (18, 1, 3) and np.array_equal(np.sort(sr.oof_y), np.repeat([0, 1, 2], 6))
    assert [len(x) for x in sr.left] == [len(sh.sample) - 2, len(sh.sample), len(sh.sample) - 1]
    # each fold's held-out gold is predicted in one batch with that shadow's pool: a transductive
    # (graph) view spreads over both at once, so its gold scores come from the regime it labels in
    for f, batches in enumerate(view.predicted):  # batch_size 7: 6 held-out gold items and 1 pool item first
        held = set(ids[sh.fold == f])
        assert held < batches[0] and len(batches[0] - held) == 1 and set().union(*batches) == held | set(ids[sr.left[f]])
    # the last round wants no pool scores: a plain view predicts held-out gold alone, a
    # transductive one still with its pool, and no pool scores come back either way
    for transductive, extra in ((False, 0), (True, 1)):
        view = _Recording()
        view.transductive = transductive  # type: ignore[attr-defined]
        last = shadow_crossfit([view], sh, state, cot, fetch, 3, 7, lambda *a: None, with_pool=False)
        assert all(len(b[0] - set(ids[sh.fold == f])) == extra for f, b in enumerate(view.predicted))
        assert [len(x) for x in last.left] == [0, 0, 0] and last.oof.shape == (18, 1, 3)


class _PaidPlugin:
    """A paid plug-in view written for the release before ``fixed_prompts``: it counts as paying."""

    calibration, calibration_max_items, budget_usd = "none", 0, None

    def plan(self, items):
        return {}

    def price_per_call(self, p, c):
        return 0.0


def test_the_pool_reference_pairs_each_shadows_items_with_the_runs():
    # the run has pool positions 3, 5, 8, 13, 21 left; shadow 0 has 5, 13, 34 left, shadow 1
    # none, shadow 2 has 3 and 21: each gives the items both have, as indices into the run's
    # pool with the shadow's own rows of them
    probs = [np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2), np.zeros((0, 2, 2), np.float32),
             100 + np.arange(2 * 2 * 2, dtype=np.float32).reshape(2, 2, 2)]
    sr = ShadowRound(np.zeros((0, 2, 2)), np.zeros(0, dtype=np.int64),
                     [np.array([5, 13, 34]), np.zeros(0, dtype=np.int64), np.array([3, 21])], probs)
    ref = pool_reference(sr, np.array([3, 5, 8, 13, 21]))
    assert len(ref) == 2
    assert ref[0][0].tolist() == [1, 3] and np.array_equal(ref[0][1], probs[0][[0, 1]])
    assert ref[1][0].tolist() == [0, 4] and np.array_equal(ref[1][1], probs[2])


def test_auto_keeps_shadows_unless_an_llm_view_would_pay_for_them():
    cfg = SimpleNamespace(cotrain=SimpleNamespace(shadows="auto", policy="auto", calibration_folds=5,
                                                  pool_sample=None))
    ctx = ViewContext(labels=("neg", "pos"), seed=0)
    llm = resolve_kind("llm")
    zero_shot = llm.from_params("z", ctx, fields=["t"], model="openai/x")
    few_shot = llm.from_params("f", ctx, fields=["t"], model="openai/x", demonstrations={"strategy": "balanced"})
    try:
        assert zero_shot.fixed_prompts and not few_shot.fixed_prompts
        assert wanted(cfg, [_Recording()]) and wanted(cfg, [_Recording(), zero_shot])  # type: ignore[list-item]
        assert not wanted(cfg, [_Recording(), zero_shot, few_shot])  # type: ignore[list-item]
        assert not wanted(cfg, [_Recording(), _PaidPlugin()])  # type: ignore[list-item]
        cfg.cotrain.pool_sample = 100  # the run predicts 100 items a round; a shadow's sample would pay for more
        assert not wanted(cfg, [_Recording(), zero_shot]) and wanted(cfg, [_Recording()])  # type: ignore[list-item]
        cfg.cotrain.pool_sample = None
        cfg.cotrain.shadows = True
        assert wanted(cfg, [few_shot])  # type: ignore[list-item]
        cfg.cotrain.policy, cfg.cotrain.shadows = "k_best", "auto"
        assert not wanted(cfg, [_Recording()])  # type: ignore[list-item]
        cfg.cotrain.shadows, cfg.cotrain.calibration_folds = True, 0
        assert not wanted(cfg, [_Recording()])  # type: ignore[list-item]
    finally:
        zero_shot.close()
        few_shot.close()


def _shadow_rows(store: Path) -> list[tuple]:
    with Store(store, read_only=True) as st:
        return st.con.execute("SELECT round, fold, row_idx, label FROM shadow_labels ORDER BY round, fold, row_idx"
                              ).fetchall()


def _frame() -> pd.DataFrame:
    return synthetic_frame(n=900, n_gold=30, n_test=150, seed=3, noise=0.9)


def test_a_run_stores_its_shadows_apart_from_gold_and_test_items(tmp_path: Path):
    df = _frame()
    res = api.run(write_config(tmp_path, df, policy="auto", max_rounds=3))
    rows = _shadow_rows(tmp_path / "run.duckdb")
    assert rows and {0, 1} <= {r[0] for r in rows} <= {0, 1, 2} and {r[1] for r in rows} <= set(range(5))
    labelled = set(np.flatnonzero(df["label"].notna().to_numpy()))  # gold and test rows
    assert not {r[2] for r in rows} & labelled
    per_fold = [[r[2] for r in rows if r[1] == f] for f in range(5)]
    assert all(len(p) == len(set(p)) for p in per_fold)  # a shadow labels an item once
    truth = df["truth"].map({"ant": 0, "bee": 1, "cat": 2}).to_numpy()
    right = np.mean([truth[r[2]] == r[3] for r in rows])
    assert right > 0.8  # the shadows select as the run does
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        assert st.scalar("SELECT min(n_calibration) FROM round_estimates") == 30
    (tmp_path / "off").mkdir()
    api.run(write_config(tmp_path / "off", df, policy="auto", max_rounds=3, shadows=False))
    assert _shadow_rows(tmp_path / "off" / "run.duckdb") == []
    assert res.status == "finished"


def test_every_round_reads_its_scores_on_the_shadows_scale_from_round_0(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    """The score map's reference reaches ``assess`` at each round that predicts the pool, round
    0 included (heads tuned on every gold item are sharper than the folds'); none without shadows."""
    import orchestrator.rounds as rounds_module

    seen: list[int | None] = []
    real = rounds_module.assess

    def spy(*args, **kwargs):
        ref = args[8] if len(args) > 8 else kwargs.get("reference")
        if args[3] is not None:  # a round that predicted the pool
            seen.append(None if ref is None else sum(len(at) for at, _ in ref))
        return real(*args, **kwargs)

    monkeypatch.setattr(rounds_module, "assess", spy)
    df = _frame()
    api.run(write_config(tmp_path, df, policy="auto", max_rounds=2))
    assert len(seen) >= 2 and all(n is not None and n > 0 for n in seen)
    seen.clear()
    (tmp_path / "off").mkdir()
    api.run(write_config(tmp_path / "off", df, policy="auto", max_rounds=2, shadows=False))
    assert seen and all(n is None for n in seen)


def test_a_failed_run_resumes_its_shadows_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    df = _frame()
    (tmp_path / "ref").mkdir()
    ref = api.run(write_config(tmp_path / "ref", df, policy="auto", max_rounds=3))
    import views.sklearn_view as sv

    real_fit = sv.SklearnView.fit
    calls = {"n": 0}

    def flaky(self, items, y, w):  # each round fits each of 2 views 5 (shadows) + 1 times: 25 is in round 2
        calls["n"] += 1
        if calls["n"] == 25:
            raise OSError("disk hiccup")
        return real_fit(self, items, y, w)

    monkeypatch.setattr(sv.SklearnView, "fit", flaky)
    cfg = write_config(tmp_path, df, policy="auto", max_rounds=3)
    with pytest.raises(OSError):
        api.run(cfg)
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        assert st.scalar("SELECT max(round) FROM rounds") == 1
    monkeypatch.setattr(sv.SklearnView, "fit", real_fit)
    res = api.run(cfg)
    assert res.resumed and res.status == "finished"
    assert _shadow_rows(tmp_path / "run.duckdb") == _shadow_rows(tmp_path / "ref" / "run.duckdb")
    assert res.labels_added == ref.labels_added and res.final_metrics == ref.final_metrics


def test_a_review_import_starts_the_shadows_afresh(tmp_path: Path):
    """Reviewed labels become gold (or correct it) and move the folds: the reopened rounds'
    shadows start empty, and a later resume restores only the picks made since the import."""
    from orchestrator.config import load_config
    from orchestrator.shadows import open_shadows
    from orchestrator.state import LabelState

    df = _frame()
    cfg_path = write_config(tmp_path, df, policy="auto", max_rounds=2)
    api.run(cfg_path)
    store = tmp_path / "run.duckdb"
    pool_ids = df.id[df.label.isna() & (df.split == "train")].tolist()[:6]
    truth = dict(zip(df.id, df.truth))
    (tmp_path / "reviews.csv").write_text("id,label\n" + "".join(f"{i},{truth[i]}\n" for i in pool_ids))
    cfg = load_config(cfg_path)

    def opened() -> Shadows:
        with Store(store) as st:
            state = LabelState.load(st, 1, cfg.task.names, [v.name for v in cfg.views])
            sh = open_shadows(cfg, st, 1, state, [_Recording()])  # type: ignore[list-item]
        assert sh is not None
        return sh

    assert (opened().pseudo >= 0).sum() > 0               # before the import: the stored picks come back
    gold_item = df.id[df.label.notna() & (df.split == "train")].iloc[0]
    other = next(c for c in ("ant", "bee", "cat") if c != df.set_index("id").label[gold_item])
    (tmp_path / "fix.csv").write_text(f"id,label\n{gold_item},{other}\n")
    api.import_reviews(store, tmp_path / "fix.csv", rounds=0)  # a corrected gold label: same count, new folds
    assert (opened().pseudo >= 0).sum() == 0
    api.import_reviews(store, tmp_path / "reviews.csv", rounds=0)
    assert (opened().pseudo >= 0).sum() == 0              # the gold grew: the shadows start afresh
    with Store(store, read_only=True) as st:
        before = st.scalar("SELECT count(*) FROM shadow_labels")
    (tmp_path / "again.csv").write_text("id,label,reviewer\n" + "".join(f"{i},{truth[i]},bo\n" for i in pool_ids))
    api.import_reviews(store, tmp_path / "again.csv", rounds=2)  # another reviewer agrees: gold unchanged
    api.run(cfg_path)
    with Store(store, read_only=True) as st:
        new = st.scalar("SELECT count(*) FROM shadow_labels") - before
        last = st.scalar("SELECT max(round) FROM rounds")
    assert last == 4 and new > 0 and (opened().pseudo >= 0).sum() == new


def test_a_resume_without_stored_shadow_picks_says_the_shadows_start_from_gold(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch,
                                                                              caplog: pytest.LogCaptureFixture):
    """A run made by a release that kept no shadows for its views (or whose shadows picked
    nothing) resumes with shadows that start from the gold labels alone: a warning says so."""
    import logging

    import views.sklearn_view as sv

    real_fit = sv.SklearnView.fit
    calls = {"n": 0}

    def flaky(self, items, y, w):  # 2 views x (5 shadows + 1): fit 13 is in round 1
        calls["n"] += 1
        if calls["n"] == 13:
            raise OSError("disk hiccup")
        return real_fit(self, items, y, w)

    monkeypatch.setattr(sv.SklearnView, "fit", flaky)
    cfg = write_config(tmp_path, _frame(), policy="auto", max_rounds=3)
    with pytest.raises(OSError):
        api.run(cfg)
    with Store(tmp_path / "run.duckdb") as st:
        assert st.scalar("SELECT max(round) FROM rounds") == 0
        st.con.execute("DELETE FROM shadow_labels")  # as the previous release left it
    monkeypatch.setattr(sv.SklearnView, "fit", real_fit)
    with caplog.at_level(logging.WARNING, logger="cotrain"):
        res = api.run(cfg)
    assert res.resumed and res.status == "finished"
    assert any("no shadow picks are stored" in r.getMessage() for r in caplog.records)
