"""Bidirectional flow table with Argus-style records, columnar for speed.

Flows live in preallocated numpy arrays ("slots"); a vectorised hash index
(iadm.flows.slotindex) maps flow keys to slots. A batch of decoded packets
is looked up, its new flows inserted, and every per-flow update done as
array operations: no Python work per packet or per flow.

Semantics (Argus, as used to build Bot-IoT; choices where it is loose):
- A flow is the 5-tuple in both directions; its source is the sender of its
  first packet. ICMP echo flows are keyed by the echo id (request and reply
  pair up); other ICMP and ARP between two hosts form one flow each.
- smac: the MAC of the latest packet in the source direction, so a host
  that sends on a flow key another opened (forged sources repeat) is the
  one the record, and a block, points at.
- Records are emitted at every status interval (packet time) for each flow
  that saw packets in it, and once more when a flow goes idle
  (idle_timeout) or is evicted. Every record carries the flow's totals so
  far, like one Bot-IoT row (an aggregate of Argus status records).
- mean/stddev/sum/min/max: statistics of the durations of the flow's
  per-interval segments so far (first to last packet inside each status
  interval); stddev is the population one.
- rate = (pkts-1)/dur and srate = (spkts-1)/dur, as real Bot-IoT rows
  satisfy; drate = (dpkts-1)/(time between the first and last destination
  packet), which is what the rows that do not fit dur suggest; 0 when
  undefined. Checked against real Bot-IoT rows in docs/features.md.
- Bounded memory: at most max_flows slots. A new flow that finds the table
  full evicts the least recently active flows first (their final record is
  emitted and counted as `evicted`), in steps of 1/16 of the table, so a
  flood with millions of spoofed sources costs a fixed amount of memory.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from iadm.capture.decode import Decoded
from iadm.flows.records import make_records
from iadm.flows.slotindex import SlotIndex

KEY_WORDS = 5

_F64 = ("stime", "ltime", "s_first", "s_last", "d_first", "d_last", "seg_first", "seg_last",
        "seg_sum", "seg_sumsq", "seg_min", "seg_max")
_I64 = ("spkts", "dpkts", "sbytes", "dbytes", "nseg", "emitted_pkts", "proto", "sport", "dport",
        "icmp_type", "icmp_code")
_U64 = ("a_hi", "a_lo", "b_hi", "b_lo", "smac")
_U8 = ("sflags", "dflags")


@njit(cache=True, nogil=True)
def _update(slot, ts, swap, wirelen, flags, macs, init_is_a, spkts, dpkts, sbytes, dbytes, ltime,
            seg_first, seg_last, s_first, s_last, d_first, d_last, sflags, dflags, smac):
    """Every packet into its flow, in capture order (compiled: a flood is a flow per packet)."""
    for i in range(len(slot)):
        s = slot[i]
        t = ts[i]
        if (not swap[i]) == init_is_a[s]:      # sent by the flow's source
            spkts[s] += 1
            sbytes[s] += wirelen[i]
            s_first[s] = min(s_first[s], t)
            s_last[s] = max(s_last[s], t)
            sflags[s] |= flags[i]
            # The latest source-direction sender: a host that reuses a flow key someone
            # else opened (forged sources repeat) answers for what it sends now.
            smac[s] = macs[i]
        else:
            dpkts[s] += 1
            dbytes[s] += wirelen[i]
            d_first[s] = min(d_first[s], t)
            d_last[s] = max(d_last[s], t)
            dflags[s] |= flags[i]
        ltime[s] = max(ltime[s], t)
        seg_first[s] = min(seg_first[s], t)
        seg_last[s] = max(seg_last[s], t)


@njit(cache=True, nogil=True)
def _flow_keys(s_hi, s_lo, d_hi, d_lo, sport, dport, proto):
    """Each packet's flow key, canonically oriented (the smaller endpoint is "A"), and whether
    the packet goes B to A (swap)."""
    n = len(s_hi)
    keys = np.empty((n, KEY_WORDS), dtype=np.uint64)
    swap = np.empty(n, dtype=np.bool_)
    for i in range(n):
        sp, dp = np.uint64(sport[i]), np.uint64(dport[i])
        sw = s_hi[i] > d_hi[i] or (s_hi[i] == d_hi[i] and (s_lo[i] > d_lo[i] or (s_lo[i] == d_lo[i] and sp > dp)))
        swap[i] = sw
        if sw:
            keys[i, 0], keys[i, 1], keys[i, 2], keys[i, 3] = d_hi[i], d_lo[i], s_hi[i], s_lo[i]
            pa, pb = dp, sp
        else:
            keys[i, 0], keys[i, 1], keys[i, 2], keys[i, 3] = s_hi[i], s_lo[i], d_hi[i], d_lo[i]
            pa, pb = sp, dp
        keys[i, 4] = (np.uint64(proto[i]) << np.uint64(32)) | (pa << np.uint64(16)) | pb
    return keys, swap


@njit(cache=True, nogil=True)
def _open_flows(slots, kw, idx, first_swap, ts, proto, sport, dport, icmp_type, icmp_code, src_mac, init_is_a,
                active, a_hi, a_lo, b_hi, b_lo, c_proto, c_sport, c_dport, c_icmp_type, c_icmp_code, smac, stime,
                ltime, spkts, dpkts, sbytes, dbytes, nseg, emitted, sflags, dflags, seg_sum, seg_sumsq, seg_max,
                seg_min, s_first, d_first, seg_first, s_last, d_last, seg_last):
    """A new flow per slot, from its first packet (ICMP keeps type and code where ports would be)."""
    for j in range(len(slots)):
        s, i = slots[j], idx[j]
        a_hi[s], a_lo[s], b_hi[s], b_lo[s] = kw[j, 0], kw[j, 1], kw[j, 2], kw[j, 3]
        init_is_a[s] = not first_swap[j]
        c_proto[s] = proto[i]
        icmp = icmp_type[i] >= 0
        c_sport[s] = icmp_type[i] if icmp else sport[i]
        c_dport[s] = icmp_code[i] if icmp else dport[i]
        c_icmp_type[s], c_icmp_code[s] = icmp_type[i], icmp_code[i]
        smac[s] = src_mac[i]
        stime[s] = ts[i]
        ltime[s] = ts[i]
        spkts[s] = dpkts[s] = sbytes[s] = dbytes[s] = nseg[s] = emitted[s] = 0
        sflags[s] = dflags[s] = 0
        seg_sum[s] = seg_sumsq[s] = seg_max[s] = 0.0
        seg_min[s] = s_first[s] = d_first[s] = seg_first[s] = np.inf
        s_last[s] = d_last[s] = seg_last[s] = -np.inf
        active[s] = True


class FlowTable:
    def __init__(self, status_interval: float = 5.0, idle_timeout: float = 30.0, max_flows: int = 1 << 18):
        if status_interval <= 0 or idle_timeout <= 0 or max_flows < 16:
            raise ValueError("status_interval and idle_timeout must be positive, max_flows at least 16")
        self.status_interval = float(status_interval)
        self.idle_timeout = float(idle_timeout)
        self.capacity = int(max_flows)
        c = self.capacity
        self.col = {name: np.zeros(c, dtype=np.float64) for name in _F64}
        self.col.update({name: np.zeros(c, dtype=np.int64) for name in _I64})
        self.col.update({name: np.zeros(c, dtype=np.uint64) for name in _U64})
        self.col.update({name: np.zeros(c, dtype=np.uint8) for name in _U8})
        self.init_is_a = np.zeros(c, dtype=bool)
        self.active = np.zeros(c, dtype=bool)
        self.index = SlotIndex(c, KEY_WORDS)
        self.free = np.arange(c - 1, -1, -1, dtype=np.int64)   # a stack: free[:nfree]
        self.nfree = c
        self.next_tick: float | None = None
        self.seq = 0
        self.stats = {"flows_created": 0, "flows_expired": 0, "evicted": 0, "records": 0}

    def __len__(self) -> int:
        return len(self.index)

    # --- packets in ------------------------------------------------------
    def add(self, packets: Decoded) -> list:
        """Account a batch of packets; returns the record frames that became due."""
        out = []
        n = len(packets)
        if n == 0:
            return out
        ts = packets.ts
        if self.next_tick is None:
            self.next_tick = (np.floor(ts[0] / self.status_interval) + 1) * self.status_interval
        # Split at status ticks; a running maximum keeps slightly unordered captures in order.
        clock = np.maximum.accumulate(ts)
        # At most a quarter of the table per step, so eviction always finds room.
        step = max(1, self.capacity // 4)
        start = 0
        while start < n:
            cut = min(int(np.searchsorted(clock, self.next_tick, side="left")), start + step)
            if cut > start:
                self._account(packets, start, cut, out)
                start = cut
                continue
            # The next packet lies at or past the tick: report, then expire at the
            # last tick before it, so a long silence still closes idle flows.
            out.extend(self._tick(self.next_tick))
            last_tick = self.next_tick + np.floor((clock[start] - self.next_tick) / self.status_interval) \
                * self.status_interval
            if last_tick > self.next_tick:
                out.extend(self._tick(last_tick))
            self.next_tick = last_tick + self.status_interval
        return [frame for frame in out if len(frame)]

    def flush(self) -> list:
        """Final records for every flow still in the table (end of a capture)."""
        slots = np.flatnonzero(self.active)
        frames = [self._emit(slots[self._dirty(slots)])]
        self._release(slots)
        return [f for f in frames if len(f)]

    def _account(self, p: Decoded, lo: int, hi: int, out: list) -> None:
        sl = slice(lo, hi)
        ts = p.ts[sl]
        keys, swap = _flow_keys(p.src_hi[sl], p.src_lo[sl], p.dst_hi[sl], p.dst_lo[sl], p.sport[sl], p.dport[sl],
                                p.proto[sl])
        slot, first, self.nfree = self.index.insert(keys, self.free, self.nfree)
        self._open(slot[first], keys[first], first + lo, swap[first], p)
        missing = np.flatnonzero(slot < 0)
        if len(missing):   # the table is full: evict, then place the rest
            self._evict(len(missing), protect=slot[slot >= 0], out=out)
            placed, first, self.nfree = self.index.insert(keys[missing], self.free, self.nfree)
            if (placed < 0).any():
                raise RuntimeError(f"flow table of {self.capacity} has no room for {len(missing)} new flows")
            slot[missing] = placed
            self._open(placed[first], keys[missing[first]], missing[first] + lo, swap[missing[first]], p)
        c = self.col
        _update(slot, ts, swap, p.wirelen[sl], p.tcp_flags[sl], p.src_mac[sl], self.init_is_a,
                c["spkts"], c["dpkts"], c["sbytes"], c["dbytes"], c["ltime"], c["seg_first"], c["seg_last"],
                c["s_first"], c["s_last"], c["d_first"], c["d_last"], c["sflags"], c["dflags"], c["smac"])

    def _evict(self, count: int, protect: np.ndarray, out: list) -> None:
        """Make room: the least recently active flows go, never one this batch is updating."""
        want = min(self.capacity, count - self.nfree + self.capacity // 16)
        last = np.where(self.active, self.col["ltime"], np.inf)
        last[protect] = np.inf
        victims = np.argpartition(last, want - 1)[:want]
        victims = victims[np.isfinite(last[victims])]
        out.append(self._emit(victims[self._dirty(victims)]))
        self.stats["evicted"] += len(victims)
        self._release(victims)

    def _open(self, slots, kw, first_idx, first_swap, p: Decoded) -> None:
        c = self.col
        _open_flows(slots, kw, first_idx, first_swap, p.ts, p.proto, p.sport, p.dport, p.icmp_type, p.icmp_code,
                    p.src_mac, self.init_is_a, self.active, c["a_hi"], c["a_lo"], c["b_hi"], c["b_lo"], c["proto"],
                    c["sport"], c["dport"], c["icmp_type"], c["icmp_code"], c["smac"], c["stime"], c["ltime"],
                    c["spkts"], c["dpkts"], c["sbytes"], c["dbytes"], c["nseg"], c["emitted_pkts"], c["sflags"],
                    c["dflags"], c["seg_sum"], c["seg_sumsq"], c["seg_max"], c["seg_min"], c["s_first"],
                    c["d_first"], c["seg_first"], c["s_last"], c["d_last"], c["seg_last"])
        self.stats["flows_created"] += len(slots)

    # --- records out -----------------------------------------------------
    def _dirty(self, slots):
        c = self.col
        return (c["spkts"][slots] + c["dpkts"][slots]) > c["emitted_pkts"][slots]

    def _tick(self, now: float) -> list:
        slots = np.flatnonzero(self.active)
        frames = [self._emit(slots[self._dirty(slots)])]
        idle = slots[self.col["ltime"][slots] <= now - self.idle_timeout]
        self.stats["flows_expired"] += len(idle)
        self._release(idle)
        return frames

    def _emit(self, slots: np.ndarray):
        c = self.col
        # Close the current interval segment of each flow being reported.
        open_seg = np.isfinite(c["seg_first"][slots])
        seg = slots[open_seg]
        dur = c["seg_last"][seg] - c["seg_first"][seg]
        c["nseg"][seg] += 1
        c["seg_sum"][seg] += dur
        c["seg_sumsq"][seg] += dur * dur
        c["seg_min"][seg] = np.minimum(c["seg_min"][seg], dur)
        c["seg_max"][seg] = np.maximum(c["seg_max"][seg], dur)
        c["seg_first"][seg] = np.inf
        c["seg_last"][seg] = -np.inf
        c["emitted_pkts"][slots] = c["spkts"][slots] + c["dpkts"][slots]
        seqs = np.arange(self.seq + 1, self.seq + 1 + len(slots), dtype=np.int64)
        self.seq += len(slots)
        self.stats["records"] += len(slots)
        return make_records(c, self.init_is_a, slots, seqs)

    def _release(self, slots: np.ndarray) -> None:
        if not len(slots):
            return
        self.index.remove(slots)
        self.active[slots] = False
        self.free[self.nfree:self.nfree + len(slots)] = slots
        self.nfree += len(slots)
