"""The ``Store``: one DuckDB file holding every run, round, prediction and label.

Writes are columnar (Arrow tables inserted with one ``INSERT ... SELECT``), never row by row; a round
commits in one transaction (``Store.transaction``). A second writer gets ``StoreLockedError`` naming its PID.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from store.arrow import by_row, rows_as_lists
from store.buffers import SNAPSHOT_SLICE_ROWS, default_memory_limit, drop_cached_blocks
from store.connect import LOCK_WAIT_S, connect, connect_when_unlocked
from store.errors import StoreError, hidden_cause
from store.migrate import apply_migrations, pending_migrations
from store.secrets import redact
from store.store_path import check_store_path, locked as _locked
from store.sql import ident, idents


def utcnow() -> datetime:
    """Naive UTC timestamp (DuckDB TIMESTAMP has no zone)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _file_errors(method: Any) -> Any:
    """Run a Store method inside ``Store._errors``: a damaged file is one line naming it."""
    import functools

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        with self._errors():
            return method(self, *args, **kwargs)

    return wrapper


class Store:
    """A DuckDB store file (or ``:memory:``) with cotrain's schema applied.

    Use as a context manager, or call :meth:`close`. ``read_only=True`` opens an existing
    file without keeping the write lock (``create=False``: an existing file, writable); a store
    written by an older cotrain is first brought up to date, then reopened read-only. The
    migrations keep every row; 011 rewrites the stored predictions (about 0.3 s a million rows).
    """

    def __init__(self, path: str | Path = ":memory:", read_only: bool = False, create: bool = True,
                 lock_wait_s: float | None = None) -> None:
        self.path = str(path)
        self.read_only = read_only
        self._lock = threading.Lock()
        self._arrow_seq = 0
        self._default_limit: str | None = None  # DuckDB's on this machine, read once (store.buffers)
        check_store_path(self.path, read_only, create)
        try:
            # a writer waits out a reader's brief hold; a reader finds a writer (a run) holding it
            # for long, and `status` then reads the run's progress file at once
            wait = (0.0 if read_only else LOCK_WAIT_S) if lock_wait_s is None else lock_wait_s
            self.con = connect_when_unlocked(self.path, read_only, wait)
        except duckdb.IOException as exc:
            msg = str(exc)
            if "lock" in msg.lower():
                raise _locked(self.path, exc) from None
            raise StoreError(msg.splitlines()[0], self.path) from None
        except duckdb.Error as exc:
            raise StoreError(str(exc).splitlines()[0], self.path) from None
        with self._errors():
            self._open_checks(read_only)

    def _open_checks(self, read_only: bool) -> None:
        """Refuse a DuckDB file that is not a cotrain store, then bring a writable one's schema
        up to date (or an older store's, before a read-only open)."""
        if not self._has_table("_migrations"):
            others = [r[0] for r in self.con.execute(
                "SELECT table_name FROM information_schema.tables ORDER BY table_name LIMIT 4").fetchall()]
            if others:  # someone's own database: never add cotrain's tables to it
                self.con.close()
                shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
                raise StoreError(f"not a cotrain store: it holds other tables ({shown}) and no _migrations table; "
                                 "choose another store file", self.path)
        if not read_only:
            try:
                apply_migrations(self.con)
            except StoreError as exc:  # a migration that refuses names the store
                self.con.close()
                raise StoreError(exc.detail, self.path) from None
        elif not self._has_table("_migrations"):
            self.con.close()
            raise StoreError("not a cotrain store (no _migrations table)", self.path)
        elif pending_migrations(self.con) and self.path != ":memory:":
            # a store written by an older cotrain: bring its schema up to date (keeping every
            # row), then read it as asked
            self.con.close()
            try:
                with duckdb.connect(self.path) as rw:
                    apply_migrations(rw)
                self.con = connect(self.path, read_only=True)
            except duckdb.IOException as exc:
                raise _locked(self.path, exc) from None
            except StoreError as exc:
                raise StoreError(exc.detail, self.path) from None

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _errors(self) -> Iterator[None]:
        """DuckDB failures of the file itself (a block failing its checksum, an I/O error)
        as one ``StoreError`` line naming the store; SQL mistakes stay as they are."""
        try:
            yield
        except duckdb.Error as exc:
            damaged = type(exc) is duckdb.Error or isinstance(  # a bad checksum is a bare duckdb.Error
                exc, (duckdb.IOException, duckdb.InternalException, duckdb.FatalException))
            if not damaged:
                raise
            if isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower():
                raise _locked(self.path, exc) from None
            raise StoreError(f"cannot read the file ({type(exc).__name__}: {str(exc).splitlines()[0]}); it may be "
                             "damaged: restore it from a copy", self.path) from None

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _has_table(self, name: str) -> bool:
        return bool(self.scalar("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]))

    def drop_cached_blocks(self, above_bytes: int = 0) -> None:
        """Give back the blocks DuckDB has cached, if its tables' take over ``above_bytes``."""
        if self._default_limit is None:
            self._default_limit = default_memory_limit()
        drop_cached_blocks(self.con, self.path, self._default_limit, above_bytes)

    def _fresh_name(self) -> str:
        with self._lock:
            self._arrow_seq += 1
            return f"__arrow_{self._arrow_seq}"

    def write_from(self, data: pa.Table, statement: Callable[[str], str]) -> None:
        """Run the one statement ``statement(name)``, in which ``data`` reads as ``name``.

        Through a relation, not :meth:`registered`: inside a transaction DuckDB keeps a
        registered object alive until the commit, so a round's inserts (or a 3M-row snapshot,
        240 MB) stayed in memory beside what they were written to until then."""
        name = self._fresh_name()
        try:
            self.con.from_arrow(data).query(name, statement(name))
        except duckdb.TransactionException as exc:
            # dropping the relation's view after a failed statement fails too ('transaction is aborted'),
            # hiding the statement's own error (an interrupt) behind copies of the abort
            cause = hidden_cause(exc) if "aborted" in str(exc) else None
            if cause is not None:
                raise cause.with_traceback(cause.__traceback__) from None
            raise

    @contextmanager
    def registered(self, data: pa.Table, con: duckdb.DuckDBPyConnection | None = None) -> Iterator[str]:
        """Expose an Arrow table to SQL under a fresh name for the duration of the block, on
        the store's connection or on ``con`` (a cursor of it). Inside a transaction DuckDB
        holds it until the commit: writes go through :meth:`write_from`."""
        con = self.con if con is None else con
        name = self._fresh_name()
        con.register(name, data)
        try:
            yield name
        except BaseException:
            with suppress(duckdb.Error):  # refused after an interrupted query: the error in flight matters
                con.unregister(name)
            raise
        con.unregister(name)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together or not at all."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            with suppress(duckdb.Error):  # an interrupted statement may have ended the transaction
                self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    @_file_errors
    def insert_arrow(self, table: str, data: pa.Table) -> None:
        """Append an Arrow table whose column names match ``table``'s columns."""
        if data.num_rows == 0:
            return
        cols = idents(data.column_names)
        self.write_from(data, lambda name: f"INSERT INTO {ident(table)} ({cols}) SELECT {cols} FROM {ident(name)}")

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        """Run a read query and return an Arrow table."""
        with self._errors():
            return self.con.sql(sql, params=list(params or [])).to_arrow_table()

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        with self._errors():
            rows = self.con.execute(sql, params or []).fetchall()  # fetchall: duckdb 2.x keeps a
        return rows[0][0] if rows else None                          # half-read result open

    # ------------------------------------------------------------------ runs
    def create_run(
        self,
        *,
        config: dict[str, Any],
        config_hash: str,
        seed: int,
        code_version: str,
        labels: list[str],
        views: list[str],
        label_column: str,
        policy: str,
        feeding: str,
        max_rounds: int,
        input_files: list[str],
        text_fields: list[str] | None = None,
        image_fields: list[str] | None = None,
    ) -> int:
        """A new run row. What readers need from the config is passed as typed columns; the
        config itself is kept (redacted) for people to read."""
        run_id = int(self.scalar("SELECT coalesce(max(run_id), 0) + 1 FROM runs"))
        self.con.execute(
            "INSERT INTO runs (run_id, created_at, status, config, config_hash, seed, code_version,"
            " labels, views, data_table, label_column, policy, feeding, max_rounds, input_files, text_fields,"
            " image_fields) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, utcnow(), json.dumps(redact(config)), config_hash, seed, code_version, labels, views,
             f"data_{run_id}", label_column, policy, feeding, max_rounds, input_files, text_fields or [],
             image_fields or []],
        )
        return run_id

    def set_display_fields(self, run_id: int, text: list[str], images: list[str]) -> None:
        """Record the item fields a reviewer should see (exports and the report show them)."""
        self.con.execute("UPDATE runs SET text_fields = ?, image_fields = ? WHERE run_id = ?", [text, images, run_id])

    @_file_errors
    def run_info(self, run_id: int) -> dict[str, Any]:
        rows = self.con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]).fetchall()
        if not rows:
            raise StoreError(f"no run {run_id}", self.path)
        cols = [d[0] for d in self.con.description]
        info = dict(zip(cols, rows[0]))
        info["config"] = redact(json.loads(info["config"]))  # a store from an older cotrain may hold one
        return info

    @_file_errors
    def runs(self) -> list[dict[str, Any]]:
        ids = [r[0] for r in self.con.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall()]
        return [self.run_info(i) for i in ids]

    def latest_run(self, config_hash: str | Sequence[str] | None = None) -> int | None:
        """The newest run (of that config and data fingerprint, or of any of several, when given), or None."""
        if config_hash is None:
            return self.scalar("SELECT max(run_id) FROM runs")
        hashes = [config_hash] if isinstance(config_hash, str) else list(config_hash)
        return self.scalar("SELECT max(run_id) FROM runs WHERE list_contains(?, config_hash)", [hashes])

    def resume_run(self, config_hashes: Sequence[str], input_files: list[str]) -> int | None:
        """The newest run of any of these fingerprints (or None), its input files now these (a moved project's)."""
        if (run_id := self.latest_run(config_hash=config_hashes)) is not None:
            self.con.execute("UPDATE runs SET input_files = ? WHERE run_id = ?", [input_files, run_id])
        return run_id

    def mark_run(self, run_id: int, status: str, termination: str | None = None) -> None:
        """Set a run's status: ``failed`` (an error stopped it; ``termination`` says which) or
        ``running`` again (it resumes). Committed at once, outside any round."""
        self.con.execute("UPDATE runs SET status = ?, termination = ? WHERE run_id = ?", [status, termination, run_id])

    def reopen_run(self, run_id: int, round_limit: int) -> None:
        """Let a run go on to ``round_limit`` (a review import's decision, taken by the caller)."""
        self.con.execute("UPDATE runs SET status = 'running', termination = NULL, finished_at = NULL,"
                         " round_limit = ? WHERE run_id = ?", [round_limit, run_id])

    def last_round(self, run_id: int) -> int:
        """The run's last committed round (-1 before round 0 commits)."""
        return int(self.scalar("SELECT coalesce(max(round), -1) FROM rounds WHERE run_id = ?", [run_id]))

    def finish_run(self, run_id: int, termination: str) -> None:
        self.con.execute(
            "UPDATE runs SET status = 'finished', termination = ?, finished_at = ? WHERE run_id = ?",
            [termination, utcnow(), run_id],
        )

    # ------------------------------------------------------------------ data snapshot
    @_file_errors
    def snapshot_data(self, run_id: int, data: pa.Table) -> str:
        """Store the run's input rows as ``data_<run_id>`` (with a ``__row`` index column), a slice
        at a time, each one Arrow chunk (many made the close's checkpoint rewrite them: 1M rows,
        0.9 s and 100 MB against 0.16 s and 61 MB), its cached blocks dropped once written.
        Several statements: all or nothing inside a transaction (as the load calls it)."""
        table = f"data_{run_id}"
        data = data.append_column("__row", pa.array(np.arange(data.num_rows, dtype=np.int64)))
        for lo in range(0, max(data.num_rows, 1), SNAPSHOT_SLICE_ROWS):
            self.write_from(data.slice(lo, SNAPSHOT_SLICE_ROWS).combine_chunks(),
                            lambda name: f"CREATE TABLE {ident(table)} AS SELECT * FROM {ident(name)}" if lo == 0 else
                            f"INSERT INTO {ident(table)} SELECT * FROM {ident(name)}")
            self.drop_cached_blocks()
        return table

    @_file_errors
    def data_columns(self, run_id: int) -> list[str]:
        rows = self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
            [f"data_{run_id}"],
        ).fetchall()
        return [r[0] for r in rows if r[0] != "__row"]

    @_file_errors
    def fetch_rows(self, run_id: int, row_idx: np.ndarray, columns: Sequence[str]) -> pa.Table:
        """Rows of the data snapshot by ``__row``, in the order given.

        Reads the stretch ``min..max`` of the table with a range filter (DuckDB skips row
        groups by their min/max), then picks the wanted rows with an Arrow ``take``: a pool
        batch read in row order costs one sequential scan of its own stretch, no join.
        """
        row_idx = np.asarray(row_idx, dtype=np.int64)
        sel = idents(["__row", *columns])
        table = ident(f"data_{int(run_id)}")
        if row_idx.size == 0:
            return self.con.sql(f"SELECT {sel} FROM {table} LIMIT 0").to_arrow_table().drop_columns(["__row"])
        lo, hi = int(row_idx.min()), int(row_idx.max())
        span = self.con.sql(
            f"SELECT {sel} FROM {table} WHERE __row BETWEEN ? AND ?", params=[lo, hi]
        ).to_arrow_table()  # scans keep insertion order (DuckDB's preserve_insertion_order)
        span, have = by_row(span)
        pos = np.searchsorted(have, row_idx)
        if pos.max(initial=0) >= len(have) or not np.array_equal(have[pos], row_idx):
            raise StoreError(f"data_{run_id} lacks some requested rows", self.path)
        return span.drop_columns(["__row"]).take(pa.array(pos))

    @_file_errors
    def data_columns_table(self, run_id: int, columns: Sequence[str]) -> pa.Table:
        """Every row of the data snapshot (row i is ``__row`` i), ``columns`` only: one scan, in
        insertion order (an ORDER BY held the whole table twice: at 3M rows 450 MB for 120 MB)."""
        table, have = by_row(self.con.sql(f"SELECT {idents(['__row', *columns])} FROM "
                                           f"{ident(f'data_{int(run_id)}')}").to_arrow_table())
        if not np.array_equal(have, np.arange(table.num_rows)):
            raise StoreError(f"data_{run_id} does not number its rows 0..n-1", self.path)
        return table.drop_columns(["__row"])

    # ------------------------------------------------------------------ rounds
    @_file_errors
    def completed_rounds(self, run_id: int) -> list[dict[str, Any]]:
        cur = self.con.execute("SELECT * FROM rounds WHERE run_id = ? ORDER BY round", [run_id])
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        for row in rows:
            row["rng_state"] = json.loads(row["rng_state"])
        return rows

    def insert_round(self, row: dict[str, Any]) -> None:
        row = dict(row)
        row["rng_state"] = json.dumps(row["rng_state"])
        cols = list(row)
        self.con.execute(
            f"INSERT INTO rounds ({idents(cols)}) VALUES ({', '.join('?' for _ in cols)})",
            [row[c] for c in cols],
        )

    # ------------------------------------------------------------------ feature cache
    @_file_errors
    def cache_get(self, namespace: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors for those keys that have one."""
        if not keys:
            return {}
        with self.registered(pa.table({"key": pa.array(list(keys), pa.string())})) as name:
            t = self.con.sql(
                f"SELECT c.key, c.vector FROM feature_cache c JOIN (SELECT DISTINCT key FROM {ident(name)}) k"
                " ON c.key = k.key WHERE c.namespace = ?",
                params=[namespace],
            ).to_arrow_table()
        vec = t.column("vector").combine_chunks()
        flat, offsets = vec.flatten().to_numpy(zero_copy_only=False).astype(np.float32), vec.offsets.to_numpy()
        return {key: flat[offsets[i]: offsets[i + 1]] for i, key in enumerate(t.column("key").to_pylist())}

    @_file_errors
    def cache_put(self, namespace: str, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors; keys already cached are left as they are."""
        if len(keys) == 0:
            return
        t = pa.table({"namespace": pa.repeat(pa.scalar(namespace), len(keys)), "key": pa.array(list(keys)),
                      "vector": rows_as_lists(vectors)})
        # an anti-join, not ON CONFLICT (twice as fast); DISTINCT ON only when a key repeats
        rows = "DISTINCT ON (namespace, key) namespace, key, vector" if len(set(keys)) < len(keys) else "*"
        self.write_from(t, lambda name: f"INSERT INTO feature_cache SELECT {rows} FROM {ident(name)} AS t WHERE NOT "
                        "EXISTS (SELECT 1 FROM feature_cache c WHERE c.namespace = t.namespace AND c.key = t.key)")
