"""Evaluation: the reference report's tables, plus what a reviewer asks for.

Per class precision, recall, F1 and support with macro and weighted
averages; the confusion matrix in counts and percentages of all rows; and
false negatives and false positives (attack vs Normal) as counts, Matthews
correlation, PR-AUC and the false-positive rate on Normal traffic.
F1 is the standard 2PR/(P+R): the report prints PR/(P+R), without the 2.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def per_class(truth, predicted) -> pd.DataFrame:
    classes = sorted(set(truth) | set(predicted), key=str)
    rows = []
    truth, predicted = np.asarray(truth, dtype=object), np.asarray(predicted, dtype=object)
    for cls in classes:
        tp = int(((predicted == cls) & (truth == cls)).sum())
        fp = int(((predicted == cls) & (truth != cls)).sum())
        fn = int(((predicted != cls) & (truth == cls)).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        rows.append((str(cls), p, r, 2 * p * r / (p + r) if p + r else 0.0, int((truth == cls).sum())))
    table = pd.DataFrame(rows, columns=["class", "precision", "recall", "f1", "support"]).set_index("class")
    support = table["support"].sum()
    macro = table[["precision", "recall", "f1"]].mean()
    weighted = (table[["precision", "recall", "f1"]].mul(table["support"], axis=0).sum() / max(support, 1))
    table.loc["macro avg"] = [*macro, support]
    table.loc["weighted avg"] = [*weighted, support]
    table.loc["accuracy"] = [np.nan, np.nan, float((truth == predicted).mean()) if len(truth) else 0.0, support]
    table["support"] = table["support"].astype(int)
    return table


def confusion(truth, predicted) -> pd.DataFrame:
    classes = sorted(set(truth) | set(predicted), key=str)
    counts = pd.crosstab(pd.Series(truth, name="actual").astype(str), pd.Series(predicted, name="predicted").astype(str))
    return counts.reindex(index=[str(c) for c in classes], columns=[str(c) for c in classes], fill_value=0)


def binary(truth_attack, predicted_attack, score=None) -> dict:
    from sklearn.metrics import average_precision_score, matthews_corrcoef
    t = np.asarray(truth_attack, dtype=int)
    p = np.asarray(predicted_attack, dtype=int)
    tp, fp = int(((p == 1) & (t == 1)).sum()), int(((p == 1) & (t == 0)).sum())
    fn, tn = int(((p == 0) & (t == 1)).sum()), int(((p == 0) & (t == 0)).sum())
    out = {"true_positives": tp, "false_positives": fp, "false_negatives": fn, "true_negatives": tn,
           "mcc": float(matthews_corrcoef(t, p)) if len(set(t)) > 1 or len(set(p)) > 1 else 0.0,
           "false_positive_rate_on_normal": fp / (fp + tn) if fp + tn else 0.0}
    if score is not None and len(set(t)) > 1:
        out["pr_auc"] = float(average_precision_score(t, score))
    return out


def report(truth, predicted, truth_attack, predicted_attack, score=None) -> dict:
    table = per_class(truth, predicted)
    matrix = confusion(truth, predicted)
    return {"per_class": table, "confusion": matrix,
            "confusion_pct": (matrix / max(int(matrix.to_numpy().sum()), 1) * 100).round(6),
            "f1_macro": float(table.loc["macro avg", "f1"]), "binary": binary(truth_attack, predicted_attack, score)}


def render(result: dict) -> str:
    b = result["binary"]
    lines = ["per class:", result["per_class"].to_string(float_format=lambda v: f"{v:.4f}"), "",
             "confusion matrix (rows actual, columns predicted):", result["confusion"].to_string(), "",
             "confusion matrix, % of all rows:", result["confusion_pct"].to_string(), "",
             f"F1-macro {result['f1_macro']:.4f}   MCC {b['mcc']:.4f}   PR-AUC {b.get('pr_auc', float('nan')):.4f}",
             f"false negatives {b['false_negatives']:,}   false positives {b['false_positives']:,}   "
             f"false-positive rate on Normal {b['false_positive_rate_on_normal']:.4%}"]
    if "cv_f1_macro" in result:
        cv = result["cv_f1_macro"]
        lines.append(f"{len(cv)}-fold stratified CV F1-macro: mean {np.mean(cv):.4f}, std {np.std(cv):.4f}")
    return "\n".join(lines)
