"""The detector: every record's opinions (rules, model, Z-score) fused into one verdict per record."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from iadm.columns import object_frame, objects
from iadm.detection.fusion import fuse
from iadm.flows.records import RECORD_COLUMNS


class Detector:
    """Rules (one record), behaviour (a source over time), the model and the Z-score, fused."""

    def __init__(self, engine, model=None, watcher=None, zscore=None, behaviour=None, baseline=None):
        self.engine = engine
        self.baseline = baseline    # a SiteBaseline: what this site's devices do every day
        self.behaviour = behaviour
        self.model = model
        self.watcher = watcher
        self.zscore = zscore
        self.model_name = os.path.basename(model.path).removesuffix(".joblib") if model is not None else ""
        if model is not None:
            model.check(pd.DataFrame(columns=RECORD_COLUMNS), "monitor's flow records")

    def __call__(self, records: pd.DataFrame) -> pd.DataFrame:
        """The fused verdict of every record, row for row."""
        if self.watcher:
            self.watcher.poll()
        records = records.reset_index(drop=True)
        rules = self.engine.evaluate(records).labels()
        zscore = self.zscore.score(records) if self.zscore is not None else None
        behaviour = self.behaviour(records) if self.behaviour is not None else None
        model = self._ask_model(records, rules, zscore, behaviour) if self.model is not None else None
        target = self.model.card["target"] if self.model is not None else "attack"
        verdicts = fuse(rules, model, target, zscore, behaviour)
        return self.baseline(records, verdicts) if self.baseline is not None else verdicts

    def warm_up(self) -> float:
        """Compile the behaviour watchers (iadm.detection.behaviour.warm_up) and the model's compiled
        trees before a live capture starts; the seconds it took."""
        import time
        began = time.monotonic()
        if self.model is not None and hasattr(self.model, "warm_up"):
            self.model.warm_up()
        took = time.monotonic() - began
        if self.behaviour is None:
            return took
        from iadm.detection.behaviour import warm_up
        return took + warm_up()

    def _ask_model(self, records, rules, zscore, behaviour) -> pd.DataFrame:
        """The model's word where it can matter: on records the Z-score flags and nothing else
        does (the two together make an attack), and on one record per source and signature that a
        rule or watcher flagged (its cross-check, shown on the alert line). Elsewhere it abstains
        (label "", score NaN), so its cost follows what is flagged, not every record."""
        flagged = rules["attack"].to_numpy(dtype=bool)
        sids = rules["sid"].to_numpy()
        if behaviour is not None:
            seen = behaviour["attack"].to_numpy(dtype=bool)
            flagged = flagged | seen
            sids = np.where(seen, behaviour["sid"].to_numpy(), sids)
        ask = zscore["zscore_attack"].to_numpy(dtype=bool) & ~flagged if zscore is not None else \
            np.zeros(len(records), dtype=bool)
        rows = np.flatnonzero(flagged)
        if len(rows):
            src, _ = pd.factorize(records["saddr"].to_numpy()[rows])
            pair = src.astype(np.int64) << 32 | (sids[rows].astype(np.int64) & 0xFFFFFFFF)
            ask[rows[np.unique(pair, return_index=True)[1]]] = True
        label = np.full(len(records), "", dtype=object)
        attack = np.zeros(len(records), dtype=np.int64)
        score = np.full(len(records), np.nan)
        where = np.flatnonzero(ask)
        if len(where):
            firsts, back = _distinct_rows(records, self.model.features, where)
            said = self.model.predict(records.iloc[firsts])
            label[where] = objects(said["label"])[back]
            # the card's alert_score: the threshold chosen on held-out benign captures
            # (scripts/train_default.py); below it the model's "attack" is no vote
            floor = float(self.model.card.get("alert_score", 0.5))
            attack[where] = (said["attack"].to_numpy() & (said["score"].to_numpy() >= floor))[back]
            score[where] = said["score"].to_numpy()[back]
        return object_frame({"label": label, "attack": attack, "score": score})

    def rule(self, sid: int):
        return next((r for r in self.engine.ruleset.rules if r.sid == sid), None)


def _distinct_rows(records: pd.DataFrame, features: list, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows with distinct model inputs among `rows` (the first of each) and, for every row, which
    of them has its input: the model is asked once per input. A flood's records share theirs (one
    SYN from a forged source looks like the next), so this is most of the model's cost in a flood.
    Inputs are compared as the model reads them (numbers, a missing value as 0), exactly: rows are
    grouped by a hash of their bytes, and a row unlike its group's first is asked on its own."""
    x = np.empty((len(rows), len(features)), dtype=np.float64)
    for j, name in enumerate(features):
        column = records[name].to_numpy()[rows]
        x[:, j] = column if column.dtype.kind in "fiub" else pd.to_numeric(column, errors="coerce")
    np.nan_to_num(x, copy=False, nan=0.0)
    words = x.view(np.uint64)
    digest = np.zeros(len(rows), dtype=np.uint64)
    for j in range(words.shape[1]):   # a multiplicative fold of the row's words
        digest = (digest ^ words[:, j]) * np.uint64(0x9E3779B97F4A7C15)
        digest ^= digest >> np.uint64(29)
    group, _ = pd.factorize(digest)
    first = np.full(group.max() + 1 if len(group) else 0, len(rows), dtype=np.int64)
    np.minimum.at(first, group, np.arange(len(rows)))
    unlike = np.flatnonzero((words != words[first[group]]).any(axis=1))
    back = group.astype(np.int64)
    if len(unlike):   # a hash shared by different inputs: those rows are asked themselves
        back[unlike] = len(first) + np.arange(len(unlike))
        first = np.concatenate([first, unlike])
    return rows[first], back


DELAY_ALERT_EXCESS = 0.005   # seconds above the device's mean delay before an anomaly is an alert line


def delay_findings(records: pd.DataFrame, verdicts: pd.DataFrame, excess: float = DELAY_ALERT_EXCESS) -> list:
    """The devices whose delay the Z-score's delay store found out of its history in these records
    (verdicts' delay_* columns), one alert-only finding each (sid 2100501): the strongest |z| per
    device and measurement, among anomalies at least `excess` seconds above the device's mean (a LAN
    device answering in 0.2 ms instead of 0.1 ms is many deviations off and of no consequence). The
    device is the one slowed down, not an actor: never a block, and the alert names it as the
    destination."""
    if "delay_device" not in verdicts:
        return []
    device = verdicts["delay_device"].to_numpy(dtype=object)
    above = verdicts["delay_excess"].to_numpy(dtype=float) >= excess if "delay_excess" in verdicts else True
    rows = np.flatnonzero((device != "") & above)
    if not len(rows):
        return []
    from iadm.inspect.finding import SIDS, Finding
    z = np.abs(verdicts["delay_z"].to_numpy(dtype=float)[rows])
    which = verdicts["delay_measurement"].to_numpy(dtype=object)[rows]
    ts = records["ltime"].to_numpy(dtype=float)[rows]
    value = verdicts["delay_value"].to_numpy(dtype=float)[rows]
    excess_of = verdicts["delay_excess"].to_numpy(dtype=float)[rows] if "delay_excess" in verdicts else \
        np.full(len(rows), np.nan)
    best: dict = {}
    for k in np.argsort(-z, kind="stable").tolist():
        best.setdefault((device[rows[k]], which[k]), k)
    out = []
    for (dev, measurement), k in best.items():
        out.append(Finding(ts=float(ts[k]), technique="delay_anomaly", mitre="", category="DoS", subcategory="Delay",
                           sid=2100501, signature=f"{SIDS[2100501]}: {dev} {measurement} {value[k] * 1000:.1f} ms",
                           dest_ip=str(dev), evidence={"measurement": str(measurement),
                                                      "seconds": round(float(value[k]), 6),
                                                      "above_mean": round(float(excess_of[k]), 6),
                                                      "z": round(float(z[k]), 3) if np.isfinite(z[k]) else "inf"},
                           severity=3, block=False))
    return out
