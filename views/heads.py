"""Small trainable heads over frozen features, shared by the ``embedding`` and ``vision`` views
(and the ``sklearn`` view's ``logistic_regression``): a logistic regression that chooses its
own regularisation, or a one-hidden-layer torch MLP."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import has_fit_parameter

from views.checked import checked_number

HEADS = ("logistic_regression", "mlp")


class MLPHead:
    """A one-hidden-layer torch MLP with weighted cross-entropy, seeded by its own generator."""

    def __init__(self, hidden: int = 128, epochs: int = 100, lr: float = 1e-2,
                 weight_decay: float = 1e-4, dropout: float = 0.1, seed: int = 0) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.seed = seed
        self.net_: Any = None
        self.classes_: np.ndarray | None = None

    def check_params(self, combined: bool = False) -> None:
        """``ValueError`` naming the first parameter whose value cannot work (see ``check_head``);
        ``combined`` asks nothing more here: no two of these parameters exclude each other."""
        checked_number("hidden", self.hidden, whole=True, low=1)
        checked_number("epochs", self.epochs, whole=True, low=1)
        checked_number("lr", self.lr, above=0, text_ok=True)  # fit reads these three with float()
        checked_number("weight_decay", self.weight_decay, low=0, text_ok=True)
        checked_number("dropout", self.dropout, low=0, below=1, text_ok=True)

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> MLPHead:
        import torch

        self.check_params()

        gen = torch.Generator().manual_seed(self.seed)
        self.classes_ = np.unique(y)
        index = {c: i for i, c in enumerate(self.classes_)}
        yt = torch.tensor([index[c] for c in y], dtype=torch.long)
        Xt = torch.tensor(X, dtype=torch.float32)
        w = torch.tensor(sample_weight if sample_weight is not None else np.ones(len(y)), dtype=torch.float32)
        d = X.shape[1]
        lin1 = torch.nn.Linear(d, int(self.hidden))
        lin2 = torch.nn.Linear(int(self.hidden), len(self.classes_))
        with torch.no_grad():
            for lin in (lin1, lin2):
                bound = 1.0 / np.sqrt(lin.in_features)
                lin.weight.uniform_(-bound, bound, generator=gen)
                lin.bias.uniform_(-bound, bound, generator=gen)
        params = [*lin1.parameters(), *lin2.parameters()]
        opt = torch.optim.AdamW(params, lr=float(self.lr), weight_decay=float(self.weight_decay))
        keep = 1.0 - float(self.dropout)
        for _ in range(int(self.epochs)):  # full batch: heads are small
            opt.zero_grad()
            h = torch.relu(lin1(Xt))
            if keep < 1.0:  # dropout from our own generator, not torch's global RNG
                h = h * (torch.rand(h.shape, generator=gen) < keep) / keep
            loss = (torch.nn.functional.cross_entropy(lin2(h), yt, reduction="none") * w).sum() / w.sum()
            loss.backward()
            opt.step()
        self.net_ = torch.nn.Sequential(lin1, torch.nn.ReLU(), lin2).eval()
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.softmax(self.net_(torch.tensor(X, dtype=torch.float32)), dim=1).numpy()


#: A fit over at most this many matrix cells (rows x features) runs on one BLAS thread.
SMALL_FIT_CELLS = 1 << 22
#: On a machine that gives the process at most this many CPUs, every fit runs on one BLAS thread.
FEW_CPUS = 2


def usable_cpus(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """CPUs this process may run on: its affinity mask (``taskset``, a container's cpuset),
    capped by a cgroup v2 CPU quota (``cpu_max``: ``docker --cpus``, a Kubernetes limit),
    which the mask does not show. ``os.cpu_count()`` where the platform has no affinity mask."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    try:
        with open(cpu_max) as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))  # 150000/100000 -> 2
    except (OSError, ValueError):
        pass
    return n


def one_blas_thread_if_small(X: Any) -> Any:
    """A context in which a small or sparse fit, or any fit on a machine of two CPUs or
    fewer, uses one BLAS thread.

    Why: lbfgs on a few thousand rows makes thousands of small matrix products, and OpenBLAS
    threads spend more time waking each other than working on them. The default demo (1,430
    items, 1,280 image features, C chosen by cross-validation on every round) took 2 min 27 s
    on 2 cores with OpenBLAS's two threads, and 42 s with one. On two CPUs the second thread
    did not pay for large fits either: ``bench/blas_threads.py`` (scikit-learn's
    LogisticRegression, two threads over one) measured 1.04x for 1M x 10 binary, 1.17x for 3M x
    10, 1.47x for 100k x 384 with ten classes and 2.49x for 20k x 1,280 with ten, and no shape
    faster; so there every fit keeps to one, unless the user set
    ``OPENBLAS_NUM_THREADS``. A sparse matrix's products do not use BLAS at all. Large dense fits on
    more CPUs keep every thread. The limit is threadpoolctl's (scikit-learn's own
    dependency), and it lasts only for the block."""
    import contextlib

    from threadpoolctl import threadpool_limits

    shape = getattr(X, "shape", None)
    sparse = hasattr(X, "nnz")
    small = shape is not None and len(shape) == 2 and shape[0] * shape[1] <= SMALL_FIT_CELLS
    if sparse or small or ("OPENBLAS_NUM_THREADS" not in os.environ  # the user's own choice wins
                            and usable_cpus() <= FEW_CPUS):  # read only when the size does not decide
        return threadpool_limits(limits=1, user_api="blas")
    return contextlib.nullcontext()


class TunedLogisticRegression(ClassifierMixin, BaseEstimator):
    """Logistic regression that chooses C from its training set when ``C`` is not given.

    With few labels the usual C=1 over-regularises (a 10-label text task: 0.42 against 0.64
    at C=10). So: stratified ``cv``-fold cross-validation of the log-loss over ``Cs``, then
    one fit on everything with the best C. Above ``cv_max_items`` training items the
    cross-validation runs on a stratified random subset of that many (seeded by
    ``random_state``), so a view refitted many times a round (cross-validation over gold)
    stays cheap on a growing pseudo-labelled set; a fixed C there (``large_C``, the old
    default of 1.0) cost co-training on image segments 8 points, since once the pseudo-labels
    passed 300 items each view fell from its tuned C=10-100 to C=1. ``large_C``, when given,
    is used untuned above ``cv_max_items``. When a class has a single item no fold can hold
    it out, and ``few_labels_C`` is used. ``C_`` records the C used and ``cv_scores_`` the
    mean log-loss per C when tuned.

    ``score_on``: which rows judge a C. ``trusted`` (default): when ``fit`` is told which
    rows are trusted (gold or reviewed; the views read it from the orchestrator's label
    sources, ``views.base.trusted_rows``) and some are not (pseudo-labels), the folds are
    dealt over the trusted rows only; each fold's model trains on the other folds' trusted
    rows plus every other row, and only its held-out trusted rows are scored. Pseudo-labels
    are the views' surest picks, far from the boundary, so scoring C on them prefers what
    fits easy items: on image segments at 5% gold the colour view's C then flipped from
    round to round and the ensemble fell from 0.885 at round 0 to 0.857. Each part is cut
    to a stratified subset of ``cv_max_items`` rows when larger, its weights as they are
    (scaling a cut part's weights up to the whole part's, so a fold would weigh gold against
    picks as the final fit does, was measured and not kept: image segments at 1% gold fell
    from 0.786 to 0.773, one seed by 6 points). When the trusted rows cannot be dealt into
    two folds (a class with one trusted label), ``few_labels_C`` is used. Without
    ``trusted``, with every row trusted, or with ``score_on="all"``, every row is dealt and
    scored. ``tuned_`` records whether this fit cross-validated its C (``cv_scores_`` is
    then its scores, and absent otherwise)."""

    def __init__(self, C: float | None = None, Cs: Sequence[float] = (0.1, 1.0, 10.0, 100.0), cv: int = 3,
                 cv_max_items: int = 300, few_labels_C: float = 10.0, large_C: float | None = None,
                 score_on: str = "trusted", max_iter: int = 1000,
                 tol: float = 1e-4, class_weight: Any = None, penalty: str = "l2", solver: str = "lbfgs",
                 l1_ratio: float | None = None, fit_intercept: bool = True, random_state: int | None = None) -> None:
        self.C = C
        self.Cs = Cs
        self.cv = cv
        self.cv_max_items = cv_max_items
        self.few_labels_C = few_labels_C
        self.large_C = large_C
        self.score_on = score_on
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.penalty = penalty
        self.solver = solver
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.random_state = random_state

    def check_params(self, combined: bool = False) -> None:
        """``ValueError`` naming the first parameter whose value cannot work: this class's own
        (numbers as ``fit`` reads them: ``float(C)``, so YAML's ``1e-2``, read as text, still
        counts), then each of ``LogisticRegression``'s by the constraints it declares.
        ``combined``: also fit that ``LogisticRegression`` on four toy rows, which is how
        scikit-learn finds a solver and penalty that do not go together (``penalty: l1`` with
        lbfgs). ``fit`` checks the values; the view that holds this head checks them combined
        before a run is stored, so ``C: -1`` is refused in one line, not by a failed round 0."""
        if self.C is not None:
            checked_number("C", self.C, above=0, text_ok=True)
        if isinstance(self.Cs, (str, bytes)) or not hasattr(self.Cs, "__len__") or not len(self.Cs):
            raise ValueError(f"Cs must be a non-empty list of numbers above 0, not {self.Cs!r}")
        for c in self.Cs:
            checked_number("each of Cs", c, above=0, text_ok=True)
        checked_number("cv", self.cv, whole=True, low=1)
        checked_number("cv_max_items", self.cv_max_items, whole=True, low=2)
        checked_number("few_labels_C", self.few_labels_C, above=0, text_ok=True)
        if self.large_C is not None:
            checked_number("large_C", self.large_C, above=0, text_ok=True)
        if self.score_on not in ("trusted", "all"):
            raise ValueError(f"score_on must be 'trusted' or 'all', not {self.score_on!r}")
        lr = self._lr(float(self.C) if self.C is not None else 1.0)
        validate = getattr(lr, "_validate_params", None)  # scikit-learn >= 1.2; fit checks the same
        if callable(validate):
            validate()
        if combined:
            import warnings

            lr.set_params(class_weight=None)  # a dict names the task's classes, not the toy rows'
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lr.fit(np.array([[0.0], [1.0], [0.0], [1.0]]), np.array([0, 1, 0, 1]))

    def _lr(self, C: float) -> Any:
        from sklearn.linear_model import LogisticRegression

        kw: dict[str, Any] = {"C": C, "max_iter": self.max_iter, "tol": self.tol, "class_weight": self.class_weight,
                              "solver": self.solver, "fit_intercept": self.fit_intercept,
                              "random_state": self.random_state}
        if self.penalty != "l2":
            kw["penalty"] = self.penalty
        if self.l1_ratio is not None:
            kw["l1_ratio"] = self.l1_ratio
        return LogisticRegression(**kw)

    def _choose_C(self, X: Any, y: np.ndarray, w: np.ndarray, trusted: np.ndarray | None) -> float:
        if self.C is not None:
            return float(self.C)
        from sklearn.model_selection import StratifiedKFold  # a fixed C needs none of it
        if len(y) > self.cv_max_items and self.large_C is not None:
            return float(self.large_C)
        seed = self.random_state or 0
        scored, extra = (self._capped(part, y, seed) for part in self._cv_rows(len(y), trusted))
        ys = y[scored]
        counts = np.unique(ys, return_counts=True)[1]
        folds = int(min(self.cv, counts.min()))
        if folds < 2:
            return float(self.few_labels_C)
        split = StratifiedKFold(folds, shuffle=True, random_state=seed)
        Cs = sorted(map(float, self.Cs))
        loss = np.zeros(len(Cs))
        for tr, te in split.split(np.zeros(len(ys)), ys):
            rows, held = np.concatenate([scored[tr], extra]), scored[te]
            for i, C in enumerate(Cs):
                m = self._lr(C).fit(X[rows], y[rows], sample_weight=w[rows])
                loss[i] += _log_loss(y[held], m.predict_proba(X[held]), m.classes_, w[held])
        self.cv_scores_ = dict(zip(Cs, (loss / folds).tolist()))
        self.tuned_ = True
        return Cs[int(np.argmin(loss))]

    def _capped(self, part: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
        """``part``, or a stratified subset of ``cv_max_items`` of its rows."""
        if len(part) <= self.cv_max_items:
            return part
        return part[_stratified_subset(y[part], int(self.cv_max_items), seed)]

    def _cv_rows(self, n: int, trusted: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(rows dealt into folds and scored, rows only ever trained on): see ``score_on``."""
        if self.score_on == "trusted" and trusted is not None:
            t = np.asarray(trusted, dtype=bool)
            if t.any() and not t.all():
                return np.flatnonzero(t), np.flatnonzero(~t)
        return np.arange(n), np.zeros(0, dtype=np.int64)

    def fit(self, X: Any, y: np.ndarray, sample_weight: np.ndarray | None = None,
            trusted: np.ndarray | None = None) -> TunedLogisticRegression:
        """Choose C (see the class) and fit. ``trusted``: (n,) bool, the rows whose label is
        gold or reviewed."""
        y = np.asarray(y)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        self.check_params()
        if trusted is not None and len(trusted) != len(y):
            raise ValueError(f"trusted has {len(trusted)} rows, y {len(y)}")
        self.tuned_ = False
        self.__dict__.pop("cv_scores_", None)  # a refit of this object keeps no earlier scores
        with one_blas_thread_if_small(X):
            self.C_ = self._choose_C(X, y, w, trusted)
            self.model_ = self._lr(self.C_).fit(X, y, sample_weight=w)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.model_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        return self.model_.predict(X)


def _stratified_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted positions of about ``n`` items of ``y``, each class in its share of ``y`` (at
    least ``min(2, its count)`` items, so a fold can still hold it out), drawn at random."""
    rng = np.random.default_rng(seed)
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    take = np.maximum(np.minimum(2, counts), np.floor(counts * n / len(y)).astype(np.int64))
    parts = [rng.choice(np.flatnonzero(inv == c), int(t), replace=False) for c, t in enumerate(take)]
    return np.sort(np.concatenate(parts))


def _log_loss(y: np.ndarray, proba: np.ndarray, classes: np.ndarray, w: np.ndarray) -> float:
    """Weighted mean log-loss of ``proba`` (columns in ``classes`` order) against ``y``, whose
    labels are all among ``classes`` (stratified folds guarantee it). sklearn's ``log_loss``
    validates its input at a cost that dominated the tuning of a small head."""
    p = proba[np.arange(len(y)), np.searchsorted(classes, y)]
    return float(-(w * np.log(np.clip(p, 1e-15, 1.0))).sum() / w.sum())


class RoundC:
    """The C a view's :class:`TunedLogisticRegression` chose by cross-validation at its first
    large fit (over ``cv_max_items`` items) of a round, reused by that round's later fits:
    the cross-validation folds over gold and the final fit differ by a few gold items, and
    tuning each of them cost a six-view run a minute a round. Reset every round
    (``set_round``), so a resumed round makes the same choice as an uninterrupted one; a
    fit whose size is more than a quarter away from the tuned one tunes afresh (a view
    used on its own, never told of rounds, does not carry a C to other data)."""

    def __init__(self) -> None:
        self.C: float | None = None
        self.n = 0

    def reset(self) -> None:
        self.C, self.n = None, 0

    def before(self, est: Any, n: int) -> None:
        """Give ``est`` (about to fit ``n`` items) the round's C, if it would tune one."""
        if self.C is not None and _tunes_large(est, n) and 0.75 * self.n <= n <= 1.25 * self.n:
            est.set_params(C=self.C)

    def after(self, est: Any, n: int) -> None:
        """Remember the C ``est`` tuned on ``n`` items (a large fit that cross-validated; not
        ``few_labels_C``, which a fold of the cross-validation over gold that leaves a class
        one trusted label falls back to, and which the round's later fits need not share)."""
        if _tunes_large(est, n) and getattr(est, "tuned_", False):
            self.C, self.n = float(est.C_), n


def _tunes_large(est: Any, n: int) -> bool:
    return isinstance(est, TunedLogisticRegression) and est.C is None and est.large_C is None \
        and n > est.cv_max_items


def head_fit_params(head: Any, trusted: np.ndarray | None) -> dict[str, Any]:
    """Keyword arguments for ``head.fit`` beyond the weights: the trusted rows, for a head
    that scores its C on them (:class:`TunedLogisticRegression`)."""
    if trusted is None or not isinstance(head, TunedLogisticRegression):
        return {}
    # a user's subclass may have kept the older fit(X, y, sample_weight)
    return {"trusted": trusted} if has_fit_parameter(head, "trusted") else {}


def check_view_head(view: str, kind: str, params: dict[str, Any]) -> None:
    """:func:`check_head` for view ``view``: ``ViewError`` naming the view and the head."""
    from store.errors import ViewError
    from views.checked import numbers_as_text

    try:
        check_head(kind, params)
    except ValueError as exc:
        raise ViewError(view, f"head '{kind}': {exc}{numbers_as_text(params, str(exc))}") from None


def check_head(kind: str, params: dict[str, Any]) -> None:
    """``ValueError`` when ``params`` do not fit a head of ``kind``: a name it does not take, or
    a value it cannot work with (its ``check_params``). The embedding and vision views call it
    when they resolve their fields, before a run is stored and before the pool is encoded;
    without it a typo in ``head_params`` failed the first fit, after the encoding."""
    import inspect

    cls = MLPHead if kind == "mlp" else TunedLogisticRegression
    takes = [p for p in inspect.signature(cls).parameters if p != "seed"]  # the run's seed seeds an MLP
    unknown = sorted(set(params) - set(takes))
    if unknown:
        raise ValueError(f"head_params {', '.join(map(repr, unknown))}: not a parameter of this head "
                         f"(it takes {', '.join(takes)})")
    make_head(kind, params, 0).check_params(combined=True)


def make_head(kind: str, params: dict[str, Any], seed: int) -> Any:
    """A fresh, unfitted head of ``kind`` with the user's ``params``, seeded by ``seed``."""
    if kind == "mlp":
        return MLPHead(seed=seed, **params)
    return TunedLogisticRegression(**{"random_state": seed, **params})
