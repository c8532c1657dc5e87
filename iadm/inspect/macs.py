"""MAC flooding: far more new source MACs in a short time than any LAN makes.

A switch learns every source MAC into its forwarding (CAM) table; a flooder (macof and its
kind) sends thousands of frames a second, each from a new random MAC, until the table is full
and the switch floods every frame to every port. A real LAN meets a new MAC a few times an hour
(a device joins, a phone wakes up); even a monitor starting on a busy LAN sees its few hundred
hosts over minutes, not in seconds.

Property: the number of source MACs not seen in the last `aging` seconds (a switch's default
CAM ageing, 300 s), counted over a sliding `window`. `threshold` new MACs within `window`
seconds (default 500 in 10 s: 50 a second sustained; macof makes about 3,000 a second) is a
flood. One finding per burst: at the packet that crosses the threshold; the burst ends when a
whole window passes with fewer than a quarter of the threshold, and its totals go to `bursts`.
The finding names no host: the addresses are random; the mitigation is per switch port
(stop learning there, limit its MACs), which the responder and the controller own.

Every decoded packet's source MAC goes through one compiled pass over an open-addressing
table (MAC -> last seen), so the watcher costs a hash probe per packet; the table grows to
`max_macs` entries, drops aged entries first and is emptied if a flood still fills it.
Frames the decoder leaves out (neither IP nor ARP) are not seen.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from iadm.inspect.finding import MITRE_MAC_FLOOD, SIDS, Finding, format_mac

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, nogil=True)
def _mark_new(keys, last, bits, macs, ts, aging, new_idx):
    """Look every MAC up (inserting it); new_idx gets the packets whose MAC is new or aged out.
    Returns (new packets, slots filled)."""
    mask = np.int64(len(keys) - 1)
    shift = np.uint64(64 - bits)
    k = 0
    added = 0
    for i in range(len(macs)):
        m = macs[i]
        if m == 0:
            continue
        j = np.int64((m * _GOLDEN) >> shift) & mask
        while True:
            key = keys[j]
            if key == m:
                if ts[i] - last[j] > aging:
                    new_idx[k] = i
                    k += 1
                if ts[i] > last[j]:
                    last[j] = ts[i]
                break
            if key == 0:
                keys[j] = m
                last[j] = ts[i]
                new_idx[k] = i
                k += 1
                added += 1
                break
            j = (j + 1) & mask
    return k, added


@njit(cache=True, nogil=True)
def _rehash(keys, last, new_keys, new_last, bits, now, aging):
    """Copy the entries seen within `aging` of `now` into a new table; returns how many."""
    mask = np.int64(len(new_keys) - 1)
    shift = np.uint64(64 - bits)
    n = 0
    for i in range(len(keys)):
        m = keys[i]
        if m == 0 or now - last[i] > aging:
            continue
        j = np.int64((m * _GOLDEN) >> shift) & mask
        while new_keys[j] != 0:
            j = (j + 1) & mask
        new_keys[j] = m
        new_last[j] = last[i]
        n += 1
    return n


class MacFloodWatch:
    """Stateful: `__call__(batch, decoded) -> list[Finding]` on every batch (batch is unused)."""

    def __init__(self, threshold: int = 500, window: float = 10.0, aging: float = 300.0,
                 max_macs: int = 1 << 20):
        if threshold < 2:
            raise ValueError("a MAC flood threshold needs at least 2 new MACs")
        self.threshold = threshold
        self.window = window
        self.aging = aging
        self.max_bits = max(12, int(max_macs - 1).bit_length() + 1)   # the table is kept at most half full
        self._bits = 12
        self._keys = np.zeros(1 << self._bits, dtype=np.uint64)
        self._last = np.zeros(1 << self._bits, dtype=np.float64)
        self._used = 0
        self._times = np.zeros(0, dtype=np.float64)   # arrival times of the latest new MACs (at most threshold)
        self._macs = np.zeros(0, dtype=np.uint64)
        self._burst = None                              # the burst in progress: dict
        self.bursts: list[dict] = []                    # ended bursts: start, end, new_macs
        self.counters = {"packets": 0, "new_macs": 0, "table_cleared": 0}

    @property
    def known_macs(self) -> int:
        return self._used

    def _room(self, n: int, now: float) -> None:
        cap = len(self._keys)
        if self._used + n <= cap // 2:
            return
        bits = self._bits
        while (self._used + n) > (1 << bits) // 2 and bits < self.max_bits:
            bits += 1
        keys = np.zeros(1 << bits, dtype=np.uint64)
        last = np.zeros(1 << bits, dtype=np.float64)
        used = _rehash(self._keys, self._last, keys, last, bits, now, self.aging)
        if used + n > (1 << bits) // 2:           # still full at the largest size: a flood; start over
            keys[:] = 0
            last[:] = 0
            used = 0
            self.counters["table_cleared"] += 1
            while n > (1 << bits) // 2:            # one batch bigger than the table: grow for it
                bits += 1
                keys = np.zeros(1 << bits, dtype=np.uint64)
                last = np.zeros(1 << bits, dtype=np.float64)
        self._bits, self._keys, self._last, self._used = bits, keys, last, used

    def __call__(self, batch, decoded) -> list[Finding]:
        n = len(decoded)
        if n == 0:
            return []
        self.counters["packets"] += n
        ts = decoded.ts
        self._room(n, float(ts[0]))
        new_idx = np.empty(n, dtype=np.int64)
        k, added = _mark_new(self._keys, self._last, self._bits, decoded.src_mac, ts, self.aging, new_idx)
        self._used += added
        out: list[Finding] = []
        if k:
            self.counters["new_macs"] += k
            idx = new_idx[:k]
            t_new = ts[idx]
            order = np.argsort(t_new, kind="stable")
            idx, t_new = idx[order], t_new[order]
            times = np.concatenate([self._times, t_new])
            macs = np.concatenate([self._macs, decoded.src_mac[idx]])
            start = len(self._times)
            if self._burst is not None:
                self._burst["new_macs"] += k
            else:
                found = self._crossing(times, start)
                if found is not None:
                    out.append(self._finding(found, times, macs))
                    self._burst["new_macs"] += len(times) - 1 - found
            keep = self.threshold
            self._times, self._macs = times[-keep:], macs[-keep:]
        if self._burst is not None:
            end = float(ts.max())
            recent = int((self._times > end - self.window).sum())
            if recent < max(1, self.threshold // 4) and end - self._burst["start"] >= self.window:
                self._burst["end"] = end
                self.bursts.append(self._burst)
                self._burst = None
        return out

    def _crossing(self, times: np.ndarray, start: int) -> int | None:
        """Index of the first arrival at or after `start` that makes `threshold` within `window`."""
        first = max(start, self.threshold - 1)
        if len(times) <= first:
            return None
        span = times[first:] - times[first - self.threshold + 1:len(times) - self.threshold + 1]
        hit = np.flatnonzero(span <= self.window)
        return None if len(hit) == 0 else first + int(hit[0])

    def _finding(self, i: int, times, macs) -> Finding:
        t = float(times[i])
        lo = i - self.threshold + 1
        window_macs = macs[lo:i + 1]
        span = max(t - float(times[lo]), 1e-6)
        group = int(((window_macs >> np.uint64(40)) & np.uint64(1)).sum())
        local = int(((window_macs >> np.uint64(41)) & np.uint64(1)).sum())
        self._burst = {"start": t, "end": None, "new_macs": self.threshold}
        evidence = {"new_macs": self.threshold, "seconds": round(span, 6), "window_s": self.window,
                    "rate_per_s": round(self.threshold / span, 1), "group_bit_sources": group,
                    "locally_administered": local, "known_macs": self._used,
                    "sample_macs": [format_mac(m) for m in window_macs[-5:].tolist()]}
        return Finding(ts=t, technique="mac_flood", mitre=MITRE_MAC_FLOOD, category="DoS", subcategory="MAC_Flood",
                       sid=2100101, signature=SIDS[2100101], src_mac=0, src_ip="", dest_ip="", proto="eth",
                       evidence=evidence, severity=1, block=True)
