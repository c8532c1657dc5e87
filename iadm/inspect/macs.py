"""MAC flooding: far more new source MACs in a short time than any LAN makes.

A switch learns every source MAC into its forwarding (CAM) table; a flooder (macof and its
kind) sends thousands of frames a second, each from a new random MAC, until the table is full
and the switch floods every frame to every port. A real LAN meets a new MAC a few times an hour
(a device joins, a phone wakes up); even a monitor starting on a busy LAN sees its few hundred
hosts over minutes, not in seconds.

Property: the number of source MACs not seen in the last `aging` seconds (a switch's default
CAM ageing, 300 s), counted over a sliding `window`. `threshold` new MACs within `window`
seconds (default 500 in 10 s: 50 a second sustained; macof makes about 3,000 a second) is a
flood. So is a faster, smaller burst that forges its MACs at random: `fast_threshold` new MACs
within `fast_window` (50 in 1 s) of which at least `fast_group_share` (a quarter) carry the
group bit. No station sends from a group address (IEEE 802: the bit marks a destination), and
random bytes set it half the time; a monitor starting on a busy LAN meets many unicast MACs at
once, never these. One finding per burst: at the packet that crosses a threshold; the burst
ends when a whole window passes with fewer than a quarter of the threshold, and its totals go
to `bursts`.

The finding names no host: the addresses are random; the mitigation is the switch port's
(stop learning there, drop sources it has not learned), which the responder asks of the
controller by one MAC the flood sent from that port (`Finding.ingress_mac`: the first unicast
one of the burst, the likeliest to have been learned before the controller's own guard). The
flood's MACs are known as such (`flood_macs`: first seen during a burst), so that the responder
makes one alert line per flood, not one per forged MAC.

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
def _mark_new(keys, last, first, bits, macs, ts, aging, new_idx):
    """Look every MAC up (inserting it); new_idx gets the packets whose MAC is new or aged out
    (first: when it was new). Returns (new packets, slots filled)."""
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
                    first[j] = ts[i]
                    k += 1
                if ts[i] > last[j]:
                    last[j] = ts[i]
                break
            if key == 0:
                keys[j] = m
                last[j] = ts[i]
                first[j] = ts[i]
                new_idx[k] = i
                k += 1
                added += 1
                break
            j = (j + 1) & mask
    return k, added


@njit(cache=True, nogil=True)
def _first_seen(keys, first, bits, macs):
    """When each MAC was last new (-inf: not in the table)."""
    mask = np.int64(len(keys) - 1)
    shift = np.uint64(64 - bits)
    out = np.full(len(macs), -np.inf)
    for i in range(len(macs)):
        m = macs[i]
        if m == 0:
            continue
        j = np.int64((m * _GOLDEN) >> shift) & mask
        while keys[j] != 0:
            if keys[j] == m:
                out[i] = first[j]
                break
            j = (j + 1) & mask
    return out


@njit(cache=True, nogil=True)
def _rehash(keys, last, first, new_keys, new_last, new_first, bits, now, aging):
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
        new_first[j] = first[i]
        n += 1
    return n


class MacFloodWatch:
    """Stateful: `__call__(batch, decoded) -> list[Finding]` on every batch (batch is unused)."""

    KEEP_BURSTS = 16   # bursts whose MACs are still known as the flood's

    def __init__(self, threshold: int = 500, window: float = 10.0, aging: float = 300.0,
                 max_macs: int = 1 << 20, fast_threshold: int = 50, fast_window: float = 1.0,
                 fast_group_share: float = 0.25):
        if threshold < 2 or fast_threshold < 2:
            raise ValueError("a MAC flood threshold needs at least 2 new MACs")
        self.threshold = threshold
        self.window = window
        self.fast_threshold = min(fast_threshold, threshold)
        self.fast_window = fast_window
        self.fast_group_share = fast_group_share
        self.aging = aging
        self.max_bits = max(12, int(max_macs - 1).bit_length() + 1)   # the table is kept at most half full
        self._bits = 12
        self._keys = np.zeros(1 << self._bits, dtype=np.uint64)
        self._last = np.zeros(1 << self._bits, dtype=np.float64)
        self._first = np.zeros(1 << self._bits, dtype=np.float64)
        self._used = 0
        self._times = np.zeros(0, dtype=np.float64)   # arrival times of the latest new MACs (at most threshold)
        self._macs = np.zeros(0, dtype=np.uint64)
        self._burst = None                              # the burst in progress: dict
        self.bursts: list[dict] = []                    # ended bursts: since, start, end, new_macs
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
        keys, last, first = self._tables(bits)
        used = _rehash(self._keys, self._last, self._first, keys, last, first, bits, now, self.aging)
        if used + n > (1 << bits) // 2:           # still full at the largest size: a flood; start over
            used = 0
            self.counters["table_cleared"] += 1
            while n > (1 << bits) // 2:            # one batch bigger than the table: grow for it
                bits += 1
            keys, last, first = self._tables(bits)
        self._bits, self._keys, self._last, self._first, self._used = bits, keys, last, first, used

    @staticmethod
    def _tables(bits: int):
        return (np.zeros(1 << bits, dtype=np.uint64), np.zeros(1 << bits, dtype=np.float64),
                np.zeros(1 << bits, dtype=np.float64))

    @property
    def flooding(self) -> bool:
        """A burst is going on or was seen (flood_macs can say yes)."""
        return self._burst is not None or bool(self.bursts)

    def flood_macs(self, macs: np.ndarray) -> np.ndarray:
        """Per MAC (uint64): whether it was new during a MAC-flood burst (the one going on, or
        one of the last KEEP_BURSTS): a forged MAC, not a host's. A MAC the table has forgotten
        (aged, or the table was emptied under the flood) is not known as one."""
        macs = np.asarray(macs, dtype=np.uint64)
        out = np.zeros(len(macs), dtype=bool)
        spans = [(b["since"], b["end"]) for b in self.bursts[-self.KEEP_BURSTS:]]
        if self._burst is not None:
            spans.append((self._burst["since"], np.inf))
        if not spans or not len(macs):
            return out
        seen = _first_seen(self._keys, self._first, self._bits, macs)
        for since, end in spans:
            out |= (seen >= since) & (seen <= end)
        return out

    def __call__(self, batch, decoded) -> list[Finding]:
        n = len(decoded)
        if n == 0:
            return []
        self.counters["packets"] += n
        ts = decoded.ts
        self._room(n, float(ts[0]))
        new_idx = np.empty(n, dtype=np.int64)
        k, added = _mark_new(self._keys, self._last, self._first, self._bits, decoded.src_mac, ts, self.aging,
                             new_idx)
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
                found = self._crossing(times, macs, start)
                if found is not None:
                    at, n = found
                    out.append(self._finding(at, n, times, macs))
                    self._burst["new_macs"] += len(times) - 1 - at
            keep = self.threshold
            self._times, self._macs = times[-keep:], macs[-keep:]
        if self._burst is not None:
            end = float(ts.max())
            recent = int((self._times > end - self.window).sum())
            if recent < max(1, self.threshold // 4) and end - self._burst["start"] >= self.window:
                self._burst["end"] = end
                self.bursts.append(self._burst)
                del self.bursts[:-self.KEEP_BURSTS]
                self._burst = None
        return out

    def _crossing(self, times: np.ndarray, macs: np.ndarray, start: int) -> tuple[int, int] | None:
        """(index of the first arrival at or after `start` that completes a burst, the burst's
        size): `threshold` new MACs within `window`, or `fast_threshold` within `fast_window` with
        a `fast_group_share` of group-bit sources, whichever comes first."""
        hits = []
        for n, window, share in ((self.threshold, self.window, 0.0),
                                 (self.fast_threshold, self.fast_window, self.fast_group_share)):
            first = max(start, n - 1)
            if len(times) <= first:
                continue
            span = times[first:] - times[first - n + 1:len(times) - n + 1]
            ok = span <= window
            if share:
                group = np.concatenate(([0], np.cumsum((macs >> np.uint64(40)) & np.uint64(1))))
                ok &= (group[first + 1:] - group[first - n + 1:len(times) - n + 1]) >= share * n
            hit = np.flatnonzero(ok)
            if len(hit):
                hits.append((first + int(hit[0]), n))
        return min(hits) if hits else None

    def _finding(self, i: int, n: int, times, macs) -> Finding:
        t = float(times[i])
        lo = i - n + 1
        window_macs = macs[lo:i + 1]
        span = max(t - float(times[lo]), 1e-6)
        group = int(((window_macs >> np.uint64(40)) & np.uint64(1)).sum())
        local = int(((window_macs >> np.uint64(41)) & np.uint64(1)).sum())
        unicast = window_macs[((window_macs >> np.uint64(40)) & np.uint64(1)) == 0]
        self._burst = {"since": float(times[lo]), "start": t, "end": None, "new_macs": n}
        evidence = {"new_macs": n, "seconds": round(span, 6), "window_s": self.window if n == self.threshold
                    else self.fast_window, "rate_per_s": round(n / span, 1), "group_bit_sources": group,
                    "locally_administered": local, "known_macs": self._used,
                    "first_macs": [format_mac(m) for m in unicast[:3].tolist()],
                    "sample_macs": [format_mac(m) for m in window_macs[-5:].tolist()]}
        return Finding(ts=t, technique="mac_flood", mitre=MITRE_MAC_FLOOD, category="DoS", subcategory="MAC_Flood",
                       sid=2100101, signature=SIDS[2100101], src_mac=0, src_ip="", dest_ip="", proto="eth",
                       evidence=evidence, severity=1, block=True,
                       ingress_mac=int(unicast[0]) if len(unicast) else 0)
