"""Run the README's examples and print the sha256 of their exports: a refactor that claims
to change no behaviour must print the same digests before and after.

    .venv/bin/python scripts/export_digest.py OUT_DIR [text mfeat animals synthetic]
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def main() -> None:
    out = Path(sys.argv[1])
    examples = sys.argv[2:] or ["mfeat", "animals", "synthetic"]
    from orchestrator import api

    digests = {}
    for ex in examples:
        folder = out / ex
        if ex == "synthetic":  # the tests' two-view task under each policy
            sys.path.insert(0, str(Path(__file__).parents[1]))
            from tests.conftest import write_config

            for policy in ("k_best", "threshold", "agreement", "self"):
                sub = folder / policy
                sub.mkdir(parents=True, exist_ok=True)
                extra = {"min_agree": 2} if policy == "agreement" else {}
                if policy == "self":
                    cfg = write_config(sub, policy=policy)
                else:
                    cfg = write_config(sub, policy=policy, **extra)
                res = api.run(cfg)
                digests.update(_export(f"synthetic-{policy}", res.store, sub))
            continue
        kwargs = {"n_items": 600} if ex == "animals" else {}
        _, res = api.demo(folder, example=ex, **kwargs)
        digests.update(_export(ex, res.store, folder))
    print(json.dumps(digests, indent=1, sort_keys=True))


def _export(name: str, store: str, folder: Path) -> dict[str, str]:
    from orchestrator import api

    out = {}
    for fmt in ("parquet", "csv", "json", "jsonl"):
        path = folder / f"labels.{fmt}"
        api.export(store, path, fmt, force=True)
        out[f"{name}.{fmt}"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


if __name__ == "__main__":
    main()
