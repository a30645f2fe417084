"""Local LLM label-word scoring throughput: the in-process batched backend against a bare
batched forward pass (the anchor) and against the embedded llama.cpp server (issue 14, 3b).

The same N Rotten Tomatoes reviews, each asked "positive or negative?" by the packaged
SmolLM2-135M (a prompt of roughly 100 tokens with its chat template), scored from the next
token's log-probabilities:

* anchor: the model dequantised from GGUF by transformers, the prompts tokenised with left
  padding and run ``--batch`` at a time, last-position logits only; no cache, no ledger;
* ``llm`` view, ``backend: transformers``, ``max_batch: --batch``: the same model, through the
  view's prompts, the client (cache lookups, retries) and the ledger in a DuckDB file;
* ``llm`` view, ``backend: server`` (the default): llama.cpp over HTTP, ``concurrency`` 4;
* with ``--ray N``: the ``backend: transformers`` view as ``engine: ray`` runs it, its passes in
  N Ray actors of a local cluster (``orchestrator.ray_llm``), the view on the driver;
* with ``--vllm``: the ``llm`` view with ``backend: vllm`` (vLLM's offline engine on the GPU,
  ``max_batch: --batch``), where vLLM is installed and torch sees CUDA; elsewhere the row
  says why it was not measured.

Model loading is left out of every figure (each is loaded before its clock starts). Prints
items/s and the view's share of the anchor (issue 14's GPU target is >= 2,500 items/s against
about 5,700 for a bare forward pass on an H200; this script runs where it is started: on a
machine without CUDA it measures the CPU), and writes ``bench/results/llm_batched.json``.

    .venv/bin/python bench/llm_batched.py [--items 128] [--batch 32] [--ray 1] [--vllm]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench._common import print_table, write_json  # noqa: E402

INSTRUCTIONS = "Classify the sentiment of this movie review as positive or negative."


def view_items_per_s(texts: list[str], backend: str, batch: int, folder: Path,
                     seen: list[list[dict]] | None = None, ray_actors: int = 0) -> tuple[float, float]:
    """(items/s, share of items with a vote) of an llm view over ``texts``; with ``seen``, the
    messages the transformers backend was asked are appended to it (the anchor's prompts);
    with ``ray_actors``, its passes run in that many Ray actors (Ray must be initialised)."""
    import pandas as pd

    from store.database import Store
    from store.llm_ledger import LLMLedger
    from views.base import ViewContext
    from views.llm.view import LLMView

    with Store(folder / f"{backend}-{ray_actors}.duckdb") as st:
        ctx = ViewContext(labels=("negative", "positive"), seed=0, ledger=LLMLedger(st, run_id=None),
                          label_descriptions=("a negative opinion of the film", "a positive opinion of the film"))
        view = LLMView.from_params("llm", ctx, fields=["text"], instructions=INSTRUCTIONS, backend=backend,
                                   max_batch=batch, concurrency=4, scoring="logprobs")
        items = pd.DataFrame({"text": texts})
        if ray_actors:
            from orchestrator.ray_llm import RayBatchedModel

            view.use_batched(RayBatchedModel("smollm2-135m", batch, actors=ray_actors))
        try:
            view.resolve_fields(["text"])
            view.fit(items.iloc[:0], np.zeros(0, dtype=int), np.zeros(0))
            view.predict_proba(items.iloc[:2])  # loads the model / starts the server; cached afterwards
            batched = view.client().batched
            if batched is not None and seen is not None:
                forward = batched.forward
                batched.forward = lambda reqs: (seen.extend(r["messages"] for r in reqs), forward(reqs))[1]
            t = time.perf_counter()
            proba = view.predict_proba(items.iloc[2:])
            secs = time.perf_counter() - t
        finally:
            view.close()
    return (len(texts) - 2) / secs, float((~np.isnan(proba).any(axis=1)).mean())


def anchor_items_per_s(messages: list[list[dict]], batch: int) -> tuple[float, float]:
    """(items/s, mean prompt tokens) of a bare batched forward pass over the same model and
    the same chat messages."""
    import torch

    from views.llm.batched import BatchedModel
    from views.llm.local import local_model

    m = BatchedModel(local_model("smollm2-135m").path(), max_batch=batch)
    m.load()
    tok, model = m._tokenizer, m._model
    prompts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
    lengths = []
    t0 = time.perf_counter()
    for lo in range(0, len(prompts), batch):
        enc = tok(prompts[lo:lo + batch], return_tensors="pt", padding=True, add_special_tokens=False).to(m.device)
        with torch.inference_mode():
            model(**enc, logits_to_keep=1)
        lengths += enc["attention_mask"].sum(dim=1).tolist()
    secs = time.perf_counter() - t0
    m.close()
    return len(prompts) / secs, float(np.mean(lengths))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ray", type=int, default=0, help="also run the passes in this many Ray actors")
    ap.add_argument("--vllm", action="store_true", help="also run the view with backend: vllm (CUDA only)")
    args = ap.parse_args()
    import torch

    from orchestrator.packaged_data import rotten_tomatoes

    df = rotten_tomatoes()
    texts = df["text"].astype(str).tolist()[: args.items]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    seen: list[list[dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        batched, voted_b = view_items_per_s(texts, "transformers", args.batch, Path(tmp), seen)
        first, tokens = anchor_items_per_s(seen, args.batch)
        server, voted_s = view_items_per_s(texts, "server", args.batch, Path(tmp))
        again, _ = anchor_items_per_s(seen, args.batch)
        on_ray = voted_r = on_vllm = voted_v = vllm_skipped = None
        if args.vllm:
            from store.errors import ViewError

            try:  # no vLLM, no GPU, or a model it cannot load: a finding of this run, not its end
                on_vllm, voted_v = view_items_per_s(texts, "vllm", args.batch, Path(tmp))
            except ViewError as exc:
                vllm_skipped = str(exc)
        if args.ray:
            import ray

            ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
            try:
                on_ray, voted_r = view_items_per_s(texts, "transformers", args.batch, Path(tmp), ray_actors=args.ray)
            finally:
                ray.shutdown()
    anchor = max(first, again)  # the anchor's best of two runs, either side of the server's
    rows = [["bare batched forward (anchor)", f"{anchor:.1f}", "1.00", "-"],
            ["llm view, backend transformers", f"{batched:.1f}", f"{batched / anchor:.2f}", f"{voted_b:.2f}"],
            ["llm view, backend server (llama.cpp, concurrency 4)", f"{server:.1f}", f"{server / anchor:.2f}",
             f"{voted_s:.2f}"]]
    if args.vllm:
        rows.insert(2, ["llm view, backend vllm", "-" if on_vllm is None else f"{on_vllm:.1f}",
                        "-" if on_vllm is None else f"{on_vllm / anchor:.2f}",
                        vllm_skipped or f"{voted_v:.2f}"])
    if on_ray is not None:
        rows.insert(2, [f"llm view, backend transformers, {args.ray} Ray actor(s) (engine ray)", f"{on_ray:.1f}",
                        f"{on_ray / anchor:.2f}", f"{voted_r:.2f}"])
    print_table(f"SmolLM2-135M label-word scoring, {len(texts)} reviews, ~{tokens:.0f}-token prompts, batch "
                f"{args.batch}, on {device}", ["path", "items/s", "share of anchor", "items voted"], rows)
    path = write_json("llm_batched", {"command": "python bench/llm_batched.py " + " ".join(sys.argv[1:]),
                                      "device": device, "items": len(texts), "batch": args.batch,
                                      "mean_prompt_tokens": tokens, "anchor_items_per_s": anchor,
                                      "anchor_runs_items_per_s": [first, again],
                                      "transformers_view_items_per_s": batched, "server_view_items_per_s": server,
                                      "ray_actors": args.ray, "ray_view_items_per_s": on_ray,
                                      "vllm_view_items_per_s": on_vllm, "vllm_not_run": vllm_skipped,
                                      "voted": {"transformers": voted_b, "server": voted_s, "ray": voted_r,
                                                "vllm": voted_v}})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
