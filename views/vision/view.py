"""``vision`` view kind: a frozen pretrained image encoder plus a small trainable head.

Each image is decoded (Pillow, RGB), resized and normalised, and encoded once: features are
kept in the store's feature cache keyed by the encoder, the preprocessing and the hash of
the image's bytes, so later rounds, resumed runs and other runs never re-encode. An item
whose image is missing, truncated or not an image abstains, with a warning naming the file,
and is filed in ``item_problems`` (counted by ``cotrain status``); the run goes on.

With a CLIP-like encoder (``encode_image`` + ``encode_text`` + a tokenizer) the view gives
zero-shot probabilities from label prompts until it has something to train on.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from store.errors import ViewError
from views.base import ParamsView, ViewContext, abstain, build_params, expand_proba, item_ids, trusted_rows
from views.heads import RoundC, check_view_head, head_fit_params, make_head
from views.params import VisionParams
from views.vision.encoders import OnnxEncoder, TorchEncoder, load_torch_encoder, onnxruntime_available
from store.media import ImageProblem, resolve_source
from views.vision.images import content_key, decode, normalise

log = logging.getLogger("cotrain")


#: Unreadable images warned about one by one per view; the rest are counted in one line.
PROBLEMS_SHOWN = 5


class VisionView(ParamsView):
    """Image features from a frozen encoder + a head; parameters: :class:`VisionParams`.

    ``image``: the column holding a path, bytes or an HF image struct; ``encoder``:
    ``mobilenet_v2`` (the packaged ImageNet model) or a dotted path to a torch module or
    factory, with ``encoder_params`` and ``weights`` (a state-dict file); ``tokenizer`` and
    ``tokenizer_params`` (CLIP-like encoders); ``prompt`` (zero-shot text, ``{label}`` and
    ``{description}`` filled in); ``backend`` (``auto``: ONNX Runtime on the CPU when
    installed, else torch); ``image_size``, ``resize``, ``mean``, ``std``; ``head`` with
    ``head_params``; ``batch_size``; ``device`` (default CUDA when available); ``threads``
    (ONNX Runtime); ``image_root`` (folder relative paths resolve against, default the data
    files' folders).
    """

    Params = VisionParams

    def __init__(self, name: str, context: ViewContext, params: VisionParams) -> None:
        self.name = name
        self.context = context
        self.image = params.image
        self.encoder = params.encoder
        self.encoder_params = build_params(params.encoder_params)
        self.weights = params.weights
        self.tokenizer = params.tokenizer
        self.tokenizer_params = build_params(params.tokenizer_params)
        self.prompt = params.prompt
        self.backend = params.backend
        self.image_size = params.image_size
        self.resize = params.resize
        self.mean = tuple(params.mean)
        self.std = tuple(params.std)
        self.head = params.head
        self.head_params = build_params(params.head_params)
        self.batch_size = params.batch_size
        self.device = params.device
        self.threads = params.threads
        self.image_root = params.image_root
        self._torch: TorchEncoder | None = None
        self._runner: TorchEncoder | OnnxEncoder | None = None
        self._keys: dict[str, str] = {}          # item id -> content key, for this process
        self._bad: dict[str, ImageProblem] = {}  # item id -> why its image cannot be used
        self._text: np.ndarray | None = None
        self.head_: Any = None
        self._round_c = RoundC()
        self.classes_: np.ndarray | None = None
        self.encoded_count_ = 0    # images actually run through the encoder (cache misses)
        self.backend_used_: str | None = None

    # ------------------------------------------------------------------ checks
    def resolve_fields(self, columns: Sequence[str]) -> list[str]:
        if self.image not in columns:
            raise ViewError(self.name, f"image field '{self.image}' is not a column of the data")
        check_view_head(self.name, self.head, self.head_params)
        if self.image_root and not self._roots()[0].is_dir():  # else every image was "file not found"
            raise ViewError(self.name, f"image_root '{self.image_root}' is not a folder ({self._roots()[0]})")
        if self.backend == "onnx" and not onnxruntime_available():
            raise ViewError(self.name, "backend 'onnx' needs onnxruntime and onnx: pip install 'cotrain[vision]'")
        if self.context.dry_run:  # import the encoder, but call no user factory
            from views.vision.encoders import check_encoder

            try:
                check_encoder(self.encoder, self.tokenizer)
            except ViewError as exc:  # named after the view, not the encoder
                raise ViewError(self.name, exc.detail) from None
        else:
            self._torch_encoder()  # import, build and load weights now: a bad encoder fails before any run starts
        return [self.image]

    # ------------------------------------------------------------------ encoder
    @property
    def namespace(self) -> str:
        enc = self._torch_encoder()
        return (f"vision:{enc.identity}:size={self.image_size}:resize={self.resize}"
                f":mean={self.mean}:std={self.std}")

    def _torch_encoder(self) -> TorchEncoder:
        if self._torch is None:
            import torch

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            try:
                self._torch = load_torch_encoder(self.encoder, self.encoder_params, self.weights, self.tokenizer,
                                                 self.tokenizer_params, device, self.context.base_dir)
            except ViewError as exc:
                raise ViewError(self.name, exc.detail) from None
        return self._torch

    def _image_runner(self) -> TorchEncoder | OnnxEncoder:
        if self._runner is None:
            enc = self._torch_encoder()
            use_onnx = self.backend == "onnx" or (
                self.backend == "auto" and enc.device == "cpu" and onnxruntime_available())
            runner: TorchEncoder | OnnxEncoder = enc
            if use_onnx:
                try:
                    runner = OnnxEncoder(enc, int(self.image_size), self.threads)
                except ViewError as exc:
                    if self.backend == "onnx":
                        raise ViewError(self.name, exc.detail) from None
                    log.info("view %s: %s; running the encoder in torch", self.name, exc.detail)
            self._runner = runner
            self.backend_used_ = runner.backend
        return self._runner

    @property
    def zero_shot(self) -> bool:
        """True when the encoder has a text tower: the view labels before any training."""
        return self._torch_encoder().has_text_tower

    # ------------------------------------------------------------------ features
    def _roots(self) -> list[Path]:
        if self.image_root:
            root = Path(self.image_root).expanduser()
            return [root if root.is_absolute() else self.context.base_dir / root]
        return list(self.context.data_dirs) or [self.context.base_dir]

    def _problem(self, item_id: str, problem: ImageProblem) -> None:
        """File an unreadable image; the first ``PROBLEMS_SHOWN`` are warned about one by one
        (a wrong image_root warned 309 times), the rest in one line per call (``_features``)."""
        if item_id not in self._bad:
            self._bad[item_id] = problem
            if len(self._bad) <= PROBLEMS_SHOWN:
                log.warning("view %s: item %s abstains: %s: %s", self.name, item_id, problem.where, problem.problem)
            if self.context.problems is not None:
                self.context.problems.report(self.name, item_id, problem.problem, problem.where)

    def features(self, items: pd.DataFrame) -> np.ndarray:
        """The encoder's vectors, one row per item of ``items`` (a NaN row where the image
        cannot be read): the space a graph or the cut statistic is built in
        (``views.base.Featurizer``)."""
        X, mask = self.encode(items)
        out = np.full((len(items), X.shape[1] if mask.any() else self._dim()), np.nan, np.float32)
        if mask.any():  # none readable: X is (0, 0), and the rows stay NaN
            out[mask] = X
        return out

    def _dim(self) -> int:
        """The encoder's vector length, read from one blank image (when no item was readable)."""
        blank = np.zeros((1, 3, int(self.image_size), int(self.image_size)), dtype=np.float32)
        return int(np.asarray(self._image_runner().encode(blank)).shape[1])

    def encode(self, items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(vectors of the readable items, boolean mask of readable items over ``items``)."""
        ids = item_ids(items)
        if ids is not None:
            return self._features(items, ids)
        # no item ids (the view used on its own): positions name the items for this call only,
        # so nothing learnt about them may outlive it (another frame's row 0 is another item)
        ids = [f"#{i}" for i in range(len(items))]
        try:
            return self._features(items, ids)
        finally:
            for i in ids:
                self._keys.pop(i, None)
                self._bad.pop(i, None)

    def _features(self, items: pd.DataFrame, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        roots = self._roots()
        bad_before = len(self._bad)
        keys: list[str | None] = []
        owners: dict[str, list[int]] = {}  # content key -> positions of the items showing it
        blobs: dict[str, tuple[bytes, str]] = {}  # content key -> (bytes, where), read this call
        for pos, (item_id, value) in enumerate(zip(ids, items[self.image].tolist())):
            key = None if item_id in self._bad else self._keys.get(item_id)
            if key is None and item_id not in self._bad:
                key = self._read(item_id, resolve_source(value, roots, item_id), blobs)
            keys.append(key)
            if key is not None:
                owners.setdefault(key, []).append(pos)
        cache = self.context.cache
        namespace = self.namespace
        found = cache.get(namespace, list(owners)) if cache is not None and owners else {}
        missing = [k for k in owners if k not in found]
        for k in missing:  # memoised in an earlier call but not cached: read its bytes again
            if k not in blobs:
                pos = owners[k][0]
                self._read(ids[pos], resolve_source(items[self.image].iloc[pos], roots, ids[pos]), blobs)
        if missing:
            found.update(self._encode_missing([k for k in missing if k in blobs], blobs, owners, ids, namespace))
        mask = np.array([k is not None and k in found for k in keys], dtype=bool)
        X = np.stack([found[k] for k, ok in zip(keys, mask) if ok]) if mask.any() else np.zeros((0, 0), np.float32)
        unshown = len(self._bad) - max(bad_before, PROBLEMS_SHOWN)
        if unshown > 0:
            log.warning("view %s: %d more item(s) abstain, their images unreadable (cotrain status lists them)",
                        self.name, unshown)
        return X, mask

    def _read(self, item_id: str, src: Any, blobs: dict[str, tuple[bytes, str]]) -> str | None:
        """Read an item's image bytes; its content key, or None (filed) when unreadable."""
        try:
            data = src.read()
            if not data:
                raise ImageProblem(src.where, "no image (empty value)")
        except ImageProblem as exc:
            self._problem(item_id, exc)
            return None
        key = content_key(data)
        self._keys[item_id] = key
        blobs.setdefault(key, (data, src.where))
        return key

    def _encode_missing(self, missing: list[str], blobs: dict[str, tuple[bytes, str]],
                        owners: dict[str, list[int]], ids: list[str], namespace: str) -> dict[str, np.ndarray]:
        """Decode and encode images not in the cache, in batches, with a progress bar."""
        out: dict[str, np.ndarray] = {}
        size = int(self.image_size)
        report = self.context.progress  # the run's progress display, else a bar of our own when asked
        progress = None if report is not None else _progress(self.context.show_progress, len(missing),
                                                               f"{self.name}: encoding images")
        try:
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start: start + self.batch_size]
                arrays, ok_keys = [], []
                for k in chunk:
                    data, where = blobs[k]
                    try:
                        arrays.append(decode(data, where, size, self.resize))
                        ok_keys.append(k)
                    except ImageProblem as exc:
                        for pos in owners[k]:
                            self._keys.pop(ids[pos], None)
                            self._problem(ids[pos], exc)
                if arrays:
                    batch = normalise(np.stack(arrays), self.mean, self.std)
                    vecs = self._image_runner().encode(batch).astype(np.float32)
                    if self.context.cache is not None:
                        self.context.cache.put(namespace, ok_keys, vecs)
                    out.update(zip(ok_keys, vecs))
                    self.encoded_count_ += len(ok_keys)
                if report is not None:
                    report("encode", len(chunk), len(missing))
                elif progress is not None:
                    progress[0].advance(progress[1], len(chunk))
        finally:
            if progress is not None:
                progress[0].stop()
        if out:
            log.info("view %s: encoded %d new images (%s)", self.name, len(out), self.backend_used_)
        return out

    # ------------------------------------------------------------------ View protocol
    def set_round(self, round_idx: int) -> None:
        """A new round: its first large fit tunes the head's C again (``heads.RoundC``)."""
        self._round_c.reset()

    def fit(self, items: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray) -> None:
        y = np.asarray(y, dtype=int)
        w = np.asarray(sample_weight, dtype=np.float64)
        X, mask = self.encode(items)
        y, w = y[mask], w[mask]
        trusted = trusted_rows(items)
        if len(np.unique(y)) < 2:
            self.head_ = None
            return
        head = make_head(self.head, self.head_params, self.context.seed)
        self._round_c.before(head, len(y))
        head.fit(X, y, sample_weight=w, **head_fit_params(head, None if trusted is None else trusted[mask]))
        self._round_c.after(head, len(y))
        self.head_ = head
        self.classes_ = np.asarray(head.classes_, dtype=int)

    def predict_proba(self, items: pd.DataFrame) -> np.ndarray:
        k = len(self.context.labels)
        out = abstain(len(items), k)
        if len(items) == 0:
            return out
        if self.head_ is None and not self.zero_shot:
            return out
        X, mask = self.encode(items)
        if not mask.any():
            return out
        out[mask] = (expand_proba(self.head_.predict_proba(X), self.classes_, k) if self.head_ is not None
                     else self.zero_shot_proba(X))
        return out

    def zero_shot_proba(self, X: np.ndarray) -> np.ndarray:
        """Softmax over labels of the scaled cosine similarity of image and prompt embeddings."""
        enc = self._torch_encoder()
        if self._text is None:
            descs = self.context.label_descriptions or (None,) * len(self.context.labels)
            prompts = [self.prompt.format(label=lab, description=desc or lab)
                       for lab, desc in zip(self.context.labels, descs)]
            t = enc.encode_text(prompts)
            self._text = t / np.linalg.norm(t, axis=1, keepdims=True).clip(1e-12)
        scale = getattr(enc.module, "logit_scale", None)
        s = float(scale.exp()) if scale is not None else 100.0
        img = X / np.linalg.norm(X, axis=1, keepdims=True).clip(1e-12)
        logits = s * img @ self._text.T
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)


def _progress(show: bool, total: int, what: str) -> tuple[Any, Any] | None:
    """A transient rich progress bar over ``total`` images, or None when progress is off."""
    if not show or total <= 0:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   transient=True)
    task = bar.add_task(what, total=total)
    bar.start()
    return bar, task
