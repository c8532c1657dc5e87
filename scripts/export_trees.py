#!/usr/bin/env python3
"""Export the compiled trees of registered models (NAME.trees.npz) and record them on their cards.

    .venv/bin/python scripts/export_trees.py models/default [more models ...]
    .venv/bin/python scripts/export_trees.py --check models/default

`iadm train` and `registry.save` export by themselves; this is for models saved before they did,
and for re-exporting after the trees format changes. The estimator is read from NAME.joblib (with
the registry's own checks), the card keeps every other field. An estimator that cannot be compiled
exactly gets `compiled.reason` on its card instead. `--check` compares the compiled predictor with
the estimator on the given records file (or on random records) and prints the largest difference.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from iadm.ml import registry  # noqa: E402


def export(name: str) -> dict:
    model_path, card_path = registry._paths(name)
    card = registry._read_card(model_path, card_path)
    with open(card_path, encoding="utf-8") as fh:   # keep the card's own indentation (a small diff)
        fh.readline()
        second = fh.readline()
    indent = max(1, len(second) - len(second.lstrip(" ")))
    trees = registry.trees_path(model_path)
    if os.path.exists(trees):
        os.remove(trees)      # re-exported from the estimator below
    card.pop("compiled", None)
    estimator = registry._load_estimator(model_path, card_path, card)
    card["compiled"] = registry.export_trees(estimator, card, model_path)
    with open(card_path, "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=indent, default=str)
    return card["compiled"]


def compare(name: str, records: str | None) -> float:
    import pandas as pd
    compiled, joblib_model = registry.load(name), registry.load(name, compiled=False)
    if records:
        from iadm.ml.datasets import derive, read_records
        frame = derive(read_records(records))
    else:
        rng = np.random.default_rng(0)
        frame = pd.DataFrame(rng.exponential(100.0, (100_000, len(compiled.features))), columns=compiled.features)
    a, b = compiled.predict_proba(frame), joblib_model.predict_proba(frame)
    same = bool((a.argmax(axis=1) == b.argmax(axis=1)).all())
    print(f"{name}: {len(frame):,} records, largest difference {np.abs(a - b).max():.3g}, argmax identical: {same}")
    return float(np.abs(a - b).max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--check", action="store_true", help="compare with the estimator instead of exporting")
    ap.add_argument("--records", help="records to compare on (CSV or Parquet); random records otherwise")
    args = ap.parse_args(argv)
    for name in args.models:
        if args.check:
            compare(name, args.records)
            continue
        entry = export(name)
        print(f"{name}: {entry.get('what') or entry.get('reason')}"
              + (f" -> {entry['file']} sha256 {entry['sha256']}" if entry.get("file") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
