"""ICMP tunnels: echo messages that carry data instead of a ping.

An echo reply returns its request's data unchanged (RFC 792; RFC 4443 for ICMPv6): that is what a
ping is, whatever the tool, the payload size or the rate. A tunnel (ptunnel, icmptunnel, hans,
icmpsh) uses the echo exchange as a channel: the far end answers with data of its own, and both
sides size each message by what it carries. Two properties, about a pair of hosts:

  2100401 replies that do not return their request's data (matched by addresses, echo id and
          sequence number): `mismatches` (3) or more within `window` s (60), and at least half of
          the pair's answered echoes. The far end is speaking, not echoing. Block: the requester
          (the tunnel's client, the host on the LAN; a requester behind the uplink carries the
          router's MAC, which the responder never blocks).
  2100403 replies nobody asked for, from a host the requester does ask: `unasked` (20) or more
          within `window` s, more than twice its requests (ptunnel-ng's proxy answers each poll
          with a stream of replies numbered its own way). A ping's reply matches its request;
          replies to requests from before the monitor started are a handful, to a pair that has
          not asked since. Block: the requester.
  2100402 echo messages of many sizes carrying much data from one host to another: `sizes` (8)
          distinct payload lengths and `volume` (20,000) payload bytes within `window` s. A ping
          sends one size (`ping -s` too); a flood repeats one message. Alert only: it needs no
          reply (a one-way channel, or a mirror that sees one direction), so it is weaker.

A reply whose request was not seen (before the monitor started, or asymmetric routing), and a reply
shorter than its request when fewer than 64 bytes of it were captured, are not judged. A reply cut
by the capture's snap length is compared on its first 64 bytes.

Cost: one compiled pass reads each echo message's sequence number and hashes its payload
(FNV-1a over at most the first 1,500 captured bytes, and over the first 64); matching replies to
requests is a sort and a binary search; only pairs of hosts are handled in Python, once per batch.
"""
from __future__ import annotations

from collections import deque

import numpy as np
from numba import njit

from iadm.inspect._util import FNV_BASIS, FNV_PRIME, Once, frame_ends, frame_mac, ip_text, message_keys
from iadm.inspect.finding import MITRE_ICMP_TUNNEL, SIDS, Finding

ECHO_REQUEST = (8, 128)        # ICMP, ICMPv6
ECHO_REPLY = (0, 129)
PREFIX = 64                     # bytes compared when a reply is shorter than its request
HASHED = 1500                   # bytes of a payload hashed at most
COUNTERS = ("echo", "replies_matched", "replies_unmatched", "replies_differ", "pairs_skipped")


@njit(cache=True, nogil=True)
def _ipv4_end(buf, l4, end):
    """Where the IPv4 datagram carrying the ICMP message at l4 ends: a short frame is padded to
    Ethernet's 60 bytes, and the padding is no part of the echo data. The header is the one just
    before l4 whose length field says so and whose protocol is ICMP."""
    for ihl in range(5, 16):
        at = l4 - 4 * ihl
        if at >= 0 and buf[at] == 0x40 + ihl and buf[at + 9] == 1:
            return min(end, at + ((np.int64(buf[at + 2]) << 8) | np.int64(buf[at + 3])))
    return end


@njit(cache=True, nogil=True)
def _payloads(buf, l4, ends, v4):
    """Per echo message: sequence number, captured payload length, hash of the payload, hash of
    its first PREFIX bytes. (An ICMPv6 frame is never padded: 62 bytes at the least.)"""
    n = len(l4)
    seq = np.zeros(n, dtype=np.int64)
    length = np.zeros(n, dtype=np.int64)
    whole = np.zeros(n, dtype=np.uint64)
    prefix = np.zeros(n, dtype=np.uint64)
    for i in range(n):
        at = np.int64(l4[i])
        end = _ipv4_end(buf, at, ends[i]) if v4[i] else ends[i]
        if at + 8 > end:
            length[i] = -1          # the ICMP header is not all there
            continue
        seq[i] = (np.int64(buf[at + 6]) << 8) | np.int64(buf[at + 7])
        start = at + 8
        m = end - start
        length[i] = m
        h = FNV_BASIS
        for j in range(min(m, HASHED)):
            h = (h ^ np.uint64(buf[start + j])) * FNV_PRIME
            if j == PREFIX - 1:
                prefix[i] = h
        whole[i] = h
        if m < PREFIX:
            prefix[i] = h
    return seq, length, whole, prefix


def _pairs(a_hi, a_lo, b_hi, b_lo):
    """The distinct (from, to) pairs of hosts among some messages, as 64-bit keys: (keys, each
    message's pair index, each pair's first and latest message)."""
    zero = np.zeros(len(a_hi), dtype=np.int64)
    keys = message_keys(a_hi, a_lo, b_hi, b_lo, zero, zero)
    pairs, first, which = np.unique(keys, return_index=True, return_inverse=True)
    which = which.ravel()
    last = np.zeros(len(pairs), dtype=np.int64)
    last[which] = np.arange(len(keys))
    return pairs, which, first, last


class IcmpTunnelWatch:
    """Stateful: `__call__(batch, decoded) -> list[Finding]` on every batch."""

    MAX_PENDING = 1 << 16   # requests waiting for their reply, at most
    MAX_PAIRS = 4096        # pairs of hosts followed at once; the least recent go first
    NEW_PER_BATCH = 256     # pairs that start being followed in one batch, at most

    def __init__(self, mismatches: int = 3, unasked: int = 20, sizes: int = 8, volume: int = 20_000,
                 window: float = 60.0, answer_within: float = 10.0, repeat: float = 60.0):
        self.mismatches, self.unasked, self.sizes, self.volume = mismatches, unasked, sizes, volume
        self.window, self.answer_within = window, answer_within
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._once = Once(repeat)
        # requests not yet answered: key, time, payload length, the two hashes
        self._pending = (np.zeros(0, np.uint64), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.uint64),
                         np.zeros(0, np.uint64))
        self._asked = (np.zeros(0, np.uint64), np.zeros(0))   # pairs that asked lately: key, latest time
        # pairs of hosts by their 64-bit key, most recent last
        self._replies: dict = {}   # requester -> replier: deque of (time, requests, answered, differing, unasked)
        self._sent: dict = {}      # sender -> receiver: {"bytes": deque of (time, bytes), "sizes": {length: time}}

    def __call__(self, batch, decoded) -> list[Finding]:
        itype = decoded.icmp_type
        echo = np.flatnonzero(((decoded.proto == 1) | (decoded.proto == 58)) & (decoded.l4 >= 0)
                              & np.isin(itype, ECHO_REQUEST + ECHO_REPLY))
        if not len(echo):
            return []
        l4 = decoded.l4[echo].astype(np.int64)
        seq, length, whole, prefix = _payloads(batch.buf, l4, frame_ends(batch, l4), decoded.proto[echo] == 1)
        ok = length >= 0
        echo, seq, length, whole, prefix = echo[ok], seq[ok], length[ok], whole[ok], prefix[ok]
        self.counters["echo"] += len(echo)
        out: list[Finding] = []
        request = np.isin(itype[echo], ECHO_REQUEST)
        self._match(batch, decoded, echo, request, seq, length, whole, prefix, out)
        self._volume(decoded, echo, length, out)
        return out

    # -- 2100401 / 2100403: replies that are not echoes, replies never asked for ---------------
    def _match(self, batch, d, echo, request, seq, length, whole, prefix, out) -> None:
        ident = d.sport[echo].astype(np.int64)
        q, r = echo[request], echo[~request]
        keys = message_keys(d.src_hi[q], d.src_lo[q], d.dst_hi[q], d.dst_lo[q], ident[request], seq[request])
        pk, pt, pl, pw, pp = (np.concatenate((old, new)) for old, new in zip(
            self._pending, (keys, d.ts[q], length[request], whole[request], prefix[request])))
        found = judged = differ = np.zeros(len(r), dtype=bool)
        if len(r) and len(pk):
            order = np.argsort(pk, kind="stable")   # the latest of a repeated key last
            sk = pk[order]
            rkeys = message_keys(d.dst_hi[r], d.dst_lo[r], d.src_hi[r], d.src_lo[r], ident[~request], seq[~request])
            at = np.searchsorted(sk, rkeys, side="right") - 1
            found = (at >= 0) & (sk[np.maximum(at, 0)] == rkeys)
            j = order[np.maximum(at, 0)]
            rt, rl, rw, rp = d.ts[r], length[~request], whole[~request], prefix[~request]
            found &= (rt >= pt[j]) & (rt - pt[j] <= self.answer_within)
            same_length = rl == pl[j]
            shorter = rl < pl[j]
            judged = found & (same_length | ~shorter | (rl >= PREFIX))
            differ = judged & np.where(same_length, rw != pw[j], ~shorter | (rp != pp[j]))
        self.counters["replies_matched"] += int(judged.sum())
        self.counters["replies_unmatched"] += int((~found).sum())
        self.counters["replies_differ"] += int(differ.sum())
        self._exchanges(batch, d, q, r, found, judged, differ, out)
        keep = pt >= (float(d.ts[echo].max()) - self.answer_within)
        self._pending = tuple(a[keep][-self.MAX_PENDING:] for a in (pk, pt, pl, pw, pp))

    def _exchanges(self, batch, d, q, r, found, judged, differ, out) -> None:
        """Per pair (requester -> replier): its requests, replies judged, replies differing and
        replies never asked for. Followed from a differing reply, or an unasked one from a host
        the requester asked lately: a ping's replies never enter."""
        rows = np.concatenate((q, r))
        pairs, which, _, lasts = _pairs(np.concatenate((d.src_hi[q], d.dst_hi[r])),
                                        np.concatenate((d.src_lo[q], d.dst_lo[r])),
                                        np.concatenate((d.dst_hi[q], d.src_hi[r])),
                                        np.concatenate((d.dst_lo[q], d.src_lo[r])))
        none = np.zeros(len(q), dtype=bool)

        def per_pair(flags):
            return np.bincount(which, weights=flags, minlength=len(pairs)).astype(np.int64)

        flags = np.stack((np.concatenate((~none, np.zeros(len(r), dtype=bool))),) + tuple(
            np.concatenate((none, f)) for f in (judged, differ, ~found)), axis=1).astype(np.int64)
        requests, _, differing, unasked = (per_pair(flags[:, c]) for c in range(4))
        now = d.ts[rows[lasts]]
        asked = self._asked_lately(pairs[requests > 0], now[requests > 0], pairs, float(now.max()))
        by_pair = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[by_pair], np.arange(len(pairs) + 1))
        for k in self._candidates(self._replies, pairs, (differing > 0) | ((unasked > 0) & asked)):
            mine = by_pair[bounds[k]:bounds[k + 1]]
            mine = mine[np.argsort(d.ts[rows[mine]], kind="stable")]   # the pair's messages in time order
            history = self._pair(self._replies, int(pairs[k]), deque)
            while history and history[0][0] < float(now[k]) - self.window:
                history.popleft()
            before = np.array([sum(h[c + 1] for h in history) for c in range(4)], dtype=np.int64)
            history.append((float(now[k]),) + tuple(int(v) for v in flags[mine].sum(axis=0)))
            # running totals after each message: the finding at the message that completes it
            sent, total, wrong, unasked_so_far = (before[c] + np.cumsum(flags[mine, c]) for c in range(4))
            speaking = (wrong >= self.mismatches) & (2 * wrong >= total)
            streaming = (unasked_so_far >= self.unasked) & (unasked_so_far > 2 * sent) & bool(asked[k])
            hit = np.flatnonzero(speaking | streaming)
            if not len(hit):
                continue
            m = int(hit[0])
            i = int(rows[mine[m]])
            t = float(d.ts[i])
            if speaking[m]:
                sid, evidence = 2100401, {"replies_differing": int(wrong[m]), "replies_answered": int(total[m])}
            else:
                sid, evidence = 2100403, {"replies_unasked": int(unasked_so_far[m]), "requests": int(sent[m])}
            if not self._once((sid, int(pairs[k])), t):
                continue
            is_request = bool(mine[m] < len(q))   # rows: the requests, then the replies
            mac = frame_mac(batch, d, i, source=is_request)   # the requester's
            requester = (d.src_hi[i], d.src_lo[i]) if is_request else (d.dst_hi[i], d.dst_lo[i])
            replier = (d.dst_hi[i], d.dst_lo[i]) if is_request else (d.src_hi[i], d.src_lo[i])
            out.append(Finding(
                ts=t, technique="icmp_tunnel", mitre=MITRE_ICMP_TUNNEL, category="Theft", subcategory="Tunnel",
                sid=sid, signature=SIDS[sid], src_mac=0 if mac >> 40 & 1 else mac,
                src_ip=ip_text(*requester), dest_ip=ip_text(*replier),
                proto="icmp" if d.proto[i] == 1 else "ipv6-icmp", severity=1, block=True,
                evidence=evidence | {"window_s": self.window}))

    def _asked_lately(self, asking, times, pairs, now) -> np.ndarray:
        """Remember when each pair last asked (numpy: a ping flood from forged sources makes a
        pair a packet); per pair of `pairs`: whether it asked within the window."""
        keys = np.concatenate((self._asked[0], asking))
        when = np.concatenate((self._asked[1], times))
        order = np.lexsort((when, keys))
        keys, when = keys[order], when[order]
        latest = np.ones(len(keys), dtype=bool)
        latest[:-1] = keys[1:] != keys[:-1]
        keys, when = keys[latest], when[latest]
        recent = when >= now - self.window
        keys, when = keys[recent], when[recent]
        if len(keys) > 4 * self.MAX_PAIRS:   # bounded: the most recent stay
            keep = np.sort(np.argsort(when, kind="stable")[-4 * self.MAX_PAIRS:])
            keys, when = keys[keep], when[keep]
        self._asked = (keys, when)
        return np.isin(pairs, keys)

    # -- 2100402: many sizes, much data ---------------------------------------------------------
    def _volume(self, d, echo, length, out) -> None:
        pairs, which, firsts, lasts = _pairs(d.src_hi[echo], d.src_lo[echo], d.dst_hi[echo], d.dst_lo[echo])
        volume = np.bincount(which, weights=length, minlength=len(pairs)).astype(np.int64)
        # (pair, size) combinations of this batch; a pair enters with a payload larger than a ping's
        combos = np.unique(which.astype(np.int64) << 32 | length.astype(np.int64))
        combo_pair, combo_size = combos >> 32, combos & 0xFFFFFFFF
        bounds = np.searchsorted(combo_pair, np.arange(len(pairs) + 1))
        large = np.bincount(which, weights=length > PREFIX, minlength=len(pairs)) > 0
        for k in self._candidates(self._sent, pairs, large):
            i = int(echo[lasts[k]])
            t = float(d.ts[i])
            state = self._pair(self._sent, int(pairs[k]), lambda: {"bytes": deque(), "sizes": {}})
            state["bytes"].append((t, int(volume[k])))
            while state["bytes"][0][0] < t - self.window:
                state["bytes"].popleft()
            sizes = state["sizes"]
            for size in combo_size[bounds[k]:bounds[k + 1]].tolist()[:4 * self.sizes]:
                sizes[size] = t
            for size in [s for s, seen in sizes.items() if seen < t - self.window]:
                del sizes[size]
            carried = sum(b for _, b in state["bytes"])
            if len(sizes) < self.sizes or carried < self.volume or not self._once((2100402, int(pairs[k])), t):
                continue
            mac = int(d.src_mac[i])
            out.append(Finding(
                ts=t, technique="icmp_tunnel", mitre=MITRE_ICMP_TUNNEL, category="Theft", subcategory="Tunnel",
                sid=2100402, signature=SIDS[2100402], src_mac=0 if mac >> 40 & 1 else mac,
                src_ip=ip_text(d.src_hi[i], d.src_lo[i]), dest_ip=ip_text(d.dst_hi[i], d.dst_lo[i]),
                proto="icmp" if d.proto[i] == 1 else "ipv6-icmp", severity=2, block=False,
                evidence={"payload_sizes": len(sizes), "payload_bytes": carried, "window_s": self.window}))

    def _candidates(self, table: dict, pairs: np.ndarray, new: np.ndarray) -> list[int]:
        """Indices of the batch's pairs to follow: those followed already, then new ones where
        `new` says so, at most NEW_PER_BATCH of them (a storm of forged sources must not become a
        storm of work: the rest are counted in counters["pairs_skipped"])."""
        followed = np.isin(pairs, np.fromiter(table, dtype=np.uint64, count=len(table)))
        fresh = np.flatnonzero(new & ~followed)
        if len(fresh) > self.NEW_PER_BATCH:
            self.counters["pairs_skipped"] += len(fresh) - self.NEW_PER_BATCH
            fresh = fresh[:self.NEW_PER_BATCH]
        return np.flatnonzero(followed).tolist() + fresh.tolist()

    def _pair(self, table: dict, key: int, new):
        state = table.pop(key, None)
        if state is None:
            state = new()
            if len(table) >= self.MAX_PAIRS:
                del table[next(iter(table))]
        table[key] = state   # most recent last
        return state
