"""Rules from labelled flow records: CFS, then a C4.5-style tree, one rule per path to an attack leaf.

1. Candidate features: the numeric flow-record columns present in the data,
   less the ones that leak order or identity (pkSeqID, seq, stime, ltime;
   addresses are text and never candidates). proto_number and state_number
   are derived from proto and state with our encodings, so the rules also
   run on the monitor's own records.
2. Correlation-based feature selection (Hall 1999): greedy forward search on
   the subset merit k*r_cf / sqrt(k + k(k-1)*r_ff), with r the mean absolute
   Pearson correlation (feature-class, feature-feature); it stops after five
   expansions without a better merit.
3. An entropy (information gain) decision tree for attack vs normal on a
   stratified two thirds, pruned by a minimum leaf size (1% of the training
   rows by default): C4.5's criterion, scikit-learn's tree. Deciding only
   attack or not keeps paths few; each attack leaf takes the classtype of the
   most common attack class (category/subcategory) among its training rows.
4. Every path to an attack leaf is one rule; thresholds on the same feature
   are merged into one lower and one upper bound.
The source port is not a candidate: an ephemeral port says which port the
sender's allocator picked, not how the flow behaves.
5. The held-out third is scored through the rule engine itself: precision,
   recall and F1 of "attack" (any generated rule matches).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from iadm.ml.datasets import derive, numeric_ports

LEAKY = {"pkSeqID", "seq", "stime", "ltime"}
LABELS = {"attack", "category", "subcategory", "Label", "Category"}
CLASSTYPE = {("DDoS", None): "ddos", ("DoS", None): "dos", ("Reconnaissance", "Service_Scan"): "service-scan",
             ("Reconnaissance", "OS_Fingerprint"): "os-fingerprint", ("Theft", "Data_Exfiltration"): "data-exfiltration",
             ("Theft", "Keylogging"): "keylogging"}


@dataclass
class GeneratedRules:
    text: str
    features: list
    rules: int
    metrics: dict
    train_rows: int
    test_rows: int


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns ready for selection: the models' derived encodings, ports as integers."""
    return numeric_ports(derive(frame))


def candidates(frame: pd.DataFrame) -> list[str]:
    skip = LEAKY | LABELS | {"sport", "saddr", "daddr", "smac", "dmac", "soui", "doui", "sco", "dco", "flgs", "proto", "state"}
    cols = []
    for col in frame.columns:
        if col in skip:
            continue
        values = pd.to_numeric(frame[col], errors="coerce")
        if values.notna().mean() > 0.95 and values.nunique() > 1:
            cols.append(col)
    return cols


def cfs(frame: pd.DataFrame, target: pd.Series, features: list[str], patience: int = 5) -> list[str]:
    data = frame[features].apply(pd.to_numeric, errors="coerce").fillna(0.0).to_numpy(np.float64)
    y = target.to_numpy(np.float64)
    std = data.std(axis=0)
    keep = std > 0
    data, names = data[:, keep], [f for f, k in zip(features, keep) if k]
    z = (data - data.mean(axis=0)) / data.std(axis=0)
    zy = (y - y.mean()) / (y.std() or 1.0)
    r_cf = np.abs(z.T @ zy) / len(y)
    r_ff = np.abs(z.T @ z) / len(y)

    def merit(subset):
        k = len(subset)
        rcf = r_cf[subset].mean()
        rff = (r_ff[np.ix_(subset, subset)].sum() - k) / (k * (k - 1)) if k > 1 else 0.0
        return k * rcf / np.sqrt(k + k * (k - 1) * rff)

    chosen, best, best_subset, stale = [], -np.inf, [], 0
    while stale < patience and len(chosen) < len(names):
        scores = [(merit(chosen + [j]), j) for j in range(len(names)) if j not in chosen]
        score, j = max(scores)
        chosen.append(j)
        if score > best + 1e-12:
            best, best_subset, stale = score, list(chosen), 0
        else:
            stale += 1
    return [names[j] for j in best_subset]


def _paths(tree, features, classes):
    """(node, conditions, class, samples, purity) per decision region; conditions are (feature, op, threshold).

    A subtree whose leaves all decide the same class is one region: splitting it changes no
    prediction, only purity, and would turn one rule into many adjacent ones.
    """
    t = tree.tree_
    out = []
    decided = {}

    def decision(node):
        if node not in decided:
            if t.children_left[node] == t.children_right[node]:
                decided[node] = int(np.argmax(t.value[node][0]))
            else:
                left, right = decision(t.children_left[node]), decision(t.children_right[node])
                decided[node] = left if left == right else None
        return decided[node]

    def walk(node, conds):
        if decision(node) is not None:
            counts = t.value[node][0]
            out.append((node, conds, classes[decision(node)], int(t.n_node_samples[node]),
                        float(counts[decision(node)] / counts.sum())))
            return
        name, thr = features[t.feature[node]], float(t.threshold[node])
        walk(t.children_left[node], conds + [(name, "<=", thr)])
        walk(t.children_right[node], conds + [(name, ">", thr)])

    walk(0, [])
    return out


def _merge(conds):
    bounds = {}
    for name, op, thr in conds:
        lo, hi = bounds.get(name, (-np.inf, np.inf))
        bounds[name] = (max(lo, thr), hi) if op == ">" else (lo, min(hi, thr))
    parts = []
    for name, (lo, hi) in bounds.items():
        if np.isfinite(lo):
            parts.append(f"{name} > {lo!r}")
        if np.isfinite(hi):
            parts.append(f"{name} <= {hi!r}")
    return parts


def generate(frame: pd.DataFrame, first_sid: int = 2_000_000, min_leaf: float = 0.01, seed: int = 0,
             source: str = "data") -> GeneratedRules:
    from sklearn.model_selection import train_test_split
    from sklearn.tree import DecisionTreeClassifier

    from iadm.rules.engine import RuleEngine
    from iadm.rules.parser import parse_rules

    data = prepare(frame)
    for col in ("attack", "category", "subcategory"):
        if col not in data:
            raise ValueError(f"{source}: rule generation needs labelled records; column {col!r} is missing")
    y_attack = pd.to_numeric(data["attack"], errors="coerce").fillna(0).astype(int)
    classes_col = data["category"].astype(str) + "/" + data["subcategory"].astype(str)
    train, test = train_test_split(data.index, test_size=1 / 3, stratify=classes_col, random_state=seed)
    features = cfs(data.loc[train], y_attack.loc[train], candidates(data.loc[train]))
    x = data[features].apply(pd.to_numeric, errors="coerce").fillna(0.0)
    leaf_size = max(1, int(min_leaf * len(train))) if min_leaf < 1 else int(min_leaf)
    tree = DecisionTreeClassifier(criterion="entropy", min_samples_leaf=leaf_size, random_state=seed)
    tree.fit(x.loc[train], y_attack.loc[train])
    # Which region (collapsed subtree) each training row falls in: the node on its decision path.
    paths = tree.decision_path(x.loc[train])
    attack_rows = y_attack.loc[train] == 1
    lines = [f"# Generated by `iadm rules generate` from {source}: CFS features {', '.join(features)};",
             f"# entropy tree (attack vs normal) on {len(train)} rows, leaves of at least {leaf_size};",
             "# one rule per path to an attack leaf, classtype from the leaf's most common attack class."]
    sid = first_sid
    for node, conds, cls, samples, purity in _paths(tree, features, list(tree.classes_)):
        if cls != 1 or not conds:
            continue
        in_region = np.asarray(paths[:, node].todense()).ravel().astype(bool)
        in_leaf = classes_col.loc[train][in_region & attack_rows.to_numpy()]
        category, subcategory = in_leaf.value_counts().index[0].split("/", 1)
        classtype = CLASSTYPE.get((category, subcategory)) or CLASSTYPE.get((category, None), "misc-attack")
        meta = f" metadata:subcategory {subcategory};" if classtype in ("dos", "ddos") else ""
        preds = "; ".join(_merge(conds))
        lines.append(f'alert ip any any -> any any (msg:"generated: {category}/{subcategory} '
                     f'({samples} training rows, {purity:.0%} attack)"; {preds}; classtype:{classtype};{meta} '
                     f'sid:{sid}; rev:1;)')
        sid += 1
    text = "\n".join(lines) + "\n"
    engine = RuleEngine(parse_rules(text, "<generated>"))
    held_out = data.loc[test].reset_index(drop=True)
    predicted = engine.evaluate(held_out).labels()["attack"].to_numpy()
    truth = y_attack.loc[test].to_numpy()
    tp = int(((predicted == 1) & (truth == 1)).sum())
    fp = int(((predicted == 1) & (truth == 0)).sum())
    fn = int(((predicted == 0) & (truth == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    metrics = {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
               "tn": int(((predicted == 0) & (truth == 0)).sum())}
    return GeneratedRules(text, features, sid - first_sid, metrics, len(train), len(test))
