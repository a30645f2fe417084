"""Choosing what people review: the selection functions on label matrices of known shape,
and ``export --select`` on a real run whose chosen items go back through ``import-reviews``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from orchestrator import api
from orchestrator.cli import app
from orchestrator.review_selection import (active_scores, choose_for_review, class_need, close_call_batch,
                                           combined_posterior, greedy_batch, margin_uncertainty, typical_batch,
                                           vote_disagreement)
from store.database import Store
from store.errors import StoreError
from store.exchange.candidates import review_candidates
from tests.conftest import LABELS, synthetic_frame, write_config


def _confident(n: int, k: int, label: np.ndarray, p: float) -> np.ndarray:
    """(n, k) rows giving ``label`` probability ``p`` and the rest evenly."""
    out = np.full((n, k), (1 - p) / (k - 1))
    out[np.arange(n), label] = p
    return out


# ---------------------------------------------------------------- pure functions
def test_margin_and_disagreement_values():
    post = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.6, 0.3, 0.1]])
    assert np.allclose(margin_uncertainty(post), [1.0, 0.0, 0.7])
    two = np.stack([_confident(3, 3, np.array([0, 0, 1]), 0.8), _confident(3, 3, np.array([0, 1, 1]), 0.8)], axis=1)
    assert np.allclose(vote_disagreement(two), [0.0, 1.0, 0.0])
    abstain = two.copy()
    abstain[0, 1] = np.nan  # one voice left: no disagreement measurable
    assert vote_disagreement(abstain)[0] == 0.0


def test_class_need_favours_the_class_short_of_labels():
    post = np.eye(3)
    need = class_need(post, np.array([50, 50, 2]), np.full(3, 1 / 3))
    assert need[2] > 2 * need[0] and np.isclose(need[0], need[1])
    assert np.allclose(class_need(post, np.array([10, 10, 10]), np.full(3, 1 / 3)), 1.0)


def test_combined_posterior_follows_the_runs_combination_and_fills_unpredicted_items():
    probs = np.stack([_confident(4, 3, np.array([0, 1, 2, 0]), 0.7), _confident(4, 3, np.array([0, 1, 2, 1]), 0.9)],
                     axis=1)
    probs[3] = np.nan  # never predicted
    prior = np.array([0.2, 0.3, 0.5])
    product = combined_posterior(probs, "product", np.ones(2), prior)
    assert product[:3].argmax(axis=1).tolist() == [0, 1, 2] and product[0, 0] > 0.9
    assert np.allclose(product[3], prior)
    best = combined_posterior(probs, "best_view", np.array([0.0, 1.0]), prior)
    assert np.allclose(best[:3], probs[:3, 1])


def test_uncertainty_takes_the_closest_calls_first():
    rng = np.random.default_rng(0)
    n, k = 300, 3
    p = rng.uniform(0.4, 0.99, n)
    probs = np.empty((n, 2, k))
    probs[:, :, 0] = p[:, None]
    probs[:, :, 1:] = ((1 - p) / 2)[:, None, None]
    pick = choose_for_review(probs, "product", np.ones(2), np.array([5, 5, 5]), 20, "uncertainty", 0)
    assert set(pick) == set(np.argsort(p)[:20])


def test_random_is_seeded_distinct_and_bounded():
    probs = np.full((50, 2, 3), 1 / 3)
    a = choose_for_review(probs, None, np.ones(2), np.ones(3), 10, "random", 4)
    assert len(set(a)) == 10 and a.tolist() == choose_for_review(probs, None, np.ones(2), np.ones(3), 10, "random",
                                                                 4).tolist()
    assert a.tolist() != choose_for_review(probs, None, np.ones(2), np.ones(3), 10, "random", 5).tolist()
    for s in ("random", "uncertainty", "active"):
        assert sorted(choose_for_review(probs, None, np.ones(2), np.ones(3), 500, s, 0)) == list(range(50))
        assert choose_for_review(probs, None, np.ones(2), np.ones(3), 0, s, 0).size == 0
    with pytest.raises(ValueError, match="unknown review selection"):
        choose_for_review(probs, None, np.ones(2), np.ones(3), 5, "greedy", 0)


def _pool(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Three classes, two views; class 2 holds 2 labels against 40 and 40. Per class 200
    items, a third of them close calls between that class and the next."""
    k, per = 3, 200
    truth = np.repeat(np.arange(k), per)
    probs = np.zeros((k * per, 2, k))
    for j in range(2):
        conf = rng.uniform(0.75, 0.95, len(truth))
        hard = rng.random(len(truth)) < 1 / 3
        conf[hard] = rng.uniform(0.4, 0.55, hard.sum())
        probs[np.arange(len(truth)), j, truth] = conf
        probs[np.arange(len(truth)), j, (truth + 1) % k] = 1 - conf
        probs[:, j] += rng.uniform(0, 0.02, probs[:, j].shape)
        probs[:, j] /= probs[:, j].sum(axis=1, keepdims=True)
    return probs, truth


def test_close_calls_cover_the_class_short_of_labels_and_the_close_calls():
    rng = np.random.default_rng(1)
    probs, truth = _pool(rng)
    counts = np.array([40, 40, 2])
    active = close_call_batch(probs, "product", np.ones(2), counts, 30, 0)
    rand = choose_for_review(probs, "product", np.ones(2), counts, 30, "random", 0)
    post = combined_posterior(probs, "product", np.ones(2), np.full(3, 1 / 3))
    share = lambda pick: np.isin(post[pick].argmax(axis=1), [2]).mean()  # noqa: E731
    assert share(active) > share(rand) + 0.1
    assert margin_uncertainty(post[active]).mean() > margin_uncertainty(post[rand]).mean() + 0.1
    assert len(set(active.tolist())) == 30


def test_a_pick_discounts_its_neighbours_so_a_batch_spreads():
    rng = np.random.default_rng(2)
    k = 3
    cluster = np.tile([[0.5, 0.45, 0.05]], (60, 1)) + rng.uniform(0, 0.002, (60, k))  # 60 near-copies of one
    cluster /= cluster.sum(axis=1, keepdims=True)                                        # close call
    others = rng.dirichlet(np.ones(k) * 3, size=300)
    post = np.concatenate([cluster, others])
    probs = np.stack([post, post], axis=1)
    pick = close_call_batch(probs, "product", np.ones(2), np.array([10, 10, 10]), 20, 0)
    scores, shortlist, near = active_scores(probs, "product", np.ones(2), np.array([10, 10, 10]), 20, rng)
    plain = shortlist[np.argsort(-scores.score[shortlist], kind="stable")][:20]
    assert (pick < 60).sum() <= (plain < 60).sum() - 4  # the discount moves picks out of the one region
    assert greedy_batch(scores.score, shortlist, near, 1).tolist() == [plain[0]]


def test_typical_takes_the_item_nearest_each_regions_centre_largest_region_first():
    """Five well-separated regions of 80, 60, 40, 20 and 10 items: five picks are one per
    region, each its item nearest the region's mean, in order of size; uncertainty puts
    its picks in the one region of close calls."""
    rng = np.random.default_rng(3)
    centres = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9], [0.5, 0.45, 0.05], [0.34, 0.33, 0.33]])
    sizes = [80, 60, 40, 20, 10]
    region = np.repeat(np.arange(5), sizes)
    post = np.clip(centres[region] + rng.normal(0, 0.01, (len(region), 3)), 1e-3, None)
    post /= post.sum(axis=1, keepdims=True)
    probs = np.stack([post, post], axis=1)
    pick = choose_for_review(probs, "product", np.ones(2), np.array([5, 5, 5]), 5, "typical", 0)
    assert region[pick].tolist() == [0, 1, 2, 3, 4]
    space = probs.reshape(len(post), -1)
    for i in pick:
        members = np.flatnonzero(region == region[i])
        d = np.linalg.norm(space[members] - space[members].mean(axis=0), axis=1)
        assert i == members[np.argmin(d)]
    unc = choose_for_review(probs, "product", np.ones(2), np.array([5, 5, 5]), 5, "uncertainty", 0)
    assert set(region[unc].tolist()) == {4}
    assert choose_for_review(probs, "product", np.ones(2), np.array([5, 5, 5]), 5, "typical", 0).tolist() \
        == pick.tolist()                                                 # seeded: the same picks again


def test_typical_returns_exactly_n_distinct_items_and_fits_large_pools_on_a_sample(monkeypatch: pytest.MonkeyPatch):
    """Fewer distinct rows than picks (k-means leaves clusters empty): the most typical rows
    not chosen make up the batch. Above REFERENCE_ITEMS rows k-means fits a seeded sample
    and still assigns, and may pick, every row."""
    import orchestrator.review_selection as rs

    space = np.repeat(np.eye(3), [30, 20, 10], axis=0)                 # three distinct points
    pick = typical_batch(space, 8, seed=0)
    assert len(pick) == len(set(pick.tolist())) == 8
    assert sorted(set(space[pick[:3]].argmax(axis=1).tolist())) == [0, 1, 2]
    assert typical_batch(space, 100, seed=0).size == 60 and typical_batch(space, 0, seed=0).size == 0
    monkeypatch.setattr(rs, "REFERENCE_ITEMS", 25)
    rng = np.random.default_rng(0)
    big = np.concatenate([rng.normal(c, 0.01, (100, 2)) for c in ((0, 0), (1, 0), (0, 1))])
    pick = rs.typical_batch(big, 3, seed=1)
    assert sorted((big[pick].round().astype(int) @ [1, 2]).tolist()) == [0, 1, 2]


# ---------------------------------------------------------------- on a real run
@pytest.fixture(scope="module")
def run_store(tmp_path_factory) -> tuple[Path, Path, pd.Series]:
    tmp = tmp_path_factory.mktemp("select")
    df = synthetic_frame(n=500, n_gold=9, seed=3)
    cfg = write_config(tmp, df, max_rounds=2)
    api.run(cfg)
    return cfg, tmp / "run.duckdb", df.set_index("id")["truth"]


def _combined_margin(store: Path, ids: list[str]) -> float:
    from store.exchange.candidates import review_candidates

    with Store(store, read_only=True) as st:
        c = review_candidates(st, 1)
    post = combined_posterior(c.probs, c.combination, c.weights, np.full(len(LABELS), 1 / len(LABELS)))
    at = pd.Index(c.item_id).get_indexer(ids)
    assert (at >= 0).all()
    return float(margin_uncertainty(post[at]).mean())


def test_export_select_chooses_among_items_without_gold(run_store, tmp_path: Path):
    _, store, _ = run_store
    with Store(store, read_only=True) as st:
        gold = {r[0] for r in st.con.execute("SELECT item_id FROM items WHERE gold_label IS NOT NULL").fetchall()}
        pseudo = {r[0] for r in st.con.execute(
            "SELECT item_id FROM pseudo_labels WHERE status = 'accepted'").fetchall()}
    picked = {}
    for sel in ("random", "uncertainty", "active", "typical"):
        n = api.export(store, tmp_path / f"{sel}.csv", select=sel, sample=25, seed=1)
        df = pd.read_csv(tmp_path / f"{sel}.csv", dtype={"item_id": str})
        assert n == len(df) == 25 and not set(df["item_id"]) & gold
        # a review file: 'label' is the reviewer's, cotrain's label and source are beside it
        assert list(df.columns[:4]) == ["item_id", "label", "cotrain_task", "cotrain_label"]
        assert df["label"].isna().all() and df["cotrain_task"].nunique() == 1
        assert set(df.loc[df["cotrain_source"] == "unlabelled", "item_id"]).isdisjoint(pseudo)
        assert df.loc[df["cotrain_source"] == "unlabelled", "cotrain_label"].isna().all()
        assert set(df.loc[df["cotrain_source"] != "unlabelled", "item_id"]) <= pseudo
        picked[sel] = df["item_id"].tolist()
    assert _combined_margin(store, picked["uncertainty"]) > _combined_margin(store, picked["random"]) + 0.2
    # the file lists the chosen items in the order chosen: uncertainty's closest call first
    margins = [_combined_margin(store, [i]) for i in picked["uncertainty"]]
    assert margins == sorted(margins, reverse=True)
    # active: the run's coverage (pseudo-labelled share of the candidates) of the batch are close calls
    with Store(store, read_only=True) as st:
        c = review_candidates(st, int(st.latest_run()))
        assert c.coverage == pytest.approx(np.mean(c.pseudo >= 0)) and 0 < c.coverage < 1
        assert review_candidates(st, c.run_id, disputed_only=True).coverage == c.coverage  # all candidates'
        close = set(c.item_id[close_call_batch(c.probs, c.combination, c.weights, c.class_counts,
                                               int(np.floor(25 * c.coverage + 0.5)), 1)])
    assert len(close) > 0 and sum(i in close for i in picked["active"]) == len(close)
    # the same seed picks the same items; Label Studio tasks for them carry each view's vote
    api.export(store, tmp_path / "again.csv", select="active", sample=25, seed=1)
    assert pd.read_csv(tmp_path / "again.csv", dtype={"item_id": str})["item_id"].tolist() == picked["active"]
    api.export(store, tmp_path / "tasks.json", "label-studio", select="active", sample=25, seed=1)
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert sorted(t["data"]["item_id"] for t in tasks) == sorted(picked["active"])
    assert all(t["predictions"] for t in tasks)


def test_active_reads_the_pretrained_vectors_only_when_it_has_a_typical_share(run_store, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch):
    from orchestrator import review_space
    from orchestrator.review_selection import close_share

    _, store, _ = run_store
    with Store(store, read_only=True) as st:
        coverage = review_candidates(st, int(st.latest_run())).coverage
    calls: list[int] = []
    real = review_space.pretrained_space
    monkeypatch.setattr(review_space, "pretrained_space", lambda *a: calls.append(1) or real(*a))
    for n in (1, 25):
        calls.clear()
        api.export(store, tmp_path / f"a{n}.csv", select="active", sample=n, seed=1)
        assert len(calls) == (close_share(coverage, n) < n)
    assert close_share(coverage, 1) == 1 and close_share(coverage, 25) < 25  # both cases are exercised


def test_export_select_asks_for_a_sample_and_a_known_strategy(run_store, tmp_path: Path):
    _, store, _ = run_store
    with pytest.raises(StoreError, match="--sample N"):
        api.export(store, tmp_path / "a.csv", select="active")
    with pytest.raises(StoreError, match="unknown selection 'smart'"):
        api.export(store, tmp_path / "a.csv", select="smart", sample=3)
    for kw, name in (({"min_confidence": 0.5}, "--min-confidence"), ({"source": "gold"}, "--source"),
                     ({"max_round": 1}, "--round"), ({"min_p_correct": 0.9}, "--min-p-correct")):
        with pytest.raises(StoreError, match=f"{name} does not combine"):
            api.export(store, tmp_path / "a.csv", select="uncertainty", sample=3, **kw)
    assert not (tmp_path / "a.csv").exists()
    n = api.export(store, tmp_path / "d.csv", select="active", sample=5, disputed_only=True)
    with Store(store, read_only=True) as st:
        disputed = {r[0] for r in st.con.execute("SELECT item_id FROM disputes").fetchall()}
    assert set(pd.read_csv(tmp_path / "d.csv", dtype={"item_id": str})["item_id"]) <= disputed and n <= 5
    res = CliRunner().invoke(app, ["export", str(store), str(tmp_path / "b.csv"), "--select", "active"])
    assert res.exit_code == 1 and not (tmp_path / "b.csv").exists()
    res = CliRunner().invoke(app, ["export", str(store), str(tmp_path / "c.csv"), "--select", "active",
                                   "--sample", "7"])
    assert res.exit_code == 0 and len(pd.read_csv(tmp_path / "c.csv")) == 7


@pytest.mark.parametrize("select", ["active", "random"])
def test_a_run_without_a_pool_says_so_not_to_select_at_random(tmp_path: Path, select: str):
    """Every training item labelled: `--select active` said "store_predictions: false ...; use
    --select random", which then wrote 0 rows (a probe's finding). (Items reviewed since are
    no candidates either: the same rule, ``review_candidates``'s own query, decides.)"""
    df = synthetic_frame(n=60, n_test=20)
    df.loc[df["split"] == "train", "label"] = df["truth"]
    api.run(write_config(tmp_path, df, max_rounds=1))
    with pytest.raises(StoreError, match=r"run 1 has no item to choose from: every training item has a gold or a "
                                         r"reviewed label"):
        api.export(tmp_path / "run.duckdb", tmp_path / "a.csv", select=select, sample=5)
    assert not (tmp_path / "a.csv").exists()


def test_a_run_that_accepted_no_label_still_has_its_pool_to_choose_from(tmp_path: Path):
    """The check above first asked DuckDB ``EXISTS (...)`` over the candidates' LEFT JOINs, which
    DuckDB 2.0.1 answers false while ``pseudo_labels`` is empty: a run that had accepted nothing
    (news at 1% in the review bench) was told it had no item to choose from."""
    api.run(write_config(tmp_path, synthetic_frame(n=120, seed=2), max_rounds=1, policy="threshold",
                         threshold=0.9999))
    with Store(tmp_path / "run.duckdb", read_only=True) as st:
        assert st.scalar("SELECT count(*) FROM pseudo_labels") == 0
    for select in ("random", "active"):
        assert api.export(tmp_path / "run.duckdb", tmp_path / f"{select}.csv", select=select, sample=5) == 5


def test_a_run_without_stored_predictions_cannot_rank_but_draws_at_random(tmp_path: Path):
    """``random`` is what such a run allows, and it was refused too, by a message that said to
    use it (a probe's finding)."""
    cfg = write_config(tmp_path, synthetic_frame(n=300, seed=4), max_rounds=1, store_predictions=False)
    api.run(cfg)
    store = tmp_path / "run.duckdb"
    with pytest.raises(StoreError, match="stored no predictions.*--select random"):
        api.export(store, tmp_path / "a.csv", select="active", sample=5)
    assert api.export(store, tmp_path / "r.csv", select="random", sample=5, seed=4) == 5
    picked = pd.read_csv(tmp_path / "r.csv", dtype={"item_id": str})
    with Store(store, read_only=True) as st:
        gold = {r[0] for r in st.con.execute("SELECT item_id FROM items WHERE gold_label IS NOT NULL "
                                             "OR split = 'test'").fetchall()}
    assert picked["item_id"].nunique() == 5 and not set(picked["item_id"]) & gold
    for select in ("random", "stratified"):  # a negative seed was numpy's ValueError, a huge one DuckDB's SQL
        for seed in (-1, 2**63):
            with pytest.raises(StoreError, match=rf"--seed must be between 0 and 2\^63 - 1, not {seed}"):
                api.export(store, tmp_path / "s.csv", select=select, sample=5, seed=seed)


def test_reviewed_choices_train_the_next_rounds(tmp_path: Path):
    df = synthetic_frame(n=500, n_gold=9, seed=3)
    cfg = write_config(tmp_path, df, max_rounds=2)
    first = api.run(cfg)
    store = tmp_path / "run.duckdb"
    api.export(store, tmp_path / "pick.csv", select="active", sample=30)
    pick = pd.read_csv(tmp_path / "pick.csv", dtype={"item_id": str})
    truth = df.set_index("id")["truth"]
    pd.DataFrame({"item_id": pick["item_id"], "label": truth.loc[pick["item_id"]].to_numpy()}).to_csv(
        tmp_path / "reviews.csv", index=False)
    summary = api.import_reviews(store, tmp_path / "reviews.csv", rounds=1)
    assert summary.imported == 30
    res = api.run(cfg)
    assert res.n_rounds == first.n_rounds + 1 and not res.already_finished
    with Store(store, read_only=True) as st:
        assert st.scalar("SELECT count(*) FROM reviewed_labels") == 30
        assert st.scalar("SELECT n_gold FROM rounds ORDER BY round DESC LIMIT 1") == first.n_gold + 30
    # a second selection never offers an item already reviewed
    api.export(store, tmp_path / "next.csv", select="active", sample=30)
    assert set(pd.read_csv(tmp_path / "next.csv", dtype={"item_id": str})["item_id"]).isdisjoint(pick["item_id"])


def test_active_gives_close_calls_the_share_of_the_batch_the_run_covers():
    """No candidate pseudo-labelled: ``active`` is ``typical``; every one: the close calls;
    30% covered: 6 close calls and 14 typical items in 20, interleaved so any first part of
    the list keeps the mix, distinct, and the same again for the same seed. More picks than
    candidates give each once; a coverage outside [0, 1] is refused."""
    rng = np.random.default_rng(1)
    probs, _ = _pool(rng)
    counts, n = np.array([40, 40, 2]), len(probs)
    args = (probs, "product", np.ones(2), counts, 20)
    typical = choose_for_review(*args, "typical", 3)
    close = close_call_batch(*args, 3)
    assert choose_for_review(*args, "active", 3).tolist() == typical.tolist()
    assert choose_for_review(*args, "active", 3, 1.0).tolist() == close.tolist()
    mixed = choose_for_review(*args, "active", 3, 0.3)
    assert len(set(mixed.tolist())) == 20 and mixed.tolist() == choose_for_review(*args, "active", 3, 0.3).tolist()
    near = np.isin(mixed, close_call_batch(probs, "product", np.ones(2), counts, 6, 3))
    assert near.sum() == 6 and near[:10].sum() == 3  # half the list, half the close calls
    rest = np.setdiff1d(np.arange(n), mixed[near])
    assert mixed[~near].tolist() == rest[typical_batch(probs.reshape(n, -1)[rest], 14, 3)].tolist()
    assert sorted(choose_for_review(probs[:7], "product", np.ones(2), counts, 20, "active", 3, 0.5)) == list(range(7))
    assert choose_for_review(probs[:0], "product", np.ones(2), counts, 20, "active", 3, 0.5).size == 0
    with pytest.raises(ValueError, match="coverage must be between 0 and 1"):
        choose_for_review(*args, "active", 3, 1.5)


def test_active_close_share_rounds_half_up_and_leaves_no_typical_share_at_full_coverage():
    """The share ``review_filter`` checks before reading the run's pretrained vectors: at a
    coverage that rounds to the whole batch, ``active`` picks close calls only, and reading
    every candidate's vector for a typical share of none was work for nothing."""
    from orchestrator.review_selection import close_share

    assert [close_share(c, 10) for c in (0.0, 0.04, 0.05, 0.5, 0.94, 0.95, 1.0)] == [0, 0, 1, 5, 9, 10, 10]
    assert close_share(0.3, 0) == 0 and close_share(1.0, 1) == 1
