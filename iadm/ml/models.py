"""Feature sets, model construction and training.

Feature sets:
- `report`: the reference report's ten (seq, mean, stddev, min, max, srate,
  drate, N_IN_Conn_P_DstIP, N_IN_Conn_P_SrcIP, state_number); seq leaks record
  order, so this set is for reproducing the report, not for the product.
- `default`: leakage-free behaviour features (no pkSeqID, seq, stime, ltime,
  addresses or source port), present both in Bot-IoT's full dataset and in the
  monitor's records.
- `numeric`: every numeric column the data has, labels aside.
When a set needs the 100-record window aggregates and the data lacks them
(the full dataset does), they are computed with the monitor's own code over
the records in stime order.

Imbalance, per model: class weights for Random Forest, the tree and
LightGBM; balanced sample weights for AdaBoost (it takes no class weights);
random oversampling of the smaller classes for KNN (distances take no weights).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

REPORT_TEN = ["seq", "mean", "stddev", "min", "max", "srate", "drate", "N_IN_Conn_P_DstIP", "N_IN_Conn_P_SrcIP",
              "state_number"]
DEFAULT = ["proto_number", "state_number", "dport", "pkts", "bytes", "dur", "mean", "stddev", "sum", "min", "max",
           "spkts", "dpkts", "sbytes", "dbytes", "rate", "srate", "drate"]
LEAKY = {"pkSeqID", "seq", "stime", "ltime"}
LABELS = {"attack", "category", "subcategory", "Label", "Category", "rule_sid"}
KINDS = ("rf", "adaboost", "lightgbm", "knn", "tree")
TARGETS = ("attack", "category")


def feature_set(name: str, frame: pd.DataFrame) -> list[str]:
    if name == "report":
        return list(REPORT_TEN)
    if name == "default":
        return list(DEFAULT)
    if name == "numeric":
        skip = LABELS | {"saddr", "daddr", "smac", "dmac", "soui", "doui", "sco", "dco", "flgs", "proto", "state"}
        return [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
    raise ValueError(f"unknown feature set {name!r}; choose report, default or numeric")


def with_window_features(frame: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Add the 10-best window aggregates when the features need them and the data lacks them."""
    from iadm.flows.records import WINDOW_COLUMNS
    from iadm.flows.window import WindowAggregator
    missing = [f for f in features if f in WINDOW_COLUMNS and f not in frame]
    if not missing:
        return frame
    ordered = frame.sort_values("stime", kind="stable") if "stime" in frame else frame
    done = WindowAggregator()(ordered.reset_index(drop=True))
    return done.set_index(ordered.index).loc[frame.index]


def build(kind: str, seed: int = 0):
    if kind == "rf":
        from sklearn.ensemble import RandomForestClassifier
        return RandomForestClassifier(n_estimators=100, class_weight="balanced", n_jobs=2, random_state=seed)
    if kind == "tree":
        from sklearn.tree import DecisionTreeClassifier
        return DecisionTreeClassifier(criterion="entropy", class_weight="balanced", random_state=seed)
    if kind == "adaboost":
        from sklearn.ensemble import AdaBoostClassifier
        from sklearn.tree import DecisionTreeClassifier
        return AdaBoostClassifier(DecisionTreeClassifier(max_depth=3), n_estimators=100, random_state=seed)
    if kind == "lightgbm":
        from lightgbm import LGBMClassifier
        # 60 rounds at a 0.2 learning rate: as accurate as 200 at 0.1 on flow features, and
        # prediction cost grows with the number of trees (target: over 1M records/s).
        return LGBMClassifier(n_estimators=60, learning_rate=0.2, class_weight="balanced", n_jobs=2,
                              random_state=seed, verbose=-1)
    if kind == "knn":
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=5, n_jobs=2))
    raise ValueError(f"unknown model {kind!r}; choose {', '.join(KINDS)}")


MAX_ROWS_PER_TREE = 200_000
MAX_ROWS_SAMPLED = 300_000


def fit(kind: str, x: pd.DataFrame, y: pd.Series, seed: int = 0, jobs: int | None = None):
    """`jobs` overrides the models' own parallelism (-1: as many as the joblib backend has, e.g. a
    Dask cluster's workers); the tree and AdaBoost fit in one thread whatever it says."""
    model = build(kind, seed)
    if jobs is not None and kind == "rf":
        model.set_params(n_jobs=jobs)
    elif jobs is not None and kind == "knn":
        model.set_params(kneighborsclassifier__n_jobs=jobs)
    if kind in ("adaboost", "knn") and len(x) > MAX_ROWS_SAMPLED:
        # AdaBoost's rounds are sequential and each sorts every row (3M rows: half an hour);
        # KNN pays for every stored row at prediction time. Both train on a stratified sample.
        from sklearn.model_selection import train_test_split
        keep, _ = train_test_split(np.arange(len(x)), train_size=MAX_ROWS_SAMPLED, stratify=y, random_state=seed)
        x, y = x.iloc[np.sort(keep)], y.iloc[np.sort(keep)]
    if kind == "rf" and len(x) > MAX_ROWS_PER_TREE:
        # Each tree sees at most 200,000 bootstrap rows: on millions of near-duplicate flow
        # records more rows per tree cost linear time and add little.
        model.set_params(max_samples=MAX_ROWS_PER_TREE)
    if kind == "adaboost":
        from sklearn.utils.class_weight import compute_sample_weight
        model.fit(x, y, sample_weight=compute_sample_weight("balanced", y))
    elif kind == "knn":
        xs, ys = _oversample(x, y, seed)
        model.fit(xs, ys)
    else:
        model.fit(x, y)
    return model


def _oversample(x: pd.DataFrame, y: pd.Series, seed: int):
    rng = np.random.default_rng(seed)
    counts = y.value_counts()
    parts = [np.flatnonzero(y.to_numpy() == cls) for cls in counts.index]
    top = counts.max()
    picks = np.concatenate([p if len(p) == top else np.concatenate([p, rng.choice(p, top - len(p))]) for p in parts])
    return x.iloc[picks], y.iloc[picks]
