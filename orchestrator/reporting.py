"""What a run tells its caller: progress hooks while it runs, and the result when it ends."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("cotrain")


def log_run_created(store: Any, run_id: int, n_train: int, n_gold: int, n_test: int) -> None:
    """Say a run was made, and what it leaves behind: reviews filed on an earlier run of the
    store for its items (``--new-run`` started without them and said nothing)."""
    from store.queries import reviews_of_earlier_runs

    log.info("run %d created: %d training items (%d labelled), %d test items", run_id, n_train, n_gold, n_test)
    n, earlier = reviews_of_earlier_runs(store, run_id)
    if n:
        log.warning("run %d starts without the %d reviewed label(s) filed on earlier runs for its items (reviews "
                    "belong to their run); to train on them: cotrain export %s reviews.csv --run %d --source "
                    "review, then cotrain import-reviews %s reviews.csv", run_id, n, store.path, earlier, store.path)


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
    n_gold: int                        # gold labels from the data, on items no review relabelled
    n_pseudo: int                      # accepted pseudo-labels
    n_reviewed: int = 0                # items a reviewer labelled (their labels train as gold)
    resumed: bool = False
    already_finished: bool = False
    final_metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cotrain")
    except PackageNotFoundError:
        return "0+unknown"


__all__ = ["NullReporter", "Reporter", "RunResult", "code_version"]
