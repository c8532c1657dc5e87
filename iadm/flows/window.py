"""The 10-best aggregates over a sliding window of the last 100 records.

Each record gets, over itself and the 99 records emitted before it (in
emission order, across batches), the total bytes/packets of its source and
destination address, protocol and destination port, the average rate per
protocol and address or port, the number of records ("inbound connections")
per source and destination address, and the packets per state, protocol
and address. Computed vectorised: for a group g and record i the windowed
sum is C[i] - C[q], C the cumulative sum in (group, index) order and q the
last record of the same group at index <= i - 100.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from iadm.flows.records import WINDOW_COLUMNS

WINDOW = 100

# output column: (group-by columns, value column or None for a count, "sum" or "mean")
_AGGREGATES = {
    "TnBPSrcIP": (("saddr",), "bytes", "sum"),
    "TnBPDstIP": (("daddr",), "bytes", "sum"),
    "TnP_PSrcIP": (("saddr",), "pkts", "sum"),
    "TnP_PDstIP": (("daddr",), "pkts", "sum"),
    "TnP_PerProto": (("proto",), "pkts", "sum"),
    "TnP_Per_Dport": (("dport",), "pkts", "sum"),
    "AR_P_Proto_P_SrcIP": (("proto", "saddr"), "rate", "mean"),
    "AR_P_Proto_P_DstIP": (("proto", "daddr"), "rate", "mean"),
    "N_IN_Conn_P_DstIP": (("daddr",), None, "sum"),
    "N_IN_Conn_P_SrcIP": (("saddr",), None, "sum"),
    "AR_P_Proto_P_Sport": (("proto", "sport"), "rate", "mean"),
    "AR_P_Proto_P_Dport": (("proto", "dport"), "rate", "mean"),
    "Pkts_P_State_P_Protocol_P_DestIP": (("state", "proto", "daddr"), "pkts", "sum"),
    "Pkts_P_State_P_Protocol_P_SrcIP": (("state", "proto", "saddr"), "pkts", "sum"),
}
_NEEDED = ["saddr", "daddr", "proto", "sport", "dport", "state", "bytes", "pkts", "rate"]
assert list(_AGGREGATES) == WINDOW_COLUMNS


def _windowed_sums(groups: np.ndarray, columns: list, window: int) -> list:
    """For each column, its sum over the record and the previous window-1 records of the same group."""
    n = len(groups)
    idx = np.arange(n, dtype=np.int64)
    composite = groups.astype(np.int64) * np.int64(n + window + 1) + idx
    order = np.argsort(composite)  # keys are unique: no need for a stable sort
    sorted_key = composite[order]
    pos = np.empty(n, dtype=np.int64)
    pos[order] = idx
    q = np.searchsorted(sorted_key, composite - window, side="right")
    sums = []
    for values in columns:
        csum = np.concatenate(([0.0], np.cumsum(values[order], dtype=np.float64)))
        sums.append(csum[pos + 1] - csum[q])
    return sums


def _combine(codes: list) -> np.ndarray:
    """One group id per distinct tuple of codes (each code is below len(codes[0]))."""
    n = np.int64(len(codes[0]) + 1)
    key = codes[0].astype(np.int64)
    for more in codes[1:]:
        key = key * n + more
    return pd.factorize(key)[0].astype(np.int64)


class WindowAggregator:
    """Adds WINDOW_COLUMNS to record frames, carrying the last window-1 records between calls."""

    def __init__(self, window: int = WINDOW):
        self.window = window
        self.carry = pd.DataFrame(columns=_NEEDED)
        self.by_group = {}
        for name, (by, value, how) in _AGGREGATES.items():
            self.by_group.setdefault(by, []).append((name, value, how))

    def __call__(self, records: pd.DataFrame) -> pd.DataFrame:
        if not len(records):
            return records.assign(**{c: pd.Series(dtype=float) for c in WINDOW_COLUMNS})
        fresh = records[_NEEDED].reset_index(drop=True)
        joined = pd.concat([self.carry, fresh], ignore_index=True) if len(self.carry) else fresh
        skip = len(joined) - len(records)
        codes = {col: pd.factorize(joined[col])[0].astype(np.int64)
                 for col in ("saddr", "daddr", "proto", "sport", "dport", "state")}
        ones = np.ones(len(joined))
        out = {}
        for by, wanted in self.by_group.items():
            group = codes[by[0]] if len(by) == 1 else _combine([codes[b] for b in by])
            columns = [ones] + [joined[v].to_numpy(np.float64) for _, v, _ in wanted if v is not None]
            sums = iter(_windowed_sums(group, columns, self.window))
            count = next(sums)
            for name, value, how in wanted:
                total = count if value is None else next(sums)
                out[name] = (total / count if how == "mean" else total)[skip:]
        self.carry = joined.iloc[max(0, len(joined) - (self.window - 1)):].reset_index(drop=True)
        return records.assign(**out)[list(records.columns) + WINDOW_COLUMNS]
