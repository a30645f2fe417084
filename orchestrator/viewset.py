"""Building a run's views from the config: each view is built once, given its context
(seed, caches, ledger, progress), and checked to read only columns it may: never the label,
id or split column, nor cotrain's own ``__`` columns.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.config import Config
from orchestrator.engine_config import hosts_batched
from store.adapters import StoreCache, StoreProblems
from store.database import Store
from store.errors import ConfigError, ViewError
from store.llm_ledger import LLMLedger
from views.base import ITEM_ID_COLUMN, LABEL_SOURCE_COLUMN, BatchedHost, DataChecked, View, ViewContext
from views.registry import BUILTIN_KINDS, build_view, check_view, import_object

#: About how many bytes of fields :func:`check_view_data` reads at a time.
CHECK_BATCH_BYTES = 64 * 2**20
#: cotrain's own columns in the data snapshot and in the frames views get.
INTERNAL_COLUMNS = ("__row", "__split", "__file_row", ITEM_ID_COLUMN, LABEL_SOURCE_COLUMN)


@contextmanager
def preloading_view_modules(cfg: Config) -> Iterator[None]:
    """Import the configured built-in view kinds' modules (scikit-learn for most) on a
    background thread while the block runs; the block's end waits for it.

    Meant for the data snapshot's load: DuckDB's load releases the GIL, so on two cores the
    import is hidden behind it (1M rows: 1.2 s of load beside 1.3 s of importing scikit-learn;
    1M-item run 9.9 s -> 8.3 s). Plug-in kinds are user code and are imported only by
    ``build_views``, which also reports any failure here with the view's name."""
    targets = sorted({BUILTIN_KINDS[vc.kind] for vc in cfg.views if vc.kind in BUILTIN_KINDS})

    def load() -> None:
        for target in targets:
            try:
                import_object(target)
            except Exception:  # noqa: BLE001 - build_views imports it again and says what failed
                pass

    thread = threading.Thread(target=load, name="cotrain-preload-views", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


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


def check_debate_fields(cfg: Config, columns: list[str]) -> list[str]:
    """The debate's ``fields`` are columns of the data that views may read (never the label,
    id or split column): ``ConfigError`` naming the first that is not; else the fields its
    agents will read (none when no debate runs)."""
    d = cfg.debate
    escalates = cfg.escalate is not None and cfg.escalate.enabled and cfg.escalate.kind == "debate"
    asked = d.fields if d is not None and (d.enabled or escalates) else []
    missing = [f for f in asked if f not in columns]
    if missing:
        raise ConfigError("debate.fields", f"'{missing[0]}' is not a column of the data")
    leaks = [f for f in asked if f not in readable_columns(cfg, columns)]
    if leaks:
        raise ConfigError("debate.fields", f"'{leaks[0]}' is the label, id or split column; agents may "
                          "never read it")
    return list(asked)


def _resolve_fields(view: View, cfg: Config, columns: list[str]) -> list[str]:
    """The view's fields, resolved against the readable columns only, so a prefix never
    matches the label column; naming a protected column is one error naming its key."""
    protected = protected_columns(cfg)
    try:
        fields = view.resolve_fields(readable_columns(cfg, columns))
    except ViewError:
        try:  # would the view have resolved with the protected columns? then say which it named
            named = [f for f in view.resolve_fields([*columns, *INTERNAL_COLUMNS])
                     if f in protected or f.startswith("__")]
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
                reporter: Any = None, dry_run: bool = False) -> tuple[list[View], list[str]]:
    """Build every configured view, check the fields it reads exist and are not protected
    (label, id, split), and return the views with the sorted union of their fields.

    ``dry_run``: a plug-in kind is imported and its parameters checked, but not constructed
    (its constructor is user code), so it is left out of the returned views; built-in views
    are built with ``context.dry_run`` set and call no user factory either."""
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
        view = build_view(vc.name, vc.kind, vc.view_params, ctx)  # the model validated at load
        fields.update(_resolve_fields(view, cfg, columns))
        batched = view.batched_model() if isinstance(view, BatchedHost) else None
        if batched is not None and not (cfg.engine.kind == "ray" and hosts_batched(view, cfg.engine)):
            from views.llm.connect import check_runs_here

            check_runs_here(view.name, batched[2])  # vLLM without a GPU here: refused before the run is recorded
        views.append(view)
    c = cfg.cotrain
    if c.select == "cut_statistic" and (not dry_run or c.cut_view in {v.name for v in views}):
        from orchestrator.cut_statistic import cut_space  # a dry run builds no plug-in, which may be the space

        cut_space(views, c.cut_view)
    return views, sorted(fields)


def check_view_data(store: Store, run_id: int, views: list[View]) -> None:
    """Let every view that checks its data (``views.base.DataChecked``) read the rows it might
    refuse before the run is committed: a bad cell then fails the command with the one line
    the view says, and leaves no run behind. Only rows where a checked field is missing,
    infinite or not a number are read (one scan of the snapshot finds them: 0.005 s at 100k
    rows of 10 columns, 0.05 s at 3M), about :data:`CHECK_BATCH_BYTES` at a time, with their item ids, so
    the error names the item; an estimator that takes NaN lets them pass."""
    from store.queries import item_ids_of_rows, rows_not_all_finite

    checked = [v for v in views if isinstance(v, DataChecked) and v.checked_fields]
    fields = sorted({f for v in checked for f in v.checked_fields})
    if not fields:
        return
    suspect = rows_not_all_finite(store, run_id, fields)
    step = max(1, CHECK_BATCH_BYTES // (8 * len(fields)))
    for lo in range(0, len(suspect), step):
        rows = suspect[lo:lo + step]
        frame = store.fetch_rows(run_id, rows, fields).to_pandas()
        frame[ITEM_ID_COLUMN] = item_ids_of_rows(store, run_id, rows)
        for view in checked:
            view.check_items(frame)


def _progress_of(reporter: Any, view: str) -> Any:
    """A view's ``progress(phase, n, total)`` callback into the run's reporter."""
    def progress(phase: str, n: int, total: int) -> None:
        reporter.advance(view, phase, n, total)

    return progress


def display_fields(cfg: Config, columns: list[str]) -> tuple[list[str], list[str]]:
    """(text fields, image fields) a reviewer should see beside a label: what the run's
    views and debate read. Stored with the run, so exports and reports need no config."""
    text: list[str] = []
    images: list[str] = []
    for v in cfg.views:
        p = v.params
        if v.kind == "vision" and p.get("image"):
            images.append(p["image"])
        elif v.kind == "llm":
            text += list(p.get("fields") or [])
        elif v.kind in ("embedding", "sklearn") and p.get("text"):
            text.append(p["text"])
    if cfg.debate is not None:
        text += list(cfg.debate.fields)
    text = [c for c in dict.fromkeys(text) if c in columns and c not in images]
    return text, [c for c in dict.fromkeys(images) if c in columns]
