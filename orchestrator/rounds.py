"""Co-training rounds: Blum-Mitchell generalised to N views and K classes.

Round r: fit every view on what it may train on, evaluate on held-out items, predict the
unlabelled pool in batches, select, and commit everything of the round in one transaction.
Round ``max_rounds`` only fits and evaluates, so ``max_rounds=0`` is the supervised fit.
The run's one ``numpy.random.Generator`` is saved after every round; a re-run resumes
from the last committed round and reaches the same labels as an uninterrupted run.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.config import Config
from orchestrator.data import load_into_store
from orchestrator.selection import (
    ABSTAIN,
    class_quota,
    ensemble_proba,
    find_disputes,
    label_matrix,
    merge_picks,
    pairwise_agreement,
    select_agreement,
    select_k_best,
    select_threshold,
)
from store.database import Store, StoreCache, StoreProblems, rows_as_lists, utcnow
from store.errors import ConfigError, DataError, RunError, RunInterrupted
from store.llm_ledger import LLMLedger
from store.queries import label_counts
from views.base import ITEM_ID_COLUMN, LABEL_SOURCE_COLUMN, View, ViewContext
from views.registry import BUILTIN_KINDS, build_view, check_view

log = logging.getLogger("cotrain")

Termination = Literal["max_rounds", "pool_exhausted", "no_change"]


class Reporter(Protocol):
    """Progress hooks; the CLI renders them with rich, the library default ignores them.

    A reporter may also define ``run_started(run_id, first_round, last_round, ledger)``,
    called once before the first round with the run's ``LLMLedger`` (whose ``usage()`` counts
    calls and cost so far); ``orchestrator.progress`` uses it for the progress file."""

    def round_started(self, round_idx: int, pool_size: int, n_views: int) -> None: ...

    def advance(self, view: str, phase: str, n: int, total: int) -> None: ...

    def round_finished(self, summary: dict[str, Any]) -> None: ...


class NullReporter:
    def round_started(self, round_idx: int, pool_size: int, n_views: int) -> None:
        pass

    def advance(self, view: str, phase: str, n: int, total: int) -> None:
        pass

    def round_finished(self, summary: dict[str, Any]) -> None:
        pass


@dataclass
class RunResult:
    """What a run did, in the manner of scikit-learn's fitted attributes."""

    run_id: int
    store: str
    status: str
    termination_condition: str | None
    n_rounds: int                      # rounds committed (round 0 included)
    labels_added: list[int]            # per round
    n_gold: int
    n_pseudo: int
    resumed: bool = False
    already_finished: bool = False
    final_metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cotrain")
    except PackageNotFoundError:
        return "0+unknown"


def _view_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def protected_columns(cfg: Config) -> dict[str, str]:
    """Columns no view (and no debate agent) may read, each with the config key naming it:
    the label, the configured id and the split column. cotrain's own ``__`` columns are
    protected too (see :func:`readable_columns`)."""
    d = cfg.data
    out = {d.label_column: "data.label_column"}
    if d.id_column:
        out[d.id_column] = "data.id_column"
    if d.split_column:
        out[d.split_column] = "data.split_column"
    return out


def readable_columns(cfg: Config, columns: list[str]) -> list[str]:
    """The data columns views may read: all but the protected and internal ones."""
    protected = protected_columns(cfg)
    return [c for c in columns if c not in protected and not c.startswith("__")]


def _resolve_fields(view: View, cfg: Config, columns: list[str]) -> list[str]:
    """The view's fields, resolved against the readable columns only, so a prefix never
    matches the label column; naming a protected column is one error naming its key."""
    from store.errors import ViewError

    protected = protected_columns(cfg)
    try:
        fields = view.resolve_fields(readable_columns(cfg, columns))
    except ViewError:
        try:  # would the view have resolved with the protected columns? then say which it named
            internal = ["__row", "__split", "__file_row", ITEM_ID_COLUMN, LABEL_SOURCE_COLUMN]
            named = [f for f in view.resolve_fields([*columns, *internal]) if f in protected or f.startswith("__")]
        except ViewError:
            named = []
        if named:
            what = protected.get(named[0], "an internal cotrain column")
            raise ViewError(view.name, f"reads '{named[0]}', which is {what}; views may never read the label, "
                            "id or split column (that would leak the answer)") from None
        raise
    bad = [f for f in fields if f in protected or f.startswith("__")]
    if bad:  # a plug-in that ignores the columns it is given
        raise ViewError(view.name, f"reads '{bad[0]}', a protected column; views may never read the label, "
                        "id or split column")
    return fields


def build_views(cfg: Config, store: Store | None, columns: list[str], base_dir: Any,
                ledger: LLMLedger | None = None, problems: StoreProblems | None = None,
                reporter: Reporter | None = None, dry_run: bool = False) -> tuple[list[View], list[str]]:
    """Build every configured view, check the fields it reads exist and are not protected
    (label, id, split), and return the views with the sorted union of their fields.

    ``dry_run``: a plug-in kind is imported and its parameters checked, but not constructed
    (its constructor is user code), so it is left out of the returned views; built-in views
    are built with ``context.dry_run`` set and call no user factory either."""
    from pathlib import Path

    from store.media import data_roots

    views: list[View] = []
    fields: set[str] = set()
    for i, vc in enumerate(cfg.views):
        ctx = ViewContext(labels=tuple(cfg.task.names), seed=_view_seed(cfg.seed, i),
                          cache=StoreCache(store) if store is not None else None,
                          base_dir=Path(base_dir),
                          label_descriptions=tuple(spec.description for spec in cfg.task.labels),
                          ledger=ledger, data_dirs=data_roots(cfg.data.train, cfg.data.test), problems=problems,
                          progress=None if reporter is None else _progress_of(reporter, vc.name), dry_run=dry_run)
        if dry_run and vc.kind not in BUILTIN_KINDS:
            check_view(vc.name, vc.kind, vc.params, ctx)
            continue
        view = build_view(vc.name, vc.kind, vc.params, ctx)
        fields.update(_resolve_fields(view, cfg, columns))
        views.append(view)
    return views, sorted(fields)


def _progress_of(reporter: Reporter, view: str) -> Any:
    """A view's ``progress(phase, n, total)`` callback into the run's reporter."""
    def progress(phase: str, n: int, total: int) -> None:
        reporter.advance(view, phase, n, total)

    return progress


def _masked_lists(mask: np.ndarray, values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    """Row i -> values[i][mask[i]] as an Arrow list array, without a Python loop.

    ``values`` is (n, V) or (V,) (broadcast to every row)."""
    mask = np.asarray(mask, dtype=bool)
    offsets = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int32)
    rows, cols = np.nonzero(mask)
    flat = values[cols] if values.ndim == 1 else values[rows, cols]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=dtype))


def _metrics(y_true: np.ndarray, proba: np.ndarray) -> tuple[float | None, float | None]:
    from sklearn.metrics import f1_score

    if len(y_true) == 0:
        return None, None
    voted = ~np.isnan(proba).any(axis=1)
    pred = np.where(voted, np.nan_to_num(proba, nan=-1).argmax(axis=1), -1)  # abstain counts as wrong
    acc = float((pred == y_true).mean())
    f1 = float(f1_score(y_true, pred, labels=np.unique(y_true), average="macro", zero_division=0))
    return acc, f1


class RoundRunner:
    """Runs (or resumes) one run of a config against an open store."""

    def __init__(self, cfg: Config, store: Store, reporter: Reporter | None = None,
                 base_dir: Any = ".", dry_run: bool = False) -> None:
        self.cfg = cfg
        self.dry_run = dry_run  # plan only: build nothing that runs user code
        self.store = store
        self.reporter = reporter or NullReporter()
        self.base_dir = base_dir
        self.labels = cfg.task.names
        self.k = len(self.labels)
        self._state: Any = None  # the running run's _State, once loaded
        self.debater: Any = None  # agents.runner.Debater while a run with a debate section runs
        self._last_round = cfg.cotrain.max_rounds  # or a reopened run's round_limit, set in run()

    # ------------------------------------------------------------------ start / resume
    def start(self, new_run: bool = False) -> tuple[int, bool]:
        """Return (run_id, resumed). Creates the run (data snapshot + items) if needed."""
        latest = self.store.latest_run()
        fp = self.cfg.fingerprint(self.cfg.data_digest())
        if latest is not None and not new_run:
            info = self.store.run_info(latest)
            if info["config_hash"] == fp:
                return latest, True
            if info["status"] == "running":
                raise RunError(
                    f"store {self.store.path} holds unfinished run {latest} made with a different config or "
                    "data; re-run with those to resume it, or pass --new-run to start another run")
        with self.store.transaction():
            run_id = self.store.create_run(
                config=self.cfg.snapshot(), config_hash=fp, seed=self.cfg.seed, code_version=code_version(),
                labels=self.labels, views=[v.name for v in self.cfg.views])
            loaded = load_into_store(self.store, run_id, self.cfg)
            views, _ = build_views(self.cfg, None, loaded.columns, self.base_dir,  # field check before commit
                                   dry_run=self.dry_run)
            d = self.cfg.debate
            asked = d.fields if d is not None and d.enabled else []
            missing = [f for f in asked if f not in loaded.columns]
            if missing:
                raise ConfigError("debate.fields", f"'{missing[0]}' is not a column of the data")
            leaks = [f for f in asked if f not in readable_columns(self.cfg, loaded.columns)]
            if leaks:
                raise ConfigError("debate.fields", f"'{leaks[0]}' is the label, id or split column; agents may "
                                  "never read it")
            if loaded.n_gold == 0 and not self.dry_run and not any(getattr(v, "zero_shot", False) for v in views):
                raise DataError(f"no labelled training rows: fill '{self.cfg.data.label_column}' for a few items "
                                "(or add an llm view, which labels zero-shot)", self.cfg.data.train)
        log.info("run %d created: %d training items (%d labelled), %d test items",
                 run_id, loaded.n_train, loaded.n_gold, loaded.n_test)
        return run_id, False

    # ------------------------------------------------------------------ the loop
    def run(self, new_run: bool = False) -> RunResult:
        run_id, resumed = self.start(new_run)
        info = self.store.run_info(run_id)
        done = self.store.completed_rounds(run_id)
        if info["status"] == "finished":
            return self._result(run_id, resumed=True, already_finished=True)
        if info["status"] == "failed":  # the same config again, presumably with the cause fixed
            self.store.mark_run(run_id, "running")
            log.info("run %d failed before; resuming it", run_id)
        try:
            self._rounds(run_id, info, done)
        except KeyboardInterrupt:
            last = self.store.completed_rounds(run_id)
            raise RunInterrupted(run_id, last[-1]["round"] if last else None) from None
        except Exception as exc:
            self._mark_failed(run_id, exc)
            raise
        return self._result(run_id, resumed=resumed and bool(done))

    def _mark_failed(self, run_id: int, exc: BaseException) -> None:
        """A round raised: its transaction was rolled back, so every committed round stays.
        Mark the run ``failed`` (it no longer blocks a corrected config; the same config
        resumes it)."""
        try:
            self.store.mark_run(run_id, "failed", f"error: {type(exc).__name__}")
        except Exception:  # noqa: BLE001 - the store itself may be what failed; the first error matters
            log.warning("run %d: could not mark the run failed", run_id)

    def _rounds(self, run_id: int, info: dict[str, Any], done: list[dict[str, Any]]) -> None:
        """Build the views and run rounds from the first uncommitted one to the limit."""
        columns = [c for c in self.store.data_columns(run_id) if not c.startswith("__")]
        ledger = LLMLedger(self.store, run_id)
        views: list[View] = []
        d = self.cfg.debate
        try:
            if d is not None and d.enabled:
                from orchestrator.debate import make_debater

                self.debater = make_debater(self.cfg, ledger)
                self.debater.check()
            problems = StoreProblems(self.store, run_id)
            views, fields = build_views(self.cfg, self.store, columns, self.base_dir, ledger, problems,
                                        self.reporter)
            state = _State.load(self.store, run_id, self.labels, [v.name for v in views])
            self._state = state
            rng = np.random.default_rng(self.cfg.seed)
            if done:
                rng.bit_generator.state = done[-1]["rng_state"]
                log.info("run %d: resuming after round %d", run_id, done[-1]["round"])
            start_round = done[-1]["round"] + 1 if done else 0
            test_df = self._fetch(run_id, state.test_rows, fields)
            # a run reopened by a review import runs to the limit the import set
            self._last_round = info.get("round_limit") if info.get("round_limit") is not None \
                else self.cfg.cotrain.max_rounds
            hook = getattr(self.reporter, "run_started", None)  # optional: the progress file's reporter
            if callable(hook):
                hook(run_id, start_round, self._last_round, ledger)
            for r in range(start_round, self._last_round + 1):
                ledger.round = r
                problems.round = r
                for v in views:
                    if callable(getattr(v, "set_round", None)):
                        v.set_round(r)  # type: ignore[attr-defined]
                if self._round(run_id, r, views, fields, state, rng, test_df):
                    break
        finally:
            for v in views:
                if callable(getattr(v, "close", None)):
                    v.close()  # type: ignore[attr-defined]
            if self.debater is not None:
                self.debater.close()
                self.debater = None
            ledger.close()

    def _fetch(self, run_id: int, rows: np.ndarray, fields: list[str]) -> pd.DataFrame:
        """Rows of the data snapshot with the fields views read, plus the items' ids
        (``__item_id``: snapshot row i is item position i)."""
        df = self.store.fetch_rows(run_id, rows, fields).to_pandas()
        df[ITEM_ID_COLUMN] = self._state.ids(rows).to_pandas().to_numpy() if len(rows) else []
        return df

    def _round(self, run_id: int, r: int, views: list[View], fields: list[str], state: _State,
               rng: np.random.Generator, test_df: pd.DataFrame) -> bool:
        """Run round r; return True when the run is finished."""
        c = self.cfg.cotrain
        t0 = time.perf_counter()
        started = utcnow()
        pool = state.pool()
        pool_left = len(pool)
        log.info("round %d started: pool %d", r, pool_left)
        self.reporter.round_started(r, pool_left, len(views))
        # ---- fit
        train_rows, train_y, train_w, masks = state.training_sets(c, self.cfg.cotrain.policy)
        train_df = self._fetch(run_id, train_rows, fields)
        train_df[LABEL_SOURCE_COLUMN] = state.label_sources(train_rows)  # item position == snapshot row
        fit_s: dict[str, float] = {}
        n_train: dict[str, int] = {}
        for j, view in enumerate(views):
            m = masks[j]
            t = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                view.fit(train_df[m].reset_index(drop=True), train_y[m], train_w[m])
            for w in caught:
                if issubclass(w.category, UserWarning):
                    log.warning("%s", w.message)
            fit_s[view.name] = time.perf_counter() - t
            n_train[view.name] = int(m.sum())
            self.reporter.advance(view.name, "fit", 1, 1)
        # ---- evaluate on held-out items
        test_probs = np.stack([v.predict_proba(test_df) for v in views], axis=1) if len(test_df) else \
            np.zeros((0, len(views), self.k))
        y_test = state.test_y
        metrics = {v.name: _metrics(y_test, test_probs[:, j]) for j, v in enumerate(views)}
        metrics["ensemble"] = _metrics(y_test, ensemble_proba(test_probs))
        finished_now: Termination | None = None
        if r >= self._last_round:
            finished_now = "max_rounds"
        elif pool_left == 0:
            finished_now = "pool_exhausted"
        pred_s = {v.name: 0.0 for v in views}
        labels_m = np.zeros((0, len(views)), dtype=np.int16)
        conf_m = np.zeros((0, len(views)), dtype=np.float32)
        ens_lab = np.zeros(0, dtype=np.int16)
        merged = None
        debate_accepted: tuple[np.ndarray, np.ndarray, np.ndarray] = (
            np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int16), np.zeros(0, dtype=np.float32))
        with self.store.transaction():
            if finished_now is None:
                if c.pool_sample and c.pool_sample < pool_left:
                    pool = np.sort(rng.choice(pool, size=c.pool_sample, replace=False))
                labels_m, conf_m, ens_lab = self._predict_pool(run_id, r, views, fields, state, pool, pred_s)
                picked = self._select(labels_m, conf_m, state)
                merged = merge_picks(labels_m, conf_m, picked, c.threshold,
                                     consensus=ens_lab if c.veto == "ensemble" and c.policy != "self" else None)
                self._write_selection(run_id, r, state, pool, merged, labels_m, conf_m, views)
                if self.debater is not None:
                    debate_accepted = self._debate(run_id, r, state, pool, merged, labels_m, conf_m, views,
                                                   test_probs)
                if merged.item.size == 0 and debate_accepted[0].size == 0:
                    finished_now = "no_change"
            added = (0 if merged is None else int(merged.item.size)) + int(debate_accepted[0].size)
            per_view_added = {v.name: (0 if merged is None else int(merged.sources[:, j].sum()))
                              for j, v in enumerate(views)}
            rows = []
            for j, v in enumerate(views):
                agree = None
                if labels_m.shape[0]:
                    both = (labels_m[:, j] != ABSTAIN) & (ens_lab != ABSTAIN)
                    agree = float((labels_m[both, j] == ens_lab[both]).mean()) if both.any() else None
                acc, f1 = metrics[v.name]
                rows.append((run_id, r, v.name, n_train[v.name], per_view_added[v.name], acc, f1, agree,
                             fit_s[v.name], pred_s[v.name]))
            acc, f1 = metrics["ensemble"]
            rows.append((run_id, r, "ensemble", None, added, acc, f1, None, None, None))
            self.store.insert_arrow("metrics", pa.table(
                list(zip(*rows)), names=["run_id", "round", "view", "n_train", "labels_added", "test_accuracy",
                                         "test_macro_f1", "pool_agreement", "seconds_fit", "seconds_predict"]))
            if len(test_df) and c.store_predictions:
                self._write_test_predictions(run_id, r, views, test_probs, state)
            if labels_m.shape[0]:
                agr = pairwise_agreement(labels_m)
                names = [v.name for v in views]
                if agr:
                    self.store.insert_arrow("view_agreement", pa.table({
                        "run_id": [run_id] * len(agr), "round": [r] * len(agr),
                        "view_a": [names[a] for a, _, _, _ in agr], "view_b": [names[b] for _, b, _, _ in agr],
                        "n_both": [n for _, _, n, _ in agr], "rate": [x for _, _, _, x in agr]}))
            self.store.insert_round({
                "run_id": run_id, "round": r, "started_at": started, "finished_at": utcnow(),
                "n_gold": state.n_gold, "n_pseudo": state.n_pseudo, "pool_size": pool_left,
                "labels_added": added, "n_disputed": 0 if merged is None else int(merged.disputed.size),
                "termination": finished_now, "rng_state": rng.bit_generator.state,
                "seconds_fit": sum(fit_s.values()), "seconds_predict": sum(pred_s.values()),
                "seconds_total": time.perf_counter() - t0,
            })
            if finished_now is not None:
                self.store.finish_run(run_id, finished_now)
        if merged is not None:
            state.accept(pool[merged.item], merged.label, merged.confidence, merged.sources)
        if debate_accepted[0].size:
            state.accept_shared(*debate_accepted)
        summary = {"round": r, "pool": pool_left, "predicted": int(labels_m.shape[0]), "added": added,
                   "disputed": 0 if merged is None else int(merged.disputed.size),
                   "metrics": metrics, "termination": finished_now,
                   "seconds": time.perf_counter() - t0}
        log.info("round %d committed: %d labels added, %s", r, added, finished_now or "continuing")
        self.reporter.round_finished(summary)
        return finished_now is not None

    def _write_test_predictions(self, run_id: int, r: int, views: list[View], test_probs: np.ndarray,
                                state: _State) -> None:
        """Each view's and the ensemble's label and confidence on every held-out item (for
        confusion matrices and per-item error analysis in the report)."""
        ids = state.ids(np.flatnonzero(state.is_test))
        blocks = [(v.name, test_probs[:, j]) for j, v in enumerate(views)] + [("ensemble", ensemble_proba(test_probs))]
        for name, probs in blocks:
            lab, conf = label_matrix(probs[:, None, :])
            voted = lab[:, 0] != ABSTAIN
            label = pa.array(np.asarray(self.labels, dtype=object)[np.where(voted, lab[:, 0], 0)], pa.string())
            self.store.insert_arrow("test_predictions", pa.table({
                "run_id": pa.array(np.full(len(ids), run_id, dtype=np.int32)),
                "round": pa.array(np.full(len(ids), r, dtype=np.int32)),
                "view": pa.array([name] * len(ids), pa.string()), "item_id": ids,
                "label": pc.if_else(pa.array(voted), label, pa.scalar(None, pa.string())),
                "confidence": pa.array(conf[:, 0], pa.float32())}))

    def _predict_pool(self, run_id: int, r: int, views: list[View], fields: list[str], state: _State,
                      pool: np.ndarray, pred_s: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = self.cfg.cotrain
        n = len(pool)
        # the label matrix is kept compact (int16 labels, float32 confidences): it is the only
        # per-item state a round holds; probabilities are streamed per batch
        labels_m = np.full((n, len(views)), ABSTAIN, dtype=np.int16)
        conf_m = np.full((n, len(views)), np.nan, dtype=np.float32)
        ens_lab = np.full(n, ABSTAIN, dtype=np.int16)
        for lo in range(0, n, c.batch_size):
            hi = min(lo + c.batch_size, n)
            rows = pool[lo:hi]
            df = self._fetch(run_id, state.row_idx[rows], fields)
            probs = np.empty((hi - lo, len(views), self.k))
            for j, view in enumerate(views):
                t = time.perf_counter()
                probs[:, j] = view.predict_proba(df)
                pred_s[view.name] += time.perf_counter() - t
                self.reporter.advance(view.name, "predict", hi - lo, n)
            lab, conf = label_matrix(probs)
            labels_m[lo:hi], conf_m[lo:hi] = lab, conf
            ens = ensemble_proba(probs)
            ens_lab[lo:hi] = label_matrix(ens[:, None, :])[0][:, 0]
            if c.store_predictions:
                ids = state.ids(rows)
                for j, view in enumerate(views):
                    voted = lab[:, j] != ABSTAIN
                    self.store.insert_arrow("predictions", pa.table({
                        "run_id": pa.array(np.full(hi - lo, run_id, dtype=np.int32)),
                        "round": pa.array(np.full(hi - lo, r, dtype=np.int32)),
                        "view": pa.repeat(pa.scalar(view.name), hi - lo),
                        "item_id": ids,
                        "label": pa.array(np.asarray(self.labels, dtype=object)[np.where(voted, lab[:, j], 0)],
                                          pa.string(), mask=~voted),
                        "confidence": pa.array(conf[:, j].astype(np.float32), mask=~voted),
                        "probs": rows_as_lists(probs[:, j]),
                    }))
        return labels_m, conf_m, ens_lab

    def _debate(self, run_id: int, r: int, state: _State, pool: np.ndarray, merged: Any, labels_m: np.ndarray,
                conf_m: np.ndarray, views: list[View],
                test_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Debate the round's disputed (or low-confidence) pool items, plus up to
        ``evaluate_test`` disputed held-out items for evaluation; file everything; return the
        accepted verdicts as (positions, labels, confidences)."""
        from orchestrator.debate import choose_items, file_debates, view_votes

        d = self.cfg.debate
        assert d is not None
        names = [v.name for v in views]
        chosen = choose_items(d, merged.disputed, merged.item, conf_m)
        rows = [(pool[i], trig, labels_m[i], conf_m[i], "train") for i, trig in chosen]
        if d.evaluate_test and len(state.test_rows):
            t_lab, t_conf = label_matrix(test_probs)
            t_disp = np.flatnonzero(find_disputes(t_lab, t_conf, self.cfg.cotrain.threshold))
            test_pos = np.flatnonzero(state.is_test)
            # held-out items chosen by the same trigger, for the verdicts' accuracy only
            chosen_t = choose_items(d.model_copy(update={"max_items": d.evaluate_test}), t_disp,
                                    np.zeros(0, dtype=np.int64), t_conf)
            rows += [(test_pos[i], trig, t_lab[i], t_conf[i], "test") for i, trig in chosen_t]
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int16), np.zeros(0, dtype=np.float32))
        if not rows:
            return empty
        positions = np.asarray([x[0] for x in rows], dtype=np.int64)
        df = self.store.fetch_rows(run_id, state.row_idx[positions], d.fields).to_pandas()
        ids = state.ids(positions).to_pylist()
        items = [(ids[k], {f: "" if df[f].iloc[k] is None else str(df[f].iloc[k]) for f in d.fields},
                  view_votes(lab, cf, names, self.labels)) for k, (_, _, lab, cf, _) in enumerate(rows)]
        outcomes = self.debater.run(items)
        accepted = [o.status == "verdict" and o.confidence >= d.accept_confidence and split == "train"
                    for o, (_, _, _, _, split) in zip(outcomes, rows)]
        file_debates(self.store, outcomes, run_id=run_id, round_idx=r, triggers=[x[1] for x in rows],
                     splits=[x[4] for x in rows], accepted=accepted, aggregation=d.aggregation,
                     label_names=self.labels)
        acc = np.flatnonzero(accepted)
        if acc.size == 0:
            return empty
        pos = positions[acc]
        lab = np.asarray([outcomes[k].verdict for k in acc], dtype=np.int16)
        conf = np.asarray([outcomes[k].confidence for k in acc], dtype=np.float32)
        self._insert_pseudo(run_id, r, state, pos, lab, conf, "debate",
                            pa.array([["debate"]] * len(pos), pa.list_(pa.string())))
        log.info("round %d: %d item(s) debated, %d verdict(s) accepted", r, len(rows), len(pos))
        return pos, lab, conf

    def _select(self, labels_m: np.ndarray, conf_m: np.ndarray, state: _State) -> np.ndarray:
        c = self.cfg.cotrain
        if c.policy in ("threshold", "self"):
            return select_threshold(labels_m, conf_m, c.threshold)
        if c.policy == "agreement":
            return select_agreement(labels_m, conf_m, c.min_agree, c.threshold)
        prior = np.bincount(state.gold[state.gold >= 0], minlength=self.k)
        return select_k_best(labels_m, conf_m, class_quota(prior, c.k))

    def _insert_pseudo(self, run_id: int, r: int, state: _State, pos: np.ndarray, label: np.ndarray,
                       conf: np.ndarray, source: str, source_views: pa.Array) -> None:
        """Append accepted pseudo-labels for items at positions ``pos``."""
        self.store.insert_arrow("pseudo_labels", pa.table({
            "run_id": pa.array(np.full(len(pos), run_id, dtype=np.int32)),
            "item_id": state.ids(pos),
            "label": pa.array(np.asarray(self.labels, dtype=object)[label], pa.string()),
            "confidence": pa.array(np.asarray(conf, dtype=np.float32)),
            "source": pa.repeat(pa.scalar(source), len(pos)),
            "source_views": source_views,
            "round": pa.array(np.full(len(pos), r, dtype=np.int32)),
            "status": pa.repeat(pa.scalar("accepted"), len(pos)),
            "created_at": pa.repeat(pa.scalar(utcnow(), pa.timestamp("us")), len(pos)),
        }))

    def _write_selection(self, run_id: int, r: int, state: _State, pool: np.ndarray, merged: Any,
                         labels_m: np.ndarray, conf_m: np.ndarray, views: list[View]) -> None:
        names = np.asarray([v.name for v in views], dtype=object)
        lab_names = np.asarray(self.labels, dtype=object)
        if merged.item.size:
            self._insert_pseudo(run_id, r, state, pool[merged.item], merged.label, merged.confidence,
                                self.cfg.cotrain.policy, _masked_lists(merged.sources, names, pa.string()))
        if merged.disputed.size:
            d, conf_ok = merged.disputed, merged.voices
            self.store.insert_arrow("disputes", pa.table({
                "run_id": pa.array(np.full(len(d), run_id, dtype=np.int32)),
                "round": pa.array(np.full(len(d), r, dtype=np.int32)),
                "item_id": state.ids(pool[d]),
                "views": _masked_lists(conf_ok, names, pa.string()),
                "labels": _masked_lists(conf_ok, lab_names[np.maximum(labels_m[d], 0)], pa.string()),
                "confidences": _masked_lists(conf_ok, conf_m[d].astype(np.float32), pa.float32()),
            }))

    def _result(self, run_id: int, resumed: bool, already_finished: bool = False) -> RunResult:
        info = self.store.run_info(run_id)
        rounds = self.store.completed_rounds(run_id)
        n_gold, n_pseudo = label_counts(self.store, run_id)
        final: dict[str, dict[str, float | None]] = {}
        if rounds:
            last = rounds[-1]["round"]
            for view, acc, f1 in self.store.con.execute(
                    "SELECT view, test_accuracy, test_macro_f1 FROM metrics WHERE run_id = ? AND round = ?",
                    [run_id, last]).fetchall():
                final[view] = {"test_accuracy": acc, "test_macro_f1": f1}
        return RunResult(run_id=run_id, store=self.store.path, status=info["status"],
                         termination_condition=info["termination"], n_rounds=len(rounds),
                         labels_added=[int(x["labels_added"]) for x in rounds], n_gold=n_gold,
                         n_pseudo=n_pseudo, resumed=resumed, already_finished=already_finished,
                         final_metrics=final)


@dataclass
class _State:
    """In-memory view of the run's labels: gold, accepted pseudo-labels, and who made them."""

    item_id: pa.Array          # (n,) string
    row_idx: np.ndarray        # (n,) int64 data-snapshot row of each item
    is_test: np.ndarray        # (n,) bool
    gold: np.ndarray           # (n,) int16, -1 unlabelled
    pseudo: np.ndarray         # (n,) int16, -1 none
    pseudo_conf: np.ndarray    # (n,) float32
    sources: np.ndarray        # (n, V) bool
    shared: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # (n,) debate verdicts: train every view
    reviewed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # (n,) gold from a reviewer
    test_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    test_y: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def load(cls, store: Store, run_id: int, labels: list[str], view_names: list[str]) -> _State:
        """Read the run's items and accepted pseudo-labels with columnar queries (no Python
        object per item: ids stay one Arrow string array)."""
        t = store.query(  # a reviewer's label overrides the file's: reviewed items are gold
            "SELECT i.item_id, i.row_idx, i.split = 'test' AS is_test,"
            " coalesce(list_position(?, coalesce(rv.label, i.gold_label)), 0) - 1 AS gold,"
            " rv.label IS NOT NULL AS reviewed"
            " FROM items i LEFT JOIN reviewed_labels rv ON rv.run_id = i.run_id AND rv.item_id = i.item_id"
            " WHERE i.run_id = ? ORDER BY i.row_idx", [labels, run_id])
        row_idx = t.column("row_idx").to_numpy()
        if len(row_idx) and row_idx[-1] != len(row_idx) - 1:
            raise RunError(f"run {run_id}: items do not cover the data snapshot row by row")
        is_test = t.column("is_test").to_numpy(zero_copy_only=False)
        gold = t.column("gold").to_numpy().astype(np.int16)
        n, v = len(row_idx), len(view_names)
        st = cls(t.column("item_id").combine_chunks(), row_idx, is_test, gold, np.full(n, -1, dtype=np.int16),
                 np.zeros(n, dtype=np.float32), np.zeros((n, v), dtype=bool))
        st.shared = np.zeros(n, dtype=bool)
        st.reviewed = t.column("reviewed").to_numpy(zero_copy_only=False).astype(bool)
        st.test_rows = row_idx[is_test]
        st.test_y = gold[is_test]
        p = store.query(
            "SELECT i.row_idx, coalesce(list_position(?, p.label), 0) - 1 AS label, p.confidence, p.source_views,"
            " p.source = 'debate' AS shared"
            " FROM pseudo_labels p JOIN items i ON i.run_id = p.run_id AND i.item_id = p.item_id"
            " WHERE p.run_id = ? AND p.status = 'accepted'", [labels, run_id])
        if p.num_rows:
            pos = p.column("row_idx").to_numpy()
            st.pseudo[pos] = p.column("label").to_numpy()
            st.pseudo_conf[pos] = p.column("confidence").to_numpy()
            st.shared[pos] = p.column("shared").to_numpy(zero_copy_only=False)
            vpos = {name: j for j, name in enumerate(view_names)}
            for i, srcs in zip(pos, p.column("source_views").to_pylist()):
                for s in srcs:
                    if s in vpos:
                        st.sources[i, vpos[s]] = True
        return st

    def ids(self, pos: np.ndarray) -> pa.Array:
        """Item ids at positions ``pos``."""
        return self.item_id.take(pa.array(np.asarray(pos, dtype=np.int64)))

    @property
    def n_gold(self) -> int:
        return int(((self.gold >= 0) & ~self.is_test).sum())

    @property
    def n_pseudo(self) -> int:
        return int((self.pseudo >= 0).sum())

    def pool(self) -> np.ndarray:
        """Positions of unlabelled training items without an accepted pseudo-label."""
        return np.flatnonzero(~self.is_test & (self.gold < 0) & (self.pseudo < 0))

    def training_sets(self, c: Any, policy: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """Rows, labels and weights of every item some view trains on (in data order, as
        scikit-learn's SelfTrainingClassifier sees them), and each view's mask over them."""
        has = ~self.is_test & ((self.gold >= 0) | (self.pseudo >= 0))
        pos = np.flatnonzero(has)
        is_gold = self.gold[pos] >= 0
        y = np.where(is_gold, self.gold[pos], self.pseudo[pos])
        pw = self.pseudo_conf[pos] if c.pseudo_weight == "confidence" else np.full(len(pos), float(c.pseudo_weight))
        w = np.where(is_gold, 1.0, pw)
        src = self.sources[pos]
        masks = []
        for j in range(self.sources.shape[1]):
            if policy == "self":
                mp = src[:, j]
            elif c.feeding == "shared":
                mp = np.ones(len(pos), dtype=bool)
            else:  # cross: picks made (also) by another view
                mp = np.delete(src, j, axis=1).any(axis=1)
            masks.append(is_gold | mp | self.shared[pos])
        return self.row_idx[pos], y, w, masks

    def label_sources(self, pos: np.ndarray) -> np.ndarray:
        """Where the training labels at positions ``pos`` came from: ``review``, ``gold`` or
        ``pseudo`` (views' picks and debate verdicts)."""
        pos = np.asarray(pos, dtype=np.int64)
        return np.where(self.reviewed[pos], "review", np.where(self.gold[pos] >= 0, "gold", "pseudo")).astype(object)

    def accept_shared(self, pos: np.ndarray, label: np.ndarray, conf: np.ndarray) -> None:
        """Accept labels that no view picked (debate verdicts): every view trains on them."""
        self.pseudo[pos] = label
        self.pseudo_conf[pos] = conf
        self.shared[pos] = True

    def accept(self, pos: np.ndarray, label: np.ndarray, conf: np.ndarray, sources: np.ndarray) -> None:
        self.pseudo[pos] = label
        self.pseudo_conf[pos] = conf
        self.sources[pos] = sources

