"""A plug-in view kind used by the tests through its dotted path: nearest centroid over columns."""
from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pandas as pd
from pydantic import Field

from views.base import ParamsView, ViewContext
from views.params import ViewParams


class CentroidView:
    """Softmax over negative distances to per-class centroids of the named columns."""

    def __init__(self, name: str, context: ViewContext, columns: Sequence[str] = (), temperature: float = 1.0):
        self.name = name
        self.context = context
        self.columns = list(columns)
        self.temperature = temperature
        self.centroids_: np.ndarray | None = None

    def resolve_fields(self, columns: Sequence[str]) -> list[str]:
        return self.columns

    def fit(self, items: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray) -> None:
        X = items[self.columns].to_numpy(float)
        k = len(self.context.labels)
        self.centroids_ = np.stack([
            np.average(X[y == c], axis=0, weights=sample_weight[y == c]) if (y == c).any() else np.full(X.shape[1], np.inf)
            for c in range(k)])

    def predict_proba(self, items: pd.DataFrame) -> np.ndarray:
        X = items[self.columns].to_numpy(float)
        d = ((X[:, None, :] - self.centroids_[None]) ** 2).sum(-1)
        z = -d / self.temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)


class PacedCentroidView(CentroidView):
    """A CentroidView that takes ``delay_s`` per predicted batch: a run slow enough to watch."""

    def __init__(self, name: str, context: ViewContext, columns: Sequence[str] = (), temperature: float = 1.0,
                 delay_s: float = 0.0):
        super().__init__(name, context, columns, temperature)
        self.delay_s = delay_s

    def predict_proba(self, items: pd.DataFrame) -> np.ndarray:
        import time

        time.sleep(self.delay_s)
        return super().predict_proba(items)


# ---------------------------------------------------------------- a CLIP-like image encoder
COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


def colour_clip():  # -> torch.nn.Module
    """A CLIP-like model small enough to reason about: an image's embedding is its mean
    (normalised) RGB, a prompt's is the RGB of the colour it names. Its zero-shot answer for a
    plain red, green or blue image is therefore known."""
    import math

    import torch

    class ColourClip(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))

        def encode_image(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))

        def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
            return tokens.float()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.encode_image(x)

    return ColourClip()


def colour_tokenizer(texts: list[str]):  # -> torch.Tensor
    """Prompt -> the RGB vector of the colour word it contains."""
    import torch

    return torch.tensor([next((v for k, v in COLOURS.items() if k in t), (0.0, 0.0, 0.0)) for t in texts])


# ---------------------------------------------------------------- user code that leaves a mark
def _mark(marker: str) -> None:
    if marker:
        from pathlib import Path

        Path(marker).write_text("constructed", encoding="utf-8")


class MarkingView(CentroidView):
    """A plug-in view whose constructor leaves a file: a dry run must never construct it."""

    def __init__(self, name: str, context: ViewContext, columns: Sequence[str] = (), marker: str = ""):
        _mark(marker)
        super().__init__(name, context, columns)


try:
    from sklearn.linear_model import LogisticRegression

    class MarkingClassifier(LogisticRegression):
        """A scikit-learn classifier whose constructor leaves a file (stands for any user code)."""

        def __init__(self, marker: str = "", C: float = 1.0, max_iter: int = 1000, random_state=None):
            _mark(marker)
            self.marker = marker
            super().__init__(C=C, max_iter=max_iter, random_state=random_state)
except ImportError:  # pragma: no cover
    pass


class FailingView(CentroidView):
    """A plug-in view that raises a plain ``RuntimeError`` (a bug, not a cotrain error) when
    fitted in round ``fail_round``: stands for any failure cotrain did not foresee. With
    ``interrupt: <path>`` it raises DuckDB's ``InterruptException`` instead (what Ctrl-C becomes
    when the signal lands while a query runs), once: it leaves a file at that path. With
    ``by_signal`` the interruption is real: the view runs a long DuckDB query and sends its own
    process SIGINT meanwhile (DuckDB 2.0 then raises ``RuntimeError('Query interrupted')``). With
    ``exit_request`` it raises ``SystemExit`` (what Ray's driver turns SIGTERM into). With
    ``credential_env`` its error quotes that variable's value (a client library that puts the
    key it was given in its exception)."""

    def __init__(self, name: str, context: ViewContext, columns: Sequence[str] = (), fail_round: int = -1,
                 interrupt: str = "", by_signal: bool = False, exit_request: bool = False, credential_env: str = ""):
        super().__init__(name, context, columns)
        self.credential_env = credential_env
        self.fail_round = fail_round
        self.interrupt = interrupt
        self.by_signal = by_signal
        self.exit_request = exit_request
        self.round = 0

    def set_round(self, round_idx: int) -> None:
        self.round = round_idx

    def fit(self, items: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray) -> None:
        if self.round == self.fail_round:
            if self.interrupt:
                import duckdb
                from pathlib import Path
                if not Path(self.interrupt).exists():
                    Path(self.interrupt).touch()
                    if self.by_signal:
                        import os
                        import signal
                        import threading

                        con = duckdb.connect()
                        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
                        # a few seconds of work: DuckDB sees the signal at once when it reaches the
                        # waiting main thread, else only when the query ends, and raises either way
                        con.execute("SELECT sum(range) FROM range(3000000000)").fetchall()
                        raise AssertionError("the SIGINT never reached the query")
                    if self.exit_request:
                        raise SystemExit(143)
                    raise duckdb.InterruptException("INTERRUPT Error: Interrupted!")
                return super().fit(items, y, sample_weight)
            import os
            quoted = f": bad credential {os.environ[self.credential_env]}" if self.credential_env else ""
            raise RuntimeError(f"boom in round {self.round}{quoted}")
        super().fit(items, y, sample_weight)


# ---------------------------------------------------------------- the view contract
class CentroidParams(ViewParams):
    """The parameters of :class:`CountingView`: a plug-in declaring its ``Params``."""

    columns: list[str] = Field(min_length=1)
    temperature: float = Field(default=1.0, gt=0)


class CountingView(ParamsView, CentroidView):
    """A CentroidView built from its ``Params`` that counts its constructions (``built``,
    one name per construction) and, while ``fail_in_round`` is set, fails in that round."""

    Params = CentroidParams
    built: ClassVar[list[str]] = []
    fail_in_round: ClassVar[int | None] = None

    def __init__(self, name: str, context: ViewContext, params: CentroidParams):
        CountingView.built.append(name)
        CentroidView.__init__(self, name, context, params.columns, params.temperature)
        self.round = 0

    def set_round(self, round_idx: int) -> None:
        self.round = round_idx

    def fit(self, items: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray) -> None:
        if self.round == CountingView.fail_in_round:
            raise RuntimeError(f"boom in round {self.round}")
        super().fit(items, y, sample_weight)


class CountingLegacyView(CentroidView):
    """A legacy plug-in (keyword parameters, no ``Params``) that counts its constructions."""

    built: ClassVar[list[str]] = []

    def __init__(self, name: str, context: ViewContext, columns: Sequence[str] = (), temperature: float = 1.0):
        CountingLegacyView.built.append(name)
        super().__init__(name, context, columns, temperature)


#: How many times :func:`counting_colour_clip` built its encoder.
ENCODER_LOADS: list[int] = []


def counting_colour_clip():  # -> torch.nn.Module
    """:func:`colour_clip`, counting each time a view loads it."""
    ENCODER_LOADS.append(1)
    return colour_clip()


# ---------------------------------------------------------------- a view that travels to Ray workers
class WorkerProbeView(CentroidView):
    """A :class:`CentroidView` that can predict in Ray workers (``worker_copy``); in a worker
    it records, under ``probe_dir``, the Ray node and process of each batch it predicted,
    and with ``die_once`` the first worker batch of the run kills its process instead
    (``os._exit``): the fault a lost node or an out-of-memory kill causes. With
    ``fail_in_worker`` it raises the ``ViewError`` a bad cell raises, from the worker."""

    def __init__(self, name: str, context: ViewContext, columns: Sequence[str] = (), temperature: float = 1.0,
                 probe_dir: str = "", die_once: bool = False, fail_in_worker: bool = False):
        super().__init__(name, context, columns, temperature)
        self.probe_dir, self.die_once, self.fail_in_worker = probe_dir, die_once, fail_in_worker
        self.in_worker = False

    def worker_copy(self) -> WorkerProbeView:
        import copy

        twin = copy.copy(self)
        twin.context = self.context.portable()
        twin.in_worker = True
        return twin

    def predict_proba(self, items: pd.DataFrame) -> np.ndarray:
        if self.in_worker and self.fail_in_worker and len(items):
            from store.errors import ViewError

            raise ViewError(self.name, f"column 'a_0' holds 'n/a' at item {items['__item_id'].iloc[0]!r}")
        if self.in_worker and self.probe_dir:
            import os
            from pathlib import Path

            import ray

            folder = Path(self.probe_dir)
            if self.die_once:
                try:
                    (folder / "died").open("x").close()  # exactly one batch of the run dies
                    os._exit(1)
                except FileExistsError:
                    pass
            node = ray.get_runtime_context().get_node_id()
            with (folder / f"{node}-{os.getpid()}").open("a") as fh:
                fh.write(f"{len(items)}\n")
        return super().predict_proba(items)


class MangledView(CentroidView):
    """A plug-in whose ``predict_proba`` breaks the view contract as ``mode`` says (a probe's
    finding: each of these was stored, and some accepted as labels): ``neg`` (values outside
    [0, 1]), ``unnorm`` (rows summing to 5), ``inf``, ``shape`` (one column too many), ``rows``
    (one row short), ``partial_nan`` (a row half NaN), ``raise`` (its own ``KeyError``) and
    ``abstain`` (every other row all NaN, which the contract allows)."""

    def __init__(self, name: str, context: ViewContext, columns: Sequence[str] = (), mode: str = "neg"):
        super().__init__(name, context, columns)
        self.mode = mode

    def predict_proba(self, items: pd.DataFrame) -> np.ndarray:
        p = super().predict_proba(items)
        if self.mode == "neg":
            return p * 3 - 1
        if self.mode == "unnorm":
            return p * 5
        if self.mode == "inf":
            p[-1, 0] = np.inf
        elif self.mode == "shape":
            return np.concatenate([p, p[:, :1]], axis=1)
        elif self.mode == "rows":
            return p[:-1]
        elif self.mode == "partial_nan":
            p[0, 0] = np.nan
        elif self.mode == "raise":
            raise KeyError("no such column 'zz'")
        elif self.mode == "abstain":
            p[::2] = np.nan
        return p
