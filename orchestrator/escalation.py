"""The escalation cascade: items the cheap views leave uncertain go to a stronger, costlier
LLM, most valuable first, until its budget is spent or the pool's estimated precision
reaches the target.

``escalate:`` in the config names the model (any litellm model or ``local:<name>``, with
the parameters of an ``llm`` view) plus when to ask it. Each round, after selection (and the
debate, when there is one), the pool items still below ``below`` p_correct that one answer
could settle are ranked by the expected gain of an answer (``review_selection``'s close-call
score over the calibrated posterior: uncertainty, class need, neighbourhood) and sent in
chunks. An item so uncertain that no answer of a model of that accuracy could lift it over
``cotrain.min_precision`` (:func:`acceptance_chance` is 0) is never sent. The model's accuracy is estimated each round on up to ``gold_items``
gold and reviewed items drawn at random (seeded) and left out of its demonstrations and
calibration (repeated prompts are cache hits), and its answer enters the evidence as one
more voter of that accuracy: the cheap views' calibrated posterior is the prior and the
answer's likelihood is ``acc`` for the class it names and ``(1 - acc)/(K - 1)`` for each
other (a one-coin Dawid-Skene view). An item is accepted with source ``escalated`` when the
updated posterior names the model's answer at ``cotrain.min_precision`` or more; such labels
train every view. Answers are always filed as predictions of view ``escalated`` (they were
paid for, whatever ``store_predictions`` says) and every call is cached and billed by the
LLM client. An item answered in an earlier round and not accepted is never asked again
(its prompt would differ, since demonstrations are drawn per round, so it would be paid
for twice): its stored answer meets the round's new evidence and accuracy estimate for
free. A remote model needs a known price (``price``, or litellm's), or ``budget_usd``
could not be enforced. ``kind: debate`` puts a debate among the ``debate`` section's agents
in the model's place (``orchestrator.debate_escalation``); its debates are filed with their
turns.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from orchestrator.escalation_config import ESCALATED, EscalationConfig
from views.proba import checked_proba

log = logging.getLogger("cotrain")

def make_escalator(cfg: Any, store: Any, columns: list[str], base_dir: Any, ledger: Any) -> tuple[Any, list[str]]:
    """The escalation model as an ``llm`` view named ``escalated`` bound to the run's ledger,
    with the fields it reads (checked like any view's: never the label, id or split column)."""
    from pathlib import Path

    from orchestrator.viewset import _resolve_fields
    from store.errors import ConfigError
    from store.media import data_roots
    from views.base import ViewContext
    from views.registry import build_view

    if cfg.escalate.kind == "debate":
        return _debate_escalator(cfg, columns, ledger)
    ctx = ViewContext(labels=tuple(cfg.task.names), seed=int(cfg.seed) + 7919, base_dir=Path(base_dir),
                      label_descriptions=tuple(spec.description for spec in cfg.task.labels), ledger=ledger,
                      data_dirs=data_roots(cfg.data.train, cfg.data.test))
    view = build_view(ESCALATED, "llm", cfg.escalate.llm, ctx)
    if not str(view.model).startswith("local:") and view.price_per_call(100.0, 1.0) is None:  # named as the
        view.close()                                                                          # escalate key
        raise ConfigError("escalate.price", f"the price of '{view.model}' is unknown (litellm has none); give "
                          "price: {input_per_mtok, output_per_mtok} so budget_usd can be enforced")
    return view, _resolve_fields(view, cfg, columns)


def _debate_escalator(cfg: Any, columns: list[str], ledger: Any) -> tuple[Any, list[str]]:
    """``kind: debate``: the debate section's agents as the escalation model, its fields
    checked like the debate's, a remote agent's price known (or the budget could not hold)."""
    from orchestrator.debate_escalation import DebateEscalator
    from orchestrator.viewset import check_debate_fields
    from store.errors import ConfigError

    check_debate_fields(cfg, columns)
    view = DebateEscalator(cfg, ledger)
    view.plan(pd.DataFrame({f: ["an item"] for f in view.fields}))
    if not view.is_local() and view.price_per_call(100.0, 1.0) is None:
        view.close()
        raise ConfigError("debate.price", f"the price of an agent of '{view.model}' is unknown (litellm has none); "
                          "give debate.price: {input_per_mtok, output_per_mtok} so escalate.budget_usd can be "
                          "enforced")
    return view, list(view.fields)


def one_coin_update(prior: np.ndarray, vote: np.ndarray, accuracy: float) -> np.ndarray:
    """Posterior (n, K) after one voter of ``accuracy`` says ``vote`` (n,; ABSTAIN/-1 leaves
    the row as it was): prior x (acc if the class is the vote else (1 - acc) / (K - 1))."""
    prior = np.asarray(prior, dtype=np.float64)
    n, k = prior.shape
    vote = np.asarray(vote, dtype=np.int64)
    lik = np.full((n, k), (1.0 - accuracy) / max(k - 1, 1))
    voted = vote >= 0
    lik[np.flatnonzero(voted), vote[voted]] = accuracy
    lik[~voted] = 1.0
    post = prior * lik
    return post / post.sum(axis=1, keepdims=True)


#: Share of every prior mixed in uniformly, so no class is ever ruled out by the cheap views
#: alone (a 0 would make the strong model's vote for it count for nothing).
PRIOR_FLOOR = 1e-3


def calibrated_prior(posterior: np.ndarray, p_correct: np.ndarray) -> np.ndarray:
    """The combined posterior rescaled so its top class carries p_correct (the rest share
    what is left in proportion, after a ``PRIOR_FLOOR`` of uniform is mixed in); rows
    without evidence are uniform."""
    post = np.asarray(posterior, dtype=np.float64).copy()
    n, k = post.shape
    bad = np.isnan(post).any(axis=1) | np.isnan(p_correct)
    post[bad] = 1.0 / k
    post = (1.0 - PRIOR_FLOOR) * post + PRIOR_FLOOR / k
    top = post.argmax(axis=1)
    p = np.where(bad, 1.0 / k, np.clip(p_correct, 1e-6, 1 - 1e-6))
    rest = 1.0 - post[np.arange(n), top]
    scale = np.where(rest > 0, (1.0 - p) / np.where(rest > 0, rest, 1.0), 0.0)
    out = post * scale[:, None]
    out[np.arange(n), top] = p
    return out / out.sum(axis=1, keepdims=True)


def acceptance_chance(prior: np.ndarray, accuracy: float, bar: float) -> np.ndarray:
    """(n,) the probability that one answer of a voter of ``accuracy`` gets each item
    accepted: the sum over the answers it may give of P(answer) (under ``prior``) where the
    updated posterior names that answer at ``bar`` or more. An item no answer can lift over
    the bar has chance 0: asking about it would buy nothing."""
    prior = np.asarray(prior, dtype=np.float64)
    n, k = prior.shape
    out = np.zeros(n)
    wrong = (1.0 - accuracy) / max(k - 1, 1)
    for c in range(k):
        p_vote = prior[:, c] * accuracy + (1.0 - prior[:, c]) * wrong
        after = prior[:, c] * accuracy / np.maximum(p_vote, 1e-300)
        out += np.where(after >= bar, p_vote, 0.0)
    return out


def estimate_accuracy(probs: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """(Laplace-smoothed accuracy (right + 1) / (answered + 2), answered) of the model's
    answers on gold items; abstentions do not count (no answer at all: 0.5)."""
    answered = ~np.isnan(probs).any(axis=1)
    right = int((probs[answered].argmax(axis=1) == np.asarray(y)[answered]).sum()) if answered.any() else 0
    n = int(answered.sum())
    return (right + 1.0) / (n + 2.0), n


def escalate_round(runner: Any, write: Any, state: Any, pool: np.ndarray, evidence: Any, taken: np.ndarray,
                   min_precision: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The escalation step of a round. ``taken``: pool-relative positions already accepted
    this round. Returns the accepted escalations (state positions, labels, confidences) and
    files the answers, the model's estimated accuracy and the pseudo-labels (and, for a
    debate, its debates and turns)."""
    got = _escalate(runner, write, state, pool, evidence, taken, min_precision)
    _file_debates(runner.store, write, runner.escalator, "escalated", set(state.ids(got[0]).to_pylist()))
    return got


def _escalate(runner: Any, write: Any, state: Any, pool: np.ndarray, evidence: Any, taken: np.ndarray,
              min_precision: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from orchestrator.frames import StoreFrames
    from orchestrator.review_selection import choose_for_review, close_call_batch
    from views.base import ITEM_ID_COLUMN, LABEL_SOURCE_COLUMN

    e = runner.cfg.escalate
    view, fields = runner.escalator, runner.escalator_fields
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int16), np.zeros(0, dtype=np.float32))
    frames = StoreFrames(runner.store, write.run_id, fields)

    def fetch(pos: np.ndarray) -> Any:
        df = frames.rows(state.row_idx[pos])
        df[ITEM_ID_COLUMN] = state.ids(pos).to_pandas().array if len(pos) else []
        return df

    trusted = np.flatnonzero((state.gold >= 0) & ~state.is_test)
    # the accuracy is measured on a seeded random subset of gold, which the model is not
    # fitted on (demonstrations, calibration) unless that would leave it nothing to fit on
    held = np.sort(np.random.default_rng(int(runner.cfg.seed)).permutation(trusted)[: e.gold_items])
    fit_on = np.setdiff1d(trusted, held) if len(held) < len(trusted) else trusted
    train = fetch(fit_on)
    train[LABEL_SOURCE_COLUMN] = state.label_sources(fit_on)
    view.set_round(write.round)  # its demonstrations and calibration draw per round, as every view's do
    view.fit(train, state.gold[fit_on].astype(np.int64), np.ones(len(fit_on)))
    k = len(write.labels)
    acc, n_answered = estimate_accuracy(checked_proba(view, fetch(held), k), state.gold[held]) if len(held) else (0.5, 0)
    _file_debates(runner.store, write, view, "escalated-gold", set())
    if not n_answered:
        log.warning("round %d: the escalation model answered no gold item; its accuracy is taken as 0.5", write.round)
    write.view_estimate(ESCALATED, acc if n_answered else None, None)
    p = np.nan_to_num(np.asarray(evidence.p_correct, dtype=np.float64), nan=0.0)
    open_ = np.ones(len(pool), dtype=bool)
    open_[np.asarray(taken, dtype=np.int64)] = False
    if acc <= 1.0 / k:
        log.info("round %d: nothing to escalate (model accuracy %.2f)", write.round, acc)
        return empty
    post = calibrated_prior(evidence.posterior, evidence.p_correct)
    before, before_vote = _earlier_answers(runner.store, write, state, pool, open_)
    post[before] = one_coin_update(post[before], before_vote, acc)  # free: answered in an earlier round
    open_[before] = False
    cand = np.flatnonzero(open_ & (p < e.below))
    if e.target_precision is not None and float(post.max(axis=1).mean()) >= e.target_precision:
        log.info("round %d: the pool's estimated precision already meets target_precision %.2f; no pool item asked",
                 write.round, e.target_precision)  # was checked only after the first chunk had been paid
        return _accepted(write, state, pool, post, before, before_vote, min_precision)
    if not cand.size:
        log.info("round %d: nothing new to escalate (%d earlier answer(s) re-weighed)", write.round, before.size)
        return _accepted(write, state, pool, post, before, before_vote, min_precision)
    cap = min(cand.size, e.max_items_per_round or cand.size, _affordable(view, fetch(pool[cand[:50]]), e.budget_usd))
    if cap <= 0:
        log.info("round %d: escalation budget spent", write.round)
        return _accepted(write, state, pool, post, before, before_vote, min_precision)
    if e.order == "value":  # never an item no answer can settle; then the close-call score
        cand = cand[acceptance_chance(post[cand], acc, min_precision) > 0]
        if not cand.size:
            log.info("round %d: no candidate an answer could settle at %.2f", write.round, min_precision)
            return _accepted(write, state, pool, post, before, before_vote, min_precision)
    n_ask, seed = min(cap, cand.size), int(runner.cfg.seed) + write.round
    order = cand[close_call_batch(post[cand][:, None, :], "product", np.ones(1), state.gold_prior(k), n_ask, seed)
                 if e.order == "value" else choose_for_review(post[cand][:, None, :], "product", np.ones(1),
                                                              state.gold_prior(k), n_ask, "random", seed)]
    asked: list[np.ndarray] = []
    votes: list[np.ndarray] = []
    for lo in range(0, len(order), e.chunk):
        chunk = order[lo:lo + e.chunk]
        probs = checked_proba(view, fetch(pool[chunk]), k)
        answered = ~np.isnan(probs).any(axis=1)
        vote = np.where(answered, np.nan_to_num(probs, nan=-1.0).argmax(axis=1), -1)
        _file_answers(write, state, pool[chunk[answered]], probs[answered])  # kept: a later round reuses them
        post[chunk] = one_coin_update(post[chunk], vote, acc)
        asked.append(chunk)
        votes.append(vote)
        if not answered.any():  # the budget is spent (or the endpoint gave nothing): stop asking
            break
        if e.target_precision is not None and float(post.max(axis=1).mean()) >= e.target_precision:
            break
    done = np.concatenate(asked)
    vote = np.concatenate(votes)
    log.info("round %d: %d item(s) escalated, %d answered, %d earlier answer(s) re-weighed (model accuracy "
             "%.2f on %d gold)", write.round, done.size, int((vote >= 0).sum()), before.size, acc, n_answered)
    return _accepted(write, state, pool, post, np.concatenate([before, done]), np.concatenate([before_vote, vote]),
                     min_precision)


def _file_debates(store: Any, write: Any, view: Any, trigger: str, accepted_ids: set[str]) -> None:
    """File the debates a debate escalator (``kind: debate``) held since the last call, with
    their turns, under ``trigger``; other escalation models hold none."""
    take = getattr(view, "take_outcomes", None)
    outcomes = take() if take is not None else []
    if not outcomes:
        return
    from store.writers import write_debates

    write_debates(store, outcomes, run_id=write.run_id, round_idx=write.round, triggers=[trigger] * len(outcomes),
                  splits=["train"] * len(outcomes), accepted=[o.item_id in accepted_ids for o in outcomes],
                  aggregation=view.cfg.debate.aggregation, label_names=write.labels)


def _earlier_answers(store: Any, write: Any, state: Any, pool: np.ndarray,
                     open_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool positions (among ``open_``) the model answered in an earlier round, and those answers."""
    from store.queries import latest_answers

    t = latest_answers(store, write.run_id, ESCALATED, list(write.labels), write.round)
    rows = t.column("row_idx").to_numpy()  # item position = data row
    at = np.searchsorted(pool, rows)        # pool is sorted
    found = at < len(pool)
    found[found] = pool[at[found]] == rows[found]
    at, vote = at[found], t.column("label").to_numpy()[found].astype(np.int64)
    keep = open_[at] & (vote >= 0)
    return at[keep], vote[keep]


def _accepted(write: Any, state: Any, pool: np.ndarray, post: np.ndarray, done: np.ndarray, vote: np.ndarray,
              min_precision: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accept the model's answer where it gave one and the evidence with its vote names that
    same label at ``min_precision`` or more; file those pseudo-labels."""
    top = post[done].max(axis=1)
    ok = (vote >= 0) & (post[done].argmax(axis=1) == vote) & (top >= min_precision)
    pos, lab, conf = pool[done[ok]], post[done[ok]].argmax(axis=1).astype(np.int16), top[ok].astype(np.float32)
    if pos.size:
        write.pseudo_labels(state.ids(pos), lab, conf, ESCALATED, pa.array([[ESCALATED]] * len(pos),
                                                                              pa.list_(pa.string())), conf)
    log.info("round %d: %d escalated label(s) accepted", write.round, pos.size)
    return pos, lab, conf


def _affordable(view: Any, sample: Any, budget_usd: float) -> int:
    """Items the budget left can still pay for, by the dry-run estimate of one item's calls
    (no cap when the price is unknown: the client's hard budget still holds)."""
    if not len(sample):
        return 0
    plan = view.plan(sample)
    per_call = view.price_per_call(plan["prompt_tokens_per_call"], plan["completion_tokens_per_call"])
    left = budget_usd - view.client().spent()
    if left <= 0:
        return 0
    if per_call is None:  # refused when the model is remote (check_price); a local model costs nothing
        return 1 << 62
    if per_call <= 0:
        return 1 << 62
    return int(left // (per_call * plan["calls_per_item"]))


def _file_answers(write: Any, state: Any, pos: np.ndarray, probs: np.ndarray) -> None:
    if not len(pos):
        return
    lab = probs.argmax(axis=1).astype(np.int16)
    write.predictions(pos, ESCALATED, lab, probs.max(axis=1).astype(np.float32), probs)


def plan_escalation(cfg: Any, view: Any, sample: Any, n_pool: int, n_gold: int, rounds: int) -> dict[str, Any]:
    """What a dry run shows: ``items_bound`` (the pool, or ``max_items_per_round`` a round) and
    ``items``, ``calls``, ``cost_usd``: what the budget buys at the offline token count, an
    estimate (the budget itself is never exceeded). Each round the model answers its accuracy sample
    (``gold_items`` gold items) and, with ``calibration``, calibrates on up to
    ``calibration_max_items`` of the other gold items; with demonstrations drawn per round
    those prompts change every round and are paid again (with none, later rounds are cache
    hits). What the budget has left after that pays for pool items, each escalated once."""
    e = cfg.escalate
    plan = view.plan(sample)
    per_call = view.price_per_call(plan["prompt_tokens_per_call"], plan["completion_tokens_per_call"])
    per_item = None if per_call is None else per_call * plan["calls_per_item"]
    gold = min(e.gold_items, n_gold)
    calib = 0 if view.calibration == "none" else min(max(n_gold - gold, 0), int(view.calibration_max_items))
    repeats = 1 if plan["demonstrations"] == "none" else max(rounds, 1)
    fixed = repeats * (gold + calib)
    bound = items = min(n_pool, (e.max_items_per_round or n_pool) * max(rounds, 1))
    if per_item:  # what the budget buys at the offline token count: an estimate, not a bound
        items = max(0, min(items, int(e.budget_usd // per_item) - fixed))
    calls = (items + fixed) * plan["calls_per_item"]
    return {"model": view.model, "items": items, "items_bound": bound, "gold_items": repeats * gold,
            "calibration_items": repeats * calib,
            "calls": calls, "cost_usd": None if per_item is None else min(e.budget_usd, (items + fixed) * per_item),
            "budget_usd": e.budget_usd, "below": e.below, "target_precision": e.target_precision}


__all__ = ["ESCALATED", "EscalationConfig", "acceptance_chance", "calibrated_prior", "escalate_round",
           "estimate_accuracy", "make_escalator", "one_coin_update", "plan_escalation"]
