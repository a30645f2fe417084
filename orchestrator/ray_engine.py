"""``engine: ray``: the pool is predicted by Ray Data, on whatever cluster the run joins.

Once per run the data snapshot's fields are written as Parquet shards (with ``__row`` and
``__item_id``) where every node can read them. Each round:

1. every view that can travel (:class:`views.base.Portable`) is copied, fitted, into the
   object store once;
2. ``read_parquet`` → ``map_batches`` on an actor pool: an actor keeps the rows still in the
   round's pool (a boolean mask by row, also in the object store) and returns each view's
   probabilities for them as one Arrow column;
3. the driver receives the batches as they finish, predicts them with the views that cannot
   travel (LLM views, with their cache and ledger; views holding a feature cache), and files
   each batch through :func:`orchestrator.steps.fill_batch`, the same code the local engine
   uses. The store keeps its one writer (the driver), and selection runs on the complete
   label matrix, so it is exact: the same pool, probabilities and seed give the same labels
   as the local engine.

A worker that dies mid-round is restarted by Ray and its batch retried (Ray Data's actor
pools restart actors and retry their tasks); if the pass fails anyway, the round's
transaction rolls back and a re-run redoes the round whole.
"""
from __future__ import annotations

import gc
import hashlib
import logging
import os
import pickle
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from orchestrator import steps
from orchestrator.engine_config import EngineConfig, hosts_batched, travels
from orchestrator.ray_llm import RayBatchedModel
from orchestrator.ray_placement import READ_CPUS, actor_count, place
from store.database import Store
from store.errors import ConfigError, CotrainError, RunError, is_interrupt
from views.base import ITEM_ID_COLUMN, View
from views.proba import checked_proba

log = logging.getLogger("cotrain")

ROW = "__row"
PROBS = "__probs"
SECONDS = "__seconds"
ERROR = "__error"


class PoolPredictor:
    """A Ray Data actor: the round's travelling views and pool mask, fetched from the object
    store once per actor; ``__call__`` predicts one Arrow batch of shard rows."""

    def __init__(self, views_ref: Any, mask_ref: Any, k: int) -> None:
        import ray

        self.views: list[View] = ray.get(views_ref)
        self.mask: np.ndarray = ray.get(mask_ref)
        self.k = k

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.column(ROW).to_numpy()
        batch = batch.filter(pa.array(self.mask[rows]))
        if not batch.num_rows:  # a shard stretch with no pool item (e.g. only held-out items)
            return self._table(np.zeros(0, dtype=np.int64), np.zeros((0, len(self.views), self.k)), 0.0)
        t = time.perf_counter()
        frame = batch.drop_columns([ROW]).to_pandas()
        probs = np.empty((batch.num_rows, len(self.views), self.k))
        try:
            for j, view in enumerate(self.views):
                probs[:, j] = checked_proba(view, frame, self.k)
        except CotrainError as exc:
            # in-band: Ray Data wraps a raised error in its own and the original does not
            # survive the trip, but the user needs this one (a bad cell names its item)
            return self._table(np.full(1, -1), np.zeros((1, len(self.views), self.k)), 0.0, pickle.dumps(exc))
        return self._table(batch.column(ROW).to_numpy(), probs, (time.perf_counter() - t) / max(batch.num_rows, 1))

    @staticmethod
    def _table(rows: np.ndarray, probs: np.ndarray, seconds: float, error: bytes | None = None) -> pa.Table:
        width = probs.shape[1] * probs.shape[2]
        return pa.table({ROW: pa.array(rows, pa.int64()),
                         PROBS: pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), width),
                         SECONDS: pa.array(np.full(len(rows), seconds)),
                         ERROR: pa.array([error] * len(rows), pa.binary())})


def _filesystem(folder: str) -> tuple[Any, str]:
    """The pyarrow filesystem and path of ``folder``: a URI (``s3://…``) or a local path."""
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(folder) if "://" in folder else (pafs.LocalFileSystem(), folder)


def write_shards(store: Store, run_id: int, fields: Sequence[str], item_id: pa.Array, folder: str,
                 rows_per_file: int) -> None:
    """The snapshot's ``fields`` with ``__row`` and ``__item_id``, as Parquet files of
    ``rows_per_file`` rows in row order under ``folder`` (a path or a URI pyarrow writes).
    One file's rows are in memory at a time."""
    import pyarrow.parquet as pq

    fs, root = _filesystem(folder)
    fs.create_dir(root, recursive=True)
    n = len(item_id)
    for i, lo in enumerate(range(0, n, rows_per_file)):
        hi = min(lo + rows_per_file, n)
        rows = np.arange(lo, hi, dtype=np.int64)
        t = store.fetch_rows(run_id, rows, list(fields))
        t = t.append_column(ROW, pa.array(rows)).append_column(ITEM_ID_COLUMN, item_id.slice(lo, hi - lo))
        pq.write_table(t, f"{root}/part-{i:05d}.parquet", filesystem=fs)


def _cotrain_cause(exc: BaseException) -> CotrainError | None:
    """The cotrain error a worker raised, out of Ray's wrappers (a view's bad cell is a
    ``ViewError`` naming the item whether it ran here or on a worker)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, CotrainError):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


@contextmanager
def _quiet_data() -> Iterator[None]:
    """Ray Data without its progress bars (the run has its own), restored afterwards."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    data_log = logging.getLogger("ray.data")
    saved = ctx.enable_progress_bars, ctx.print_on_execution_start, data_log.level
    ctx.enable_progress_bars, ctx.print_on_execution_start = False, False
    data_log.setLevel(logging.ERROR)  # its advice on object-store sizing is not the run's business
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved[:2]
        data_log.setLevel(saved[2])


class RayEngine:
    """Predicts a run's pool on a Ray cluster; made by :func:`open_ray_engine`."""

    def __init__(self, cfg: EngineConfig, folder: str, started: bool, actors: int, made: Sequence[str] = ()) -> None:
        self.cfg, self.folder, self.started, self.actors = cfg, folder, started, actors
        self.made = list(made)  # folders created for the shards (removed with them when empty)
        self.passes = 0  # Ray Data passes run (one per round that predicted something)
        self.models: list[RayBatchedModel] = []  # the LLM views' models in actors (their views close them too)

    def travels(self, view: View) -> bool:
        """Whether ``view`` predicts in the workers (else on the driver, batch by batch)."""
        return travels(view, self.cfg)

    def runs(self, views: Sequence[View]) -> bool:
        """Whether a pass is worth it: some view travels (else the local engine predicts)."""
        return any(self.travels(v) for v in views)

    def predict_pool(self, views: Sequence[View], pool: np.ndarray, n_rows: int, k: int,
                     fetch: Callable[[np.ndarray], pd.DataFrame], advance: steps.Advance,
                     sink: steps.BatchSink | None, combiners: steps.Combiners | None,
                     batch_size: int) -> steps.PoolPrediction:
        """The pool's label matrix, as :func:`orchestrator.steps.predict_pool` gives it;
        ``pool`` are the (sorted) rows to predict, ``fetch(rows)`` their frame (for the views
        that stay on the driver). Some view must travel (:meth:`runs`).

        Without driver-side views each Ray batch is filed as it arrives. With them, the
        travelling views' probabilities are gathered first (n × V' × K floats), then the pool
        is walked in the local engine's ``batch_size`` slices, in order: a view that reads its
        batch as a whole (a graph view spreads labels within it; an LLM view with a budget
        spends it in item order) sees exactly the batches it sees locally."""
        import ray

        out = steps.empty_prediction(views, len(pool), k, combiners)
        if not len(pool):
            return out
        travel = [j for j, v in enumerate(views) if self.travels(v)]
        stay = [j for j in range(len(views)) if j not in travel]
        names = [v.name for v in views]
        gathered = np.full((len(pool), len(travel), k), np.nan) if stay else None
        seen = np.zeros(len(pool), dtype=np.int8)
        refs: list[Any] = []
        batches: Any = None
        try:
            mask = np.zeros(n_rows, dtype=bool)
            mask[pool] = True
            refs = [ray.put([views[j].worker_copy() for j in travel]), ray.put(mask)]  # type: ignore[attr-defined]
            with _quiet_data():
                ds = ray.data.read_parquet(self.folder, num_cpus=READ_CPUS)
                ds = ds.map_batches(PoolPredictor, fn_constructor_args=(*refs, k),
                                    batch_size=batch_size, batch_format="pyarrow",
                                    compute=ray.data.ActorPoolStrategy(size=self.actors),
                                    num_cpus=self.cfg.cpus_per_actor, num_gpus=self.cfg.gpus_per_actor or None)
                batches = ds.iter_batches(batch_size=None, batch_format="pyarrow")
                for batch in batches:
                    if not batch.num_rows:
                        continue
                    if batch.column(ERROR).null_count < batch.num_rows:  # a view raised on a worker
                        raise pickle.loads(next(e for e in batch.column(ERROR).to_pylist() if e is not None))
                    rows = batch.column(ROW).to_numpy()
                    idx = np.searchsorted(pool, rows)
                    seen[idx] += 1
                    flat = batch.column(PROBS).combine_chunks().flatten().to_numpy()
                    spent = float(batch.column(SECONDS).to_numpy().sum())
                    for j in travel:
                        out.seconds[names[j]] += spent / len(travel)
                        advance(names[j], "predict", len(rows), len(pool))
                    if gathered is not None:
                        gathered[idx] = flat.reshape(len(rows), len(travel), k)
                    else:
                        probs = np.empty((len(rows), len(views), k))
                        probs[:, travel] = flat.reshape(len(rows), len(travel), k)
                        steps.fill_batch(out, idx, probs, combiners, sink)
        except Exception as exc:
            if is_interrupt(exc):  # Ctrl-C as DuckDB's own exception mid-query: not the engine failing
                raise
            cause = _cotrain_cause(exc)
            if cause is not None:
                raise cause from None
            raise RunError(f"the Ray engine's pass over the pool failed: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
        finally:
            # stop the execution now: left to the garbage collector, it would reach Ray after the
            # cluster is shut down, and Ray would start a new one to serve it
            close = getattr(batches, "close", None)
            if callable(close):
                close()
            del refs
        if not (seen == 1).all():  # Ray lost or repeated rows: no round is committed on a partial pass
            missing, twice = int((seen == 0).sum()), int((seen > 1).sum())
            raise RunError(f"the Ray engine's pass returned {missing} pool item(s) unpredicted and {twice} twice")
        if gathered is not None:
            for lo in range(0, len(pool), batch_size):
                hi = min(lo + batch_size, len(pool))
                probs = np.empty((hi - lo, len(views), k))
                probs[:, travel] = gathered[lo:hi]
                steps.predict_into(probs, views, stay, fetch(pool[lo:hi]), out, advance, len(pool))
                steps.fill_batch(out, np.arange(lo, hi), probs, combiners, sink)
        self.passes += 1
        return out

    def close(self) -> None:
        """Remove the shards (and the folders this run made for them); stop the cluster if this
        run started it (idempotent)."""
        folders, self.made, self.folder = [f for f in (self.folder, *self.made) if f], [], ""
        models, self.models = self.models, []
        try:
            for model in models:  # idempotent: already closed with their views on a normal end
                model.close()
            for folder in folders:
                _remove_folder(folder)
        finally:
            if self.started:
                import ray

                self.started = False
                _settle_executions()
                ray.shutdown()


def _settle_executions(timeout_s: float = 30.0) -> None:
    """Wait for Ray Data's executor threads to end. One still winding down a failed pass
    would touch Ray after ``ray.shutdown()``, and Ray ends the whole process when that happens."""
    gc.collect()  # an execution only referenced by a dropped iterator shuts down when collected
    deadline = time.monotonic() + timeout_s
    for t in threading.enumerate():
        if t.name.startswith("StreamingExecutor-") and t is not threading.current_thread():
            t.join(max(0.0, deadline - time.monotonic()))


def _remove_folder(folder: str) -> None:
    """Remove ``folder`` (a path or a URI pyarrow reaches) and what it holds; a shared folder
    that still holds another run's shards stays (only an empty parent is removed)."""
    import pyarrow.fs as pafs

    try:
        fs, root = _filesystem(folder)
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            return
        if folder.rstrip("/").rsplit("/", 1)[-1].startswith("run-"):
            fs.delete_dir(root)
        elif not fs.get_file_info(pafs.FileSelector(root)):
            fs.delete_dir(root)
    except OSError as exc:
        log.warning("ray engine: could not remove %s: %s", folder, exc)


def _shard_base(cfg: EngineConfig, store: Store, base_dir: Path) -> tuple[str, list[str]]:
    """Where the shards go, and the folders made for them: ``shard_dir`` (a URI, or a path
    relative to the config's folder), else a folder beside the store (a temporary one for a
    store in memory)."""
    if cfg.shard_dir is not None:
        return (cfg.shard_dir if "://" in cfg.shard_dir else str((base_dir / cfg.shard_dir).resolve())), []
    if store.path == ":memory:":
        base = tempfile.mkdtemp(prefix="cotrain-shards-")
        return base, [base]
    base = f"{Path(store.path).resolve()}.shards"
    return base, [base]  # the store's own: removed when nothing is left in it (a killed attempt's shards go first)


def shard_prefix(store_path: str, run_id: int) -> str:
    """How the shard folders of ``run_id`` of the store at ``store_path`` begin: ``run-<id>-<8
    hex digits of the store's path>-`` (a ``shard_dir`` may be shared by several stores)."""
    where = ":memory:" if store_path == ":memory:" else str(Path(store_path).resolve())
    return f"run-{int(run_id)}-{hashlib.sha256(where.encode()).hexdigest()[:8]}-"


def _clear_stale(base: str, prefix: str) -> None:
    """Remove the shard folders under ``base`` that an earlier attempt of this run left (a
    ``kill -9`` skips the engine's close): each was a full copy of the pool's fields. Only for
    the folder beside the store, which only this store's runs write: the store's lock says no
    other process runs this run now. In a ``shard_dir`` that drivers on other machines may
    share (a store of the same path in another container), a killed run's folders are left."""
    import pyarrow.fs as pafs

    fs, root = _filesystem(base)
    try:
        entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return
    for e in entries:
        if e.type == pafs.FileType.Directory and e.base_name.startswith(prefix):
            log.info("ray engine: removing the shards a stopped attempt of this run left in %s", e.path)
            _remove_folder(f"{base.rstrip('/')}/{e.base_name}")


def open_ray_engine(cfg: EngineConfig, store: Store, run_id: int, fields: Sequence[str], item_id: pa.Array, *,
                    views: Sequence[View], base_dir: Path | str = ".") -> RayEngine:
    """Join (or start) the cluster ``cfg`` names, export the run's shards to it when some
    view travels, and hand each LLM view with a batched local model its model in Ray actors."""
    try:
        import ray
    except ImportError:
        raise RunError("engine 'ray' needs the ray package: pip install 'cotrain[ray]'") from None
    hosted = [v for v in views if hosts_batched(v, cfg)]
    on_gpu = next((v.name for v in hosted if v.batched_model()[2] == "vllm"), None)  # type: ignore[attr-defined]
    if on_gpu is not None and not cfg.llm_gpus_per_actor:
        raise ConfigError("engine.llm_gpus_per_actor", f"view '{on_gpu}' has backend vllm, whose actors each "
                          "need a GPU: set it to 1, or engine.llm_actors to 0 to run the model in this process")
    travel = any(travels(v, cfg) for v in views)
    started = False
    if not ray.is_initialized():
        # no address: RAY_ADDRESS's cluster (`ray job submit`), else one of its own ("local"); Ray alone
        # joins any cluster `ray start` (or another test) left in /tmp/ray/ray_current_cluster
        address = cfg.address or os.environ.get("RAY_ADDRESS") or None
        if address is None:  # the cluster to start has this machine's CPUs: refuse before starting it
            place(cfg, float(os.cpu_count() or 1), float("inf"), len(hosted), travel)
        # configure_logging=False: Ray leaves the process's loggers as they are
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address is None and cfg.object_store_mb is not None:
            kwargs["object_store_memory"] = cfg.object_store_mb * 2**20
        try:
            with warnings.catch_warnings():  # Ray's notice about a future default for GPU env vars
                warnings.simplefilter("ignore", FutureWarning)
                ray.init(address=address or "local", **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise RunError(f"engine.address {address!r}: cannot join the Ray cluster: "
                           f"{str(exc).splitlines()[0]}") from None
        started = True
    engine = RayEngine(cfg, "", started, 0)
    try:
        res = ray.cluster_resources()
        engine.actors = place(cfg, float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0)), len(hosted), travel)
        t = time.perf_counter()
        if travel:
            base, engine.made = _shard_base(cfg, store, Path(base_dir))
            prefix = shard_prefix(store.path, run_id)
            if cfg.shard_dir is None and store.path != ":memory:":  # the store's own folder, and no other's:
                _clear_stale(base, prefix)  # a shared shard_dir may hold a live run of a store of the same path
            engine.folder = f"{base.rstrip('/')}/{prefix}{uuid.uuid4().hex[:8]}"
            write_shards(store, run_id, fields, item_id, engine.folder, cfg.shard_rows)
        for v in hosted:
            name, max_batch, backend, n_ctx = v.batched_model()  # type: ignore[attr-defined]
            model = RayBatchedModel(name, max_batch, cfg.llm_actors, cfg.llm_cpus_per_actor, cfg.llm_gpus_per_actor,
                                    backend=backend, n_ctx=n_ctx)
            engine.models.append(model)
            v.use_batched(model)  # type: ignore[attr-defined]
    except BaseException:
        engine.close()
        raise
    log.info("ray engine: %d pool actor(s), %d LLM actor(s) on %.0f CPUs; shards in %s (%.1f s)", engine.actors,
             len(hosted) * cfg.llm_actors, res.get("CPU", 1.0), engine.folder or "(none)", time.perf_counter() - t)
    return engine


__all__ = ["PoolPredictor", "RayEngine", "actor_count", "open_ray_engine", "shard_prefix", "write_shards"]
