"""`iadm train` and `iadm evaluate`: from a records file to a registered model and its report."""
from __future__ import annotations

import shlex
import sys

import numpy as np
import pandas as pd

from iadm.ml import evaluate, registry
from iadm.ml.datasets import clean, derive, read_records
from iadm.ml.models import TARGETS, feature_set, fit, with_window_features
from iadm.ml.split import split


def _prepare(path: str, features_name: str, target: str, names_file: str | None = None):
    """Read, derive encodings, add window aggregates if the features need them, clean once."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}")
    raw = derive(read_records(path, names_file))
    features = feature_set(features_name, raw)
    frame, report = clean(with_window_features(raw, features), path, features + ["attack", "category"])
    y = frame[target].astype(int) if target == "attack" else frame[target].astype(str)
    return frame, features, y, report


def train(path: str, kind: str, out: str, features_name: str = "default", target: str = "attack",
          seed: int = 0, names_file: str | None = None, record_kind: str = "flow",
          stream=sys.stderr) -> registry.Model:
    import threading
    import time
    began = time.monotonic()
    frame, features, y, cleaned = _prepare(path, features_name, target, names_file)
    print(cleaned.summary(), file=stream)
    train_idx, test_idx, how = split(frame, y, seed)
    if how["by"] == "capture":
        print(f"hold-out: {len(how['holdout_captures'])} of {frame['capture'].nunique()} captures "
              f"({len(test_idx):,} rows)", file=stream)
    x = frame[features].astype(np.float64)
    print(f"training {kind} on {len(train_idx):,} rows, {len(features)} features, target {target} ...",
          file=stream, flush=True)
    started, done = time.monotonic(), threading.Event()

    def heartbeat():   # long fits print where they are every 10 s
        while not done.wait(10):
            print(f"  ... still training {kind}, {time.monotonic() - started:.0f} s", file=stream, flush=True)

    threading.Thread(target=heartbeat, daemon=True).start()
    try:
        model = fit(kind, x.loc[train_idx], y.loc[train_idx], seed)
    finally:
        done.set()
    fit_seconds = time.monotonic() - started
    print(f"trained in {fit_seconds:.1f} s", file=stream, flush=True)
    captures = int(frame["capture"].nunique()) if "capture" in frame else 1
    card = {"kind": kind, "features": features, "feature_set": features_name, "target": target,
            "classes": [c.item() if hasattr(c, "item") else c for c in model.classes_],
            "data": {"source": path, "record_kind": record_kind, "rows": len(frame), "captures": captures,
                     "train_rows": len(train_idx),
                     "fingerprint": registry.fingerprint(frame[features + [target]]),
                     "class_balance": {str(k): int(v) for k, v in y.value_counts().items()},
                     "cleaning": cleaned.summary()},
            "split": how, "cluster": None,
            "time": {"fit_seconds": round(fit_seconds, 3), "read_and_fit_seconds": round(time.monotonic() - began, 3)},
            "command": f"iadm train {shlex.quote(path)} --model {kind} --features {features_name} "
                       f"--target {target} -o {shlex.quote(out)}" + (f" --seed {seed}" if seed else "")
                       + (f" --names {shlex.quote(names_file)}" if names_file else "")
                       + f" --record-kind {record_kind}"}
    registry.save(out, model, card)
    saved = registry.load(out)
    result = _score(saved, frame.loc[test_idx], y.loc[test_idx])
    saved.card["metrics"] = {"holdout_rows": len(test_idx), "f1_macro": result["f1_macro"],
                             **{k: v for k, v in result["binary"].items()}}
    registry.save(out, model, saved.card)
    print(evaluate.render(result), file=stream)
    return registry.load(out)


def _score(model: registry.Model, frame: pd.DataFrame, y: pd.Series) -> dict:
    from sklearn.metrics import precision_recall_curve
    pred = model.predict(frame)
    truth_attack = frame["attack"].astype(int).to_numpy()
    result = evaluate.report(y.to_numpy(), pred["label"].to_numpy(), truth_attack, pred["attack"].to_numpy(),
                             pred["score"].to_numpy())
    if len(set(truth_attack)) > 1:
        precision, recall, _ = precision_recall_curve(truth_attack, pred["score"].to_numpy())
        result["curve"] = (precision, recall)
    return result


def evaluate_file(path: str, model_path: str, cv: int = 0, names_file: str | None = None) -> dict:
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold
    model = registry.load(model_path)
    frame, _, y, _ = _prepare(path, model.card.get("feature_set", "default"), model.card["target"],
                                     names_file)
    model.check(frame, where=f"records of {path}")
    result = _score(model, frame, y)
    if cv:
        scores = []
        x = frame[model.features].astype(np.float64)
        for train_idx, test_idx in StratifiedKFold(cv, shuffle=True, random_state=0).split(x, y):
            est = clone(model.estimator).fit(x.iloc[train_idx], y.iloc[train_idx])
            pred = est.predict(x.iloc[test_idx])
            scores.append(evaluate.per_class(y.iloc[test_idx].to_numpy(), pred).loc["macro avg", "f1"])
        result["cv_f1_macro"] = scores
    return result


def compare(path: str, kinds=("rf", "adaboost", "lightgbm", "knn"), features_name: str = "default",
            target: str = "attack", seed: int = 0, names_file: str | None = None) -> pd.DataFrame:
    """The report's Table 10: every model trained and scored on one stratified split."""
    import time

    from iadm.ml.models import fit
    frame, features, y, _ = _prepare(path, features_name, target, names_file)
    train_idx, test_idx, _ = split(frame, y, seed)
    x = frame[features].astype(np.float64)
    truth_attack = frame.loc[test_idx, "attack"].astype(int).to_numpy()
    rows = []
    for kind in kinds:
        start = time.perf_counter()
        est = fit(kind, x.loc[train_idx], y.loc[train_idx], seed)
        seconds = time.perf_counter() - start
        pred = est.predict(x.loc[test_idx])
        attack = (pred.astype(int) if target == "attack" else (pred != "Normal").astype(int))
        table = evaluate.per_class(y.loc[test_idx].to_numpy(), pred)
        b = evaluate.binary(truth_attack, attack)
        rows.append({"model": kind, "accuracy": table.loc["accuracy", "f1"],
                     "precision_macro": table.loc["macro avg", "precision"],
                     "recall_macro": table.loc["macro avg", "recall"], "f1_macro": table.loc["macro avg", "f1"],
                     "mcc": b["mcc"], "false_negatives": b["false_negatives"],
                     "false_positives": b["false_positives"], "train_seconds": seconds})
    return pd.DataFrame(rows).set_index("model")
