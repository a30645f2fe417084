"""``sklearn`` view kind: any scikit-learn classifier or pipeline over named columns,
a column prefix, or a text field (TF-IDF in front), with optional probability calibration.
"""
from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import has_fit_parameter

from store.errors import ViewError
from views.base import (ParamsView, ViewContext, abstain, build_params, expand_proba, item_ids, select_fields,
                        trusted_rows)
from views.checked import numbers_as_text
from views.heads import RoundC, head_fit_params
from views.params import SklearnParams
from views.registry import import_object

#: Built-in estimator names -> (dotted class path, default params).
ESTIMATORS: dict[str, tuple[str, dict[str, Any]]] = {
    # C chosen by cross-validation on the training set unless given (views.heads)
    "logistic_regression": ("views.heads.TunedLogisticRegression", {}),
    "random_forest": ("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 200}),
    "hist_gradient_boosting": ("sklearn.ensemble.HistGradientBoostingClassifier", {}),
    "naive_bayes": ("sklearn.naive_bayes.MultinomialNB", {}),
    "gaussian_nb": ("sklearn.naive_bayes.GaussianNB", {}),
    "knn": ("sklearn.neighbors.KNeighborsClassifier", {"n_neighbors": 5}),
    "mlp": ("sklearn.neural_network.MLPClassifier", {"max_iter": 500}),
}


def estimator_class(spec: str, params: dict[str, Any], seed: int) -> tuple[type, dict[str, Any]]:
    """The estimator class for a built-in name or dotted class path, and the keyword
    arguments it will be built with (seeded if it takes ``random_state``), checked against
    its signature. Imports, never constructs: a dotted path is user code, and a dry run must
    not run it. ``ValueError`` for an unknown name, a non-class, or parameters that do not bind."""
    from views.registry import check_call

    path, defaults = ESTIMATORS.get(spec, (spec, {}))
    if spec not in ESTIMATORS and "." not in spec and ":" not in spec:
        raise ValueError(f"unknown estimator '{spec}' (built-in: {', '.join(ESTIMATORS)}; "
                         "or a dotted path to a scikit-learn classifier class)")
    try:
        cls = import_object(path)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import '{path}' (built-in estimators: {', '.join(ESTIMATORS)}): {exc}") from None
    if not isinstance(cls, type):
        raise ValueError(f"'{path}' is a {type(cls).__name__}, not a classifier class "
                         f"(built-in estimators: {', '.join(ESTIMATORS)})")
    scores = callable(getattr(cls, "predict_proba", None)) or callable(getattr(cls, "decision_function", None))
    if not (callable(getattr(cls, "fit", None)) and scores):  # checked before it is built: subprocess.Popen
        # or logging.FileHandler ran (a file created) before failing on .fit
        raise ValueError(f"'{path}' is not a classifier class: it has no fit and predict_proba (or "
                         f"decision_function, with calibration) (built-in estimators: {', '.join(ESTIMATORS)})")
    kwargs = {**defaults, **params}
    if "random_state" in inspect.signature(cls).parameters and "random_state" not in kwargs:
        kwargs["random_state"] = seed
    try:
        check_call(cls, f"estimator '{spec}'", **kwargs)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    return cls, kwargs


def check_values(spec: str, cls: type, kwargs: dict[str, Any]) -> None:
    """``ValueError`` when a built-in estimator's parameter has a value it cannot take
    (``C: -1``, ``n_estimators: 0``), by the estimator's own check (cotrain's heads:
    ``check_params``; scikit-learn's: the constraints each declares, which its ``fit`` checks
    too). Without this the value failed the first fit, after the run was stored. A dotted
    path is user code and is never built before a fit, so its values are checked there."""
    if spec not in ESTIMATORS:
        return
    est = cls(**kwargs)
    own = getattr(est, "check_params", None)
    if callable(own):  # cotrain's head: values, and its solver and penalty together
        own(combined=True)
        return
    declared = getattr(est, "_validate_params", None)  # scikit-learn >= 1.2; its fit checks the same
    if callable(declared):
        try:
            declared()
        except ValueError:  # scikit-learn's InvalidParameterError is one (and a TypeError)
            raise
        except TypeError:  # a later scikit-learn's own signature for it: its fit checks instead
            pass


def make_estimator(spec: str, params: dict[str, Any], seed: int) -> BaseEstimator:
    """An estimator from a built-in name or dotted class path, seeded if it takes ``random_state``."""
    cls, kwargs = estimator_class(spec, params, seed)
    return cls(**kwargs)


#: The largest magnitude a numeric field may hold: its square still fits a float64.
TOO_LARGE = 1e150


def all_finite(X: np.ndarray) -> bool:
    """Whether every value of ``X`` is finite, without a boolean copy of it (at 3M rows of 10
    float32 fields, ``np.isfinite(X).all()`` held 29 MB at a fit's memory peak): any NaN or
    infinity makes the float64 sum non-finite; a sum that overflows is checked value by value."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf + -inf, or an overflow: the exact check decides
        total = np.add.reduce(X, axis=None, dtype=np.float64)
    return bool(np.isfinite(total) or np.isfinite(X).all())


#: TfidfVectorizer parameters that must be tuples; YAML gives lists.
_TUPLE_PARAMS = ("ngram_range",)


def _on_own_copy_if_needed(method: Any, X: Any, *args: Any, **kwargs: Any) -> Any:
    """``method(X, ...)``; again on a writable copy of ``X`` when it is a read-only view (the
    fields held in memory are shared by every view) and the estimator writes into its input
    (scikit-learn's own estimators copy first; a user's may not)."""
    try:
        return method(X, *args, **kwargs)
    except ValueError as exc:
        if not (isinstance(X, np.ndarray) and not X.flags.writeable and "read-only" in str(exc)):
            raise
        return method(np.array(X), *args, **kwargs)


class SklearnView(ParamsView):
    """A scikit-learn model over columns or a text field; parameters: :class:`SklearnParams`."""

    Params = SklearnParams

    def __init__(self, name: str, context: ViewContext, params: SklearnParams) -> None:
        self.name = name
        self.context = context
        self.columns = list(params.columns) if params.columns else None
        self.column_prefix = params.column_prefix
        self.text = params.text
        self.estimator = params.estimator
        self.estimator_params = build_params(params.estimator_params)
        self.scale = params.scale
        self.tfidf = build_params(params.tfidf)
        self.calibration = params.calibration
        self.calibration_cv = params.calibration_cv
        self.fields_: list[str] = []
        self.model_: Any = None
        self.classes_: np.ndarray | None = None
        self._nan_ok: bool | None = None  # does the estimator take NaN? (asked once)
        self._round_c = RoundC()

    # ---------------------------------------------------------------- fields
    def resolve_fields(self, columns: Sequence[str]) -> list[str]:
        # exactly one of text / column_prefix / columns is set (SklearnParams)
        self.fields_ = select_fields(self.name, columns, text=self.text, column_prefix=self.column_prefix,
                                     names=self.columns)
        try:  # fail before anything is stored: import and check now, construct only when fitting
            cls, kwargs = estimator_class(self.estimator, self.estimator_params, self.context.seed)
            check_values(self.estimator, cls, kwargs)
        except ValueError as exc:
            raise ViewError(self.name, f"cannot build estimator '{self.estimator}': {exc}"
                            f"{numbers_as_text(self.estimator_params, str(exc))}") from None
        if not self.calibration and not callable(getattr(cls, "predict_proba", None)):  # failed after a fit
            raise ViewError(self.name, f"estimator '{self.estimator}' has no predict_proba: set calibration: "
                            "sigmoid (or isotonic) to give its decision_function probabilities")
        return self.fields_

    # ---------------------------------------------------------------- model
    def _build(self, n_per_class_min: int) -> BaseEstimator:
        from sklearn.pipeline import Pipeline

        try:
            est = make_estimator(self.estimator, self.estimator_params, self.context.seed)
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            raise ViewError(self.name, f"cannot build estimator '{self.estimator}': {exc}") from None
        if self.calibration:
            from sklearn.calibration import CalibratedClassifierCV

            cv = min(self.calibration_cv, n_per_class_min)
            if cv >= 2:
                est = CalibratedClassifierCV(est, method=self.calibration, cv=cv)
            else:
                warnings.warn(f"view '{self.name}': a class has fewer than 2 training items; "
                              "fitting without calibration this round", stacklevel=2)
        steps: list[tuple[str, Any]] = []
        if self.text:
            from sklearn.feature_extraction.text import TfidfVectorizer

            params = {k: tuple(v) if k in _TUPLE_PARAMS and isinstance(v, list) else v  # YAML has no tuples
                      for k, v in self.tfidf.items()}
            steps.append(("tfidf", TfidfVectorizer(**{"sublinear_tf": True, "min_df": 1, **params})))
        elif self.scale is not False and not self.estimator.startswith("naive_bayes"):
            from sklearn.preprocessing import StandardScaler

            steps.append(("scale", StandardScaler()))
        steps.append(("model", est))
        return Pipeline(steps)

    @property
    def checked_fields(self) -> list[str]:
        return [] if self.text else list(self.fields_)

    def check_items(self, items: pd.DataFrame) -> None:
        """The estimator's input for ``items`` is built and dropped: a bad cell raises as it
        would at the first fit (``views.base.DataChecked``). Text needs no check."""
        if not self.text:
            self._matrix(items)

    def _matrix(self, items: pd.DataFrame) -> Any:
        """The estimator's input: the text field as strings, or the columns as a float matrix
        checked value by value, so a bad cell is one error naming its column and item."""
        if self.text:
            return items[self.text].fillna("").astype(str).tolist()
        frame = items[self.fields_]
        dtypes = set(frame.dtypes)
        one = next(iter(dtypes)) if len(dtypes) == 1 else None
        if isinstance(one, np.dtype) and one.kind in "fiu":
            # plain numeric columns of one dtype (the common case): float32 stays float32 (as
            # scikit-learn's own input would), in the row-major order its linear models copy
            # into otherwise; no copy at all when the frame wraps a row-major matrix of exactly
            # these columns (``orchestrator.frames.MemoryFrames``), so it may be read-only
            X = np.asarray(frame.to_numpy(dtype=np.result_type(one, np.float32)), order="C")
            if not all_finite(X):
                self._not_finite(items, X)  # raises unless every non-finite value is a NaN the estimator takes
            self._too_large(items, X)
            return X
        cols = []
        for c in self.fields_:
            col = items[c]
            if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
                num = pd.to_numeric(col, errors="coerce")
                bad = np.flatnonzero(num.isna().to_numpy() & col.notna().to_numpy())
                if bad.size:
                    raise ViewError(self.name, f"column '{c}' is not numeric: item {self._item(items, bad[0])!r} "
                                    f"holds {str(col.iloc[bad[0]])[:40]!r} (a view over columns reads numbers, "
                                    "or true/false; recode the column, e.g. yes/no as 1/0)")
                col = num
            cols.append(col.to_numpy(dtype=np.float64, na_value=np.nan))
        X = np.column_stack(cols) if cols else np.zeros((len(items), 0))
        if not all_finite(X):
            self._not_finite(items, X)
        self._too_large(items, X)
        return X

    def _too_large(self, items: pd.DataFrame, X: np.ndarray) -> None:
        """Raise for the first value whose square overflows (1e308 in a float64 column): scaling
        and the fits overflowed into NaN, labels were accepted from them, and the next round's
        error blamed a NaN the file does not hold. float32 cannot hold such a value."""
        if X.dtype != np.float64 or not X.size:
            return
        if np.fmax.reduce(X, axis=None) <= TOO_LARGE and np.fmin.reduce(X, axis=None) >= -TOO_LARGE:
            return  # fmax/fmin skip NaN and copy nothing: the common case costs two passes
        big = np.abs(X) > TOO_LARGE  # NaN compares False
        if big.any():
            i, j = (int(x[0]) for x in np.nonzero(big))
            raise ViewError(self.name, f"column '{self.fields_[j]}' holds {X[i, j]:.3g} at item "
                            f"{self._item(items, i)!r}: too large to scale or fit (its square overflows); rescale "
                            "the column")

    def _not_finite(self, items: pd.DataFrame, X: np.ndarray) -> None:
        """Raise for the first value the estimator cannot take (inf; NaN unless it takes NaN)."""
        finite = np.isfinite(X) | (np.isnan(X) & self._allows_nan())
        if not finite.all():
            i, j = (int(x[0]) for x in np.nonzero(~finite))
            what = "an infinite" if np.isinf(X[i, j]) else "a missing (NaN)"
            fix = "" if np.isinf(X[i, j]) else ", or use an estimator that accepts missing values (hist_gradient_boosting)"
            raise ViewError(self.name, f"column '{self.fields_[j]}' has {what} value at item "
                            f"{self._item(items, i)!r}: fill it{fix}")

    @staticmethod
    def _item(items: pd.DataFrame, i: int) -> str:
        """Item i's id (the orchestrator adds them), or its 1-based position in the frame."""
        ids = item_ids(items)
        return ids[i] if ids is not None else f"row {i + 1}"

    def _allows_nan(self) -> bool:
        """Whether the configured estimator handles missing values itself (scikit-learn's tags)."""
        if self._nan_ok is None:
            try:
                from sklearn.utils import get_tags

                est = make_estimator(self.estimator, self.estimator_params, 0)
                self._nan_ok = bool(get_tags(est).input_tags.allow_nan)
            except Exception:  # noqa: BLE001 - older scikit-learn or a foreign estimator: assume not
                self._nan_ok = False
        return self._nan_ok

    def set_round(self, round_idx: int) -> None:
        """A new round: its first large fit tunes the estimator's C again (``heads.RoundC``)."""
        self._round_c.reset()

    def fit(self, items: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray) -> None:
        y = np.asarray(y, dtype=int)
        present, counts = np.unique(y, return_counts=True)
        if len(present) < 2:
            warnings.warn(f"view '{self.name}': training labels hold fewer than 2 classes; "
                          "the view abstains this round", stacklevel=2)
            self.model_ = None
            return
        model = self._build(int(counts.min()))
        est = model.steps[-1][1]
        if isinstance(getattr(est, "n_neighbors", None), int) and est.n_neighbors > len(y):
            est.set_params(n_neighbors=len(y))  # `knn` on 4 rows of a fold raised "n_neighbors <= n_samples_fit"
        self._round_c.before(est, len(y))
        kwargs: dict[str, Any] = {}
        if has_fit_parameter(est, "sample_weight"):
            kwargs["model__sample_weight"] = np.asarray(sample_weight, dtype=np.float64)
        kwargs.update({f"model__{k}": v for k, v in head_fit_params(est, trusted_rows(items)).items()})
        try:
            _on_own_copy_if_needed(model.fit, self._matrix(items), y, **kwargs)
        except ValueError as exc:
            raise ViewError(self.name, f"fit failed: {exc}") from None
        self._round_c.after(est, len(y))
        self.model_ = model
        self.classes_ = np.asarray(model.classes_, dtype=int)

    def features(self, items: pd.DataFrame) -> Any:
        """What the estimator reads: TF-IDF or scaled columns as fitted last (the raw matrix
        before any fit)."""
        X = self._matrix(items)
        if self.model_ is None:
            return X
        return self.model_[:-1].transform(X) if len(self.model_.steps) > 1 else X

    def worker_copy(self) -> SklearnView:
        """This fitted view for a worker process: the same model, a context of labels and
        seed only (prediction reads nothing else; the store's handles do not travel)."""
        twin = copy.copy(self)
        twin.context = self.context.portable()
        return twin

    def predict_proba(self, items: pd.DataFrame) -> np.ndarray:
        k = len(self.context.labels)
        if self.model_ is None or len(items) == 0:
            return abstain(len(items), k)
        proba = _on_own_copy_if_needed(self.model_.predict_proba, self._matrix(items))
        return expand_proba(proba, self.classes_, k)


__all__ = ["ESTIMATORS", "SklearnView", "make_estimator"]
