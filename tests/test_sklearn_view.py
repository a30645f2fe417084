"""The sklearn view on its own: inputs, calibration, weights, abstention."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression

from store.errors import ViewError
from views.base import ViewContext
from views.sklearn_view import SklearnView
from tests.conftest import synthetic_frame

LABELS = ("ant", "bee", "cat")


@pytest.fixture(scope="module")
def data():
    df = synthetic_frame(n=300, n_gold=300, n_test=100, seed=2)
    df["label"] = df["truth"]
    y = df.truth.map({l: i for i, l in enumerate(LABELS)}).to_numpy()
    return df, y


def _view(**params) -> SklearnView:
    return SklearnView.from_params("v", ViewContext(LABELS, seed=0), **params)


def test_calibrated_view_gives_probabilities_in_label_order(data):
    df, y = data
    v = _view(column_prefix="a_", estimator="sklearn.svm.LinearSVC", calibration="sigmoid")
    v.resolve_fields(df.columns)
    v.fit(df[:300], y[:300], np.ones(300))
    p = v.predict_proba(df[300:])
    assert p.shape == (100, 3) and np.allclose(p.sum(1), 1)
    assert (p.argmax(1) == y[300:]).mean() > 0.5
    assert type(v.model_.steps[-1][1]).__name__ == "CalibratedClassifierCV"


def test_missing_class_in_training_gets_zero_probability(data):
    df, y = data
    keep = y[:300] != 1
    v = _view(column_prefix="a_")
    v.resolve_fields(df.columns)
    v.fit(df[:300][keep], y[:300][keep], np.ones(keep.sum()))
    p = v.predict_proba(df[300:])
    assert (p[:, 1] == 0).all() and np.allclose(p.sum(1), 1)


def test_single_class_abstains_with_warning(data):
    df, y = data
    v = _view(column_prefix="a_")
    v.resolve_fields(df.columns)
    with pytest.warns(UserWarning, match="fewer than 2 classes; the view abstains"):
        v.fit(df[:5], np.zeros(5, dtype=int), np.ones(5))
    assert np.isnan(v.predict_proba(df[:3])).all()


def test_sample_weights_change_the_fit(data):
    df, y = data
    a, b = _view(column_prefix="a_"), _view(column_prefix="a_")
    for v in (a, b):
        v.resolve_fields(df.columns)
    w = np.where(y[:300] == 0, 10.0, 1.0)
    a.fit(df[:300], y[:300], np.ones(300))
    b.fit(df[:300], y[:300], w)
    assert b.predict_proba(df[300:])[:, 0].mean() > a.predict_proba(df[300:])[:, 0].mean()


def test_text_view_reads_a_text_field():
    df = pd.DataFrame({"t": ["good film", "great fun", "bad plot", "awful", "good", "bad"] * 5})
    y = np.array([1, 1, 0, 0, 1, 0] * 5)
    v = SklearnView.from_params("t", ViewContext(("neg", "pos"), seed=0), text="t")
    assert v.resolve_fields(["t"]) == ["t"]
    v.fit(df, y, np.ones(len(y)))
    assert v.predict_proba(pd.DataFrame({"t": ["good", "bad"]})).argmax(1).tolist() == [1, 0]


@pytest.mark.parametrize(("params", "match"), [
    ({"columns": ["a_0"], "text": "t"}, "exactly one of"),
    ({"column_prefix": "zz_"}, "no column of the data starts with 'zz_'"),
    ({"columns": ["a_0", "nope"]}, "column 'nope' is not a column"),
    ({"text": "nope"}, "text field 'nope' is not a column"),
    ({"column_prefix": "a_", "estimator": "random_forest", "estimator_params": {"n_trees": 3}},
     "cannot build estimator 'random_forest'"),
    ({"column_prefix": "a_", "estimator_params": {"C": -1}}, "C must be a number above 0, not -1"),
    ({"column_prefix": "a_", "estimator_params": {"Cs": []}}, "Cs must be a non-empty list"),
    ({"column_prefix": "a_", "estimator_params": {"cv": 0}}, "cv must be a whole number of at least 1"),
    ({"column_prefix": "a_", "estimator_params": {"solver": "nope"}}, "'solver' parameter of LogisticRegression"),
    ({"column_prefix": "a_", "estimator": "random_forest", "estimator_params": {"n_estimators": 0}},
     "'n_estimators' parameter of RandomForestClassifier"),
    ({"column_prefix": "a_", "estimator_params": {"penalty": "l1"}}, "lbfgs supports only 'l2' or None penalties"),
    ({"column_prefix": "a_", "estimator_params": {"tol": "1e-4"}}, r"'tol' read as text: YAML reads a number"),
])
def test_bad_view_params(data, params, match):
    with pytest.raises(ViewError, match=match):
        _view(**params).resolve_fields(data[0].columns)


@pytest.mark.parametrize("params", [
    {"C": "1e-2"}, {"Cs": ["1e-2", 100.0]}, {"C": np.int64(3)}, {"C": np.float32(2.0)}, {"Cs": np.array([1, 10])},
    {"Cs": (0.1, 1.0)}, {"cv": 3.0}, {"cv": 1}, {"cv": np.int64(5)}, {"cv_max_items": np.int64(500)},
    {"few_labels_C": np.int64(5)}, {"class_weight": "balanced"}, {"class_weight": {0: 1.0, 7: 2.0}},
    {"penalty": "l1", "solver": "saga"}, {"penalty": "elasticnet", "solver": "saga", "l1_ratio": 0.5},
])
def test_values_that_fit_reads_are_accepted_before_the_run(data, params):
    """What the head's fit has always taken (YAML's 1e-2 read as text, numpy numbers, 3.0 for
    a count, a class weight naming classes the check's toy rows lack) passes the early check."""
    v = _view(column_prefix="a_", estimator_params=params)
    assert v.resolve_fields(data[0].columns) == [c for c in data[0].columns if c.startswith("a_")]


@pytest.mark.parametrize("estimator", ["logistic_regression", "hist_gradient_boosting"])
def test_non_finite_cells_are_named_and_float32_stays_float32(data, estimator):
    df = data[0].copy()
    cols = [c for c in df.columns if c.startswith("a_")]
    df[cols] = df[cols].astype(np.float32)
    v = _view(column_prefix="a_", estimator=estimator)
    v.resolve_fields(list(df.columns))
    X = v._matrix(df)
    assert X.dtype == np.float32 and X.flags.c_contiguous  # as the anchor's input, row-major as LR reads it
    df.loc[df.index[3], "a_1"] = np.inf
    with pytest.raises(ViewError, match=r"column 'a_1' has an infinite value at item"):
        v._matrix(df)
    df.loc[df.index[3], "a_1"] = np.nan  # NaN: an error only for an estimator that cannot take it
    if estimator == "hist_gradient_boosting":
        assert np.isnan(v._matrix(df)[3, 1])
    else:
        with pytest.raises(ViewError, match=r"column 'a_1' has a missing \(NaN\) value"):
            v._matrix(df)


class CentreInPlace(LogisticRegression):
    """A user's estimator that writes into its input (scikit-learn's own copy first)."""

    def fit(self, X, y, sample_weight=None):
        X -= X.mean(axis=0)
        return super().fit(X, y, sample_weight=sample_weight)

    def predict_proba(self, X):
        X *= 1.0
        return super().predict_proba(X)


def test_an_estimator_that_writes_into_its_input_gets_its_own_copy_of_the_held_fields(data):
    from orchestrator.frames import MemoryFrames

    df, y = data
    cols = [c for c in df.columns if c.startswith("a_")]
    held = MemoryFrames(pa.Table.from_pandas(df[cols].astype(np.float32), preserve_index=False))
    before = held.matrix.copy()
    frame = held.rows(np.arange(300))
    assert not frame.to_numpy().flags.writeable  # what views are given is read-only
    v = _view(column_prefix="a_", estimator="tests.test_sklearn_view.CentreInPlace")
    v.resolve_fields(list(frame.columns))
    v.fit(frame, y[:300], np.ones(300))
    proba = v.predict_proba(frame)
    assert proba.shape == (300, len(LABELS)) and np.allclose(proba.sum(axis=1), 1)
    np.testing.assert_array_equal(held.matrix, before)  # the other views' fields are untouched


def test_a_value_whose_square_overflows_is_one_error_naming_column_and_item(data):
    """1e308 in a float64 column: scaling overflowed into NaN, round 0 accepted labels from the
    broken fits under a hundred lines of overflow warnings, and round 1 blamed a NaN the file
    does not hold."""
    df, y = data
    df = df.copy()
    df.loc[3, "a_1"] = 1e308
    df["__item_id"] = df["id"]
    v = _view(column_prefix="a_")
    v.resolve_fields(df.columns)
    with pytest.raises(ViewError, match=rf"view 'v': column 'a_1' holds 1e\+308 at item '{df.id[3]}': too large "
                                        r"to scale or fit \(its square overflows\); rescale the column"):
        v.fit(df[:300], y[:300], np.ones(300))


def test_an_estimator_without_predict_proba_needs_calibration(data):
    """LinearSVC without calibration passed the checks and failed at predict_proba after a fit."""
    df, _ = data
    v = _view(column_prefix="a_", estimator="sklearn.svm.LinearSVC")
    with pytest.raises(ViewError, match=r"view 'v': estimator 'sklearn.svm.LinearSVC' has no predict_proba: set "
                                        r"calibration: sigmoid \(or isotonic\)"):
        v.resolve_fields(df.columns)
    _view(column_prefix="a_", estimator="sklearn.svm.LinearSVC", calibration="sigmoid").resolve_fields(df.columns)


def test_the_head_scores_its_c_on_the_rows_the_label_sources_trust(data):
    """The orchestrator's label-source column tells the logistic-regression head which rows
    are gold: its C is cross-validated on them (the picks only train); a frame without the
    column (the view used on its own) cross-validates every row."""
    from views.base import LABEL_SOURCE_COLUMN
    from views.heads import TunedLogisticRegression

    df, y = data
    train = df[:120].reset_index(drop=True)
    source = np.where(np.arange(120) < 30, "gold", "pseudo")
    source[30:36] = "review"
    w = np.where(source == "pseudo", 0.3, 1.0)
    told, alone = _view(column_prefix="a_"), _view(column_prefix="a_")
    for v in (told, alone):
        v.resolve_fields(df.columns)
    told.fit(train.assign(**{LABEL_SOURCE_COLUMN: pd.Categorical(source)}), y[:120], w)
    alone.fit(train, y[:120], w)
    X = told.features(train)                                           # the scaled columns the head read
    head = told.model_.steps[-1][1]
    ref = TunedLogisticRegression(random_state=0).fit(X, y[:120], sample_weight=w, trusted=source != "pseudo")
    assert head.cv_scores_ == pytest.approx(ref.cv_scores_) and head.C_ == ref.C_
    every = TunedLogisticRegression(random_state=0).fit(X, y[:120], sample_weight=w)
    assert alone.model_.steps[-1][1].cv_scores_ == pytest.approx(every.cv_scores_) != ref.cv_scores_


def test_all_finite_finds_every_non_finite_value_without_copying_the_matrix():
    from views.sklearn_view import all_finite

    X = np.ones((50, 4), dtype=np.float32)
    assert all_finite(X) and all_finite(np.zeros((0, 4)))
    for bad in (np.nan, np.inf, -np.inf):
        Y = X.copy()
        Y[37, 2] = bad
        assert not all_finite(Y)
    Y = X.copy()
    Y[0, 0], Y[1, 1] = np.inf, -np.inf  # their sum is NaN, not a cancelled zero
    assert not all_finite(Y)
    big = np.full((4, 2), 1e308)  # a sum that overflows, of finite values: checked value by value
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all_finite(big)
