"""Co-training rounds: Blum-Mitchell generalised to N views and K classes.

Round r: fit every view on what it may train on, evaluate on held-out items, predict the
unlabelled pool in batches, select, and commit everything of the round in one transaction.
Round ``max_rounds`` only fits and evaluates, so ``max_rounds=0`` is the supervised fit.
The run's one ``numpy.random.Generator`` is saved after every round; a re-run resumes
from the last committed round and reaches the same labels as an uninterrupted run.
This module sequences a round; the steps live elsewhere: ``steps`` (fit, evaluate, predict), ``selection``
(policy, no I/O), ``state`` (label state), ``debate`` and ``store.writers`` (what is written)."""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from orchestrator import records, steps
from orchestrator.calibration import gold_folds
from orchestrator.combination import pool_combiners
from orchestrator.config import Config
from orchestrator.cut_statistic import cut_rank
from orchestrator.data import LoadedData, load_into_store
from orchestrator.engine_config import pool_travels, uses_ray
from orchestrator.ray_engine import open_ray_engine
from orchestrator.frames import FrameSource, StoreFrames, open_frames
from orchestrator.reporting import NullReporter, Reporter, RunResult, code_version, log_run_created
from orchestrator.evidence import RoundEvidence, assess, merge_adaptive
from orchestrator import shadows as shadow_runs
from orchestrator.selection import ABSTAIN, AdaptiveSelection, Merged, select_adaptive, select_round, termination
from orchestrator.state import LabelState, crossfit_rows
from orchestrator.viewset import build_views, check_debate_fields, check_view_data, display_fields
from orchestrator.viewset import preloading_view_modules
from store.adapters import StoreProblems
from store.buffers import ROUND_CACHE_BYTES
from store.database import Store, utcnow
from store.errors import DataError, RunError, RunInterrupted, is_interrupt
from store.llm_ledger import LLMLedger
from store.queries import final_metrics, label_counts
from store.writers import RoundWriter
from views.base import ITEM_ID_COLUMN, LABEL_SOURCE_COLUMN, Closeable, View, ZeroShot

log = logging.getLogger("cotrain")


class RoundRunner:
    """Runs (or resumes) one run of a config against an open store."""

    def __init__(self, cfg: Config, store: Store, reporter: Reporter | None = None,
                 base_dir: Any = ".", dry_run: bool = False) -> None:
        self.cfg = cfg
        self.store = store
        self.reporter = reporter or NullReporter()
        self.base_dir = base_dir
        self.dry_run = dry_run  # plan only: build nothing that runs user code
        self.labels = cfg.task.names
        self.k = len(self.labels)
        self.debater: Any = None  # agents.runner.Debater while a run with a debate section runs
        self.escalator: Any = None  # the escalation model (an llm view) and its fields, while a run escalates
        self.escalator_fields: list[str] = []
        self._last_round = cfg.cotrain.max_rounds  # or a reopened run's round_limit, set in run()
        self.views: list[View] | None = None  # built once: by start() (checks before the commit) or _rounds()
        self.fields: list[str] = []
        self._ledger: LLMLedger | None = None
        self._problems: StoreProblems | None = None
        self._frames: FrameSource | None = None  # where rounds read fields (memory or store), set by _rounds
        self.engine: Any = None  # orchestrator.ray_engine.RayEngine under engine: ray, set by _rounds
        self.shadows: Any = None  # orchestrator.shadows.Shadows while a run keeps shadow runs, set by _rounds

    # ------------------------------------------------------------------ start / resume
    def start(self, new_run: bool = False) -> tuple[int, bool]:
        """Return (run_id, resumed). Creates the run (data snapshot + items) if needed, and
        then builds the views (they check their fields before the run is committed) that
        ``run`` goes on with; a caller that only starts should ``close()``."""
        latest = self.store.latest_run()
        fp = (fps := self.cfg.fingerprints())[0]  # and the one of earlier releases, which hashed data paths
        if latest is not None and not new_run:
            info = self.store.run_info(latest)
            if info["status"] == "running" and info["config_hash"] not in fps:
                raise RunError(
                    f"store {self.store.path} holds unfinished run {latest} made with a different config or "
                    "data; re-run with those to resume it, or pass --new-run to start another run")
            if (same := self.store.resume_run(fps, [f for f in (self.cfg.data.train, self.cfg.data.test) if f])):
                return same, True  # the newest run of this config and data: resumed, or already finished
        try:
            with self.store.transaction():
                run_id, loaded = self._create_run(fp)
        except BaseException:
            self.close()  # the views built for the check (the run was rolled back)
            raise
        log_run_created(self.store, run_id, loaded.n_train, loaded.n_gold, loaded.n_test)
        return run_id, False

    def _create_run(self, fp: str) -> tuple[int, LoadedData]:
        """Create the run and load its data, then build the views, which check their fields and
        data before anything is committed (the caller's transaction)."""
        c, d = self.cfg.cotrain, self.cfg.data
        run_id = self.store.create_run(
            config=self.cfg.snapshot(), config_hash=fp, seed=self.cfg.seed, code_version=code_version(),
            labels=self.labels, views=[v.name for v in self.cfg.views], label_column=d.label_column,
            policy=c.policy, feeding=c.feeding, max_rounds=c.max_rounds,
            input_files=[f for f in (d.train, d.test) if f])
        with preloading_view_modules(self.cfg):  # the views' imports overlap the load
            loaded = load_into_store(self.store, run_id, self.cfg)
        views = self._build_views(run_id, loaded.columns)
        # a column one data file lacks reads as missing there, for a view or a debate's agents
        loaded.check_fields([*self.fields, *check_debate_fields(self.cfg, loaded.columns)])
        check_view_data(self.store, run_id, views)
        self.store.set_display_fields(run_id, *display_fields(self.cfg, loaded.columns))
        if self.cfg.debate is not None:  # a dollar budget needs the agents' prices, before any round
            from orchestrator.debate import check_debate_budget
            check_debate_budget(self.cfg)
        if self.cfg.escalate is not None and self.cfg.escalate.enabled:  # fields and price, before any round
            from orchestrator.escalation import make_escalator

            make_escalator(self.cfg, None, loaded.columns, self.base_dir, None)[0].close()
        problem = loaded.gold_problem(d.label_column)
        if problem and not self.dry_run and not any(isinstance(v, ZeroShot) and v.zero_shot for v in views):
            raise DataError(f"{problem} (or add an llm view, which labels zero-shot)", d.train)
        return run_id, loaded

    def _build_views(self, run_id: int, columns: list[str]) -> list[View]:
        """Build the run's views once, with what binds them to this run (feature cache,
        ledger, problem log, progress); a dry run's views get none of these."""
        if self.views is None:
            if self.dry_run:
                self.views, self.fields = build_views(self.cfg, None, columns, self.base_dir, dry_run=True)
            else:
                self._open_ledger(run_id)
                self.views, self.fields = build_views(self.cfg, self.store, columns, self.base_dir, self._ledger,
                                                      self._problems, self.reporter)
        return self.views

    def _open_ledger(self, run_id: int) -> LLMLedger:
        if self._ledger is None:
            self._ledger = LLMLedger(self.store, run_id)
            self._problems = StoreProblems(self.store, run_id)
        return self._ledger

    def close(self) -> None:
        """Close the views, the debater and the ledger (idempotent)."""
        views, self.views, self.fields = self.views or [], None, []
        self._frames = None  # the fields held in memory go with the run
        engine, self.engine = self.engine, None
        views, self.escalator = views + ([self.escalator] if self.escalator is not None else []), None
        try:
            for v in views:
                if isinstance(v, Closeable):
                    v.close()
        finally:
            try:
                if engine is not None:
                    engine.close()
            finally:
                if self.debater is not None:
                    self.debater.close()
                    self.debater = None
                if self._ledger is not None:
                    self._ledger.close()
                    self._ledger = self._problems = None

    # ------------------------------------------------------------------ the loop
    def run(self, new_run: bool = False) -> RunResult:
        run_id, resumed = self.start(new_run)
        try:
            info = self.store.run_info(run_id)
            done = self.store.completed_rounds(run_id)
            if info["status"] == "finished":
                return self._result(run_id, resumed=True, already_finished=True)
            if info["status"] == "failed":  # the same config again, presumably with the cause fixed
                self.store.mark_run(run_id, "running")
                log.info("run %d failed before; resuming it", run_id)
            try:
                self._rounds(run_id, info, done)
            except BaseException as exc:
                if is_interrupt(exc) and not isinstance(exc, SystemExit):  # an exit request keeps its code
                    last = self.store.completed_rounds(run_id)
                    raise RunInterrupted(run_id, last[-1]["round"] if last else None) from None
                if isinstance(exc, Exception):
                    self._mark_failed(run_id, exc)
                raise
            return self._result(run_id, resumed=resumed and bool(done))
        finally:
            self.close()

    def _mark_failed(self, run_id: int, exc: BaseException) -> None:
        """A round raised: its transaction was rolled back, so every committed round stays. Mark the
        run ``failed`` (it no longer blocks a corrected config; the same config resumes it)."""
        try:
            self.store.mark_run(run_id, "failed", f"error: {type(exc).__name__}")
        except Exception:  # noqa: BLE001 - the store itself may be what failed; the first error matters
            log.warning("run %d: could not mark the run failed", run_id)

    def _rounds(self, run_id: int, info: dict[str, Any], done: list[dict[str, Any]]) -> None:
        """Run rounds from the first uncommitted one to the limit, with the views start() built
        (a resumed run builds them here, once)."""
        columns = [c for c in self.store.data_columns(run_id) if not c.startswith("__")]
        ledger = self._open_ledger(run_id)
        try:
            if self.cfg.debate is not None and self.cfg.debate.enabled:
                from orchestrator.debate import make_debater

                self.debater = make_debater(self.cfg, ledger)
                self.debater.check()
            if self.cfg.escalate is not None and self.cfg.escalate.enabled:
                from orchestrator.escalation import make_escalator

                self.escalator, self.escalator_fields = make_escalator(self.cfg, self.store, columns, self.base_dir,
                                                                       ledger)
            views, fields = self._build_views(run_id, columns), self.fields
            problems = self._problems
            assert problems is not None
            state = LabelState.load(self.store, run_id, self.labels, [v.name for v in views])
            held = self.cfg.cotrain.data_in_memory  # under Ray the workers read the pool: auto reads the store
            held = False if held == "auto" and pool_travels(views, self.cfg.engine) else held
            self._frames = open_frames(self.store, run_id, fields, len(state.row_idx), held)
            self.shadows = shadow_runs.open_shadows(self.cfg, self.store, run_id, state, views)
            if uses_ray(views, self.cfg.engine):
                self.engine = open_ray_engine(self.cfg.engine, self.store, run_id, fields, state.item_id,
                                              views=views, base_dir=self.base_dir)
            rng = np.random.default_rng(self.cfg.seed)
            if done:
                rng.bit_generator.state = done[-1]["rng_state"]
                log.info("run %d: resuming after round %d", run_id, done[-1]["round"])
            start_round = done[-1]["round"] + 1 if done else 0
            test_df = self._fetch(run_id, state, state.test_pos, fields)
            # a run reopened by a review import runs to the limit the import set
            self._last_round = info["round_limit"] if info.get("round_limit") is not None \
                else self.cfg.cotrain.max_rounds
            hook = getattr(self.reporter, "run_started", None)  # optional: the progress file's reporter
            if callable(hook):
                hook(run_id, start_round, self._last_round, ledger)
            for r in range(start_round, self._last_round + 1):
                ledger.round = r
                problems.round = r
                steps.set_round(views, r)
                if self._round(run_id, r, views, fields, state, rng, test_df):
                    break
        finally:
            self.close()

    def _fetch(self, run_id: int, state: LabelState, pos: np.ndarray, fields: list[str]) -> pd.DataFrame:
        """Items at positions ``pos`` with the fields views read, plus their ids
        (``__item_id``: item position i is data snapshot row i)."""
        frames = self._frames if self._frames is not None else StoreFrames(self.store, run_id, fields)
        df = frames.rows(state.row_idx[pos])
        df[ITEM_ID_COLUMN] = state.ids(pos).to_pandas().array if len(pos) else []  # Arrow-backed: no str objects
        return df

    # ------------------------------------------------------------------ one round
    def _round(self, run_id: int, r: int, views: list[View], fields: list[str], state: LabelState,
               rng: np.random.Generator, test_df: pd.DataFrame) -> bool:
        """Run round r and commit it; return True when the run is finished."""
        c = self.cfg.cotrain
        t0, started = time.perf_counter(), utcnow()
        pool = state.pool()
        pool_left = len(pool)
        log.info("round %d started: pool %d", r, pool_left)
        self.reporter.round_started(r, pool_left, len(views))
        names = [v.name for v in views]
        end = termination(r, self._last_round, pool_left)
        fit, oof, oof_y, sr = self._fit(run_id, r, views, fields, state, with_pool=end is None)
        test_probs = steps.predict_test(views, test_df, self.k)
        write = RoundWriter(self.store, run_id, r, self.labels, names)
        pred, merged, adaptive, shadow_picks = steps.PoolPrediction.empty(len(views)), None, None, None
        debated = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int16), np.zeros(0, dtype=np.float32)
        with self.store.transaction():
            if end is None:
                if c.pool_sample and c.pool_sample < pool_left:  # Blum-Mitchell's U': a random sample
                    pool = np.sort(rng.choice(pool, size=c.pool_sample, replace=False))
                pred = self._predict(run_id, views, fields, state, pool, write, oof, oof_y)
                ref = shadow_runs.pool_reference(sr, pool) if sr is not None else None
                evidence = assess(c.combination, oof, oof_y, pred.combined, pred.labels, state.gold_prior(self.k),
                                  self.k, rng, ref, folds_asked=c.calibration_folds >= 2)
                pred.ensemble = evidence.label
                ev = steps.evaluate_views(names, test_probs, state.test_y, self.k, evidence.combination.combine)
                frames = lambda: (self._fetch(run_id, state, pool[lo:lo + c.batch_size], fields)  # noqa: E731
                                  for lo in range(0, len(pool), c.batch_size))
                merged, adaptive = self._select(r, pred, evidence, state, len(pool), frames)
                if sr is not None:
                    shadow_picks = shadow_runs.shadow_select(sr, evidence, self._last_round - r, c.min_precision)
                    shadow_runs.write_picks(write, shadow_picks)
                records.selection(write, state, pool, merged, pred, c.policy)
                if self.debater is not None:
                    from orchestrator.debate import debate_round

                    debated = debate_round(self, write, state, pool, merged, pred, ev.probs)
                if self.escalator is not None:
                    from orchestrator.escalation import escalate_round

                    taken = np.concatenate([merged.item, np.searchsorted(pool, debated[0])])
                    esc = escalate_round(self, write, state, pool, evidence, taken, c.min_precision)
                    debated = tuple(np.concatenate([a, b]) for a, b in zip(debated, esc))  # type: ignore[assignment]
                end = termination(r, self._last_round, pool_left, int(merged.item.size) + int(debated[0].size))
            else:
                evidence = assess(c.combination, oof, oof_y, None, None, state.gold_prior(self.k), self.k, rng)
                ev = steps.evaluate_views(names, test_probs, state.test_y, self.k, evidence.combination.combine)
            added = (0 if merged is None else int(merged.item.size)) + int(debated[0].size)
            records.metrics(write, views, fit, ev, pred, merged, added)
            records.estimates(write, views, state, evidence, merged, adaptive, oof_y)
            if len(test_df) and c.store_predictions:
                records.test_predictions(write, state, views, ev.probs, evidence.combination.combine)
            write.view_agreement(steps.view_pairs(pred))
            write.round_row(started_at=started, n_gold=state.n_gold, n_pseudo=state.n_pseudo, pool_size=pool_left,
                            labels_added=added, n_disputed=0 if merged is None else int(merged.disputed.size),
                            termination=end, rng_state=rng.bit_generator.state,
                            seconds_fit=sum(fit.seconds.values()), seconds_predict=sum(pred.seconds.values()),
                            seconds_total=time.perf_counter() - t0)
        if shadow_picks is not None:
            shadow_runs.accept(self.shadows, shadow_picks)
        if merged is not None:  # committed: now the in-memory state may follow
            state.accept(pool[merged.item], merged.label, merged.confidence, merged.sources)
        if debated[0].size:
            state.accept_shared(*debated)
        self.store.drop_cached_blocks(ROUND_CACHE_BYTES)  # committed: cached, its blocks only add to peaks
        log.info("round %d committed: %d labels added, %s", r, added, end or "continuing")
        self.reporter.round_finished({
            "round": r, "pool": pool_left, "predicted": int(pred.labels.shape[0]), "added": added,
            "disputed": 0 if merged is None else int(merged.disputed.size), "metrics": ev.scores,
            "termination": end, "seconds": time.perf_counter() - t0})
        return end is not None

    def _fit(self, run_id: int, r: int, views: list[View], fields: list[str], state: LabelState,
             with_pool: bool = True) -> tuple[steps.FitResult, np.ndarray, np.ndarray, Any]:
        """Fit every view on its training set after cross-validating over the gold items (by
        the shadow runs when kept): returns the fit, the gold items' out-of-fold probabilities
        (m, V, K) with their labels, and the shadows' round (None without shadows)."""
        c = self.cfg.cotrain
        pos, y, w, masks = state.training_sets(c)
        train_df = self._fetch(run_id, state, pos, fields)
        train_df[LABEL_SOURCE_COLUMN] = state.label_sources(pos)
        oof, oof_y, sr = np.zeros((0, len(views), self.k)), np.zeros(0, dtype=np.int64), None
        gold_rows = np.flatnonzero(state.gold[pos] >= 0)
        if self.shadows is not None:
            sr = shadow_runs.shadow_crossfit(views, self.shadows, state, c,
                                 lambda p: self._fetch(run_id, state, p, fields), self.k, c.batch_size,
                                 self.reporter.advance, with_pool)
            oof, oof_y = sr.oof, sr.oof_y
            steps.set_round(views, r)  # the run's fit tunes its own C, not the last shadow's
        elif c.calibration_folds >= 2 and gold_rows.size:
            cv_rng = np.random.default_rng([self.cfg.seed, r])  # its own stream: the run's is not consumed
            support = np.bincount(y[state.gold[pos] < 0].astype(np.int64), minlength=self.k)
            folds = gold_folds(y[gold_rows], c.calibration_folds, cv_rng, support)
            if (folds >= 0).any():
                keep = crossfit_rows(gold_rows, len(pos), cv_rng)
                oof = steps.crossfit(views, train_df, y, w, [m & keep for m in masks], gold_rows, folds, self.k)
                oof_y = y[gold_rows][folds >= 0].astype(np.int64)
        return steps.fit_views(views, train_df, y, w, masks, self.reporter.advance), oof, oof_y, sr

    def _predict(self, run_id: int, views: list[View], fields: list[str], state: LabelState, pool: np.ndarray,
                 write: RoundWriter, oof: np.ndarray, oof_y: np.ndarray) -> steps.PoolPrediction:
        """The pool's label matrix and combined posteriors, by the run's engine; batches are stored in large inserts."""
        c = self.cfg.cotrain
        combiners = pool_combiners(oof, oof_y, len(views), self.k)

        def sink(idx: np.ndarray, probs: np.ndarray, lab: np.ndarray, conf: np.ndarray) -> None:
            for j, view in enumerate(views):
                write.predictions(pool[idx], view.name, lab[:, j], conf[:, j], probs[:, j])

        with write.collecting():
            if self.engine is not None and self.engine.runs(views):
                return self.engine.predict_pool(views, pool, len(state.row_idx), self.k,
                                                lambda rows: self._fetch(run_id, state, rows, fields),
                                                self.reporter.advance, sink if c.store_predictions else None,
                                                combiners, c.batch_size)
            return steps.predict_pool(views, len(pool), c.batch_size,
                                      lambda lo, hi: self._fetch(run_id, state, pool[lo:hi], fields), self.k,
                                      self.reporter.advance, sink if c.store_predictions else None, combiners)

    def _select(self, r: int, pred: steps.PoolPrediction, evidence: RoundEvidence, state: LabelState,
                n_pool: int, pool_frames: Any = None) -> tuple[Merged, AdaptiveSelection | None]:
        """The round's selection: ``auto`` selects class by class on the combined evidence,
        as many as spread the pool over the rounds left; an explicit policy picks as before,
        vetoed by the combined label. Each accepted label gets its p_correct."""
        c = self.cfg.cotrain
        if c.policy == "auto":
            volume = int(np.ceil(n_pool / max(1, self._last_round - r)))
            rank = cut_rank(pool_frames, self.views or [], evidence.label, evidence.prior, c.cut_view,
                            c.cut_neighbors) if c.select == "cut_statistic" else None
            sel = select_adaptive(evidence.posterior, evidence.p_correct, evidence.prior, volume, c.min_precision,
                                  rank)
            return merge_adaptive(sel, evidence, pred.labels, pred.conf, c.threshold), sel
        m = select_round(c.policy, pred.labels, pred.conf, threshold=c.threshold, k=c.k, min_agree=c.min_agree,
                         prior=state.gold_prior(self.k), ensemble=pred.ensemble, veto=c.veto == "ensemble")
        return replace(m, p_correct=evidence.p_correct_of(m.item, m.label)), None

    def _result(self, run_id: int, resumed: bool, already_finished: bool = False) -> RunResult:
        info = self.store.run_info(run_id)
        rounds = self.store.completed_rounds(run_id)
        n_gold, n_reviewed, n_pseudo = label_counts(self.store, run_id)
        return RunResult(run_id=run_id, store=self.store.path, status=info["status"],
                         termination_condition=info["termination"], n_rounds=len(rounds),
                         labels_added=[int(x["labels_added"]) for x in rounds], n_gold=n_gold,
                         n_reviewed=n_reviewed, n_pseudo=n_pseudo, resumed=resumed, already_finished=already_finished,
                         final_metrics=final_metrics(self.store, run_id) if rounds else {})


__all__ = ["ABSTAIN", "NullReporter", "Reporter", "RoundRunner", "RunResult", "build_views"]
