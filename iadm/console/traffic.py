"""Per-device traffic for the console, from the monitor's labelled record batches (a Labeller observer).

The live records are `running` ones: each carries its flow's counts so far, so a flow's packets in
a batch are its count now minus its count at its previous record. The meter keeps each flow's last
counts in sorted arrays (vectorised lookups, no Python loop per record) and starts over past
`max_flows` flows (a flow then counts once more from its start: a rare overcount, bounded memory).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from iadm.flows.records import mac_text



def _ints(records: pd.DataFrame, name: str, n: int) -> np.ndarray:
    return records[name].to_numpy(dtype=np.int64) if name in records else np.zeros(n, dtype=np.int64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit reaches every output bit."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def flow_hashes(records: pd.DataFrame, smac: np.ndarray) -> np.ndarray:
    """A 64-bit name of each record's flow from its numeric fields (start time, ports, protocol,
    source MAC): arithmetic on arrays, where hashing the address texts cost most of the meter."""
    n = len(records)
    with np.errstate(over="ignore"):
        h = _mix(records["stime"].to_numpy(dtype=np.float64).view(np.uint64))
        for name in ("sport", "dport", "proto_number"):
            h = _mix(h ^ _ints(records, name, n).astype(np.uint64))
        return _mix(h ^ smac.astype(np.uint64))


class TrafficMeter:
    def __init__(self, store, gateway: str | None, max_flows: int = 500_000):
        self.store, self.gateway, self.max_flows = store, gateway, max_flows
        self._keys = np.zeros(0, dtype=np.uint64)
        self._pkts = np.zeros(0, dtype=np.int64)
        self._bytes = np.zeros(0, dtype=np.int64)

    def __call__(self, records: pd.DataFrame, verdicts=None) -> None:
        if not len(records):
            return
        n = len(records)
        smac = _ints(records, "smac", n)
        keys = flow_hashes(records, smac)
        pkts = records["pkts"].to_numpy(dtype=np.int64)
        nbytes = records["bytes"].to_numpy(dtype=np.int64)
        ltime = records["ltime"].to_numpy(dtype=np.float64)
        order = np.lexsort((ltime, keys))
        k, p, b = keys[order], pkts[order], nbytes[order]
        first = np.ones(n, dtype=bool)
        first[1:] = k[1:] != k[:-1]
        prev_p, prev_b = np.empty_like(p), np.empty_like(b)
        prev_p[1:], prev_b[1:] = p[:-1], b[:-1]
        prev_p[first], prev_b[first] = self._last_counts(k[first])
        dp, db = np.maximum(p - prev_p, 0), np.maximum(b - prev_b, 0)
        self._remember(k, p, b)
        moved = dp > 0
        if not moved.any():
            return
        rows = order[moved]
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
        groups, at, inverse = np.unique(np.stack([bucket, device]), axis=1, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        sums_p = np.bincount(inverse, weights=dp[moved]).astype(np.int64)
        sums_b = np.bincount(inverse, weights=db[moved]).astype(np.int64)
        last = np.zeros(groups.shape[1])
        np.maximum.at(last, inverse, ltime[rows])
        macs = mac[at].tolist()
        self.store.add_traffic(self.gateway, [
            (t, mac_text(m) if m else "", str(a), int(pp), int(bb))
            for t, m, a, pp, bb in zip(last.tolist(), macs, saddr.take(rows[at]).tolist(), sums_p.tolist(),
                                                 sums_b.tolist())])

    def _last_counts(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The counts last seen of each flow (0 for a flow not seen before)."""
        at = np.searchsorted(self._keys, keys)
        known = at < len(self._keys)
        known[known] = self._keys[at[known]] == keys[known]
        p, b = np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=np.int64)
        p[known], b[known] = self._pkts[at[known]], self._bytes[at[known]]
        return p, b

    def _remember(self, k, p, b) -> None:
        """Each flow's latest counts: known flows updated in place, new ones inserted in order
        (linear copies; no sort of the whole state per batch)."""
        last = np.ones(len(k), dtype=bool)
        last[:-1] = k[1:] != k[:-1]
        k, p, b = k[last], p[last], b[last]          # sorted, unique: k came sorted from the lexsort
        at = np.searchsorted(self._keys, k)
        known = at < len(self._keys)
        known[known] = self._keys[at[known]] == k[known]
        self._pkts[at[known]] = p[known]
        self._bytes[at[known]] = b[known]
        new = ~known
        if not new.any():
            return
        if len(self._keys) + int(new.sum()) > self.max_flows:   # start over: see the module
            self._keys, self._pkts, self._bytes = k.copy(), p.copy(), b.copy()
            return
        self._keys = np.insert(self._keys, at[new], k[new])
        self._pkts = np.insert(self._pkts, at[new], p[new])
        self._bytes = np.insert(self._bytes, at[new], b[new])
