"""The View protocol: what every view kind provides, and what it is given.

A view reads some fields of an item, is fitted on (items, label indices, sample weights)
and returns class probabilities in the task's label order. A row of NaN means the view
abstains on that item. The probabilities of all views over a pool form the label tensor
(items x views x classes) that selection, consensus and debate consume.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import pandas as pd

from store.contracts import Ledger
from store.errors import ViewError


#: Column the orchestrator adds to every frame it hands a view: the items' ids.
ITEM_ID_COLUMN = "__item_id"
#: Column the orchestrator adds to the frame it hands ``fit``: where each training label came
#: from (``gold``, ``review`` or ``pseudo``), so a view can tell trusted labels from its
#: peers' picks (LLM views draw few-shot demonstrations from trusted ones only by default).
LABEL_SOURCE_COLUMN = "__label_source"
#: Label sources whose labels a view may trust as ground truth (not its peers' picks).
TRUSTED_SOURCES = ("gold", "review")


def trusted_rows(items: pd.DataFrame) -> np.ndarray | None:
    """(n,) bool: the training rows whose label is gold or reviewed, read from
    ``LABEL_SOURCE_COLUMN``; None when the frame does not say (a view used on its own)."""
    if LABEL_SOURCE_COLUMN not in items.columns:
        return None
    return items[LABEL_SOURCE_COLUMN].isin(TRUSTED_SOURCES).to_numpy(dtype=bool)


@runtime_checkable
class FeatureCache(Protocol):
    """Where a view keeps per-item features (e.g. embeddings) across rounds and runs."""

    def get(self, namespace: str, keys: Sequence[str]) -> dict[str, np.ndarray]: ...

    def put(self, namespace: str, keys: Sequence[str], vectors: np.ndarray) -> None: ...


@runtime_checkable
class ProblemLog(Protocol):
    """Where a view files an item it could not read (it abstains on it instead of failing)."""

    def report(self, view: str, item_id: str, problem: str, location: str | None = None) -> None: ...


@dataclass(frozen=True)
class ViewContext:
    """What the orchestrator hands every view when building it.

    ``seed`` is drawn from the run's generator so views seed their own estimators without
    touching global RNG state; ``base_dir`` resolves relative paths in view params;
    ``label_descriptions`` (aligned with ``labels``) feed LLM prompts; ``ledger``
    (a ``store.contracts.Ledger``) caches and files LLM calls; ``data_dirs`` are the
    folders of the data files, against which relative file paths in items (images) resolve;
    ``problems`` files items a view cannot read; ``progress(phase, n_done, total)``, when
    given, advances the caller's progress display (the CLI's bars) for long steps such as
    encoding images. ``dry_run`` is set while ``cotrain run --dry-run`` plans: a view may
    import what the config names but must call no user code (factories, estimator classes).
    """

    labels: tuple[str, ...]
    seed: int
    cache: FeatureCache | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    show_progress: bool = False
    label_descriptions: tuple[str | None, ...] = ()
    ledger: Ledger | None = None
    data_dirs: tuple[Path, ...] = ()
    problems: ProblemLog | None = None
    progress: Callable[[str, int, int], None] | None = None
    dry_run: bool = False

    def portable(self) -> ViewContext:
        """What of this context travels with a view to another process (``Portable``): the
        labels, seed and base folder; the store's cache, ledger and problem log stay here."""
        return ViewContext(labels=self.labels, seed=self.seed, base_dir=self.base_dir)


@runtime_checkable
class View(Protocol):
    """A model view of the items."""

    name: str

    def resolve_fields(self, columns: Sequence[str]) -> list[str]:
        """Fields this view reads, checked against the data's columns.

        Raises ``ViewError`` naming the first missing column.
        """
        ...

    def fit(self, items: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray) -> None:
        """Fit on items with label indices ``y`` (into the task's labels) and weights. The
        inputs are read, never changed: views given every row share one frame."""
        ...

    def predict_proba(self, items: pd.DataFrame) -> np.ndarray:
        """(n_items, n_labels) probabilities; a NaN row means abstain."""
        ...


# ---------------------------------------------------------------- optional capabilities
# A view may also satisfy any of these; the orchestrator checks with ``isinstance``.


@runtime_checkable
class RoundAware(Protocol):
    """Told the round before each round's fit (to seed per-round draws)."""

    def set_round(self, round_idx: int) -> None: ...


@runtime_checkable
class Featurizer(Protocol):
    """Gives the feature matrix it reads items through (dense or sparse), so its space can
    carry a neighbour graph (``select: cut_statistic``)."""

    def features(self, items: pd.DataFrame) -> Any: ...


@runtime_checkable
class Closeable(Protocol):
    """Holds resources (servers, threads) released when the run ends; idempotent."""

    def close(self) -> None: ...


@runtime_checkable
class Portable(Protocol):
    """Can predict in another process (the Ray engine's workers): ``worker_copy()`` gives a
    picklable copy of the fitted view that predicts each item from its own fields alone,
    with no store, cache, ledger or server behind it. Views without it predict on the driver."""

    def worker_copy(self) -> View: ...


@runtime_checkable
class BatchedHost(Protocol):
    """Runs a model's batched forward passes in this process (an LLM view with ``backend:
    transformers`` or ``vllm``), which an engine may run elsewhere instead: ``batched_model()``
    gives the packaged model's name, passes' size, backend and context length (None when the
    view runs no such model), and
    ``use_batched(model)`` makes the view answer with ``model`` (the in-process model's
    interface) from its next call on."""

    def batched_model(self) -> tuple[str, int, str, int] | None: ...

    def use_batched(self, model: Any) -> None: ...


@runtime_checkable
class ZeroShot(Protocol):
    """Says whether it labels before any training (then a run may start with no gold label)."""

    zero_shot: bool


@runtime_checkable
class DataChecked(Protocol):
    """Checks the data it will read before a run is recorded: views over table columns, whose
    bad cell would otherwise fail round 0's fit after the run was committed (a failed run
    that then became the store's latest, the one ``export`` and ``report`` read)."""

    @property
    def checked_fields(self) -> list[str]:
        """The fields :meth:`check_items` reads (none: nothing to check)."""
        ...

    def check_items(self, items: pd.DataFrame) -> None:
        """Raise ``ViewError`` naming the column and item of the first value this view can
        never read (text in a numeric column, an infinity, a NaN its estimator does not take)."""
        ...


@runtime_checkable
class Plannable(Protocol):
    """Costs its calls for a dry run (``cotrain run --dry-run``): LLM views."""

    calibration: str
    calibration_max_items: int
    budget_usd: float | None

    def plan(self, items: pd.DataFrame) -> dict[str, Any]:
        """Per-call estimates for labelling ``items`` once: ``calls_per_item``,
        ``prompt_tokens_per_call``, ``completion_tokens_per_call``, ``demonstrations``..."""
        ...

    def price_per_call(self, prompt_tokens: float, completion_tokens: float) -> float | None: ...


# ---------------------------------------------------------------- parameters
def validate_params(model: type[Any], params: Mapping[str, Any], view: str) -> Any:
    """``params`` validated by a view kind's ``Params`` model; ``ViewError`` naming the
    view and the first bad key otherwise."""
    from pydantic import ValidationError

    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        errors = exc.errors()  # an unknown key first: a misspelt key is also reported missing
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        key = ".".join(str(part) for part in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown parameter"
        elif err["type"] == "missing":
            msg = "required parameter is missing"
        raise ViewError(view, f"{key}: {msg}" if key else msg) from None


class ParamsView:
    """Mixin of a view kind built from its validated ``Params`` model: the kind's
    parameters, their types and defaults live in that model only, and ``__init__(name,
    context, params)`` copies them. ``from_params`` validates keyword arguments first
    (for a view used on its own, in tests or a notebook)."""

    Params: ClassVar[type[Any]]

    @classmethod
    def from_params(cls, name: str, context: ViewContext, **params: Any) -> Self:
        return cls(name, context, validate_params(cls.Params, params, name))  # type: ignore[call-arg]


def select_fields(view: str, columns: Sequence[str], *, text: str | None = None, column_prefix: str | None = None,
                  names: Sequence[str] | None = None) -> list[str]:
    """The data columns a view reads, from exactly one of a ``text`` field, a
    ``column_prefix`` or explicit column ``names``; a ``ViewError`` naming the view and the
    missing field otherwise (before anything is stored)."""
    cols = list(columns)
    if text:
        if text not in cols:
            raise ViewError(view, f"text field '{text}' is not a column of the data")
        return [text]
    if column_prefix:
        found = [c for c in cols if c.startswith(column_prefix)]
        if not found:
            raise ViewError(view, f"no column of the data starts with '{column_prefix}'")
        return found
    missing = [c for c in names or [] if c not in cols]
    if missing:
        raise ViewError(view, f"column '{missing[0]}' is not a column of the data")
    seen: set[str] = set()
    for c in names or []:
        if c in seen:  # it would enter the model twice, its weight shared out by chance
            raise ViewError(view, f"column '{c}' is listed twice in 'columns'")
        seen.add(c)
    return list(names or [])


def item_ids(items: pd.DataFrame) -> list[str] | None:
    """The items' ids (``ITEM_ID_COLUMN``, which the orchestrator adds), or None for a frame
    without them (a view used on its own)."""
    if ITEM_ID_COLUMN in items.columns:
        return items[ITEM_ID_COLUMN].astype(str).tolist()
    return None


def abstain(n: int, k: int) -> np.ndarray:
    """An all-abstain probability block."""
    return np.full((n, k), np.nan, dtype=np.float64)


def expand_proba(proba: np.ndarray, classes: Sequence[Any], k: int) -> np.ndarray:
    """Place an estimator's ``predict_proba`` columns (for ``classes``) into K label columns."""
    out = np.zeros((proba.shape[0], k), dtype=np.float64)
    out[:, np.asarray(classes, dtype=int)] = proba
    return out


def unit_rows(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), so Euclidean neighbours are cosine
    neighbours: pretrained encoders' vectors differ in length by, e.g., an image's contrast,
    not its content."""
    x = np.asarray(x, dtype=dtype)
    if x.ndim != 2 or not x.size:
        return x
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def build_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """A fresh copy of user params (never share a mutable default)."""
    return dict(params or {})
