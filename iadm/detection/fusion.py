"""Fusing the opinions into one verdict per flow record (DESIGN.md section 6).

A record is an attack when a rule or a behaviour watcher says so, or when the
model and the Z-score both do (either alone abstains: see fuse). Its category
comes from the rule or watcher when one fired (it knows what it looks for), else
from the model when its target was the category, else "Attack".
A record whose best rule is a `pass` rule is Normal whatever the model
says: a pass rule is the operator's word that this traffic is expected,
and the way to silence a model's false positive without retraining.
`source` says who voted (rule, behaviour, model, zscore joined by "+", or ""),
whether or not the vote made an attack;
`agreement()` counts both / rule only / model only / neither, so operators
see where the model corrects the rules and where the rules catch what the
model misses.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from iadm.columns import object_frame, objects


def fuse(rules: pd.DataFrame, model: pd.DataFrame | None, model_target: str = "attack",
         zscore: pd.DataFrame | None = None, behaviour: pd.DataFrame | None = None) -> pd.DataFrame:
    """rules: RuleEngine labels (attack, category, subcategory, sid, msg, action);
    model: Model.predict output (label, attack, score) or None when no model is loaded;
    zscore: ZScoreDetector.score output (zscore_attack, zscore_max, zscore_measurement) or None.

    The Z-score is the third, unsupervised opinion. The model's word alone and the Z-score's
    alone are kept on the record but are not attacks (abstention, below); together they are.

    behaviour: BehaviourWatch labels (the rules' shape): what a source did over time (scans,
    floods, password guessing). Where no rule fired, its label stands in the rule's place with
    source "behaviour"; it is evidence as strong as a rule's. Where both fired, the behaviour's label
    wins: it names what the source did over time (a null scan, not one null probe)."""
    rule_attack = rules["attack"].to_numpy(dtype=bool)
    blank = np.full(len(rules), "", dtype=object)
    technique = objects(rules["technique"]) if "technique" in rules else blank
    mitre = objects(rules["mitre"]) if "mitre" in rules else blank
    text = {name: objects(rules[name]) for name in ("category", "subcategory", "msg")}
    sid = rules["sid"].to_numpy()
    if behaviour is not None:
        seen = behaviour["attack"].to_numpy(dtype=bool)
        rule_attack = rule_attack & ~seen
        if seen.any():
            for name in text:
                text[name] = np.where(seen, objects(behaviour[name]), text[name])
            sid = np.where(seen, behaviour["sid"].to_numpy(), sid)
            technique = np.where(seen, objects(behaviour["technique"]), technique)
            mitre = np.where(seen, objects(behaviour["mitre"]), mitre)
        about_destination = seen & ~behaviour["blocks"].to_numpy(dtype=bool) if "blocks" in behaviour else \
            np.zeros(len(rules), dtype=bool)
    else:
        seen = about_destination = np.zeros(len(rules), dtype=bool)
    if model is None:
        model_attack = np.zeros(len(rules), dtype=bool)
        model_label = np.full(len(rules), "", dtype=object)
        score = np.full(len(rules), np.nan)
    else:
        if len(model) != len(rules):
            raise ValueError(f"{len(rules)} rule labels but {len(model)} model predictions")
        model_attack = model["attack"].to_numpy(dtype=bool)
        model_label = objects(model["label"])
        score = model["score"].to_numpy(dtype=float)
    passed = (objects(rules["action"]) == "pass") if "action" in rules else np.zeros(len(rules), bool)
    model_attack = model_attack & ~passed
    delay = {}
    if zscore is not None:
        z_attack = zscore["zscore_attack"].to_numpy(dtype=bool) & ~passed
        z_max = zscore["zscore_max"].to_numpy(dtype=float)
        # a device's delay out of its history (ZScoreDetector's delay store): who, which, how much
        delay = {name: objects(zscore[name]) if name in ("delay_device", "delay_measurement") else
                 zscore[name].to_numpy(dtype=float) for name in DELAY_COLUMNS if name in zscore}
    else:
        z_attack = np.zeros(len(rules), dtype=bool)
        z_max = np.full(len(rules), np.nan)
    by_behaviour = seen & ~passed
    rule_attack = rule_attack | by_behaviour
    # Abstention: the model learned from a few networks and extrapolates on real devices it never
    # saw; the Z-score alone says "unusual for this key", not "attack". Either alone is an opinion
    # kept on the record (source, model_label, score, zscore) for the analyst, not an alert; the
    # two together, on traffic the rules and watchers find nothing in, are one.
    heard = model_attack & z_attack & ~rule_attack
    attack = rule_attack | heard

    model_category = model_label if model_target == "category" else np.full(len(rules), "Attack", dtype=object)
    category = np.select([rule_attack, heard], [text["category"], model_category], "Normal")
    subcategory = np.select([rule_attack, heard], [text["subcategory"], ""], "Normal")

    # who said so, as one of a few strings (no per-row string building)
    code = (rule_attack & ~by_behaviour) * 1 + by_behaviour * 2 + model_attack * 4 + z_attack * 8
    source = _SOURCES[code]
    return object_frame({"attack": attack.astype(np.int64), "category": category, "subcategory": subcategory,
                         "source": source, "rule_sid": sid.astype(np.int64), "rule_msg": text["msg"],
                         "model_label": model_label, "model_score": score, "zscore": z_max,
                         "technique": np.where(rule_attack, technique, ""), "mitre": np.where(rule_attack, mitre, ""),
                         "about_destination": about_destination & attack, **delay})


DELAY_COLUMNS = ("delay_device", "delay_measurement", "delay_value", "delay_z", "delay_excess")


def _source_name(code: int) -> str:
    return "+".join(name for bit, name in ((1, "rule"), (2, "behaviour"), (4, "model"), (8, "zscore")) if code & bit)


_SOURCES = np.array([_source_name(c) for c in range(16)], dtype=object)


def agreement(verdicts: pd.DataFrame) -> dict:
    source = verdicts["source"].astype(str)
    rule, model = source.str.contains("rule"), source.str.contains("model")
    return {"both": int((rule & model).sum()), "rule_only": int((rule & ~model).sum()),
            "model_only": int((model & ~rule).sum()), "neither": int((~rule & ~model).sum())}
