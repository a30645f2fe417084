"""The parameters of each built-in view kind: one pydantic model per kind, the one place
their names, types, bounds and defaults live.

Each view class names its model as ``Params`` (``SklearnView.Params is SklearnParams``) and
is built from a validated instance; the config loader validates a view's keys against the
same model (``views.registry.params_model``) and keeps the result, so nothing is checked or
defaulted twice. This module imports pydantic and constants only (no model code), so
validating a config stays cheap. A plug-in kind may declare its own ``Params`` (a subclass
of :class:`ViewParams`); one that does not gets its parameters as keyword arguments.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from views.checked import CheckedModel

from views.encoders import DEFAULT_TEXT_ENCODER
from views.llm.local import DEFAULT_MODEL
from views.vision.encoders import DEFAULT_IMAGE_ENCODER
from views.vision.images import IMAGENET_MEAN, IMAGENET_STD


class ViewParams(CheckedModel):
    """Base of a view kind's parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class SklearnParams(ViewParams):
    """``columns`` / ``column_prefix`` / ``text``: what the view reads (exactly one);
    ``estimator``: a built-in name or a dotted class path, with ``estimator_params``;
    ``scale``: standardise numeric columns first (default: yes for column input);
    ``tfidf``: ``TfidfVectorizer`` arguments when reading text; ``calibration``:
    ``sigmoid`` | ``isotonic`` wraps the model in ``CalibratedClassifierCV``."""

    columns: list[str] | None = None
    column_prefix: str | None = None
    text: str | None = None
    estimator: str = "logistic_regression"
    estimator_params: dict[str, Any] = Field(default_factory=dict)
    scale: bool | None = None
    tfidf: dict[str, Any] = Field(default_factory=dict)
    calibration: Literal["sigmoid", "isotonic"] | None = None
    calibration_cv: int = Field(default=3, ge=2)

    @model_validator(mode="after")
    def _one_input(self) -> SklearnParams:
        given = [k for k in ("columns", "column_prefix", "text") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of 'columns', 'column_prefix' or 'text'")
        return self


class GraphParams(ViewParams):
    """Label spreading over a k-nearest-neighbour graph (``views.graph.GraphView``).

    ``columns`` / ``column_prefix`` / ``text`` / ``image``: what the view reads (exactly one); a
    text field is embedded with ``encoder`` (``features: embedding``, the default) or TF-IDF
    (``features: tfidf``); an image field with the image ``encoder`` (MobileNetV2 by default)
    at ``image_size``, resolved against ``image_root``: the vectors a ``vision`` view with the
    same encoder, size and root computes, read from the same cache. An item whose image
    cannot be read abstains. ``n_neighbors``: edges per item; ``alpha``: how much an item takes
    from its neighbours rather than its own label (scikit-learn's clamping factor);
    ``max_iter``: propagation steps (an item further than this many hops from every labelled
    item abstains); ``scale``: standardise numeric columns; ``small_max_items``: graphs of at
    most this many items use scikit-learn's ``LabelSpreading``, larger ones a sparse graph."""

    columns: list[str] | None = None
    column_prefix: str | None = None
    text: str | None = None
    image: str | None = None
    features: Literal["embedding", "tfidf"] = "embedding"
    encoder: str | None = None  # DEFAULT_TEXT_ENCODER for text, DEFAULT_IMAGE_ENCODER for images
    image_size: int = Field(default=224, ge=16, le=1024)
    image_root: str | None = None
    n_neighbors: int = Field(default=10, ge=1, le=1000)
    alpha: float = Field(default=0.2, gt=0.0, lt=1.0)
    max_iter: int = Field(default=30, ge=1, le=10_000)
    scale: bool = True
    small_max_items: int = Field(default=20_000, ge=0)

    @model_validator(mode="after")
    def _one_input(self) -> GraphParams:
        given = [k for k in ("columns", "column_prefix", "text", "image") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of 'columns', 'column_prefix', 'text' or 'image'")
        if not self.text and "features" in self.model_fields_set:
            raise ValueError("'features' applies to a 'text' field only")
        if not (self.text or self.image) and "encoder" in self.model_fields_set:
            raise ValueError("'encoder' applies to a 'text' or 'image' field only")
        if not self.image and {"image_size", "image_root"} & self.model_fields_set:
            raise ValueError("'image_size' and 'image_root' apply to an 'image' field only")
        return self

    @property
    def encoder_name(self) -> str:
        """The encoder in use: the one given, else the text or image default."""
        return self.encoder or (DEFAULT_IMAGE_ENCODER if self.image else DEFAULT_TEXT_ENCODER)


class EmbeddingParams(ViewParams):
    """``text``: the field to encode; ``encoder``: a packaged name or model folder;
    ``head`` with ``head_params``; ``batch_size`` (encoder batch); ``normalize`` (unit
    vectors); ``device`` (default: CUDA when available); ``cache``: keep vectors in the
    store's feature cache (``auto``: unless the encoder runs on CUDA, where encoding again
    is faster than reading the cache; false: encode every round)."""

    text: str
    encoder: str = DEFAULT_TEXT_ENCODER
    head: Literal["logistic_regression", "mlp"] = "logistic_regression"
    head_params: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(default=64, ge=1)
    normalize: bool = True
    device: Literal["cpu", "cuda"] | None = None
    cache: bool | Literal["auto"] = "auto"


class VisionParams(ViewParams):
    """A frozen image encoder + head. ``encoder``: ``mobilenet_v2`` (packaged ImageNet weights)
    or a dotted path to a torch module / factory called with ``encoder_params``."""

    image: str
    encoder: str = DEFAULT_IMAGE_ENCODER
    encoder_params: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None
    tokenizer: str | None = None
    tokenizer_params: dict[str, Any] = Field(default_factory=dict)
    prompt: str = "a photo of a {label}."
    backend: Literal["auto", "torch", "onnx"] = "auto"
    image_size: int = Field(default=224, ge=16, le=1024)
    resize: Literal["stretch", "center_crop"] = "stretch"
    mean: list[float] = Field(default_factory=lambda: list(IMAGENET_MEAN), min_length=3, max_length=3)
    std: list[float] = Field(default_factory=lambda: list(IMAGENET_STD), min_length=3, max_length=3)
    head: Literal["logistic_regression", "mlp"] = "logistic_regression"
    head_params: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(default=64, ge=1)
    device: Literal["cpu", "cuda"] | None = None
    threads: int | None = Field(default=None, ge=1)
    image_root: str | None = None

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: list[float]) -> list[float]:
        if min(v) <= 0:
            raise ValueError("std values must be > 0")
        return v


class DemonstrationParams(ViewParams):
    """Few-shot examples for an ``llm`` view, drawn each round from what it trains on.

    ``from_pseudo``: by default only gold and reviewed items demonstrate, since a
    demonstration puts an item's text into other items' prompts and a pseudo-labelled
    item's text is untrusted pool data (it may carry an injected instruction). ``true``
    also draws from the items the other views pseudo-labelled.
    """

    strategy: Literal["none", "balanced", "knn"] = "none"
    k: int = Field(default=4, ge=1, le=64)
    max_tokens: int = Field(default=512, ge=1)
    encoder: str = DEFAULT_TEXT_ENCODER
    text: str | None = None
    from_pseudo: bool = False


class PriceParams(ViewParams):
    """Dollars per million prompt (input) and completion (output) tokens."""

    input_per_mtok: float = Field(default=0.0, ge=0.0)
    output_per_mtok: float = Field(default=0.0, ge=0.0)


class LLMParams(ViewParams):
    """A prompted LLM (``views.llm.view.LLMView``): ``model`` (a litellm model string or an
    embedded ``local:<name>``), ``api_base``, ``api_key_env`` (the *name* of the variable
    holding the key: a key itself is refused); ``fields`` the prompt shows, ``instructions``,
    ``system``, ``template`` (Jinja), ``verbalizers`` (``{label: [words]}``, a single word
    allowed); scoring; ``demonstrations``; ``calibration``; client limits (``concurrency``, and
    ``max_concurrency`` above it to adapt between the two: AIMD on 429s, timeouts and latency,
    for remote servers; a ``local:`` model keeps ``concurrency``); ``price`` and
    ``budget_usd``; ``n_ctx`` and ``threads`` for local models. ``backend`` (local models):
    ``server`` (the embedded llama.cpp server, one request per slot), ``transformers``
    (label-word scoring in this process, ``max_batch`` prompts per forward pass, on CUDA when
    available: ``views.llm.batched``) or ``vllm`` (the same scoring by vLLM's offline engine on a
    CUDA GPU: ``views.llm.vllm_model``)."""

    model: str = Field(default=DEFAULT_MODEL, min_length=1)
    fields: list[str] = Field(min_length=1)
    api_base: str | None = None
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    instructions: str = ""
    system: str | None = None
    template: str | None = None
    verbalizers: dict[str, list[str]] = Field(default_factory=dict)
    scoring: Literal["auto", "logprobs", "sample"] = "auto"
    samples: int = Field(default=5, ge=1, le=64)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_logprobs: int = Field(default=20, ge=1, le=20)
    max_answer_tokens: int = Field(default=48, ge=1)
    demonstrations: DemonstrationParams = Field(default_factory=DemonstrationParams)
    calibration: Literal["none", "bias", "temperature", "both"] = "none"
    calibration_max_items: int = Field(default=200, ge=2)
    concurrency: int = Field(default=4, ge=1, le=256)
    max_concurrency: int | None = Field(default=None, ge=1, le=4096)
    rate_limit: float | None = Field(default=None, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=20)
    backoff_s: float = Field(default=0.5, ge=0)
    price: PriceParams | None = None
    budget_usd: float | None = Field(default=None, ge=0)
    n_ctx: int = Field(default=8192, ge=256)
    threads: int | None = Field(default=None, ge=1)
    backend: Literal["server", "transformers", "vllm"] = "server"
    max_batch: int = Field(default=32, ge=1, le=4096)

    @model_validator(mode="after")
    def _backend(self) -> LLMParams:
        if self.backend != "server" and not self.model.startswith("local:"):
            raise ValueError(f"backend '{self.backend}' runs an embedded local:<name> model; a remote model is "
                             "served by its own server")
        if self.backend != "server" and self.scoring == "sample":
            raise ValueError(f"backend '{self.backend}' scores label words: use scoring logprobs or auto")
        return self

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict) and "api_key" in data:
            raise ValueError("api_key must not be written in a config (it would be stored with the run); "
                             "put the key in an environment variable and name it in api_key_env")
        if isinstance(data, dict) and isinstance(data.get("verbalizers"), dict):
            data = {**data, "verbalizers": {k: [v] if isinstance(v, str) else v
                                            for k, v in data["verbalizers"].items()}}
        return data
