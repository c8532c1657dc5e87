"""Evaluation by capture, not by row: leave one capture out.

Rows of one capture are near-copies of each other (a flow's running records, a device's
hourly report), so a random row split puts copies of the test rows in training and reports
what the model memorised. Here every capture is held out once: the model is trained on the
others and judged on it, and the threshold on the model's attack score is chosen on the
held-out benign captures, for a false-positive target on records.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from iadm.ml.models import fit


def leave_one_capture_out(frame: pd.DataFrame, features: list[str], target: str, kind: str = "lightgbm",
                          capture: str = "capture", hold_out=None, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Per held-out capture (all captures, or those in hold_out): rows, attack rows, and the
    held-out scores (probability of attack); returns the table and {capture: scores}."""
    groups = frame[capture].astype(str).to_numpy()
    y = frame[target]
    truth_attack = (y.astype(str) != "Normal").to_numpy() if target == "category" else y.to_numpy(dtype=bool)
    x = frame[features].apply(pd.to_numeric, errors="coerce").fillna(0.0).astype(np.float64)
    names = sorted(set(groups)) if hold_out is None else list(hold_out)
    rows, scores = [], {}
    for name in names:
        test = groups == name
        if not test.any() or test.all():
            continue
        model = fit(kind, x[~test], y[~test], seed)
        proba = model.predict_proba(x[test])
        classes = list(model.classes_)
        if target == "category":
            score = 1.0 - proba[:, classes.index("Normal")] if "Normal" in classes else np.ones(int(test.sum()))
        else:
            score = proba[:, classes.index(1)] if 1 in classes else np.zeros(int(test.sum()))
        scores[name] = score
        attack = truth_attack[test]
        rows.append({"capture": name, "rows": int(test.sum()), "attack_rows": int(attack.sum()),
                     "false_positives@0.5": int(((score >= 0.5) & ~attack).sum()),
                     "detected@0.5": int(((score >= 0.5) & attack).sum())})
    return pd.DataFrame(rows), scores


def choose_threshold(benign_scores: dict, target_rate: float = 0.005, floor: float = 0.5) -> float:
    """The lowest score threshold (at least `floor`) at which the held-out benign captures'
    records called attacks are at most target_rate of their records, pooled."""
    pooled = np.concatenate([np.asarray(s, dtype=float) for s in benign_scores.values()]) if benign_scores \
        else np.zeros(0)
    if not len(pooled):
        return floor
    allowed = int(np.floor(target_rate * len(pooled)))
    ranked = np.sort(pooled)[::-1]
    if allowed >= len(ranked):
        return floor
    # scores strictly above the (allowed+1)-th highest are the only ones called attacks (above
    # 1.0: the model's word never makes an attack on its own)
    return max(floor, float(np.nextafter(ranked[allowed], np.inf)))
