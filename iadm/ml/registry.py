"""The model registry: a model is NAME.joblib plus its card NAME.json.

The card says what the model needs and where it came from: the feature list
in order, the target and its classes, the training data's fingerprint and
class balance, hold-out metrics, library versions, creation time and the
command that built it. Loading refuses, naming the file and the reason:
a missing half of the pair, a card of another format, a model file that is
not ours or is damaged, or a scikit-learn / LightGBM version other than the
one that pickled it (pickles do not survive those upgrades reliably).
Predicting refuses records that lack a feature the card lists.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
from dataclasses import dataclass

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
    base = name[:-7] if name.endswith(".joblib") else name[:-5] if name.endswith(".json") else name
    return base + ".joblib", base + ".json"


@dataclass
class Model:
    estimator: object
    card: dict
    path: str

    @property
    def features(self) -> list[str]:
        return self.card["features"]

    def check(self, frame: pd.DataFrame, where: str = "records") -> None:
        missing = [f for f in self.features if f not in frame]
        if missing:
            raise ModelError(f"{self.path}: the {where} lack feature(s) {', '.join(missing)} that this model "
                             f"was trained on (it needs, in order: {', '.join(self.features)})")

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """label (a class), attack (0/1) and score (probability of attack, or of the label)."""
        self.check(frame)
        x = frame[self.features].apply(pd.to_numeric, errors="coerce").fillna(0.0)
        proba = self.estimator.predict_proba(x)
        classes = list(self.estimator.classes_)
        labels = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
        if self.card["target"] == "attack":
            attack_col = classes.index(1) if 1 in classes else None
            score = proba[:, attack_col] if attack_col is not None else np.zeros(len(x))
            attack = labels.astype(np.int64)
        else:
            normal = classes.index("Normal") if "Normal" in classes else None
            score = 1.0 - proba[:, normal] if normal is not None else proba.max(axis=1)
            attack = (labels != "Normal").astype(np.int64)
        return pd.DataFrame({"label": labels, "attack": attack, "score": score})


def save(name: str, estimator, card: dict) -> tuple[str, str]:
    import joblib
    model_path, card_path = _paths(name)
    os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
    card = {"schema": SCHEMA, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(card.get("kind", "")), **card}
    joblib.dump(estimator, model_path)
    with open(card_path, "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=2, default=str)
    return model_path, card_path


def load(name: str) -> Model:
    import joblib
    model_path, card_path = _paths(name)
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
    return Model(estimator, card, model_path)
