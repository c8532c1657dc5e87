"""The model registry: a model is NAME.joblib plus its card NAME.json (and, for a tree
ensemble, its compiled form NAME.trees.npz: iadm.ml.trees).

The card says what the model needs and where it came from: the feature list
in order, the target and its classes, the training data's fingerprint and
class balance, hold-out metrics, library versions, creation time and the
command that built it. Loading refuses, naming the file and the reason:
a missing half of the pair, a card of another format, a model file that is
not ours or is damaged, or a scikit-learn / LightGBM version other than the
one that pickled it (pickles do not survive those upgrades reliably).
Predicting refuses records that lack a feature the card lists.

A tree ensemble's card records its NAME.trees.npz (sha256, what it holds); loading then predicts
from those arrays with one compiled pass and never imports scikit-learn or LightGBM. A trees file
that is missing, damaged, of another hash or at odds with the card is refused by name; it is
never quietly replaced by the joblib file, since the operator's model must be the one the card
describes. An estimator that cannot be compiled exactly has `compiled.reason` on its card and
loads through joblib as before.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform

import numpy as np
import pandas as pd

SCHEMA = "iadm-model/1"


class ModelError(ValueError):
    pass


def versions(kind: str) -> dict:
    import sklearn
    out = {"python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__,
           "scikit-learn": sklearn.__version__}
    if kind == "lightgbm":
        import lightgbm
        out["lightgbm"] = lightgbm.__version__
    return out


def fingerprint(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def _paths(name: str) -> tuple[str, str]:
    for suffix in (".trees.npz", ".joblib", ".json"):
        if name.endswith(suffix):
            name = name[:-len(suffix)]
            break
    return name + ".joblib", name + ".json"


def trees_path(model_path: str) -> str:
    """NAME.trees.npz beside NAME.joblib: the compiled form of a tree ensemble (iadm.ml.trees)."""
    return model_path[:-len(".joblib")] + ".trees.npz"


class Model:
    """A registered model: its card, and what predicts (the compiled trees when the card records
    them, else the estimator). The estimator itself is loaded from NAME.joblib only when asked for
    (training, reports), so the monitor never imports scikit-learn or LightGBM for a tree model."""

    def __init__(self, estimator, card: dict, path: str, predictor=None):
        self._estimator = estimator
        self.card = card
        self.path = path
        self.predictor = predictor if predictor is not None else estimator

    @property
    def compiled(self) -> bool:
        return self._estimator is not self.predictor

    @property
    def estimator(self):
        if self._estimator is None:
            self._estimator = _load_estimator(self.path, _paths(self.path)[1], self.card)
            expected = (self.card.get("compiled") or {}).get("estimator_sha256")
            if expected:
                from iadm.ml.trees import sha256
                if sha256(self.path) != expected:
                    raise ModelError(f"{self.path}: not the estimator its compiled trees "
                                     f"{os.path.basename(trees_path(self.path))} were exported from (sha256 differs "
                                     f"from the card's estimator_sha256); the pair does not belong together")
        return self._estimator

    @property
    def features(self) -> list[str]:
        return self.card["features"]

    def check(self, frame: pd.DataFrame, where: str = "records") -> None:
        missing = [f for f in self.features if f not in frame]
        if missing:
            raise ModelError(f"{self.path}: the {where} lack feature(s) {', '.join(missing)} that this model "
                             f"was trained on (it needs, in order: {', '.join(self.features)})")

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """The class probabilities of each record (columns in the order of the card's classes);
        features read as numbers, a missing or non-numeric value as 0.0."""
        self.check(frame)
        if not self.compiled:
            x = frame[self.features].apply(pd.to_numeric, errors="coerce").fillna(0.0)
            return self.predictor.predict_proba(x)
        x = np.empty((len(frame), len(self.features)), dtype=np.float64)
        for j, name in enumerate(self.features):
            column = frame[name].to_numpy()
            x[:, j] = column if column.dtype.kind in "fiub" else pd.to_numeric(column, errors="coerce")
        x[np.isnan(x)] = 0.0
        return self.predictor.predict_proba(x)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """label (a class), attack (0/1) and score (probability of attack, or of the label)."""
        proba = self.predict_proba(frame)
        classes = list(self.predictor.classes_)
        labels = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
        if self.card["target"] == "attack":
            attack_col = classes.index(1) if 1 in classes else None
            score = proba[:, attack_col] if attack_col is not None else np.zeros(len(proba))
            attack = labels.astype(np.int64)
        else:
            normal = classes.index("Normal") if "Normal" in classes else None
            score = 1.0 - proba[:, normal] if normal is not None else proba.max(axis=1)
            attack = (labels != "Normal").astype(np.int64)
        return pd.DataFrame({"label": labels, "attack": attack, "score": score})

    def warm_up(self) -> None:
        """Compile the trees' kernel now (numba, cached on disk) rather than on the first flagged record."""
        if self.compiled:
            self.predictor.predict_proba(np.zeros((1, len(self.features))))


def save(name: str, estimator, card: dict) -> tuple[str, str]:
    """NAME.joblib and NAME.json, and for a tree ensemble NAME.trees.npz, its hash on the card
    (`compiled`); an estimator the compiled predictor cannot represent exactly has none, and the
    card's `compiled.reason` says why."""
    import joblib
    model_path, card_path = _paths(name)
    os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
    card = {"schema": SCHEMA, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(card.get("kind", "")), **card}
    card.pop("compiled", None)
    joblib.dump(estimator, model_path)
    card["compiled"] = export_trees(estimator, card, model_path)
    with open(card_path, "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=2, default=str)
    return model_path, card_path


def export_trees(estimator, card: dict, model_path: str) -> dict:
    """Write NAME.trees.npz for the estimator (or remove a stale one) and return the card's
    `compiled` entry: the file, its sha256 and what it holds, or why there is none."""
    from iadm.ml import trees
    path = trees_path(model_path)
    try:
        if "features" not in card or "classes" not in card:
            raise trees.NotExportable("the card lists no features or classes")
        arrays = trees.export(estimator, card["features"], card["classes"])
    except trees.NotExportable as exc:
        if os.path.exists(path):
            os.remove(path)
        return {"file": None, "reason": f"not compiled: {exc}; predicts through joblib"}
    digest = trees.write(path, arrays)
    meta = json.loads(str(arrays["meta"]))
    return {"file": os.path.basename(path), "format": trees.FORMAT, "sha256": digest, "what": trees.describe(meta),
            "estimator_sha256": trees.sha256(model_path)}


def _read_card(model_path: str, card_path: str) -> dict:
    for path, what in ((model_path, "model file"), (card_path, "model card")):
        if not os.path.exists(path):
            raise ModelError(f"{path}: the {what} is missing; a model is a NAME.joblib and NAME.json pair")
    try:
        with open(card_path, encoding="utf-8") as fh:
            card = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{card_path}: not a readable model card: {exc}") from None
    if not isinstance(card, dict) or card.get("schema") != SCHEMA:
        raise ModelError(f"{card_path}: not an iadm model card (schema {card.get('schema') if isinstance(card, dict) else None!r}, "
                         f"expected {SCHEMA!r})")
    for key in ("features", "target", "kind", "classes"):
        if key not in card:
            raise ModelError(f"{card_path}: the card has no {key!r}")
    return card


def _load_compiled(model_path: str, card_path: str, card: dict):
    """The compiled trees the card records, checked against it; None when it records none.
    Anything wrong is refused, never answered by the joblib file instead: what predicts must be
    what the card says was trained."""
    from iadm.ml import trees
    path = trees_path(model_path)
    entry = card.get("compiled") or {}
    if not entry.get("file"):
        if os.path.exists(path):
            raise ModelError(f"{path}: present, but the card {card_path} records no compiled trees "
                             f"({entry.get('reason', 'no compiled entry')}): it is not this model's; remove it, "
                             f"or re-export (scripts/export_trees.py)")
        return None
    if entry.get("format") != trees.FORMAT or not entry.get("sha256"):   # (a renamed model keeps its old file name)
        raise ModelError(f"{card_path}: its compiled entry (format {entry.get('format')!r}) is not format "
                         f"{trees.FORMAT!r} with a sha256; re-export (scripts/export_trees.py)")
    if not os.path.exists(path):
        raise ModelError(f"{path}: the compiled trees are missing; the card {card_path} records them "
                         f"(sha256 {entry['sha256'][:16]}...); re-export them (scripts/export_trees.py)")
    actual = trees.sha256(path)
    if actual != entry["sha256"]:
        raise ModelError(f"{path}: sha256 {actual[:16]}... is not the card's {entry['sha256'][:16]}...: the file "
                         f"is damaged or belongs to another model; re-export it (scripts/export_trees.py) or retrain")
    try:
        predictor = trees.CompiledTrees.load(path, card["classes"])
    except trees.TreesError as exc:
        raise ModelError(str(exc)) from None
    if predictor.meta["features"] != list(card["features"]):
        raise ModelError(f"{path}: its features {predictor.meta['features']} are not the card's {card['features']} "
                         f"({card_path}): the files do not belong together")
    if predictor.meta["classes"] != [str(c) for c in card["classes"]]:
        raise ModelError(f"{path}: its classes {predictor.meta['classes']} are not the card's {card['classes']} "
                         f"({card_path}): the files do not belong together")
    return predictor


def _load_estimator(model_path: str, card_path: str, card: dict):
    import joblib
    now = versions(card["kind"])
    for lib in ("scikit-learn", "lightgbm"):
        then = card.get("versions", {}).get(lib)
        if then and lib in now and then.split(".")[:2] != now[lib].split(".")[:2]:
            raise ModelError(f"{model_path}: trained with {lib} {then}, this machine has {now[lib]}; retrain it "
                             f"(the command is in {card_path})")
    try:
        estimator = joblib.load(model_path)
    except Exception as exc:  # joblib raises many kinds on a damaged or foreign file
        raise ModelError(f"{model_path}: cannot load the model: {type(exc).__name__}: {exc}") from None
    if not hasattr(estimator, "predict_proba"):
        raise ModelError(f"{model_path}: holds a {type(estimator).__name__}, not a classifier")
    if [str(c) for c in getattr(estimator, "classes_", [])] != [str(c) for c in card["classes"]]:
        raise ModelError(f"{model_path}: its classes {list(getattr(estimator, 'classes_', []))} differ from the "
                         f"card's {card['classes']}: the pair does not belong together")
    return estimator


def load(name: str, compiled: bool = True) -> Model:
    """The model NAME: through its compiled trees when the card records them (no scikit-learn or
    LightGBM import; the library-version check does not apply to arrays), else through joblib.
    `compiled=False` loads the estimator whatever the card says (the trees are still checked)."""
    model_path, card_path = _paths(name)
    card = _read_card(model_path, card_path)
    predictor = _load_compiled(model_path, card_path, card)
    if predictor is not None and compiled:
        return Model(None, card, model_path, predictor)
    model = Model(None, card, model_path)
    model.predictor = model.estimator
    return model
