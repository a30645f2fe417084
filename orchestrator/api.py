"""The Python API; the CLI calls exactly one of these per command.

    from orchestrator import api
    result = api.run("cotrain.yaml")
    api.export("cotrain.duckdb", "labels.parquet", min_confidence=0.9)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config import Config, parse_config, resolve_config
from orchestrator.examples import example_config, init_config, write_example
from orchestrator.planning import plan
from orchestrator.rounds import Reporter, RoundRunner, RunResult
from orchestrator.unread_settings import warn_unread_settings
from store.database import Store
from store.housekeeping import removed_if_left_empty
from store.errors import ConfigError, CotrainError
from store.exchange.reviews import ReviewSummary
from store.exchange.reviews import import_reviews as _import_reviews
from store.exchange.export import ExportCount, ExportFilter, ExportFormat, export_labels
from store.queries import (debate_summary, item_problems, llm_usage, resolve_run, review_precision, round_estimates,
                           rounds_summary, run_summaries, view_estimates)


def run(config: str | Path | Config | dict[str, Any], *, store: str | Path | None = None,
        new_run: bool = False, reporter: Reporter | None = None) -> RunResult:
    """Run co-training, or resume the store's unfinished run of the same config.

    ``store`` overrides the config's store path. A finished run of the same config is not
    redone (``result.already_finished``) unless ``new_run``. A store this call creates and a
    failure leaves empty (a data file refused before any run) is removed."""
    cfg, base = resolve_config(config)
    warn_unread_settings(cfg)
    path = str(store) if store is not None else cfg.store
    # the write lock first: a progress file is only ever written by the store's holder
    with removed_if_left_empty(path), Store(path) as st:
        if path == ":memory:":
            return RoundRunner(cfg, st, reporter, base_dir=base).run(new_run=new_run)
        from orchestrator.progress import ProgressFileReporter, TeeReporter
        with ProgressFileReporter(path) as live:  # `cotrain status` reads it while the store is locked
            result = RoundRunner(cfg, st, TeeReporter(reporter, live), base_dir=base).run(new_run=new_run)
            if result.already_finished:  # nothing ran: the finished run's final state stays
                live.put_back()
            else:
                live.close("finished", run_id=result.run_id)
            return result


@dataclass
class StatusReport:
    store: str
    runs: list[dict[str, Any]]
    run_id: int | None
    rounds: list[dict[str, Any]]
    llm: list[dict[str, Any]] = field(default_factory=list)  # LLM usage per round and view
    debates: list[dict[str, Any]] = field(default_factory=list)  # debates per round
    problems: list[dict[str, Any]] = field(default_factory=list)  # unreadable items per view and problem
    reviews: list[dict[str, Any]] = field(default_factory=list)  # reviewers' verdicts per pseudo-label source
    # per round: combination, est_precision (the round's labels), est_precision_all (all so
    # far), coverage, stopped_min_precision, ... (``store.queries.round_estimates``)
    estimates: list[dict[str, Any]] = field(default_factory=list)
    # per view, its latest round: cv_accuracy, label_model_accuracy, weight
    view_estimates: list[dict[str, Any]] = field(default_factory=list)
    # the progress file (``<store>.progress.json``) of a run that is running (the store is
    # locked: ``runs`` and ``rounds`` are empty then) or whose process ended without
    # finishing; see ``live_progress``
    live: dict[str, Any] | None = None


def live_progress(store: str | Path) -> dict[str, Any] | None:
    """What the progress file beside ``store`` says (None: no file): the ``Progress`` fields as a dict, with
    ``state`` as it is now (a ``running`` file whose process is dead says ``interrupted``, and ``stale`` is
    True), ``age_s`` since it was written and ``eta_s`` counted down by that age."""
    import time

    from store.progress import effective_state, progress_path, read_progress

    p = read_progress(progress_path(store))
    if p is None:
        return None
    out = p.to_dict()
    out["state"] = effective_state(p)
    out["stale"] = out["state"] != p.state
    out["age_s"] = max(0.0, time.time() - p.updated_at)
    if out["state"] != "running":
        out["rate"] = out["eta_s"] = None
    elif p.eta_s is not None:
        out["eta_s"] = max(0.0, p.eta_s - out["age_s"])
    return out


def _open_read(store: str | Path, action: str) -> Store:
    """The store opened read-only; while a run holds it, one error line naming its PID and ``cotrain status``."""
    from store.errors import StoreLockedError

    try:
        return Store(store, read_only=True)
    except StoreLockedError as exc:
        try:
            live = live_progress(store)
        except CotrainError:
            live = None
        what = "a process"
        if live is not None and live["state"] == "running":
            what = f"run {live['run_id']}" if live["run_id"] is not None else "a run"
            what += f" (round {live['round']}, {live['phase']})" if live["round"] is not None else " (starting)"
        raise StoreLockedError(
            exc.path, exc.pid, f"{what} is writing it; {action} once it ends, and watch it with "
            f"`cotrain status {store}`") from None


def _live_and_runs(st: Store, store: str | Path, runs: list[dict[str, Any]] | None = None) -> tuple[Any, list[Any]]:
    """The progress file's run as it is now (None when finished or absent) and the store's
    runs, each ``running`` one that no process holds said as what it is: ``reopened`` (a
    review import reopened it; `cotrain run` continues it) or ``interrupted`` (Ctrl-C, or a
    kill that never got to say so). The store opened, so no run of this host holds it. A file
    whose run the store says finished (a kill after its last commit) is stale: None (a failed
    run's file stays: it names the error)."""
    from store.progress import written_here

    try:
        live = live_progress(store)
    except CotrainError:  # the store itself is readable: a damaged progress file says nothing
        live = None
    if live is not None and live["state"] == "finished":
        live = None  # nothing to watch, nothing lost
    elif live is not None and live["state"] == "running" and written_here(live.get("host")):
        live.update(state="interrupted", stale=True, rate=None, eta_s=None)  # readable: no run holds it
    runs = run_summaries(st) if runs is None else runs  # status's tables, or only what export's note needs
    if live is not None and any(r["run_id"] == live.get("run_id") and r["status"] == "finished" for r in runs):
        live = None
    elsewhere = live["run_id"] if live is not None and live["state"] == "running" else None  # another host's
    for r in runs:
        if r["status"] == "running" and r["run_id"] != elsewhere:
            r["status"] = "reopened" if r["round_limit"] is not None else "interrupted"
    return live, runs


def status(store: str | Path, run_id: int | None = None) -> StatusReport:
    """Runs in the store, and the rounds (and LLM usage) of one run (default: the latest).

    While a run holds the store (DuckDB lets no other process open it), the report has only
    ``live``: that run's progress from its progress file (without one, ``StoreLockedError``)."""
    from store.errors import StoreLockedError

    try:
        st = Store(store, read_only=True)
    except StoreLockedError:
        live = live_progress(store)
        if live is None or live["state"] != "running":
            raise  # held by something that is not a run, or a run of an older cotrain
        return StatusReport(str(store), [], live["run_id"], [], live=live)
    with st:
        live, runs = _live_and_runs(st, store)
        if not runs:  # a store of standalone debates (``cotrain debate --items``) has those
            if run_id is not None:
                resolve_run(st, run_id)  # raises: a wrong type, or a run the store does not hold
            return StatusReport(str(store), [], None, [], debates=debate_summary(st, None), live=live)
        rid = resolve_run(st, run_id)
        return StatusReport(str(store), runs, rid, rounds_summary(st, rid), llm_usage(st, rid),
                            debate_summary(st, rid), item_problems(st, rid), review_precision(st, rid), live=live,
                            estimates=round_estimates(st, rid), view_estimates=view_estimates(st, rid))


@dataclass
class DebateReport:
    """What ``debate`` did (or, on a dry run, would do)."""

    store: str | None
    plan: dict[str, Any]
    n_items: int = 0
    verdicts: int = 0
    no_verdict: int = 0
    over_budget: int = 0
    accuracy: float | None = None   # on the debated items of the file that carry a gold label
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


def with_debate_overrides(cfg: Config, overrides: dict[str, Any] | None) -> Config:
    """The config with ``debate`` keys replaced (CLI flags), validated like the YAML."""
    if not overrides:
        return cfg
    if cfg.debate is None:
        raise ConfigError("debate", "the config has no 'debate' section")
    data = cfg.snapshot()
    if "test_value" not in cfg.data.model_fields_set:  # the default, which alone would be refused
        data["data"].pop("test_value", None)
    data["debate"].update(overrides)
    if "n_agents" in data["debate"]:
        n = data["debate"].pop("n_agents")
        agents = data["debate"]["agents"]
        data["debate"]["agents"] = [dict(agents[i % len(agents)], name=f"agent{i + 1}") for i in range(n)]
    return parse_config(data)


def debate(config: str | Path | Config | dict[str, Any], items: str | Path, *, store: str | Path | None = None,
           dry_run: bool = False, overrides: dict[str, Any] | None = None) -> DebateReport:
    """Debate the items of a file (CSV / JSONL / Parquet) without co-training, using the
    config's ``debate`` section; verdicts and turns go to the store (``run_id`` NULL). Items
    carry the debate's ``fields``, an optional ``data.id_column`` and an optional gold label
    (``data.label_column``) that is used only to report the verdicts' accuracy."""
    from orchestrator.debate import make_debater, plan_debate
    from orchestrator.debate_items import read_debate_items
    from store.llm_ledger import LLMLedger
    from store.writers import write_debates

    cfg, _ = resolve_config(config)
    cfg = with_debate_overrides(cfg, overrides)
    if cfg.debate is None:
        raise ConfigError("debate", "the config has no 'debate' section")
    d = cfg.debate
    given = read_debate_items(cfg, items)
    ids, records, gold, names = given.ids, given.records, given.gold, cfg.task.names
    plan = plan_debate(cfg, len(ids), records)
    if dry_run:
        return DebateReport(None, plan, n_items=len(ids))
    path = str(store) if store is not None else cfg.store
    with removed_if_left_empty(path), Store(path) as st:  # refused before any call was filed: no empty store
        ledger = LLMLedger(st, run_id=None)
        try:
            with make_debater(cfg, ledger) as debater:
                debater.check()
                outcomes = debater.run([(i, r, []) for i, r in zip(ids, records)])
            with st.transaction():
                write_debates(st, outcomes, run_id=None, round_idx=None, triggers=["given"] * len(ids),
                              splits=["given"] * len(ids), accepted=[False] * len(ids),
                              aggregation=d.aggregation, label_names=names)
        finally:
            ledger.close()
    judged = [(o, g) for o, g in zip(outcomes, gold) if g is not None and o.status != "budget"]  # debated
    acc = (sum(o.verdict >= 0 and names[o.verdict] == g for o, g in judged) / len(judged)) if judged else None
    return DebateReport(path, plan, n_items=len(ids), verdicts=sum(o.status == "verdict" for o in outcomes),
                        no_verdict=sum(o.status == "no_verdict" for o in outcomes),
                        over_budget=sum(o.status == "budget" for o in outcomes), accuracy=acc,
                        calls=sum(o.calls for o in outcomes), tokens=sum(o.tokens for o in outcomes),
                        cost_usd=sum(o.cost_usd for o in outcomes))


def debate_transcript(store: str | Path, item_id: str) -> dict[str, Any]:
    """The latest debate of ``item_id``: the debate row and its turns in order."""
    from store.queries import debate_of_item

    with Store(store, read_only=True) as st:
        return debate_of_item(st, item_id)


def models() -> list[dict[str, Any]]:
    """The embedded local LLMs: where their files are and whether they verify."""
    from views.llm.local import list_local_models

    return list_local_models()


def export(store: str | Path, out: str | Path, fmt: ExportFormat | None = None, *, run_id: int | None = None,
           max_round: int | None = None, min_confidence: float | None = None, source: str | None = None,
           include_gold: bool = True, disputed_only: bool = False, sample: int | None = None, seed: int = 0,
           force: bool = False, escape_formulas: bool = True, min_p_correct: float | None = None,
           select: str = "stratified") -> ExportCount:
    """Write gold, reviewed and accepted pseudo-labels with provenance; return rows written.

    ``select`` says how ``sample`` items are drawn: ``stratified`` (default: a seeded sample
    of the rows the other filters keep, stratified by label), or, for review, among the
    training items with no gold or reviewed label (pseudo-labelled or unlabelled, disputed
    ones only with ``disputed_only``): ``random``, ``uncertainty`` (smallest margin of the
    views' combined posterior), ``typical`` (the most typical item of each of N clusters, for
    small budgets) or ``active`` (close calls and typical items, mixed by the run's coverage;
    both in ``orchestrator.review_selection``).

    A review selection (``select`` other than ``stratified``) in a flat format writes a review
    file: ``label`` empty for the reviewer, cotrain's label and provenance as ``cotrain_label``,
    ``cotrain_source``, ``cotrain_confidence``, ``cotrain_p_correct``, and ``cotrain_task``.

    Every row carries ``p_correct``, the estimated probability that its label is right (1.0
    for gold and reviewed labels, empty when the run estimated none). ``min_p_correct`` (0 to
    1) keeps gold and reviewed labels and the pseudo-labels estimated at least that likely
    right; those without an estimate are dropped, and the result's ``unestimated`` says how
    many.

    ``fmt``: parquet | json (one array) | jsonl | csv | hf (a ``save_to_disk`` folder) | hf-parquet (with a
    ``ClassLabel``) | label-studio (tasks + labeling config) | argilla (records + settings).
    An existing ``out`` (a non-empty folder for hf) is replaced only with ``force``; the store
    and the runs' input data never are. CSV cells a spreadsheet would run as formulas (starting
    with ``= + - @``, tab or CR), and those starting with ``'``, get a leading ``'`` unless ``escape_formulas``."""
    flt = ExportFilter(run_id, max_round, min_confidence, source, include_gold, disputed_only, sample, seed,
                       min_p_correct)  # checks min_p_correct before the store is opened
    if select != "stratified":
        from orchestrator.review_selection import check_review_selection, review_filter

        check_review_selection(flt, select)
    with _open_read(store, "export") as st:
        if select != "stratified":
            flt = review_filter(st, flt, select)
        return export_labels(st, out, fmt, flt, force=force, escape_formulas=escape_formulas)


def unfinished_latest_run(store: str | Path) -> str | None:
    """A line for commands that read the latest run by default (export, report) when that run
    did not finish (failed, interrupted or still running: its labels so far, maybe only gold),
    naming the last finished run; None when the latest run finished."""
    with _open_read(store, "read") as st:
        runs = _live_and_runs(st, store, st.runs())[1]  # as status says them: a killed run is interrupted
    if not runs or runs[-1]["status"] == "finished":
        return None
    done = [r["run_id"] for r in runs if r["status"] == "finished"]
    last = runs[-1]
    hint = f"; pass --run {done[-1]} for the last finished run" if done else ""
    waits = " (reviews imported: `cotrain run` continues it)" if last["status"] == "reopened" else ""
    return f"run {last['run_id']} (the latest) is {last['status']}{waits}: its labels so far{hint}"


def report(store: str | Path, out: str | Path = "report.html", *, run_id: int | None = None,
           top_disputed: int = 25) -> Path:
    """Write one self-contained HTML page about a run (plots, disputed items, debates, cost)."""
    from store.report import write_report

    with _open_read(store, "write the report") as st:
        return write_report(st, out, run_id, top_disputed)


#: Rounds a review import reopens a run for: one that labels with the reviewed items as gold,
#: then the final fit (a run's last round selects nothing); with one, no label was added.
REVIEW_ROUNDS = 2


#: The most rounds an import may reopen a run for (as many as a config's ``max_rounds`` may ask).
MAX_REVIEW_ROUNDS = 100_000


def import_reviews(store: str | Path, file: str | Path, *, run_id: int | None = None, reviewer: str | None = None,
                   rounds: int = REVIEW_ROUNDS) -> ReviewSummary:
    """Read reviewed labels (Label Studio / Argilla export, a review file from ``export`` with a
    review selection, or CSV id,label) back as gold,
    revoke the pseudo-labels they contradict, and reopen the run for ``rounds`` more rounds
    (the last of them, as every run's last, fits the views and selects nothing)."""
    from store.errors import ReviewError

    if rounds < 0:
        raise ReviewError(f"rounds must be 0 or more, not {rounds}")  # an option's fault, not the file's
    if rounds > MAX_REVIEW_ROUNDS:  # DuckDB's own conversion error named neither the option nor a bound
        raise ReviewError(f"rounds must be at most {MAX_REVIEW_ROUNDS:,}, not {rounds:,}")

    def reopen(rid: int, info: dict[str, Any]) -> int:
        """The run goes on for ``rounds`` more rounds after its last one, never fewer than an
        unfinished run was going to run anyway."""
        if not rounds:
            return 0
        limit = st.last_round(rid) + rounds
        if info["status"] == "running":
            planned = info.get("round_limit")
            limit = max(limit, int(planned if planned is not None else info["max_rounds"]))
        st.reopen_run(rid, limit)
        return rounds

    with Store(store, create=False) as st:  # a mistyped path must not leave an empty store behind
        return _import_reviews(st, file, run_id=run_id, reviewer=reviewer, then=reopen)


def demo(folder: str | Path = "cotrain-demo", n_pool: int | None = None, n_labelled: int | None = None,
         n_test: int | None = None, seed: int = 0, max_rounds: int = 4, reporter: Reporter | None = None,
         example: str = "mfeat", labelled_fraction: float | None = None, n_items: int | None = None,
         ) -> tuple[Path, RunResult]:
    """Write an example (:func:`write_example`) into ``folder`` and run it offline."""
    path = write_example(folder, n_pool=n_pool, n_labelled=n_labelled, n_test=n_test, seed=seed,
                         max_rounds=max_rounds, example=example, labelled_fraction=labelled_fraction, n_items=n_items)
    return path.parent, run(path, reporter=reporter)


__all__ = ["CotrainError", "DebateReport", "StatusReport", "debate", "debate_transcript", "demo",
           "example_config", "export", "import_reviews", "init_config", "live_progress", "models", "plan", "report",
           "run", "status", "write_example"]
