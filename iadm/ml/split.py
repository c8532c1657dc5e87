"""Which rows a model is scored on: whole captures when the records name them, else a row split.

Records of one capture share hosts, timing and the flows that span status records; a row split
puts near-copies of a test row in training and flatters the score. A records dataset (`iadm
features ... -o OUT.parquet`) names every row's capture, and then a seeded fifth of the captures
is held out, the same captures for the pandas path and the Dask path.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

HOLDOUT = 0.2


def holdout_captures(captures, fraction: float = HOLDOUT, seed: int = 0) -> list[str]:
    """A seeded `fraction` of the distinct capture names (at least one, and never all)."""
    names = sorted({str(c) for c in captures})
    if len(names) < 2:
        raise ValueError(f"a split by capture needs at least two captures (the data has {len(names)})")
    k = min(len(names) - 1, max(1, round(fraction * len(names))))
    picked = np.random.default_rng(seed).permutation(len(names))[:k]
    return sorted(names[i] for i in picked)


def split(frame: pd.DataFrame, y: pd.Series, seed: int = 0) -> tuple[pd.Index, pd.Index, dict]:
    """(train index, test index, how): by capture when the frame has two or more, else stratified rows."""
    if "capture" in frame and frame["capture"].nunique() >= 2:
        held = holdout_captures(frame["capture"].unique(), seed=seed)
        test = frame["capture"].astype(str).isin(held).to_numpy()
        return frame.index[~test], frame.index[test], {"by": "capture", "holdout_captures": held}
    from sklearn.model_selection import train_test_split
    train_idx, test_idx = train_test_split(frame.index, test_size=HOLDOUT, stratify=y, random_state=seed)
    return train_idx, test_idx, {"by": "row", "test_fraction": HOLDOUT}
