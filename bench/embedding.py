"""Embedding throughput: the ``embedding`` view against a bare ``SentenceTransformer.encode``
on the same device (issue 14: >= 80% of the raw rate on a GPU).

The same N Rotten Tomatoes reviews (duplicates dropped, so every text is encoded), the
packaged all-MiniLM-L6-v2, batch ``--batch``, unit vectors, on CUDA when torch sees a GPU
(else on this machine's CPU):

* anchor: ``SentenceTransformer.encode`` of the texts, the model loaded beforehand;
* ``embedding`` view, cold: ``view.features(items)`` with the store's cache in a DuckDB file,
  so every text is looked up, encoded and written to the cache, as in a run's first round;
* ``embedding`` view, warm: the same call again, every vector from the cache (later rounds).

Model loading is left out of every figure; the anchor is the best of two runs, either side
of the view's. Prints items/s and the view's share of the anchor, and writes
``bench/results/embedding.json``.

    .venv/bin/python bench/embedding.py [--items 4000] [--batch 64]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/ itself off the path: its datasets.py would shadow the datasets package transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))
from bench._common import print_table, write_json  # noqa: E402


def anchor_items_per_s(model, texts: list[str], batch: int) -> float:  # noqa: ANN001 - a SentenceTransformer
    t = time.perf_counter()
    model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    return len(texts) / (time.perf_counter() - t)


def view_items_per_s(texts: list[str], batch: int, device: str, folder: Path) -> tuple[float, float, int]:
    """(cold items/s, warm items/s, texts the view encoded) of an embedding view over a store."""
    import pandas as pd

    from store.database import Store, StoreCache
    from views.base import ViewContext
    from views.embedding import EmbeddingView

    with Store(folder / "cache.duckdb") as st:
        ctx = ViewContext(labels=("negative", "positive"), seed=0, cache=StoreCache(st))
        view = EmbeddingView.from_params("minilm", ctx, text="text", batch_size=batch, device=device)
        view.resolve_fields(["text"])
        view.embed(["load the encoder before the clock starts"])
        items = pd.DataFrame({"text": texts})
        t = time.perf_counter()
        cold = view.features(items)
        cold_s = time.perf_counter() - t
        t = time.perf_counter()
        warm = view.features(items)
        warm_s = time.perf_counter() - t
        assert cold.shape == warm.shape == (len(texts), cold.shape[1])
    return len(texts) / cold_s, len(texts) / warm_s, view.encoded_count_ - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    import torch

    from orchestrator.packaged_data import rotten_tomatoes
    from views.encoders import DEFAULT_TEXT_ENCODER, load_sentence_transformer, resolve_text_encoder

    texts = list(dict.fromkeys(rotten_tomatoes()["text"].astype(str)))[: args.items]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_sentence_transformer(resolve_text_encoder(DEFAULT_TEXT_ENCODER), device)
    anchor_items_per_s(model, texts[:256], args.batch)  # warm-up: kernels, allocator
    first = anchor_items_per_s(model, texts, args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        cold, warm, encoded = view_items_per_s(texts, args.batch, device, Path(tmp))
    again = anchor_items_per_s(model, texts, args.batch)
    anchor = max(first, again)
    rows = [["SentenceTransformer.encode (anchor)", f"{anchor:,.0f}", "1.00"],
            ["embedding view, cold (encode + cache writes)", f"{cold:,.0f}", f"{cold / anchor:.2f}"],
            ["embedding view, warm (every vector from the cache)", f"{warm:,.0f}", f"{warm / anchor:.2f}"]]
    print_table(f"all-MiniLM-L6-v2, {len(texts)} distinct reviews, batch {args.batch}, on {device}",
                ["path", "items/s", "share of anchor"], rows)
    path = write_json("embedding", {"command": "python bench/embedding.py " + " ".join(sys.argv[1:]),
                                    "device": device, "items": len(texts), "batch": args.batch,
                                    "anchor_items_per_s": anchor, "anchor_runs_items_per_s": [first, again],
                                    "view_cold_items_per_s": cold, "view_warm_items_per_s": warm,
                                    "view_encoded": encoded})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
