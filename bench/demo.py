"""Demo benchmark: what the default demo's labels are worth, scored against the truth it hides.

``cotrain demo`` (the ``mfeat`` example: each UCI digit's image for a MobileNetV2 view, its
Fourier coefficients and its shape descriptors as two more views; 70 gold labels, a
1,430-item pool, 500 held-out items) runs in a temporary folder, exactly as the README's
command runs it. Then per round: labels added, their estimated precision (mean
``p_correct``) and their true precision (against the dataset's labels, which the example
removed from the pool), and the test accuracy of each view and of the ensemble. The issue's
bar (13, item 8): the final ensemble above every view's round 0 and above the gold-only
ensemble (round 0's).

    .venv/bin/python bench/demo.py [--example mfeat|animals] [--n-items N]
Table on stdout, JSON in bench/results/demo_<example>.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
from bench._common import print_table, write_json  # noqa: E402


def score_demo(store: str, dataset: str, tmp: Path) -> dict:
    """Per-round figures of the example's latest run in ``store``: its pseudo-labels read
    through the export (with each item's ``image``) and scored against the truth."""
    import pandas as pd

    from orchestrator import api
    from orchestrator.packaged_data import example_truth
    from store.database import Store

    api.export(store, tmp / "labels.parquet", "parquet", include_gold=False)
    picks = pd.read_parquet(tmp / "labels.parquet", columns=["label", "round", "p_correct", "image"])
    picks["right"] = picks["image"].str.rsplit("/", n=1).str[1].map(example_truth(dataset)) == picks["label"]
    with Store(store, read_only=True) as st:
        test = st.query("SELECT round, view, test_accuracy FROM metrics WHERE run_id = ?", [st.latest_run()]
                        ).to_pandas().pivot(index="round", columns="view", values="test_accuracy")
    per = picks.groupby("round").agg(added=("right", "size"), true=("right", "mean"), est=("p_correct", "mean"))
    out = [{"round": int(r), "test": test.loc[r].to_dict(), "added": int(per["added"].get(r, 0)),
            "true_precision": float(per["true"][r]) if r in per.index else None,
            "est_precision": float(per["est"][r]) if r in per.index else None} for r in test.index]
    first, last = out[0]["test"], out[-1]["test"]
    best_view = max(a for v, a in first.items() if v != "ensemble")
    return {"rounds": out, "labels": len(picks), "true_precision": float(picks["right"].mean()) if len(picks) else None,
            "est_precision": float(picks["p_correct"].mean()) if len(picks) else None,
            "final_ensemble": last["ensemble"], "round0_ensemble": first["ensemble"], "best_round0_view": best_view,
            "method_works": last["ensemble"] > best_view and last["ensemble"] > first["ensemble"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--example", default="mfeat", choices=["mfeat", "animals"])
    ap.add_argument("--n-items", type=int, default=None)
    args = ap.parse_args()
    from orchestrator import api

    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        _, res = api.demo(Path(tmp) / "demo", example=args.example, n_items=args.n_items)
        result = score_demo(res.store, args.example, Path(tmp))
    seconds = time.perf_counter() - t
    views = sorted(result["rounds"][0]["test"])
    rows = [[r["round"], r["added"], "-" if r["est_precision"] is None else f"{r['est_precision']:.3f}",
             "-" if r["true_precision"] is None else f"{r['true_precision']:.3f}",
             *[f"{r['test'].get(v, float('nan')):.3f}" for v in views]] for r in result["rounds"]]
    print_table(f"cotrain demo --example {args.example}: labels against the hidden truth, test accuracy per view",
                ["round", "added", "est precision", "true precision", *views], rows)
    print(f"\n{result['labels']} labels, {result['true_precision']:.3f} right "
          f"(estimated {result['est_precision']:.3f});"
          f" final ensemble {result['final_ensemble']:.3f} against round 0's best view {result['best_round0_view']:.3f}"
          f" and round 0's ensemble {result['round0_ensemble']:.3f}: method works = {result['method_works']}"
          f" ({seconds:.0f} s)")
    path = write_json(f"demo_{args.example}", {"command": "python " + " ".join(sys.argv), "seconds": seconds,
                                               **result})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
