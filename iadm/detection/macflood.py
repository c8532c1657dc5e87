"""A MAC flood on the responder's side: which records belong to it, and its one alert line.

A flooder (macof, a forged-SYN spray) sends every frame from a new random source MAC. Each
forged MAC is a source of its own to the record-level path, which would write an alert line per
MAC (thousands a second) and block none (one record each is no evidence). The packet inspector
(iadm/inspect/macs.py) knows which MACs were new during a burst; the responder asks it here and
counts those records on the flood's line instead (one line per flood and realert period, with
the count), while records of MACs known before the burst (real hosts) are judged as always.
"""
from __future__ import annotations

import numpy as np


class MacFloodFold:
    """watch: the monitor's MacFloodWatch (None: nothing is folded)."""

    def __init__(self, watch=None):
        self.watch = watch
        self.latest = (None, "")   # (the latest MAC-flood finding, the responder's key of its state)

    def found(self, finding, attacker: str) -> None:
        self.latest = (finding, attacker)

    def forged(self, records, attack: np.ndarray) -> np.ndarray:
        """Per record: an attack record whose source MAC a MAC flood forged."""
        out = np.zeros(len(attack), dtype=bool)
        if self.watch is None or "smac" not in records or not attack.any() or not self.watch.flooding:
            return out
        rows = np.flatnonzero(attack)
        macs = records["smac"].to_numpy()[rows].astype(np.uint64)
        out[rows] = self.watch.flood_macs(macs)
        return out
