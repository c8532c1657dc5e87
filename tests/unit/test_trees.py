"""Compiled tree ensembles (iadm.ml.trees): the same probabilities as the estimators, to 1e-9, on
synthetic data with every threshold hit exactly and on real records; the registry's refusals of
trees files that are damaged, foreign or at odds with their card; and a monitor's model that
predicts without importing scikit-learn or LightGBM."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from iadm.ml import registry, trees
from iadm.ml.models import DEFAULT, fit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PCAPS = os.path.join(ROOT, "..", "shared", "data", "pcaps")
TOL = 1e-9


def synthetic(n=3000, classes=("Normal", "DoS", "DDoS"), seed=0):
    """Flow-like features: integer counts, ports and states (values repeat, so split thresholds sit
    on or between data values), rates spread over decades, some zeros, some negative values."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(classes), n, p=np.linspace(2, 1, len(classes)) / np.linspace(2, 1, len(classes)).sum())
    x = pd.DataFrame({f: rng.integers(0, 50, n).astype(float) for f in DEFAULT})
    x["proto_number"] = rng.choice([1, 6, 17], n).astype(float)
    x["state_number"] = (y + rng.integers(0, 3, n)).astype(float)
    x["dport"] = np.where(y == 0, rng.choice([80, 443, 53], n), rng.integers(0, 1024, n)).astype(float)
    x["rate"] = np.exp(rng.normal(y * 2.0, 1.5, n))
    x["srate"] = np.where(rng.random(n) < 0.2, 0.0, x["rate"] * rng.random(n))
    x["drate"] = rng.normal(y - 1.0, 1.0, n)        # negative and positive, crossing zero
    x["dur"] = rng.exponential(1.0 + y, n)
    labels = pd.Series(np.asarray(classes, dtype=object)[y])
    return x, labels


def probe(x: pd.DataFrame, arrays: dict, seed=1, per_node=2) -> np.ndarray:
    """Records of the data plus, for (a sample of) every split, records whose value is the threshold
    itself, its float32 rounding and the next doubles either side: a `<=` turned `<`, or an input
    read at another precision, sends them the other way."""
    rng = np.random.default_rng(seed)
    base = x.to_numpy(dtype=np.float64)
    inner = np.flatnonzero(arrays["feature"] >= 0)
    if len(inner) > 1500:
        inner = rng.choice(inner, 1500, replace=False)
    rows = [base]
    for node in inner:
        f, t = arrays["feature"][node], arrays["threshold"][node]
        for value in (t, float(np.float32(t)), np.nextafter(t, -np.inf), np.nextafter(t, np.inf)):
            r = base[rng.integers(0, len(base), per_node)].copy()
            r[:, f] = value
            rows.append(r)
    out = np.vstack(rows)
    hit = sum(np.isin(out[:, f], arrays["threshold"][arrays["feature"] == f]).sum() for f in range(out.shape[1]))
    assert hit > len(inner)      # thresholds are hit exactly
    return out


def compiled(estimator, features, classes) -> trees.CompiledTrees:
    arrays = trees.export(estimator, features, classes)
    return trees.CompiledTrees(arrays, trees.check(arrays, "<test>"), classes, "<test>"), arrays


def same(estimator, predictor, x: np.ndarray, features) -> None:
    expected = estimator.predict_proba(pd.DataFrame(x, columns=features))
    got = predictor.predict_proba(x)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOL
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def lightgbm(**params):
    from lightgbm import LGBMClassifier
    return LGBMClassifier(n_estimators=25, learning_rate=0.2, num_leaves=15, verbose=-1, random_state=0,
                          n_jobs=1, **params)


def sklearn(kind):
    from sklearn.ensemble import AdaBoostClassifier, ExtraTreesClassifier, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier
    return {"extratrees": lambda: ExtraTreesClassifier(n_estimators=30, random_state=0),
            "extratree": lambda: ExtraTreeClassifier(random_state=0),
            "adaboost_stumps": lambda: AdaBoostClassifier(DecisionTreeClassifier(max_depth=1), n_estimators=40,
                                                          random_state=0),
            "rf_deep": lambda: RandomForestClassifier(n_estimators=20, min_samples_leaf=1, random_state=0,
                                                      bootstrap=True, max_features=None),
            "tree_gini": lambda: DecisionTreeClassifier(random_state=0)}[kind]()


# the project's kinds, built by iadm.ml.models.fit; and other tree ensembles
KINDS = ["lightgbm", "rf", "adaboost", "tree"]
OTHERS = ["extratrees", "extratree", "adaboost_stumps", "rf_deep", "tree_gini"]


@pytest.mark.parametrize("n_classes", [2, 3, 5])
@pytest.mark.parametrize("kind", KINDS + OTHERS)
def test_compiled_trees_equal_the_estimator_on_thresholds_hit_exactly(kind, n_classes):
    classes = ("Normal", "DoS", "DDoS", "Reconnaissance", "Theft")[:n_classes]
    x, y = synthetic(classes=classes, seed=n_classes)
    estimator = fit(kind, x, y) if kind in KINDS else sklearn(kind).fit(x, y)
    predictor, arrays = compiled(estimator, DEFAULT, list(estimator.classes_))
    same(estimator, predictor, probe(x, arrays), DEFAULT)


def test_lightgbm_binary_with_a_zero_or_nan_missing_rule_and_nan_inputs():
    x, y = synthetic(classes=("Normal", "DoS"), seed=3)
    y01 = (y == "DoS").astype(int)
    holes = x.copy()
    holes.loc[holes.sample(frac=0.1, random_state=0).index, ["rate", "drate", "dur"]] = np.nan
    for params, data in (({}, x), ({}, holes), ({"zero_as_missing": True}, x), ({"zero_as_missing": True}, holes),
                         ({"use_missing": False}, holes)):
        estimator = lightgbm(**params).fit(data, y01)
        predictor, arrays = compiled(estimator, DEFAULT, [0, 1])
        rules = set(arrays["nan_rule"][arrays["feature"] >= 0].tolist())
        probes = probe(x, arrays)
        with_nan = probes.copy()
        with_nan[::7, 5] = np.nan                  # dur
        with_nan[::5, 17] = np.nan                 # drate
        with_nan[::11, 16] = 1e-36                 # srate: |x| <= 1e-35 reads as zero
        with_nan[::13, 17] = -0.0
        same(estimator, predictor, with_nan, DEFAULT)
        if params.get("zero_as_missing"):
            assert 1 in rules
        elif data is holes and params.get("use_missing", True):
            assert 2 in rules


def test_lightgbm_multiclass_with_nan_inputs():
    x, y = synthetic(classes=("Normal", "DoS", "DDoS", "Theft"), seed=4)
    holes = x.copy()
    holes.loc[holes.sample(frac=0.1, random_state=1).index, ["srate", "mean"]] = np.nan
    estimator = lightgbm(class_weight="balanced").fit(holes, y)
    predictor, arrays = compiled(estimator, DEFAULT, list(estimator.classes_))
    probes = probe(x, arrays)
    probes[::3, 16] = np.nan
    same(estimator, predictor, probes, DEFAULT)


def test_what_cannot_be_compiled_exactly_is_refused_with_the_reason():
    x, y = synthetic(classes=("Normal", "DoS"), seed=5)
    cat = x.assign(proto_number=x["proto_number"].astype(int).astype("category"))
    with pytest.raises(trees.NotExportable, match="categorical"):
        trees.export(lightgbm().fit(cat, y), DEFAULT, ["DoS", "Normal"])
    with pytest.raises(trees.NotExportable, match="linear trees"):
        trees.export(lightgbm(linear_tree=True).fit(x, y), DEFAULT, ["DoS", "Normal"])
    with pytest.raises(trees.NotExportable, match="random-forest mode"):
        trees.export(lightgbm(boosting_type="rf", bagging_freq=1, bagging_fraction=0.5).fit(x, y), DEFAULT,
                     ["DoS", "Normal"])
    with pytest.raises(trees.NotExportable, match="KNeighbors|Pipeline"):
        trees.export(fit("knn", x, y), DEFAULT, ["DoS", "Normal"])
    from sklearn.ensemble import GradientBoostingClassifier
    with pytest.raises(trees.NotExportable, match="GradientBoosting"):
        trees.export(GradientBoostingClassifier(n_estimators=3).fit(x, y), DEFAULT, ["DoS", "Normal"])


def real_records(limit=60_000):
    from iadm.flows.pipeline import records_from_pcap
    from iadm.ml.datasets import derive
    frames = []
    for name in ("pkt.TCP.synflood.spoofed.pcap", "synscan.pcapng", "benign-iot/lockly-hub-01.pcap",
                 "attacks-more/slowloris-http.pcapng", "benign-more/mqtt-broker-2clients.pcap"):
        path = os.path.join(PCAPS, name)
        if os.path.exists(path):
            records, _ = records_from_pcap(path, kind="running", status_interval=0.1, flow_timeout=30.0)
            frames.append(derive(records))
    if not frames:
        pytest.skip("../shared/data/pcaps is absent")
    frame = pd.concat(frames, ignore_index=True)
    return frame.iloc[:limit] if len(frame) > limit else frame


def test_on_real_records_the_shipped_model_and_each_kind_agree_with_their_estimators(tmp_path):
    frame = real_records()
    compiled_default, joblib_default = registry.load("models/default"), registry.load("models/default", compiled=False)
    assert compiled_default.compiled and not joblib_default.compiled
    a, b = compiled_default.predict_proba(frame), joblib_default.predict_proba(frame)
    assert np.abs(a - b).max() <= TOL and (a.argmax(axis=1) == b.argmax(axis=1)).all()
    pd.testing.assert_frame_equal(compiled_default.predict(frame), joblib_default.predict(frame))
    # small models of each kind trained on part of the real records, compared on all of them
    x = frame[DEFAULT].apply(pd.to_numeric, errors="coerce").fillna(0.0).astype(np.float64)
    y = pd.Series(np.where(frame["dpkts"].to_numpy() > 0, "Normal", "DoS"), dtype=object)
    y[frame["proto_number"].to_numpy() == 17] = "DDoS"
    rows = np.random.default_rng(0).choice(len(x), min(len(x), 4000), replace=False)
    for kind in KINDS:
        estimator = fit(kind, x.iloc[rows], y.iloc[rows])
        predictor, _ = compiled(estimator, DEFAULT, list(estimator.classes_))
        same(estimator, predictor, x.to_numpy(), DEFAULT)


def saved(tmp_path, kind="lightgbm", name="m"):
    x, y = synthetic(classes=("Normal", "DoS", "DDoS"), seed=6)
    estimator = fit(kind, x, y)
    card = {"kind": kind, "features": DEFAULT, "target": "category", "classes": [str(c) for c in estimator.classes_]}
    registry.save(str(tmp_path / name), estimator, card)
    return str(tmp_path / name), x


def test_save_exports_the_trees_and_load_prefers_them(tmp_path):
    name, x = saved(tmp_path)
    card = json.loads(open(name + ".json").read())
    entry = card["compiled"]
    assert entry["file"] == "m.trees.npz" and entry["format"] == trees.FORMAT
    assert entry["sha256"] == trees.sha256(name + ".trees.npz") and "softmax" in entry["what"]
    model = registry.load(name)
    assert model.compiled and isinstance(model.predictor, trees.CompiledTrees)
    same(model.estimator, model.predictor, x.to_numpy(), DEFAULT)     # the estimator, lazily
    pd.testing.assert_frame_equal(model.predict(x), registry.load(name, compiled=False).predict(x))
    # a model that cannot be compiled: no trees file, the reason on the card, loaded through joblib
    knn, _ = saved(tmp_path, "knn", "k")
    card = json.loads(open(knn + ".json").read())
    assert card["compiled"]["file"] is None and "not compiled" in card["compiled"]["reason"]
    assert not os.path.exists(knn + ".trees.npz") and not registry.load(knn).compiled
    # saving a non-compilable model over a compiled one removes the stale trees file
    registry.save(name, fit("knn", x, pd.Series(["Normal", "DoS", "DDoS"] * (len(x) // 3))),
                  {"kind": "knn", "features": DEFAULT, "target": "category", "classes": ["DDoS", "DoS", "Normal"]})
    assert not os.path.exists(name + ".trees.npz") and not registry.load(name).compiled


def write_card(name, change):
    card = json.loads(open(name + ".json").read())
    change(card)
    with open(name + ".json", "w") as fh:
        json.dump(card, fh)


def test_damaged_foreign_or_mismatched_trees_are_refused_by_name(tmp_path):
    name, _ = saved(tmp_path)
    npz = name + ".trees.npz"
    good = open(npz, "rb").read()

    def refused(pattern):
        with pytest.raises(registry.ModelError, match=pattern):
            registry.load(name)

    open(npz, "wb").write(good[: len(good) // 2])                       # truncated
    refused(r"m\.trees\.npz: sha256 .* is not the card's")
    open(npz, "wb").write(good[:-1] + bytes([good[-1] ^ 1]))              # one bit
    refused(r"m\.trees\.npz: sha256")
    # damaged, with the card's hash made to match: still refused, as unreadable
    open(npz, "wb").write(good[: len(good) // 2])
    write_card(name, lambda c: c["compiled"].update(sha256=trees.sha256(npz)))
    refused(r"m\.trees\.npz: not a readable trees file")
    # readable but inconsistent arrays (a child pointing backwards), hash matching
    with np.load(io.BytesIO(good)) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["left"] = arrays["left"].copy()
    inner = np.flatnonzero(arrays["feature"] >= 0)
    arrays["left"][inner[3]] = 0
    trees.write(npz, arrays)
    write_card(name, lambda c: c["compiled"].update(sha256=trees.sha256(npz)))
    refused(r"m\.trees\.npz: a node whose children are not after it")
    # the good file back, but a card that disagrees with it
    open(npz, "wb").write(good)
    write_card(name, lambda c: c["compiled"].update(sha256=trees.sha256(npz)))
    assert registry.load(name).compiled
    write_card(name, lambda c: c.update(features=list(reversed(c["features"]))))
    refused(r"m\.trees\.npz: its features .* are not the card's")
    write_card(name, lambda c: c.update(features=list(reversed(c["features"])), classes=["a", "b", "c"]))
    refused(r"m\.trees\.npz: its classes .* are not the card's")
    write_card(name, lambda c: c.update(classes=["DDoS", "DoS", "Normal"]))
    assert registry.load(name).compiled
    # the card records trees that are missing
    os.remove(npz)
    refused(r"m\.trees\.npz: the compiled trees are missing; the card .*m\.json records them")
    # trees the card does not record
    open(npz, "wb").write(good)
    write_card(name, lambda c: c.update(compiled={"file": None, "reason": "x"}))
    refused(r"m\.trees\.npz: present, but the card .* records no compiled trees")
    # a joblib file that is not the one the trees came from
    write_card(name, lambda c: c.update(compiled={"file": "m.trees.npz", "format": trees.FORMAT,
                                                  "sha256": trees.sha256(npz), "estimator_sha256": "0" * 64}))
    model = registry.load(name)
    with pytest.raises(registry.ModelError, match=r"m\.joblib: not the estimator its compiled trees"):
        model.estimator


def test_a_foreign_npz_is_refused():
    arrays = {"feature": np.zeros(1, np.int32)}
    with pytest.raises(trees.TreesError, match="no 'threshold' array"):
        trees.check(arrays, "x.trees.npz")


def test_the_monitor_model_predicts_without_scikit_learn_or_lightgbm():
    code = ("import sys, numpy as np, pandas as pd\n"
            "from iadm.ml import registry\n"
            "from iadm.detection.detector import Detector\n"
            "from iadm.rules.engine import RuleEngine\n"
            "m = registry.load('models/default')\n"
            "Detector(RuleEngine([]), m).warm_up()\n"
            "p = m.predict(pd.DataFrame(np.ones((5, len(m.features))), columns=m.features))\n"
            "assert m.compiled and len(p) == 5\n"
            "print(sorted({k.split('.')[0] for k in sys.modules} & {'sklearn', 'lightgbm', 'joblib'}))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
