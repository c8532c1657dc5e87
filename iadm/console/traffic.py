"""Per-device traffic for the console, from the monitor's labelled record batches (a Labeller observer).

Each record says what it adds to its device's traffic: a live `running` record carries its status
interval's own counts (`new_pkts`, `new_bytes`, from the flow table), any other record its own
`pkts` and `bytes`. So the meter keeps no per-flow state: one grouped sum per batch.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from iadm.flows.records import mac_text


def _ints(records: pd.DataFrame, name: str, n: int) -> np.ndarray:
    return records[name].to_numpy(dtype=np.int64) if name in records else np.zeros(n, dtype=np.int64)


class TrafficMeter:
    def __init__(self, store, gateway: str | None):
        self.store, self.gateway = store, gateway

    def __call__(self, records: pd.DataFrame, verdicts=None) -> None:
        if not len(records):
            return
        n = len(records)
        running = "new_pkts" in records
        dp = _ints(records, "new_pkts" if running else "pkts", n)
        db = _ints(records, "new_bytes" if running else "bytes", n)
        smac = _ints(records, "smac", n)
        ltime = records["ltime"].to_numpy(dtype=np.float64)
        moved = dp > 0
        if not moved.any():
            return
        rows = np.flatnonzero(moved)
        # A device is its MAC (a forged-source flood is one device with one address noted, not one
        # per forged source); a record without a MAC, its source address.
        saddr = records["saddr"]   # texts: taken only for the rows that need them
        mac = smac[rows]
        device = mac.copy()
        no_mac = mac == 0
        if no_mac.any():
            codes, _ = pd.factorize(saddr.take(rows[no_mac]).to_numpy())
            device[no_mac] = -1 - codes.astype(np.int64)        # addresses: negative device numbers
        bucket = (ltime[rows] // self.store.traffic_bucket).astype(np.int64)   # finer sums are the store's
        # groups (bucket, device) by hashing, not sorting: the batch is in time order already
        devices, device_codes = np.unique(device, return_inverse=True)
        inverse, groups = pd.factorize((bucket - bucket.min()) * len(devices) + device_codes.ravel())
        at = np.empty(len(groups), dtype=np.int64)
        at[inverse[::-1]] = np.arange(len(rows) - 1, -1, -1)     # each group's first row
        sums_p = np.bincount(inverse, weights=dp[moved]).astype(np.int64)
        sums_b = np.bincount(inverse, weights=db[moved]).astype(np.int64)
        last = np.zeros(len(groups))
        np.maximum.at(last, inverse, ltime[rows])
        macs = mac[at].tolist()
        self.store.add_traffic(self.gateway, [
            (t, mac_text(m) if m else "", str(a), int(pp), int(bb))
            for t, m, a, pp, bb in zip(last.tolist(), macs, saddr.take(rows[at]).tolist(), sums_p.tolist(),
                                                 sums_b.tolist())])
