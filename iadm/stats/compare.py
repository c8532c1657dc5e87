"""`iadm anomaly compare`: unsupervised detectors ranked without labels (Excess-Mass, Mass-Volume).

Per measurement and service, as the statistical detector report did: the
values of one measurement (log-scaled) for the records of one service go to
Isolation Forest, LOF and One-Class SVM (scikit-learn), streaming half-space
trees (river) and a plain Z-score. Each gives a normality score s (higher =
more normal). Label-free criteria (Goix et al., "How to evaluate the quality
of unsupervised anomaly detection algorithms?", 2016), estimated by Monte
Carlo over the data's bounding interval:

    EM(t)     = max_u  P_n(s(X) > u) - t * Leb({s > u})        higher is better
    MV(alpha) = min_u { Leb({s >= u}) : P_n(s(X) >= u) >= alpha }   lower is better

reported as areas under the curves: EM for t from 0 until EM(t) falls to 0.9
(EM(0) is 1), MV for alpha in [0.9, 0.999], as in the paper. With labels, average precision (attack as the
positive class) is reported too. One value per record keeps the estimates
sound: EM and MV are only reliable in low dimension.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from iadm.stats.zscore import MEASUREMENTS, service_names

DETECTORS = ("iforest", "lof", "ocsvm", "hst", "zscore")
MAX_RECORDS = 5000      # records per group scored (a random sample in record order): HST is per-record Python
ALPHAS = np.linspace(0.9, 0.999, 100)


def measurements(records: pd.DataFrame) -> pd.DataFrame:
    """bytes/packets, total (the record's running totals) and created (the increment over the
    previous record of the same flow key), with the service of each record."""
    keys = ["saddr", "daddr", "sport", "dport", "proto"]
    ordered = records.sort_values("ltime", kind="stable")
    out = pd.DataFrame(index=ordered.index)
    out["bytes_total"] = ordered["bytes"].astype(float)
    out["packets_total"] = ordered["pkts"].astype(float)
    grouped = ordered.groupby(keys, sort=False, dropna=False)
    for kind, column in (("bytes", "bytes"), ("packets", "pkts")):
        total = ordered[column].astype(float)
        previous = grouped[column].shift(1).astype(float)
        out[f"{kind}_created"] = np.where(previous.notna() & (total >= previous), total - previous, total)
    out["service"] = service_names(ordered["proto"].to_numpy(), ordered["dport"].to_numpy())
    if "attack" in ordered:
        out["attack"] = pd.to_numeric(ordered["attack"], errors="coerce").fillna(0).astype(int)
    return out.loc[records.index.intersection(out.index)]


def _normality(name: str, x: np.ndarray, grid: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the data and of the uniform grid (higher = more normal)."""
    X, G = x.reshape(-1, 1), grid.reshape(-1, 1)
    if name == "iforest":
        from sklearn.ensemble import IsolationForest
        model = IsolationForest(n_estimators=100, random_state=seed).fit(X)
        return model.score_samples(X), model.score_samples(G)
    if name == "lof":
        from sklearn.neighbors import LocalOutlierFactor
        model = LocalOutlierFactor(n_neighbors=20, novelty=True).fit(X)
        return model.score_samples(X), model.score_samples(G)
    if name == "ocsvm":
        from sklearn.svm import OneClassSVM
        model = OneClassSVM(nu=0.05, gamma="scale").fit(X)
        return model.score_samples(X), model.score_samples(G)
    if name == "hst":
        from river.anomaly import HalfSpaceTrees
        lo, hi = float(x.min()), float(x.max())
        model = HalfSpaceTrees(n_trees=25, height=8, window_size=250, seed=seed, limits={"v": (lo, hi or 1.0)})
        scores = np.empty(len(x))
        for i, value in enumerate(x):          # streaming: score, then learn, one record at a time
            scores[i] = -model.score_one({"v": float(value)})
            model.learn_one({"v": float(value)})
        return scores, np.array([-model.score_one({"v": float(v)}) for v in grid])
    if name == "zscore":
        mean, std = x.mean(), x.std(ddof=1) or 1.0
        return -np.abs(x - mean) / std, -np.abs(grid - mean) / std
    raise ValueError(f"no detector {name!r}; detectors: {', '.join(DETECTORS)}")


def em_mv(s_data: np.ndarray, s_grid: np.ndarray, volume: float, t_max: float = 0.9) -> dict:
    """EM and MV curves and their areas, from scores of the data and of uniform points."""
    levels = np.unique(np.concatenate([s_data, s_grid]))
    if len(levels) > 2000:
        levels = np.quantile(levels, np.linspace(0, 1, 2000))
    data_sorted, grid_sorted = np.sort(s_data), np.sort(s_grid)
    mass = 1.0 - np.searchsorted(data_sorted, levels, side="left") / len(s_data)      # P_n(s >= u)
    leb = volume * (1.0 - np.searchsorted(grid_sorted, levels, side="left") / len(s_grid))
    ts = np.linspace(0, 100.0 / volume, 1000)
    em = np.array([np.max(mass - t * leb) for t in ts])
    cut = int(np.argmax(em <= t_max)) if (em <= t_max).any() else len(ts)
    cut = max(cut, 2)
    mv = np.array([leb[mass >= a].min() if (mass >= a).any() else volume for a in ALPHAS])
    return {"em_auc": float(np.trapezoid(em[:cut], ts[:cut])), "mv_auc": float(np.trapezoid(mv, ALPHAS)),
            "em_t": ts[:cut], "em": em[:cut], "mv": mv}


def compare(records: pd.DataFrame, detectors=DETECTORS, top_services: int = 4, min_records: int = 200,
            seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """One row per (measurement, service, detector); the curves per group for the plot."""
    from sklearn.metrics import average_precision_score
    values = measurements(records)
    services_count = values["service"].value_counts()
    services = services_count[services_count >= min_records].index[:top_services]
    rows, curves = [], {}
    for m in MEASUREMENTS:
        for service in services:
            group = values[values["service"] == service]
            if len(group) > MAX_RECORDS:
                pick = np.random.default_rng(seed).choice(len(group), MAX_RECORDS, replace=False)
                group = group.iloc[np.sort(pick)]
            x = np.log1p(group[m].to_numpy(dtype=float).clip(min=0))
            lo, hi = x.min(), x.max()
            if hi - lo < 1e-9:
                continue   # one value only: nothing to rank
            pad = 0.05 * (hi - lo)
            lo, hi = lo - pad, hi + pad
            grid = np.random.default_rng(seed).uniform(lo, hi, 10000)
            labels = group["attack"].to_numpy() if "attack" in group else None
            for name in detectors:
                s_data, s_grid = _normality(name, x, grid, seed)
                crit = em_mv(s_data, s_grid, hi - lo)
                row = {"measurement": m, "service": service, "records": int(services_count[service]),
                       "scored": len(x), "detector": name,
                       "em_auc": crit["em_auc"], "mv_auc": crit["mv_auc"]}
                if labels is not None and 0 < labels.sum() < len(labels):
                    row["pr_auc"] = float(average_precision_score(labels, -s_data))
                rows.append(row)
                curves[(m, service, name)] = crit
    table = pd.DataFrame(rows)
    if len(table):
        group_cols = ["measurement", "service"]
        table["em_rank"] = table.groupby(group_cols)["em_auc"].rank(ascending=False, method="min").astype(int)
        table["mv_rank"] = table.groupby(group_cols)["mv_auc"].rank(ascending=True, method="min").astype(int)
    return table, curves


def ranking(table: pd.DataFrame) -> pd.DataFrame:
    """Mean rank of each detector over all groups (1 = best), EM and MV."""
    agg = {"em_rank": "mean", "mv_rank": "mean", "em_auc": "count"}
    if "pr_auc" in table:
        agg["pr_auc"] = "mean"
    out = table.groupby("detector").agg(agg).rename(columns={"em_auc": "groups"})
    return out.sort_values(["em_rank", "mv_rank"])


def plot(curves: dict, table: pd.DataFrame, path: str) -> None:
    """EM and MV curves of the largest group of each measurement."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    picks = table.sort_values("records", ascending=False).drop_duplicates("measurement")
    fig, axes = plt.subplots(2, max(1, len(picks)), figsize=(4.2 * max(1, len(picks)), 7), squeeze=False)
    for col, pick in enumerate(picks.itertuples()):
        for name in table["detector"].unique():
            crit = curves.get((pick.measurement, pick.service, name))
            if crit is None:
                continue
            axes[0][col].plot(crit["em_t"], crit["em"], label=name)
            axes[1][col].plot(ALPHAS, crit["mv"], label=name)
        axes[0][col].set_title(f"{pick.measurement} / {pick.service}: EM (higher better)", fontsize=9)
        axes[1][col].set_title("MV (lower better)", fontsize=9)
        axes[0][col].set_xlabel("t")
        axes[1][col].set_xlabel("alpha")
        axes[0][col].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
