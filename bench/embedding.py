"""Embedding throughput: the ``embedding`` view against a bare ``SentenceTransformer.encode``
on the same device (issue 14: >= 80% of the raw rate on a GPU).

The same N Rotten Tomatoes reviews (duplicates dropped, so every text is encoded), the
packaged all-MiniLM-L6-v2, batch ``--batch``, unit vectors, on CUDA when torch sees a GPU
(else on this machine's CPU):

* anchor: ``SentenceTransformer.encode`` of the texts, the model loaded beforehand;
* ``embedding`` view, cold: ``view.features(items)`` with the store's cache in a DuckDB file,
  so every text is looked up, encoded and written to the cache, as in a run's first round;
* ``embedding`` view, warm: the same call again, every vector from the cache (later rounds);
* ``embedding`` view, ``cache: false``: every text encoded, no cache read or written.

A GPU encodes so fast that the view's own work per text (hashing, cache lookups and writes,
stacking) decides its share. Measured apart: the same paths over ``--overhead-items``
synthetic texts with the encoder swapped for one that returns zero vectors at once, giving
microseconds per text, and from them the share of a raw rate of ``--gpu-rate`` texts/s
(about what MiniLM reaches on an H200) that each path would keep. A projection, labelled as
one; a lent GPU measures the real thing with this same script.

Model loading is left out of every figure; the anchor is the best of two runs, either side
of the view's. Prints items/s and the view's share of the anchor, and writes
``bench/results/embedding.json``.

    .venv/bin/python bench/embedding.py [--items 4000] [--batch 64] [--overhead-items 100000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# bench/ itself off the path: its datasets.py would shadow the datasets package transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))
from bench._common import print_table, write_json  # noqa: E402


def anchor_items_per_s(model, texts: list[str], batch: int) -> float:  # noqa: ANN001 - a SentenceTransformer
    t = time.perf_counter()
    model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    return len(texts) / (time.perf_counter() - t)


class InstantEncoder:
    """Stands in for the encoder when only the view's own work is timed: zero vectors at once."""

    def encode(self, texts: list[str], **_: object) -> np.ndarray:
        return np.zeros((len(texts), 384), dtype=np.float32)


def view_items_per_s(texts: list[str], batch: int, device: str, folder: Path,
                     encoder: object | None = None) -> dict[str, float]:
    """items/s of an embedding view over a store: ``cold`` (encode + cache writes), ``warm``
    (from the cache), ``uncached`` (``cache: false``); ``encoder`` replaces the model."""
    import pandas as pd

    from store.adapters import StoreCache
    from store.database import Store
    from views.base import ViewContext
    from views.embedding import EmbeddingView

    out: dict[str, float] = {}
    with Store(folder / f"cache-{encoder is not None}.duckdb") as st:
        ctx = ViewContext(labels=("negative", "positive"), seed=0, cache=StoreCache(st))
        for cache in (True, False):
            view = EmbeddingView.from_params("minilm", ctx, text="text", batch_size=batch, device=device, cache=cache)
            view.resolve_fields(["text"])
            view._model = encoder
            view.embed(["load the encoder before the clock starts"])
            items = pd.DataFrame({"text": texts})
            for label in ("cold", "warm") if cache else ("uncached",):
                t = time.perf_counter()
                vecs = view.features(items)
                out[label] = len(texts) / (time.perf_counter() - t)
                assert vecs.shape[0] == len(texts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--overhead-items", type=int, default=100_000)
    ap.add_argument("--gpu-rate", type=float, default=165_000.0, help="raw texts/s to project the view's share at")
    args = ap.parse_args()
    import torch

    from orchestrator.packaged_data import rotten_tomatoes
    from views.encoders import DEFAULT_TEXT_ENCODER, load_sentence_transformer, resolve_text_encoder

    texts = list(dict.fromkeys(rotten_tomatoes()["text"].astype(str)))[: args.items]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_sentence_transformer(resolve_text_encoder(DEFAULT_TEXT_ENCODER), device)
    anchor_items_per_s(model, texts[:256], args.batch)  # warm-up: kernels, allocator
    first = anchor_items_per_s(model, texts, args.batch)
    synthetic = [f"synthetic review {i}: a film about things that happen to people" for i in range(args.overhead_items)]
    with tempfile.TemporaryDirectory() as tmp:
        view = view_items_per_s(texts, args.batch, device, Path(tmp))
        alone = view_items_per_s(synthetic, args.batch, device, Path(tmp), InstantEncoder())
    again = anchor_items_per_s(model, texts, args.batch)
    anchor = max(first, again)
    us = {k: 1e6 / v for k, v in alone.items()}  # the view's own microseconds per text
    share = {k: (1e6 / args.gpu_rate) / (1e6 / args.gpu_rate + us[k]) for k in ("cold", "uncached")}
    rows = [["SentenceTransformer.encode (anchor)", f"{anchor:,.0f}", "1.00", "-", "-"],
            ["embedding view, cold (encode + cache writes)", f"{view['cold']:,.0f}", f"{view['cold'] / anchor:.2f}",
             f"{us['cold']:.1f}", f"{share['cold']:.2f}"],
            ["embedding view, warm (every vector from the cache)", f"{view['warm']:,.0f}",
             f"{view['warm'] / anchor:.2f}", f"{us['warm']:.1f}", "-"],
            ["embedding view, cache: false", f"{view['uncached']:,.0f}", f"{view['uncached'] / anchor:.2f}",
             f"{us['uncached']:.1f}", f"{share['uncached']:.2f}"]]
    print_table(f"all-MiniLM-L6-v2, {len(texts)} distinct reviews, batch {args.batch}, on {device}; the view's own "
                f"work over {args.overhead_items:,} texts, projected at {args.gpu_rate:,.0f} raw texts/s",
                ["path", "items/s", "share of anchor", "view's own us/text", "projected share"], rows)
    path = write_json("embedding", {"command": "python bench/embedding.py " + " ".join(sys.argv[1:]),
                                    "device": device, "items": len(texts), "batch": args.batch,
                                    "anchor_items_per_s": anchor, "anchor_runs_items_per_s": [first, again],
                                    "view_items_per_s": view, "overhead_items": args.overhead_items,
                                    "view_own_us_per_text": us, "gpu_rate": args.gpu_rate,
                                    "projected_share_at_gpu_rate": share})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
