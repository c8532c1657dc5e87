"""The detector: every record's opinions (rules, model, Z-score) fused into one verdict per record."""
from __future__ import annotations

import os

import pandas as pd

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
        model = self.model.predict(records) if self.model is not None else None
        target = self.model.card["target"] if self.model is not None else "attack"
        zscore = self.zscore.score(records) if self.zscore is not None else None
        behaviour = self.behaviour(records) if self.behaviour is not None else None
        verdicts = fuse(rules, model, target, zscore, behaviour)
        return self.baseline(records, verdicts) if self.baseline is not None else verdicts

    def rule(self, sid: int):
        return next((r for r in self.engine.ruleset.rules if r.sid == sid), None)
