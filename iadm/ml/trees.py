"""Tree ensembles as flat arrays, and one compiled pass that predicts from them.

A trained tree ensemble is exported beside its joblib file as NAME.trees.npz, so that a gateway
predicts without importing scikit-learn or LightGBM (about 65 MiB of a monitor's peak memory
beyond what numba and SciPy already cost it, to walk a few hundred trees). `export` builds the
arrays from a fitted estimator; `CompiledTrees.load` reads and checks them; `CompiledTrees.predict_proba` is one numba pass over
the records (in blocks of 256 taken through each tree in turn; in a block without NaN, four records
walk a tree together, so that their walks overlap in the processor).

The arrays (every tree's nodes one after the other; a node's children come after it in its own
tree, so a walk always ends):

- `feature` (int32, -1 on a leaf), `threshold` (float64), `left` / `right` (int32, absolute node
  indices; on a leaf `left` is the leaf's row of `leaf_values`), `nan_rule` (int8) and
  `default_left` (uint8): what a missing value does at the node (below);
- `tree_root` (int32, n_trees + 1: where each tree starts, and the end), `tree_class` (int32: the
  class a one-output tree adds to, or -1 when its leaves hold one value per class);
- `leaf_values` (float64, n_leaves x 1 or n_leaves x n_classes);
- `meta`: a JSON text: format, estimator, how scores combine, classes, features, and the input
  rule.

A node sends a record left when `x <= threshold` (scikit-learn and LightGBM both). Missing values,
`nan_rule`: 0, NaN is read as 0.0 (LightGBM "None"); 1, NaN and |x| <= 1e-35 take the default
side (LightGBM "Zero"); 2, NaN takes the default side (LightGBM "NaN", scikit-learn's
missing_go_to_left). Input rule: scikit-learn trees read their input as float32 (the value is
rounded to float32 first, then compared with the float64 threshold); LightGBM reads float64 and
treats |x| <= 1e-35 as exactly 0.0 (its dense-row reader drops such values).

How scores combine (`combine` in meta):

- `mean` (Random Forest, Extra Trees, a single decision tree): each leaf holds the class
  probabilities of its tree (scikit-learn's tree_.value); the forest's probability is their sum
  over the trees in order, divided by the number of trees.
- `softmax` (LightGBM multiclass): tree t adds its leaf value to class t mod K (the first trees
  carry the initial score); the raw scores go through LightGBM's softmax (max subtracted, exp,
  divided by the sum).
- `sigmoid` (LightGBM binary): p = 1 / (1 + exp(-sigmoid * raw)); the probabilities are
  (1 - p, p).
- `samme` (AdaBoost, SAMME): each leaf holds its tree's vote, w for the class the tree predicts
  and -w / (K - 1) for the others; the sum is divided by the sum of the estimator weights; for
  two classes d = score[1] - score[0] and the probabilities are softmax(-d/2, d/2), otherwise
  softmax(score / (K - 1)), as scikit-learn computes them.

What cannot be represented exactly is not exported (`NotExportable` with the reason; the model
then loads through joblib): LightGBM categorical splits, linear trees, random-forest mode
(average_output), objectives other than binary and multiclass, early-stopped models whose best
iteration is not the whole model; scikit-learn multi-output trees; AdaBoost over anything but
decision trees; any other estimator (KNN, pipelines, gradient boosting).
"""
from __future__ import annotations

import hashlib
import json
import math
import zipfile

import numpy as np
from numba import njit

FORMAT = "iadm-trees/1"
ZERO = float(np.float32(1e-35))     # LightGBM's kZeroThreshold (a float literal held in a double)
COMBINE = {"mean": 0, "softmax": 1, "sigmoid": 2, "samme": 3}
ARRAYS = {"feature": np.int32, "threshold": np.float64, "left": np.int32, "right": np.int32,
          "nan_rule": np.int8, "default_left": np.uint8, "tree_root": np.int32, "tree_class": np.int32,
          "leaf_values": np.float64}


class NotExportable(Exception):
    """The estimator cannot be compiled exactly; the message says why."""


class TreesError(ValueError):
    """A trees file that is damaged, foreign or inconsistent; the message says what is wrong."""


# ---------------------------------------------------------------- export

class _Builder:
    def __init__(self):
        self.feature, self.threshold, self.left, self.right = [], [], [], []
        self.nan_rule, self.default_left, self.roots, self.tree_class, self.leaves = [], [], [], [], []

    def node(self) -> int:
        for column, value in ((self.feature, -1), (self.threshold, 0.0), (self.left, -1), (self.right, -1),
                              (self.nan_rule, 0), (self.default_left, 0)):
            column.append(value)
        return len(self.feature) - 1

    def leaf(self, at: int, values) -> None:
        self.left[at] = len(self.leaves)
        self.leaves.append(np.asarray(values, dtype=np.float64).ravel())

    def arrays(self, meta: dict) -> dict:
        width = {len(v) for v in self.leaves}
        if len(width) != 1:
            raise NotExportable("leaves of different widths")
        out = {"feature": self.feature, "threshold": self.threshold, "left": self.left, "right": self.right,
               "nan_rule": self.nan_rule, "default_left": self.default_left,
               "tree_root": self.roots + [len(self.feature)], "tree_class": self.tree_class,
               "leaf_values": np.vstack(self.leaves)}
        out = {k: np.ascontiguousarray(np.asarray(v, dtype=ARRAYS[k])) for k, v in out.items()}
        meta = {"format": FORMAT, **meta, "trees": len(self.roots), "nodes": len(self.feature)}
        out["meta"] = np.array(json.dumps(meta, sort_keys=True))
        return out

    def sklearn_tree(self, tree, leaf_values, cls: int = -1) -> None:
        """One scikit-learn tree_ (its node order kept: children come after their parent)."""
        base = len(self.feature)
        self.roots.append(base)
        self.tree_class.append(cls)
        left, right = tree.children_left, tree.children_right
        missing_left = getattr(tree, "missing_go_to_left", None)
        for i in range(tree.node_count):
            at = self.node()
            if left[i] == -1:
                self.leaf(at, leaf_values[i])
                continue
            if left[i] <= i or right[i] <= i:
                raise NotExportable("a tree whose children come before their parent")
            self.feature[at] = int(tree.feature[i])
            self.threshold[at] = float(tree.threshold[i])
            self.left[at], self.right[at] = base + int(left[i]), base + int(right[i])
            self.nan_rule[at] = 2
            self.default_left[at] = int(bool(missing_left[i])) if missing_left is not None else 0

    def lightgbm_tree(self, structure: dict, cls: int) -> None:
        self.roots.append(len(self.feature))
        self.tree_class.append(cls)
        stack = [(structure, None, None)]   # (node, parent index, which side)
        while stack:                        # depth first, so children come after their parent
            node, parent, side = stack.pop()
            at = self.node()
            if parent is not None:
                (self.left if side == "left" else self.right)[parent] = at
            if "split_index" not in node:
                if "leaf_coeff" in node or "leaf_features" in node:
                    raise NotExportable("LightGBM linear trees")
                self.leaf(at, [node["leaf_value"]])
                continue
            if node.get("decision_type") != "<=":
                raise NotExportable(f"a LightGBM {node.get('decision_type')!r} split (categorical)")
            rule = {"None": 0, "Zero": 1, "NaN": 2}.get(node.get("missing_type"))
            if rule is None:
                raise NotExportable(f"LightGBM missing type {node.get('missing_type')!r}")
            self.feature[at] = int(node["split_feature"])
            self.threshold[at] = float(node["threshold"])
            self.nan_rule[at] = rule
            self.default_left[at] = int(bool(node["default_left"]))
            stack.append((node["right_child"], at, "right"))
            stack.append((node["left_child"], at, "left"))


def _sklearn_leaf_proba(tree, n_classes: int) -> np.ndarray:
    if tree.n_outputs != 1:
        raise NotExportable("a multi-output tree")
    return np.asarray(tree.value[:, 0, :n_classes], dtype=np.float64)   # what predict_proba returns


def _forest(estimator, trees: list, what: str) -> dict:
    k = int(estimator.n_classes_) if np.ndim(estimator.n_classes_) == 0 else None
    if k is None:
        raise NotExportable("a multi-output forest")
    b = _Builder()
    for t in trees:
        b.sklearn_tree(t.tree_, _sklearn_leaf_proba(t.tree_, k))
    return b.arrays({"estimator": what, "combine": "mean", "n_classes": k, "input": "float32",
                     "scale": 1.0})


def _adaboost(estimator) -> dict:
    from sklearn.tree import BaseDecisionTree
    k = int(estimator.n_classes_)
    if getattr(estimator, "algorithm", "SAMME") not in ("SAMME", "deprecated"):
        raise NotExportable(f"AdaBoost algorithm {estimator.algorithm!r}")
    if k < 2:
        raise NotExportable("AdaBoost with one class")
    b = _Builder()
    weights = estimator.estimator_weights_
    for tree, w in zip(estimator.estimators_, weights):
        if not isinstance(tree, BaseDecisionTree):
            raise NotExportable(f"AdaBoost over {type(tree).__name__}")
        if [str(c) for c in tree.classes_] != [str(c) for c in estimator.classes_]:
            raise NotExportable("an AdaBoost tree that saw other classes than the ensemble")
        value = tree.tree_.value[:, 0, :k]
        picked = np.argmax(value, axis=1)          # DecisionTreeClassifier.predict, per leaf
        votes = np.where(np.arange(k)[None, :] == picked[:, None], w, -1 / (k - 1) * w)
        b.sklearn_tree(tree.tree_, votes)
    return b.arrays({"estimator": "AdaBoostClassifier (SAMME)", "combine": "samme", "n_classes": k,
                     "input": "float32", "scale": float(weights.sum())})


def _lightgbm(estimator) -> dict:
    booster = estimator.booster_
    dump = booster.dump_model()
    if dump.get("pandas_categorical"):
        raise NotExportable("LightGBM categorical features")
    if dump.get("average_output"):
        raise NotExportable("LightGBM random-forest mode (average_output)")
    best = getattr(estimator, "best_iteration_", None) or 0
    if best and best != booster.current_iteration():
        raise NotExportable(f"LightGBM early-stopped at iteration {best} of {booster.current_iteration()}")
    objective = str(dump.get("objective", "")).split()
    per_iteration = int(dump["num_tree_per_iteration"])
    k = len(estimator.classes_)
    if objective[:1] == ["multiclass"] and per_iteration == k:
        combine, scale = "softmax", 1.0
    elif objective[:1] == ["binary"] and per_iteration == 1 and k == 2:
        combine = "sigmoid"
        sig = [o.split(":", 1)[1] for o in objective[1:] if o.startswith("sigmoid:")]
        scale = float(sig[0]) if sig else 1.0
    else:
        raise NotExportable(f"LightGBM objective {' '.join(objective) or '?'!r}")
    b = _Builder()
    for info in dump["tree_info"]:
        if info.get("num_cat", 0):
            raise NotExportable("LightGBM categorical splits")
        if info.get("is_linear"):
            raise NotExportable("LightGBM linear trees")
        b.lightgbm_tree(info["tree_structure"], int(info["tree_index"]) % per_iteration if combine == "softmax" else 0)
    return b.arrays({"estimator": f"LGBMClassifier ({' '.join(objective)})", "combine": combine, "n_classes": k,
                     "input": "lightgbm", "scale": scale})


def export(estimator, features: list[str], classes: list) -> dict:
    """The arrays of a fitted tree ensemble, or NotExportable saying why it has none."""
    name = type(estimator).__name__
    module = type(estimator).__module__
    if module.startswith("lightgbm") and name in ("LGBMClassifier", "DaskLGBMClassifier"):
        arrays = _lightgbm(estimator)
    elif module.startswith("sklearn"):
        from sklearn.ensemble import AdaBoostClassifier, ExtraTreesClassifier, RandomForestClassifier
        from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier
        if type(estimator) in (RandomForestClassifier, ExtraTreesClassifier):
            arrays = _forest(estimator, estimator.estimators_, name)
        elif type(estimator) in (DecisionTreeClassifier, ExtraTreeClassifier):
            arrays = _forest(estimator, [estimator], name)
        elif type(estimator) is AdaBoostClassifier:
            arrays = _adaboost(estimator)
        else:
            raise NotExportable(f"{name} is not a tree ensemble the compiled predictor knows")
    else:
        raise NotExportable(f"{module}.{name} is not a tree ensemble the compiled predictor knows")
    if getattr(estimator, "n_features_in_", len(features)) != len(features):
        raise NotExportable(f"the estimator reads {estimator.n_features_in_} features, the card lists {len(features)}")
    meta = json.loads(str(arrays["meta"]))
    meta.update(features=list(features), classes=[str(c) for c in classes])
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    if len(classes) != meta["n_classes"]:
        raise NotExportable(f"{meta['n_classes']} classes in the trees, {len(classes)} on the card")
    check(arrays, "<export>")
    return arrays


def write(path: str, arrays: dict) -> str:
    """Write the arrays (uncompressed npz, written whole then renamed); return the file's sha256."""
    import os
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)
    return sha256(path)


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(meta: dict) -> str:
    how = {"mean": "the mean of the trees' class probabilities",
           "softmax": "softmax of the leaf values summed per class",
           "sigmoid": "sigmoid of the summed leaf values",
           "samme": "SAMME: softmax of the weighted votes"}[meta["combine"]]
    return f"{meta['estimator']}: {meta['trees']} trees, {meta['nodes']} nodes, {how}"


# ---------------------------------------------------------------- checks and loading

def check(arrays: dict, path: str) -> dict:
    """The arrays' meta, once every index has been checked to stay in bounds; TreesError otherwise."""
    def bad(what):
        raise TreesError(f"{path}: {what}")
    for key, dtype in ARRAYS.items():
        if key not in arrays:
            bad(f"no {key!r} array")
        if arrays[key].dtype != dtype:
            bad(f"{key!r} is {arrays[key].dtype}, expected {np.dtype(dtype)}")
    if "meta" not in arrays:
        bad("no 'meta' record")
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError as exc:
        bad(f"its meta record is not JSON: {exc}")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        bad(f"not an iadm trees file (format {meta.get('format') if isinstance(meta, dict) else None!r}, "
            f"expected {FORMAT!r})")
    for key in ("combine", "n_classes", "input", "scale", "features", "classes", "trees", "nodes"):
        if key not in meta:
            bad(f"its meta record has no {key!r}")
    if meta["combine"] not in COMBINE or meta["input"] not in ("float32", "lightgbm"):
        bad(f"unknown combine {meta['combine']!r} or input {meta['input']!r}")
    k, n_features = int(meta["n_classes"]), len(meta["features"])
    feature, left, right = arrays["feature"], arrays["left"], arrays["right"]
    roots, cls, leaves = arrays["tree_root"], arrays["tree_class"], arrays["leaf_values"]
    n = len(feature)
    if any(arrays[key].ndim != 1 or len(arrays[key]) != n for key in
           ("threshold", "left", "right", "nan_rule", "default_left")):
        bad("node arrays of different lengths")
    if n != meta["nodes"] or len(roots) != meta["trees"] + 1 or len(cls) != meta["trees"] or meta["trees"] < 1:
        bad(f"{n} nodes and {len(roots) - 1} trees, its meta record says {meta['nodes']} and {meta['trees']}")
    if k != len(meta["classes"]) or k < 2:
        bad(f"{k} classes, its meta record lists {len(meta['classes'])}")
    if leaves.ndim != 2 or leaves.shape[1] not in (1, k) or not np.isfinite(leaves).all():
        bad(f"leaf values of shape {leaves.shape} (or not finite); expected n x 1 or n x {k}")
    if roots[0] != 0 or roots[-1] != n or (np.diff(roots) < 1).any():
        bad("tree boundaries out of order")
    if (leaves.shape[1] == 1) != (cls >= 0).all() or (cls >= k).any() or (cls < -1).any():
        bad("tree classes do not fit the leaf values")
    end = np.repeat(roots[1:], np.diff(roots)).astype(np.int64)
    index = np.arange(n, dtype=np.int64)
    inner = feature >= 0
    if (feature >= n_features).any() or (feature < -1).any():
        bad(f"a split on a feature outside the {n_features} features")
    if ((left[inner] <= index[inner]) | (right[inner] <= index[inner]) | (left[inner] >= end[inner])
            | (right[inner] >= end[inner])).any():
        bad("a node whose children are not after it in its own tree")
    if ((left[~inner] < 0) | (left[~inner] >= len(leaves))).any():
        bad("a leaf outside the leaf values")
    if np.isnan(arrays["threshold"][inner]).any() or ((arrays["nan_rule"] < 0) | (arrays["nan_rule"] > 2)).any():
        bad("a NaN threshold or an unknown missing-value rule")
    return meta


class CompiledTrees:
    """predict_proba over the arrays of a trees file, with classes_ like the estimator's."""

    def __init__(self, arrays: dict, meta: dict, classes: list, path: str):
        self.path, self.meta = path, meta
        self.classes_ = np.asarray(classes, dtype=object if any(isinstance(c, str) for c in classes) else None)
        self.n_features_in_ = len(meta["features"])
        self._args = tuple(arrays[k] for k in ARRAYS)
        self._float32 = meta["input"] == "float32"
        self._combine = COMBINE[meta["combine"]]
        self._scale = float(meta["scale"])

    @classmethod
    def load(cls, path: str, classes: list) -> "CompiledTrees":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise TreesError(f"{path}: not a readable trees file: {type(exc).__name__}: {exc}") from None
        meta = check(arrays, path)
        return cls(arrays, meta, classes, path)

    def predict_proba(self, x) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features_in_:
            raise ValueError(f"{self.path}: records of shape {x.shape}, the trees read {self.n_features_in_} features")
        return _predict(x, self._float32, self._combine, self._scale, len(self.classes_), *self._args)


BLOCK = 256   # records walked through every tree together: their inputs and the tree stay in cache


@njit(cache=True, nogil=True)
def _predict(x, float32_input, combine, scale, k, feature, threshold, left, right, nan_rule, default_left,
             tree_root, tree_class, leaf_values):
    n, n_features = x.shape
    n_trees = tree_root.shape[0] - 1
    zero_rule = False                      # LightGBM "Zero" splits: zero takes the default side
    for node in range(feature.shape[0]):
        if nan_rule[node] == 1:
            zero_rule = True
            break
    out = np.zeros((n, k), dtype=np.float64)
    xb = np.empty((BLOCK, n_features), dtype=np.float64)
    raw = np.zeros((BLOCK, k), dtype=np.float64)
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        plain = not zero_rule              # no NaN in the block and no zero rule: `x <= t` decides alone
        for i in range(m):                 # the input as the library reads it
            for f in range(n_features):
                v = x[start + i, f]
                if float32_input:
                    v = np.float64(np.float32(v))
                elif abs(v) <= ZERO:       # LightGBM's reader keeps only |x| > kZeroThreshold
                    v = 0.0
                if math.isnan(v):
                    plain = False
                xb[i, f] = v
            for j in range(k):
                raw[i, j] = 0.0
        for t in range(n_trees):
            root = tree_root[t]
            c = tree_class[t]
            i = 0
            if plain:                      # four records at a time: their walks overlap in the CPU
                while i + 4 <= m:
                    a0, a1, a2, a3 = root, root, root, root
                    while feature[a0] >= 0 or feature[a1] >= 0 or feature[a2] >= 0 or feature[a3] >= 0:
                        f = feature[a0]
                        if f >= 0:
                            a0 = left[a0] if xb[i, f] <= threshold[a0] else right[a0]
                        f = feature[a1]
                        if f >= 0:
                            a1 = left[a1] if xb[i + 1, f] <= threshold[a1] else right[a1]
                        f = feature[a2]
                        if f >= 0:
                            a2 = left[a2] if xb[i + 2, f] <= threshold[a2] else right[a2]
                        f = feature[a3]
                        if f >= 0:
                            a3 = left[a3] if xb[i + 3, f] <= threshold[a3] else right[a3]
                    if c >= 0:
                        raw[i, c] += leaf_values[left[a0], 0]
                        raw[i + 1, c] += leaf_values[left[a1], 0]
                        raw[i + 2, c] += leaf_values[left[a2], 0]
                        raw[i + 3, c] += leaf_values[left[a3], 0]
                    else:
                        for j in range(k):
                            raw[i, j] += leaf_values[left[a0], j]
                            raw[i + 1, j] += leaf_values[left[a1], j]
                            raw[i + 2, j] += leaf_values[left[a2], j]
                            raw[i + 3, j] += leaf_values[left[a3], j]
                    i += 4
            while i < m:
                node = root
                while feature[node] >= 0:
                    v = xb[i, feature[node]]
                    if zero_rule and nan_rule[node] == 1 and (math.isnan(v) or v == 0.0):
                        node = left[node] if default_left[node] else right[node]
                    elif v <= threshold[node]:
                        node = left[node]
                    elif v > threshold[node]:
                        node = right[node]
                    elif nan_rule[node] == 0:      # NaN read as 0.0
                        node = left[node] if 0.0 <= threshold[node] else right[node]
                    else:                          # NaN to the default side
                        node = left[node] if default_left[node] else right[node]
                if c >= 0:
                    raw[i, c] += leaf_values[left[node], 0]
                else:
                    for j in range(k):
                        raw[i, j] += leaf_values[left[node], j]
                i += 1
        for i in range(m):
            _combine(raw[i], out[start + i], combine, scale, k, n_trees)
    return out


@njit(cache=True, nogil=True)
def _combine(raw, out, combine, scale, k, n_trees):
    if combine == 0:                       # mean of the trees' probabilities
        for j in range(k):
            out[j] = raw[j] / n_trees
    elif combine == 2:                     # LightGBM binary
        p = 1.0 / (1.0 + math.exp(-scale * raw[0]))
        out[0] = 1.0 - p
        out[1] = p
    else:
        if combine == 3:                   # SAMME: weighted votes, then scikit-learn's scaling
            for j in range(k):
                raw[j] /= scale
            if k == 2:
                d = -raw[0] + raw[1]
                raw[0] = -d / 2
                raw[1] = d / 2
            else:
                for j in range(k):
                    raw[j] /= k - 1
        top = raw[0]
        for j in range(1, k):
            top = max(top, raw[j])
        total = 0.0
        for j in range(k):
            out[j] = math.exp(raw[j] - top)
            total += out[j]
        for j in range(k):
            out[j] /= total
