"""The evaluation report on disk: PNG plots and a Markdown summary (`iadm evaluate --report DIR`)."""
from __future__ import annotations

import os

import numpy as np


def write_report(result: dict, model, directory: str, data_path: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from iadm.ml.evaluate import render
    os.makedirs(directory, exist_ok=True)
    written = []

    matrix = result["confusion"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(matrix), 1.0 + 0.8 * len(matrix)))
    ax.imshow(matrix.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(matrix.index)), matrix.index)
    for (i, j), value in np.ndenumerate(matrix.to_numpy()):
        ax.text(j, i, f"{value:,}", ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Confusion matrix")
    written.append(_save(fig, directory, "confusion_matrix.png"))

    if "curve" in result:
        precision, recall = result["curve"]
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(recall, precision)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"Precision-recall (attack), AUC {result['binary'].get('pr_auc', float('nan')):.4f}")
        written.append(_save(fig, directory, "precision_recall.png"))

    importance = _importance(model)
    if importance is not None:
        order = np.argsort(importance)
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(order) + 1))
        ax.barh([model.features[i] for i in order], importance[order])
        ax.set_title("Feature importance")
        written.append(_save(fig, directory, "feature_importance.png"))

    summary = os.path.join(directory, "summary.md")
    with open(summary, "w", encoding="utf-8") as fh:
        fh.write(f"# Evaluation of {model.path} on {data_path}\n\n")
        fh.write(f"Model: {model.card['kind']}, target {model.card['target']}, features "
                 f"({model.card.get('feature_set', '?')}): {', '.join(model.features)}\n\n")
        fh.write("```\n" + render(result) + "\n```\n\n")
        for path in written:
            fh.write(f"![{os.path.basename(path)}]({os.path.basename(path)})\n\n")
    return written + [summary]


def _importance(model):
    est = model.estimator
    est = est.steps[-1][1] if hasattr(est, "steps") else est
    values = getattr(est, "feature_importances_", None)
    if values is None:
        return None
    values = np.asarray(values, dtype=float)
    return values / values.sum() if values.sum() else values


def _save(fig, directory, name):
    import matplotlib.pyplot as plt
    path = os.path.join(directory, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
