"""The run configuration: YAML validated by pydantic, in one place.

Every error becomes a ``ConfigError`` naming the key (``views[1].kind``) and what was
expected, on one line. Relative paths are resolved against the config file's folder.
"""
from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from orchestrator.config_yaml import check_config_size, read_yaml
from orchestrator.debate_config import AgentConfig, DebateConfig
from orchestrator.engine_config import EngineConfig
from orchestrator.escalation_config import ESCALATED, EscalationConfig
from store.errors import ConfigError, DataError
from store.secrets import find_secret, redact
from views.checked import CheckedModel
from views.registry import BUILTIN_KINDS, params_model


class _Strict(CheckedModel):
    model_config = ConfigDict(extra="forbid")


class LabelSpec(_Strict):
    """A class of the task. ``description`` is used by LLM views' prompts."""

    name: str = Field(min_length=1)
    description: str | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _as_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("name")
    @classmethod
    def _trimmed(cls, v: str) -> str:
        # the loader trims the label cells it reads, so 'cat ' could never match a cell
        if v != v.strip():
            raise ValueError(f"label {v!r} starts or ends with whitespace; labels read from the data are trimmed")
        return v


#: Names the store gives to what is not a view (metrics' ``ensemble``, label sources, policies):
#: a view may not take one, or its rows would mix with theirs and ``--source`` would mean both.
RESERVED_VIEW_NAMES = ("ensemble", "gold", "review", "pseudo", "debate", "disputed", "unlabelled", ESCALATED, "auto",
                       "threshold", "k_best", "agreement", "self")


class TaskConfig(_Strict):
    labels: list[LabelSpec] = Field(min_length=2, max_length=32_000)  # label indices are int16

    @field_validator("labels", mode="before")
    @classmethod
    def _names_allowed(cls, v: Any) -> Any:
        if isinstance(v, list):
            for x in v:
                if isinstance(x, bool):
                    raise ValueError(f"label {x} is a YAML boolean (an unquoted yes, no, true, false, on or off): "
                                     "quote it")
            return [{"name": x} if isinstance(x, (str, int, float)) else x for x in v]
        return v

    @field_validator("labels")
    @classmethod
    def _unique(cls, v: list[LabelSpec]) -> list[LabelSpec]:
        forms: dict[str, str] = {}  # NFC form -> the label declared in it
        for spec in v:
            form = unicodedata.normalize("NFC", spec.name)  # data in either form names one of them
            if forms.get(form) == spec.name:
                raise ValueError(f"label '{spec.name}' is declared twice")
            if form in forms:  # (store.items.label_spelling), so two such labels are one
                raise ValueError(f"labels {ascii(forms[form])} and {ascii(spec.name)} are the same text in two "
                                 "Unicode forms")
            forms[form] = spec.name
        return v

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.labels]


class DataConfig(_Strict):
    """Where items come from. ``train`` holds labelled and unlabelled items (empty label =
    unlabelled); held-out test items come from ``test`` or rows whose ``split_column``
    equals ``test_value``. Test items are used for evaluation only. A folder (format
    ``images``) is read as ``<folder>/<label>/*.png`` with an ``unlabelled/`` folder: columns
    ``image`` (path relative to the folder's parent, also the item id) and the label column."""

    train: str
    test: str | None = None
    format: Literal["auto", "csv", "jsonl", "parquet", "images"] = "auto"
    id_column: str | None = None
    label_column: str = "label"
    split_column: str | None = None
    test_value: str = "test"

    @model_validator(mode="after")
    def _distinct_columns(self) -> DataConfig:
        """The label, id and split columns are three different columns: a split column that
        is the label column made every held-out row a gold one."""
        seen: dict[str, str] = {}
        for key in ("label_column", "id_column", "split_column"):
            if (v := getattr(self, key)) is not None:
                if v in seen:
                    raise ValueError(f"data.{key} and data.{seen[v]} both name the column {v!r}")
                seen[v] = key
        return self

    @model_validator(mode="after")
    def _test_value_needs_a_split_column(self) -> DataConfig:
        """``test_value`` alone marked nothing: without ``split_column`` every row trained, the
        held-out ones as gold labels, and the run said "0 test items" (a probe's finding)."""
        if "test_value" in self.model_fields_set and self.split_column is None:
            raise ValueError("data.test_value needs data.split_column, the column whose value marks a test row "
                             "(without it no row is held out and test rows train as gold)")
        return self


class ViewConfig(CheckedModel):
    """A view: ``name``, ``kind`` (built-in or ``package.module:Class``) and its parameters
    as further keys of the same mapping.

    A built-in kind's parameters are validated here by the kind's ``Params`` model
    (``views.params``) and the validated model is kept (:attr:`validated`): the view is built
    from it, so nothing is checked or defaulted twice. A plug-in kind's module is not
    imported while a config loads; its parameters are checked when the view is built (by its
    ``Params`` if it declares one)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str = Field(min_length=1)
    _validated: BaseModel | None = PrivateAttr(default=None)

    @property
    def params(self) -> dict[str, Any]:
        """The parameters as written in the config (what the run's snapshot stores)."""
        return dict(self.model_extra or {})

    @property
    def validated(self) -> BaseModel | None:
        """The parameters validated by the kind's ``Params`` model (None for a plug-in kind)."""
        return self._validated

    @property
    def view_params(self) -> BaseModel | dict[str, Any]:
        """What the view is built from: the validated model, else the raw parameters."""
        return self._validated if self._validated is not None else self.params

    @model_validator(mode="after")
    def _known_kind(self) -> ViewConfig:
        if self.kind in BUILTIN_KINDS:
            model = params_model(self.kind)
            assert model is not None
            self._validated = model.model_validate(self.params)
        elif ":" not in self.kind and "." not in self.kind:
            raise ValueError(f"unknown view kind '{self.kind}' (built-in: {', '.join(BUILTIN_KINDS)}; "
                             "a plug-in is 'package.module:Class')")
        return self


class CotrainConfig(_Strict):
    """How rounds run.

    ``policy``: ``auto`` (default) selects on the views' combined evidence, class by class
    with adaptive per-class bars, as many items per round as spread the pool over the
    remaining rounds, each pick's p_correct reaching ``min_precision`` (a class none of whose
    candidates does keeps its single best while the batch's mean does), and stops when no
    pick qualifies; or an explicit ``threshold`` | ``k_best`` | ``agreement`` | ``self``
    (self-training baseline: each view trains only on its own picks). ``combination``: how
    the views' probabilities become one posterior, the evaluated ensemble and the veto
    (``auto``: ``product`` unless ``mean``, ``label_model`` or ``best_view`` is clearly better).
    ``calibration_folds``: gold folds that estimate each view's accuracy and calibrate
    p_correct (0: none; p_correct is then the uncalibrated posterior). ``shadows``:
    replay the rounds per fold without its gold, so the folds score co-training honestly
    (``orchestrator/shadows.py``); ``auto``: under ``policy: auto`` unless an LLM view uses demonstrations.
    ``select``: how ``auto`` ranks a class's candidates: by the combined ``posterior``, or by
    Lang et al.'s ``cut_statistic`` in ``cut_view``'s feature space (``cut_neighbors``
    neighbours; default: the first view with features), for a badly calibrated labeller. ``feeding``: cross (a view's picks train only the other views) |
    shared (one growing labelled set). ``pseudo_weight``: a pseudo-label's sample weight
    (gold: 1), or ``confidence``; ``auto``: 0.1 under ``policy: auto`` (its sure picks, far
    from the boundary, outnumber the gold and pull the views off it), else 1.0 (as
    ``SelfTrainingClassifier``). ``align_pseudo_labels``: in training, scale down the weights
    of a class's pseudo-labels beyond its share of the gold labels
    (``selection.aligned_scale``); ``auto``: under ``policy: auto`` only, so an explicit
    policy stays the classic algorithm it names. ``data_in_memory``: hold the fields views read across
    rounds (``true``), read them per batch (``false``), or ``auto``: hold them when they
    take at most a quarter of the memory available at the start."""

    max_rounds: int = Field(default=10, ge=0, le=100_000)
    policy: Literal["auto", "threshold", "k_best", "agreement", "self"] = "auto"
    combination: Literal["auto", "product", "label_model", "mean", "best_view"] = "auto"
    min_precision: float = Field(default=0.9, gt=0.0, lt=1.0)
    calibration_folds: int = Field(default=5, ge=0, le=20)
    shadows: bool | Literal["auto"] = "auto"
    select: Literal["posterior", "cut_statistic"] = "posterior"
    cut_view: str | None = None
    cut_neighbors: int = Field(default=20, ge=2, le=1000)
    threshold: float = Field(default=0.9, ge=0.0, lt=1.0)
    k: int = Field(default=10, ge=1, le=10**9)
    min_agree: int = Field(default=2, ge=1)
    feeding: Literal["cross", "shared"] = "cross"
    veto: Literal["ensemble", "none"] = "ensemble"
    pseudo_weight: float | Literal["confidence", "auto"] = "auto"
    align_pseudo_labels: bool | Literal["auto"] = "auto"
    pool_sample: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=50_000, ge=1)
    store_predictions: bool = True
    data_in_memory: bool | Literal["auto"] = "auto"

    @field_validator("calibration_folds", "pseudo_weight")
    @classmethod
    def _check(cls, v: Any, info: ValidationInfo) -> Any:
        if info.field_name == "calibration_folds" and v == 1:
            raise ValueError("must be 0 (no cross-validation) or at least 2")
        if info.field_name == "pseudo_weight" and isinstance(v, float) and not v > 0:
            raise ValueError("must be > 0, 'confidence' or 'auto'")
        return v

    @model_validator(mode="after")
    def _resolve(self) -> CotrainConfig:
        if self.shadows is True and self.calibration_folds < 2:  # a shadow run is one per gold fold
            raise ValueError("shadows: true needs calibration_folds of at least 2 (one shadow run per gold fold)")
        if self.pseudo_weight == "auto":  # stored resolved, so the run's snapshot says what was used
            self.pseudo_weight = 0.1 if self.policy == "auto" else 1.0
        if self.align_pseudo_labels == "auto":
            self.align_pseudo_labels = self.policy == "auto"
        return self


class Config(_Strict):
    task: TaskConfig
    data: DataConfig
    views: list[ViewConfig] = Field(min_length=1)
    cotrain: CotrainConfig = Field(default_factory=CotrainConfig)
    debate: DebateConfig | None = None
    escalate: EscalationConfig | None = None
    engine: EngineConfig = Field(default_factory=EngineConfig)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    store: str = "cotrain.duckdb"

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        """Backstop for configs built in Python without ``parse_config``."""
        found = find_secret(data) if isinstance(data, dict) else None
        if found is not None:
            raise ValueError(f"{found[0]}: {found[1]}; put the secret in an environment variable and name it "
                             "in api_key_env")
        return data

    @field_validator("views")
    @classmethod
    def _unique_views(cls, v: list[ViewConfig]) -> list[ViewConfig]:
        names = [x.name for x in v]
        for n in names:
            if names.count(n) > 1:
                raise ValueError(f"view name '{n}' is used twice")
            if n in RESERVED_VIEW_NAMES:  # a view 'ensemble' filed its scores among the combination's
                raise ValueError(f"view name '{n}' is reserved (cotrain's own names: "
                                 f"{', '.join(RESERVED_VIEW_NAMES)})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        n = len(self.views)
        c = self.cotrain
        if self.escalate is not None and self.escalate.kind == "debate" and self.debate is None:
            raise ValueError("escalate kind 'debate' debates with the agents of a 'debate' section")
        if c.cut_view is not None and c.cut_view not in [v.name for v in self.views]:
            raise ValueError(f"cotrain.cut_view '{c.cut_view}' is not a view of this config")
        if c.select == "cut_statistic" and c.policy != "auto":
            raise ValueError("cotrain.select 'cut_statistic' ranks the candidates of policy 'auto'")
        if c.combination == "label_model" and n < 3:  # it ran, and accepted nothing (a probe's finding)
            raise ValueError(f"cotrain.combination 'label_model' needs at least 3 views ({n} configured): the votes "
                             "of fewer do not identify a label model; use 'product' or 'auto'")
        if c.policy == "agreement" and c.min_agree > n:
            raise ValueError(f"cotrain.min_agree={c.min_agree} but only {n} view(s) are configured")
        if c.policy in ("threshold", "k_best") and c.feeding == "cross" and n < 2:
            raise ValueError("cotrain.feeding 'cross' needs at least 2 views; use policy 'self' for one view")
        return self

    # ------------------------------------------------------------------ helpers
    def snapshot(self) -> dict[str, Any]:
        """The config as JSON-ready data, view params included, credentials redacted (the
        loader refuses them; this is what is stored with the run and shown in reports)."""
        return redact(json.loads(self.model_dump_json()))

    def fingerprint(self, data_digest: str = "", *, with_paths: bool = False) -> str:
        """Hash of what determines a run's result: the config (store path and engine
        excluded) and, when given, the digest of the data files' contents, which then stands
        for the files' paths (a project folder copied or moved resumes and finds its runs;
        ``with_paths`` keeps the paths in, as runs made before were hashed)."""
        snap = self.snapshot()
        snap.pop("store", None)
        snap.pop("engine", None)
        if data_digest and not with_paths:  # an image folder's items are named by its path: it stays
            keep = {k for k in ("train", "test") if (v := snap["data"].get(k)) and Path(v).is_dir()}
            snap["data"] = {k: v for k, v in snap["data"].items() if k not in ("train", "test") or k in keep}
        snap["__data"] = data_digest
        return hashlib.sha256(json.dumps(snap, sort_keys=True).encode()).hexdigest()[:16]

    def fingerprints(self) -> tuple[str, str]:
        """(this run's fingerprint, the one an earlier release gave the same config and data)."""
        return self.fingerprint(d := self.data_digest()), self.fingerprint(d, with_paths=True)

    def data_digest(self) -> str:
        """sha256 over the bytes of the train (and test) files, or of every file with its
        relative path for an image folder. A missing file is the data's error (resuming
        without it said the config or data had changed)."""
        h = hashlib.sha256()
        for path in (self.data.train, self.data.test):
            if path and not Path(path).exists():
                raise DataError("file not found", path)
            p = Path(path) if path else None
            files = sorted(f for f in p.rglob("*") if f.is_file()) if p is not None and p.is_dir() else [p]
            for file in files:
                if file is None or not file.is_file():
                    continue
                if p is not None and p.is_dir():
                    h.update(str(file.relative_to(p)).encode() + b"\0")
                with open(file, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
            h.update(b"\0")
        return h.hexdigest()[:16]


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "<root>"


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    return _loc(tuple(err["loc"])), msg


def parse_config(data: Any, source: str | None = None, base_dir: Path | None = None) -> Config:
    """Validate a mapping into a ``Config``; resolve data/store paths against ``base_dir``."""
    if not isinstance(data, dict):
        raise ConfigError("<root>", "expected a mapping with keys task, data, views", source)
    check_config_size(data, source)  # before any walk: a YAML alias bomb never ended one
    secret = find_secret(data)
    if secret is not None:
        raise ConfigError(secret[0], f"{secret[1]}; a config is stored with the run and shown in reports, so put "
                          "the secret in an environment variable and name it in api_key_env", source)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        key, msg = _first_error(exc)
        raise ConfigError(key, msg, source) from None
    if base_dir is not None:
        d = cfg.data
        d.train = str((base_dir / d.train).resolve()) if not Path(d.train).is_absolute() else d.train
        if d.test and not Path(d.test).is_absolute():
            d.test = str((base_dir / d.test).resolve())
        if cfg.store != ":memory:" and not Path(cfg.store).is_absolute():
            cfg.store = str((base_dir / cfg.store).resolve())
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("<file>", "is a folder, not a config file" if p.is_dir() else "config file not found",
                          str(p))
    data = read_yaml(p)
    return parse_config(data, source=str(p), base_dir=p.parent.resolve())


def resolve_config(config: str | Path | Config | dict[str, Any]) -> tuple[Config, Path]:
    """A validated config and the folder its relative paths resolve against (file, mapping or Config)."""
    if isinstance(config, Config):
        return config, Path.cwd()
    if isinstance(config, dict):
        return parse_config(config, base_dir=Path.cwd()), Path.cwd()
    p = Path(config)
    return load_config(p), p.parent.resolve()
