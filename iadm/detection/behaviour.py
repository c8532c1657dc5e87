"""Behaviour over time: what a rule over one record cannot say, counted per source across records.

Each watcher counts distinct things (ports, hosts, connections) per key over a time window of
capture time, the way Snort's portscan and Zeek's scan policy do, with state kept across batches:
- port_scan: one source probing >= 20 ports of one host within 60 s (payload-free TCP probes or
  unanswered UDP datagrams), or >= 12 UDP ports within 2 s none of which answered, kind from the
  probes' flags (syn, connect, null, fin, xmas, udp);
  a sweep of >= 20 hosts on one port within 60 s (on telnet/SSH ports: Mirai-style guessing);
- floods from one source: >= 100 new one-way flows to one host within 1 s, or one flow sending
  faster than a protocol's benign ceiling (ICMP 100/s, a SYN-only flow 100/s, one-way UDP 2,000/s);
- a flood with forged sources behind one MAC: >= 50 source addresses of one-way flows to one host
  within 1 s from one MAC (a LAN host forging; a router's MAC is never blocked, see uplink.py);
- floods from many sources (DDoS, about the destination: alert only, no source is blocked on it): >= 50 sources of one-way flows to one host within 1 s, or >= 20
  sources of unanswered SYNs within 60 s (a slow distributed SYN flood); reflection: >= 50 hosts
  sending unsolicited answers (SYN-ACKs, DNS responses) to one host within 1 s, or >= 10 amplifiers
  (DNS, NTP, SNMP, ...) within 60 s, or >= 30 unsolicited SYN-ACKs within 60 s;
- brute_force: many short connections from one source to one authentication service of a host
  (>= 10 within 60 s, or >= 30 within 600 s); or >= 5 ended login-shaped sessions within 120 s
  on a service whose short sessions are logins (ssh, telnet, rdp, vnc: answered, a few KB each
  way, over within 30 s), the count of Emerging Threats' "Potential SSH Scan" and fail2ban's
  maxretry; a guesser that waits out the server's failure delay (one session every 6-8 s)
  needs minutes to reach 10 in a minute;
- http_flood: >= 100 short answered connections from one source to one web port of a host ended
  within 1 s (connections, not records: a record comes every status interval of every open flow),
  with >= 10 of them open at once (a flood's workers run in parallel; a client runs one or two),
  or >= 500 within 1 s;
- slow_http: >= 50 connections held open at once by one source on one web port of a host.
A record is flagged when it is part of what crossed the threshold; its label carries the
technique and the ATT&CK id, with the numbers in its message.

Speed (the live path must keep up with floods): every count is kept by a compiled Distinct (hash
tables over 64-bit hashes of keys and members, one ring of events in time order for expiry, see
below) and every key is hashed from the columns at once (addresses from their Arrow text, numbers
as they are, no Python tuples); a Finding's text is made only for flagged rows, once per key per
batch. scripts/bench_behaviour.py times it beside the Python implementation it replaced (same
labels, row for row): a forged-source SYN flood and the dense benchmark mix at some 550,000 to
700,000 records/s as one frame (the Python one: 30,000 to 50,000). A call has a fixed cost of
roughly 0.2 to 0.3 ms (the columns read, the labels frame built), so 0.1 s slices of a sparse
capture, a record or two each, run at a few thousand records/s.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

AUTH_SERVICES = {21: "ftp", 22: "ssh", 23: "telnet", 2323: "telnet", 3389: "rdp", 5900: "vnc", 1883: "mqtt",
                 110: "pop3", 143: "imap", 389: "ldap", 3306: "mysql", 5432: "postgresql"}
# Services where a short session is a login attempt and nothing else: an interactive shell or
# desktop lasts. Left out: MQTT (a sensor may connect, publish and leave every few seconds), mail
# (clients poll), databases and LDAP (applications connect per query), FTP (a camera uploads a
# snapshot per session; iadm/inspect/logins.py reads the server's "530 Not logged in" instead).
LOGIN_SERVICES = (22, 23, 2323, 3389, 5900)
LOGIN_MAX_BYTES = 10_000   # each way: a key exchange and a few prompts, no file and no screen of output
LOGIN_MAX_SECONDS = 30.0
HTTP_FLOOD_SECONDS = 10.0
WEB_PORTS = (80, 443, 8000, 8008, 8080, 8443)
# UDP services that answer a small request with a large one: reflection amplifiers
AMPLIFIERS = {19, 53, 111, 123, 137, 161, 389, 1900, 3702, 5353, 11211, 47808, 500}
SLOW_AMPLIFIERS = {19, 53, 111, 123, 137, 161, 389, 500, 11211}
_TH_FIN, _TH_SYN, _TH_RST, _TH_PSH, _TH_ACK, _TH_URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


# --- Distinct: compiled state ---------------------------------------------------------------------
# Keys and members are 64-bit hashes, and a (key, member) pair is known by a 64-bit hash of both:
# two keys, or two pairs, that hash alike would be counted as one (about one chance in 2**64 for
# any two of them). The state of one Distinct:
#   pairs: open addressing (linear probing, deletion by backward shift) of pair hash -> the time
#          the pair was last seen (16 bytes a slot; hash 0 marks an empty slot);
#   keys:  the same over key -> its count of pairs held; a slot is empty when its count is 0, so
#          a key whose last member leaves is freed at once;
#   ring:  one ring of events (time, pair hash, key), in the order they happened, for expiry: an
#          event pops when it is older than the window, and its pair leaves if that was its last
#          sighting (the pair is still held with that time).
# meta: keys, pairs, ring head, ring length, sightings forgotten early at a cap.
_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_N_KEYS, _N_PAIRS, _HEAD, _LEN, _FORCED = range(5)
_AHEAD = 16   # rows (and events) ahead whose slots are prefetched
_PAIR = np.dtype([("h", np.uint64), ("t", np.float64)])
_KEY = np.dtype([("h", np.uint64), ("n", np.int64)])


@njit(cache=True, nogil=True)
def _fmix(h):
    """splitmix64's finaliser: a bijection of 64-bit words that spreads every input bit."""
    h = (h ^ (h >> np.uint64(30))) * _M2
    h = (h ^ (h >> np.uint64(27))) * _M3
    return h ^ (h >> np.uint64(31))


@intrinsic
def _prefetch(typingctx, array, index):
    """A hint to bring array[index] into the cache (llvm.prefetch; no effect on results)."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]], wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.void(array, index), codegen


@njit(cache=True, nogil=True)
def _pair_hash(k, m):
    h = _fmix((k ^ _M3) * _M1 ^ m)
    return h if h != np.uint64(0) else np.uint64(1)


@njit(cache=True, nogil=True)
def _key_find(keys, k):
    """The slot of key k, or -1."""
    mask = len(keys) - 1
    s = np.int64(_fmix(k) & np.uint64(mask))
    while keys[s].n != 0:
        if keys[s].h == k:
            return s
        s = (s + 1) & mask
    return -1


@njit(cache=True, nogil=True)
def _key_count(keys, k):
    s = _key_find(keys, k)
    return keys[s].n if s >= 0 else 0


@njit(cache=True, nogil=True)
def _key_add(keys, k, meta):
    """One more pair of key k (a new key takes an empty slot); returns its count."""
    mask = len(keys) - 1
    s = np.int64(_fmix(k) & np.uint64(mask))
    while keys[s].n != 0:
        if keys[s].h == k:
            keys[s].n += 1
            return keys[s].n
        s = (s + 1) & mask
    keys[s].h = k
    keys[s].n = 1
    meta[_N_KEYS] += 1
    return 1


@njit(cache=True, nogil=True)
def _key_drop(keys, k, meta):
    """One pair less of key k; at none, its slot is emptied (backward shift)."""
    mask = len(keys) - 1
    s = _key_find(keys, k)
    keys[s].n -= 1
    if keys[s].n != 0:
        return
    meta[_N_KEYS] -= 1
    j = s
    while True:
        j = (j + 1) & mask
        if keys[j].n == 0:
            break
        home = np.int64(_fmix(keys[j].h) & np.uint64(mask))
        if not ((s < home <= j) if s <= j else (home > s or home <= j)):
            keys[s] = keys[j]
            s = j
    keys[s].n = 0


@njit(cache=True, nogil=True)
def _pair_slot(pairs, h):
    """The slot of pair hash h if it is held, else the empty slot it would take; and whether held."""
    mask = len(pairs) - 1
    s = np.int64(h & np.uint64(mask))
    while pairs[s].h != np.uint64(0):
        if pairs[s].h == h:
            return s, True
        s = (s + 1) & mask
    return s, False


@njit(cache=True, nogil=True)
def _pair_delete(keys, pairs, meta, s, k):
    """The pair at slot s (of key k) leaves (backward shift); its key counts one less."""
    mask = len(pairs) - 1
    _key_drop(keys, k, meta)
    meta[_N_PAIRS] -= 1
    j = s
    while True:
        j = (j + 1) & mask
        h = pairs[j].h
        if h == np.uint64(0):
            break
        home = np.int64(h & np.uint64(mask))
        if not ((s < home <= j) if s <= j else (home > s or home <= j)):
            pairs[s] = pairs[j]
            s = j
    pairs[s].h = 0


@njit(cache=True, nogil=True)
def _pop(keys, pairs, rt, rh, rk, meta):
    """The oldest event leaves the ring; its pair too when that was its last sighting."""
    e = meta[_HEAD]
    meta[_HEAD] = (e + 1) & (len(rt) - 1)
    meta[_LEN] -= 1
    s, held = _pair_slot(pairs, rh[e])
    if held and pairs[s].t == rt[e]:
        _pair_delete(keys, pairs, meta, s, rk[e])
        return True
    return False


@njit(cache=True, nogil=True)
def _append(pairs, rt, rh, rk, meta, t, h, k):
    mask = len(rt) - 1
    if meta[_LEN] == len(rt):   # full: drop the stale events (the live ones, one per pair, fit in half)
        e, kept = meta[_HEAD], 0
        for r in range(meta[_LEN]):
            src = (e + r) & mask
            s, held = _pair_slot(pairs, rh[src])
            if held and pairs[s].t == rt[src]:
                dst = (e + kept) & mask
                rt[dst], rh[dst], rk[dst] = rt[src], rh[src], rk[src]
                kept += 1
        meta[_LEN] = kept
    at = (meta[_HEAD] + meta[_LEN]) & mask
    rt[at], rh[at], rk[at] = t, h, k
    meta[_LEN] += 1


@njit(cache=True, nogil=True)
def _distinct_add(keys, pairs, rt, rh, rk, meta, window, max_keys, max_members, key, member, times, closing,
                  use, order, counts):
    """counts[i] for the rows i with use[i], walked in `order` (by time, stable): the key's
    distinct members seen within [t_i - window, t_i] after row i. The caller has made room for
    one new pair and one new key per row (up to the caps) with the tables at most half full."""
    n = len(order)
    pmask, kmask, rmask = len(pairs) - 1, len(keys) - 1, len(rt) - 1
    for o in range(n):
        if o + _AHEAD < n:   # the slots a later row will probe, on their way into the cache
            j = order[o + _AHEAD]
            if use[j]:
                _prefetch(pairs, np.int64(_pair_hash(key[j], member[j]) & np.uint64(pmask)))
                _prefetch(keys, np.int64(_fmix(key[j]) & np.uint64(kmask)))
        i = order[o]
        if not use[i]:
            continue
        t, k = times[i], key[i]
        h = _pair_hash(k, member[i])
        since = t - window
        while meta[_LEN] > 0 and rt[meta[_HEAD]] < since:
            if meta[_LEN] > _AHEAD:
                e = (meta[_HEAD] + _AHEAD) & rmask
                _prefetch(pairs, np.int64(rh[e] & np.uint64(pmask)))
                _prefetch(keys, np.int64(_fmix(rk[e]) & np.uint64(kmask)))
            _pop(keys, pairs, rt, rh, rk, meta)
        s, held = _pair_slot(pairs, h)
        if closing[i]:
            if held:
                _pair_delete(keys, pairs, meta, s, k)
            counts[i] = _key_count(keys, k)
        elif held:
            if pairs[s].t < t:
                pairs[s].t = t
                _append(pairs, rt, rh, rk, meta, t, h, k)
            counts[i] = _key_count(keys, k)
        else:
            if meta[_N_PAIRS] >= max_members or (meta[_N_KEYS] >= max_keys and _key_find(keys, k) < 0):
                # at a cap: the oldest sightings are forgotten first, until there is room
                while meta[_N_PAIRS] >= max_members or (meta[_N_KEYS] >= max_keys and _key_find(keys, k) < 0):
                    if _pop(keys, pairs, rt, rh, rk, meta):
                        meta[_FORCED] += 1
                s, held = _pair_slot(pairs, h)
            pairs[s].h = h
            pairs[s].t = t
            meta[_N_PAIRS] += 1
            counts[i] = _key_add(keys, k, meta)
            _append(pairs, rt, rh, rk, meta, t, h, k)


@njit(cache=True, nogil=True)
def _rehash(keys, pairs, new_keys, new_pairs):
    """The held keys and pairs into bigger tables (either may be the old one: then it is skipped)."""
    if len(new_keys) != len(keys):
        mask = len(new_keys) - 1
        for s in range(len(keys)):
            if s + _AHEAD < len(keys):
                _prefetch(new_keys, np.int64(_fmix(keys[s + _AHEAD].h) & np.uint64(mask)))
            if keys[s].n != 0:
                j = np.int64(_fmix(keys[s].h) & np.uint64(mask))
                while new_keys[j].n != 0:
                    j = (j + 1) & mask
                new_keys[j] = keys[s]
    if len(new_pairs) != len(pairs):
        mask = len(new_pairs) - 1
        for s in range(len(pairs)):
            if s + _AHEAD < len(pairs):
                _prefetch(new_pairs, np.int64(pairs[s + _AHEAD].h & np.uint64(mask)))
            h = pairs[s].h
            if h != np.uint64(0):
                j = np.int64(h & np.uint64(mask))
                while new_pairs[j].h != np.uint64(0):
                    j = (j + 1) & mask
                new_pairs[j] = pairs[s]


def _power_of_two(n: int) -> int:
    return 1 << max(int(n) - 1, 1).bit_length()


class Distinct:
    """Distinct members per key within a sliding window of time, compiled.

    `add` walks its triples in time order (stable: rows of one time in row order) and returns,
    for each, the count at that triple's own time: the key's members last seen within
    [t - window, t], so a record is only ever judged on what had happened by its time (a
    replayed batch spanning minutes is judged as the live monitor would have judged it, tick by
    tick); state carries over from batch to batch. A closing triple removes its member (a closed
    connection stops counting). Expiry is driven by the triples' times: before a triple at t, the
    sightings older than t - window leave, oldest first. A triple earlier than what came before
    it (a later batch holding older times: records of long flows keyed by their stime) is judged
    on the state as it is, and its sighting leaves once the window has passed the newest time
    recorded before it. The Python Distinct this replaced (kept in tests/unit/test_behaviour.py)
    counts exactly the same whenever batches follow one another in time; with older times it
    expired per key, lazily, which differs only in such corner cases (on the corpus and the
    benchmark captures the labels are the same, row for row).

    Bounded: a key is freed when its last member leaves (a forged-source flood's millions of
    one-off keys go as the window passes them). At most max_keys keys and max_members (key,
    member) pairs are held; at either cap a new one makes room by forgetting the oldest
    sightings first, before their time (counted in `forced`; the Python one kept the newest
    half of its keys at its cap). Memory: tables at most half full, about 80 bytes a pair and
    40 a key at the most (default caps: about 40 MB and 8 MB)."""

    def __init__(self, window: float, max_keys: int = 200_000, max_members: int = 500_000):
        self.window = float(window)
        self.max_keys, self.max_members = int(max_keys), int(max_members)
        self.meta = np.zeros(5, dtype=np.int64)
        self.keys = np.zeros(64, _KEY)
        self.pairs = np.zeros(64, _PAIR)
        self.rt, self.rh, self.rk = np.zeros(64), np.zeros(64, np.uint64), np.zeros(64, np.uint64)

    def __len__(self) -> int:
        """Keys held (each with at least one member inside the window)."""
        return int(self.meta[_N_KEYS])

    @property
    def members(self) -> int:
        """(key, member) pairs held."""
        return int(self.meta[_N_PAIRS])

    @property
    def forced(self) -> int:
        """Sightings forgotten before their time to stay within the caps."""
        return int(self.meta[_FORCED])

    def add(self, keys, members, times, closing=None, mask=None, order=None) -> np.ndarray:
        """keys, members: integer arrays (hashes: see key_hashes) or sequences of hashable
        objects (keyed by their repr; a key None is not counted). mask (optional): only these
        rows count, the others get 0 and change nothing. order (optional): np.argsort(times,
        kind="stable"), when the caller has it already."""
        times = np.asarray(times, dtype=np.float64)
        n = len(times)
        counts = np.zeros(n, dtype=np.int64)
        if not n:
            return counts
        keys, valid = _as_hashes(keys)
        members, _ = _as_hashes(members)
        use = valid if mask is None else (np.asarray(mask, dtype=bool) & valid)
        rows = int(np.count_nonzero(use))
        if not rows:
            return counts
        closing = np.zeros(n, dtype=bool) if closing is None else np.asarray(closing, dtype=bool)
        if order is None:
            order = np.argsort(times, kind="stable")
        return self.count(keys, members, times, use, order, closing, rows)

    def count(self, keys: np.ndarray, members: np.ndarray, times: np.ndarray, use: np.ndarray, order: np.ndarray,
              closing: np.ndarray, rows: int | None = None) -> np.ndarray:
        """add() on arrays as they are: uint64 keys and members, float64 times, bool use and
        closing, the int64 time order (the watchers' path: no conversions)."""
        counts = np.zeros(len(times), dtype=np.int64)
        rows = int(np.count_nonzero(use)) if rows is None else rows
        if rows:
            self._reserve(rows)
            _distinct_add(self.keys, self.pairs, self.rt, self.rh, self.rk, self.meta, self.window, self.max_keys,
                          self.max_members, keys, members, times, closing, use, order, counts)
        return counts

    def drop(self, key, member) -> None:
        """Forget one member of a key (as a closing triple would, without moving time)."""
        self.add([key], [member], [-np.inf], closing=[True])

    def _reserve(self, rows: int) -> None:
        """Room for `rows` new pairs and keys (up to the caps) with the tables at most half full;
        the ring as long as the pair table (the live events, one per pair, fill at most half)."""
        meta = self.meta
        pairs = _power_of_two(2 * min(self.max_members, int(meta[_N_PAIRS]) + rows))
        keys = _power_of_two(2 * min(self.max_keys, int(meta[_N_KEYS]) + rows))
        if pairs > len(self.pairs) or keys > len(self.keys):   # grow four times at least, up to the caps
            most_pairs, most_keys = _power_of_two(2 * self.max_members), _power_of_two(2 * self.max_keys)
            new_pairs = np.zeros(min(most_pairs, max(pairs, 4 * len(self.pairs))), _PAIR) \
                if pairs > len(self.pairs) else self.pairs
            new_keys = np.zeros(min(most_keys, max(keys, 4 * len(self.keys))), _KEY) \
                if keys > len(self.keys) else self.keys
            _rehash(self.keys, self.pairs, new_keys, new_pairs)
            self.keys, self.pairs = new_keys, new_pairs
        if len(self.rt) < len(self.pairs):
            size, head, length = len(self.pairs), int(meta[_HEAD]), int(meta[_LEN])
            at = (head + np.arange(length)) & (len(self.rt) - 1)
            rt, rh, rk = np.zeros(size), np.zeros(size, np.uint64), np.zeros(size, np.uint64)
            rt[:length], rh[:length], rk[:length] = self.rt[at], self.rh[at], self.rk[at]
            self.rt, self.rh, self.rk = rt, rh, rk
            meta[_HEAD] = 0


# --- hashing the columns ------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _text_hashes(off, data):
    """A 64-bit hash of each text data[off[i]:off[i+1]], eight bytes a step."""
    n = len(off) - 1
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        start, end = off[i], off[i + 1]
        h = np.uint64(end - start) * _M1 + _M2
        j = start
        while j < end:
            w = np.uint64(0)
            for b in range(min(8, end - j)):
                w |= np.uint64(data[j + b]) << np.uint64(8 * b)
            h = _fmix(h ^ w) * _M1
            j += 8
        out[i] = _fmix(h)
    return out


@njit(cache=True, nogil=True)
def _combine(a, b):
    """The hash of the pair (a[i], b[i]) of 64-bit words (fields of a key, one at a time)."""
    out = np.empty(len(a), dtype=np.uint64)
    for i in range(len(a)):
        out[i] = _fmix(a[i] * _M1 + (b[i] ^ _M3))
    return out


@njit(cache=True, nogil=True)
def _group_destinations(off, data):
    """_is_group of each text, compiled: 1 group or broadcast, 0 not, -1 not ASCII (ask Python)."""
    n = len(off) - 1
    out = np.zeros(n, dtype=np.int8)
    for i in range(n):
        start, end = off[i], off[i + 1]
        colon, ascii_only = False, True
        for j in range(start, end):
            if data[j] == 58:
                colon = True
            if data[j] >= 128:
                ascii_only = False
        if not ascii_only:
            out[i] = -1
        elif colon:
            if end - start >= 2 and data[start] | 32 == 102 and data[start + 1] | 32 == 102:
                out[i] = 1
        elif end - start >= 4 and data[end - 4] == 46 and data[end - 3] == 50 and data[end - 2] == 53 \
                and data[end - 1] == 53:
            out[i] = 1
        else:
            value, digits, j = 0, 0, start
            while j < end and data[j] != 46:
                if not 48 <= data[j] <= 57:
                    digits = -1
                    break
                value = min(value * 10 + data[j] - 48, 1000)
                digits += 1
                j += 1
            if digits > 0 and 224 <= value <= 239:
                out[i] = 1
    return out


def _spans(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, bytes) of an Arrow string array; nulls are the text "nan" (str() of a missing value)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = array.cast(pa.large_string())
    if array.null_count:
        array = pc.fill_null(array, "nan")
    _, offsets, data = array.buffers()
    wide = pa.types.is_large_string(array.type)
    off = np.frombuffer(offsets, dtype=np.int64 if wide else np.int32, count=array.offset + len(array) + 1)
    data = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size else np.zeros(1, np.uint8)
    return off[array.offset:].astype(np.int64, copy=False), data


def _arrow_text(values) -> pa.Array:
    """A column's text (str() of each value, as .astype(str) gives it) as Arrow strings; missing
    values are null (hashed as "nan")."""
    dtype = getattr(values, "dtype", None)
    if hasattr(values, "__arrow_array__") and (isinstance(dtype, pd.StringDtype) or (
            isinstance(dtype, pd.ArrowDtype) and pa.types.is_string(dtype.pyarrow_dtype))):
        return pa.array(values)
    texts = pd.Series(values).astype(str).to_numpy(dtype=object)
    return pa.array([t if isinstance(t, str) else None for t in texts], type=pa.large_string())


def key_hashes(texts) -> np.ndarray:
    """64-bit hashes of texts (a sequence of str, or an Arrow string array)."""
    array = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(list(texts), type=pa.large_string())
    return _text_hashes(*_spans(array))


def _as_hashes(values) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hashes, valid): an integer array as it is; other values by their repr, None not valid."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False).view(np.uint64) if values.dtype.kind == "i" else \
            values.astype(np.uint64, copy=False), np.ones(len(values), dtype=bool)
    values = list(values)
    valid = np.array([v is not None for v in values], dtype=bool)
    return key_hashes([repr(v) for v in values]), valid


def _ints(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)


_TAG_TCP, _TAG_UDP = np.uint64(0x5443500000000001), np.uint64(0x5544500000000002)
_H_TCP, _H_UDP, _H_ICMP, _H_ICMP6, _H_FIN, _H_RST = key_hashes(["tcp", "udp", "icmp", "ipv6-icmp", "FIN", "RST"])


@dataclass(frozen=True)
class Finding:
    sid: int
    category: str
    subcategory: str
    technique: str
    mitre: str
    msg: str
    blocks: bool = True   # evidence against the record's source; False: about its destination (alert only)


SCAN_TCP = 2000001
SCAN_UDP = 2000002
SWEEP = 2000003
FLOOD_FLOWS = 2000010
FLOOD_FLOW_RATE = 2000011
FLOOD_SOURCES = 2000012
REFLECTION = 2000013
FORGED_SOURCES = 2000014
BRUTE_FORCE = 2000020
BRUTE_FORCE_SLOW = 2000021
BRUTE_FORCE_LOGINS = 2000022
HTTP_FLOOD = 2000015
SLOW_HTTP = 2000030


class BehaviourWatch:
    """Per-record labels (the rule engine's shape plus technique) from behaviour over time.

    Keys and members are built as 64-bit hashes from the columns (addresses hashed from their
    Arrow text, numbers and flags as they are); a Finding's text is made from the columns of the
    first flagged row of each key (in row order), once per key per batch."""

    MAX_GUESSERS = 65536   # keys whose login count stands, remembered at once

    def __init__(self, scan_ports: int = 20, scan_hosts: int = 20, scan_seconds: float = 60.0,
                 fast_udp_ports: int = 12, fast_udp_seconds: float = 2.0,
                 flood_flows: int = 100, flood_seconds: float = 1.0, flood_sources: int = 50,
                 slow_flood_sources: int = 20, slow_flood_seconds: float = 60.0, slow_reflectors: int = 10, brute_sessions: int = 10,
                 brute_seconds: float = 60.0, brute_slow_sessions: int = 30, brute_slow_seconds: float = 600.0,
                 login_sessions: int = 5, login_seconds: float = 120.0, http_connections: int = 100,
                 http_seconds: float = 1.0, http_parallel: int = 10, slow_http_connections: int = 50,
                 slow_http_seconds: float = 120.0):
        self.scan_ports, self.scan_hosts = scan_ports, scan_hosts
        self.flood_flows, self.flood_sources, self.slow_flood_sources = flood_flows, flood_sources, slow_flood_sources
        self.brute_sessions, self.brute_slow_sessions = brute_sessions, brute_slow_sessions
        self.slow_http_connections = slow_http_connections
        self.login_sessions = login_sessions
        self.http_connections, self.http_parallel = http_connections, http_parallel
        self.ports = Distinct(scan_seconds)
        self.fast_udp_ports = fast_udp_ports
        self.udp_ports = Distinct(fast_udp_seconds)
        self.hosts = Distinct(scan_seconds)
        self.flows = Distinct(flood_seconds)
        self.sources = Distinct(flood_seconds)
        self.slow_sources = Distinct(slow_flood_seconds)
        self.answers = Distinct(flood_seconds)
        self.forged = Distinct(flood_seconds)
        self.slow_answers = Distinct(slow_flood_seconds)
        self.backscatter = Distinct(slow_flood_seconds)
        self.slow_reflectors = slow_reflectors
        self.sessions = Distinct(brute_seconds)
        self.slow_sessions = Distinct(brute_slow_seconds)
        self.logins = Distinct(login_seconds)
        self.guessing: dict[int, tuple] = {}   # key hash -> (since, until, count) of its standing login count
        self.connections = Distinct(http_seconds)
        self.open = Distinct(slow_http_seconds)
        self.sids = {SCAN_TCP, SCAN_UDP, SWEEP, FLOOD_FLOWS, FLOOD_FLOW_RATE, FLOOD_SOURCES, REFLECTION,
                     FORGED_SOURCES, BRUTE_FORCE, BRUTE_FORCE_SLOW, BRUTE_FORCE_LOGINS, HTTP_FLOOD, SLOW_HTTP}

    def __call__(self, records: pd.DataFrame) -> pd.DataFrame:
        n = len(records)
        found = np.full(n, -1, dtype=np.int64)   # per row: its Finding's number in `findings`, -1 none
        findings: list = []
        if n:
            c = _columns(records)
            self._scans(c, found, findings)
            self._floods(c, found, findings)
            self._brute_force(c, found, findings)
            self._slow_http(c, found, findings)
            self._http_flood(c, found, findings)
        return _labels(found, findings)

    @staticmethod
    def _mark(found: np.ndarray, findings: list, hit: np.ndarray, keys: np.ndarray, make) -> None:
        """found[row] = make(row) for the rows over a threshold that nothing claimed yet; one
        Finding per key per batch (a flood flags thousands of rows with the same finding), made
        from the key's first such row."""
        rows = np.flatnonzero(hit & (found < 0))
        if not len(rows):
            return
        flagged = keys[rows]
        if len(rows) == 1 or (flagged == flagged[0]).all():   # one key (a flood's victim): no sort
            first, inverse = np.zeros(1, np.int64), np.zeros(len(rows), np.int64)
        else:
            _, first, inverse = np.unique(flagged, return_index=True, return_inverse=True)
        base = len(findings)
        findings += [make(int(i)) for i in rows[first].tolist()]
        found[rows] = base + inverse.reshape(-1)

    # -- scans -----------------------------------------------------------------------------------
    def _scans(self, c, found, findings) -> None:
        sent = c.spkts >= 1
        probe_tcp = c.tcp & sent & (c.spkts <= 3) & (c.sbytes <= 100 * c.spkts) & (c.dbytes <= 200)
        probe_udp = c.udp & sent & (c.spkts <= 2) & (c.dpkts <= 1) & ~c.multicast
        probe = (probe_tcp | probe_udp) & ~c.multicast
        if not probe.any():
            return
        # one source probing one host: TCP and UDP probes as keys of their own, in one time-ordered walk
        keys = _combine(_combine(np.where(probe_tcp, _TAG_TCP, _TAG_UDP), c.saddr_h), c.daddr_h)
        counts = self.ports.count(keys, _ints(c.dport), c.ltime, probe, c.order("ltime"), c.never)
        for mask, sid, proto in ((probe_tcp, SCAN_TCP, "TCP"), (probe_udp, SCAN_UDP, "UDP")):
            def scan(i, sid=sid, proto=proto):
                kind = _scan_kind(int(c.sflags[i])) if proto == "TCP" else "udp"
                return Finding(sid, "Reconnaissance", "Service_Scan", "port_scan", "T1046",
                               f"{proto} port scan ({kind}): {counts[i]} ports of {c.text('daddr', i)} probed by "
                               f"{c.text('saddr', i)} within {self.ports.window:.0f} s")
            self._mark(found, findings, mask & probe & (counts >= self.scan_ports), keys, scan)
        # A UDP scan's first burst: nmap sends a dozen or more probes at once, then waits out the
        # target's ICMP rate limit (one port unreachable a second on Linux), so 20 ports take it
        # 10 s. No application sends unanswered datagrams to a dozen ports of one host in 2 s: a
        # host's UDP services are few (DNS, NTP, SNMP, syslog, CoAP), discovery goes to multicast.
        silent_udp = probe_udp & (c.dpkts == 0)
        if silent_udp.any():
            fast = self.udp_ports.count(keys, _ints(c.dport), c.ltime, silent_udp, c.order("ltime"), c.never)

            def burst(i):
                return Finding(SCAN_UDP, "Reconnaissance", "Service_Scan", "port_scan", "T1046",
                               f"UDP port scan (udp): {fast[i]} ports of {c.text('daddr', i)} probed by "
                               f"{c.text('saddr', i)} within {self.udp_ports.window:g} s, none answered")
            self._mark(found, findings, silent_udp & (fast >= self.fast_udp_ports), keys, burst)
        keys = _combine(_combine(c.saddr_h, c.proto_h), _ints(c.dport))
        counts = self.hosts.count(keys, c.daddr_h, c.ltime, probe, c.order("ltime"), c.never)

        def sweep(i):
            source, proto, port = c.text("saddr", i), c.proto_text(i), int(c.dport[i])
            service = AUTH_SERVICES.get(port) if port in (22, 23, 2323) else None
            return Finding(SWEEP, "Reconnaissance", "Service_Scan", "brute_force" if service else "port_scan",
                           "T1110" if service else "T1046",
                           f"{proto.upper()} sweep of port {port}{' (' + service + ')' if service else ''}: "
                           f"{counts[i]} hosts probed by {source} within {self.hosts.window:.0f} s")
        self._mark(found, findings, probe & (counts >= self.scan_hosts), keys, sweep)

    # -- floods ----------------------------------------------------------------------------------
    def _floods(self, c, found, findings) -> None:
        # one-way: nothing came back, or a TCP source that never got as far as an ACK
        one_way = (c.spkts >= 1) & ((c.dpkts == 0) | (c.tcp & ((c.sflags & _TH_ACK) == 0) & (c.spkts <= 3)))
        flow_keys = None
        if one_way.any():   # from one source; group destinations count too: a flood is a rate, whatever the address
            flow_keys = _combine(_combine(c.saddr_h, c.daddr_h), c.proto_h)
            counts = self.flows.count(flow_keys, _combine(_ints(c.sport), _ints(c.dport)), c.stime, one_way,
                                      c.order("stime"), c.never)

            def one_source(i):
                proto = c.proto_text(i)
                return Finding(FLOOD_FLOWS, "DoS", proto.upper(), _flood_technique(proto, int(c.sflags[i])),
                               "T1498.001", f"{proto.upper()} flood from one source: {counts[i]} one-way flows from "
                               f"{c.text('saddr', i)} to {c.text('daddr', i)} within {self.flows.window:g} s")
            self._mark(found, findings, one_way & (counts >= self.flood_flows), flow_keys, one_source)
        forging = one_way & (c.smac != 0)
        if forging.any():   # many source addresses behind one MAC, one destination: a LAN host forging sources
            keys = _combine(_combine(_ints(c.smac), c.daddr_h), c.proto_h)
            counts = self.forged.count(keys, c.saddr_h, c.stime, forging, c.order("stime"), c.never)

            def forged(i):
                proto = c.proto_text(i)
                return Finding(FORGED_SOURCES, "DoS", proto.upper(), _flood_technique(proto, int(c.sflags[i])),
                               "T1498.001", f"{proto.upper()} flood with forged sources: {counts[i]} source addresses "
                               f"behind one MAC sent one-way flows to {c.text('daddr', i)} within "
                               f"{self.forged.window:g} s")
            self._mark(found, findings, forging & (counts >= self.flood_sources), keys, forged)
        many = one_way & ~c.multicast
        if many.any():   # many sources, one destination: forged sources or a botnet (DDoS). The
            # finding is about the destination: a benign client of a flooded server has one-way
            # flows too, so no source is blocked on it (blocks=False); mitigation is shaped on the victim.
            keys = _combine(c.daddr_h, c.proto_h)
            fast = self.sources.count(keys, c.saddr_h, c.stime, many, c.order("stime"), c.never)
            syn = ((c.sflags & (_TH_SYN | _TH_ACK)) == _TH_SYN) & c.tcp & many
            slow = self.slow_sources.count(keys, c.saddr_h, c.stime, syn, c.order("stime"), c.never)
            quick = many & (fast >= self.flood_sources)

            def many_sources(i):
                proto = c.proto_text(i)
                n, window = (fast[i], self.sources.window) if quick[i] else (slow[i], self.slow_sources.window)
                reflected = proto == "udp" and int(c.sport[i]) in AMPLIFIERS
                return Finding(FLOOD_SOURCES, "DDoS", proto.upper(),
                               "reflection" if reflected else _flood_technique(proto, int(c.sflags[i])),
                               "T1498.002" if reflected else "T1498.001",
                               f"{proto.upper()} {'reflection' if reflected else 'flood'} from many sources: "
                               f"{n} sources sent one-way flows to {c.text('daddr', i)} within {window:g} s",
                               blocks=False)
            self._mark(found, findings, quick | (syn & (slow >= self.slow_flood_sources)), keys, many_sources)
        # Slow reflection: unsolicited answers (a flow whose first packet is a reply) from many
        # amplifiers within a minute; a benign host only gets answers on flows it opened. Services
        # that answer multicast queries by unicast (mDNS, SSDP, WS-Discovery) are left out.
        answered = one_way & c.udp & _among(c.sport, _SLOW_AMPLIFIER_PORTS) & ~c.multicast
        if answered.any():
            counts = self.slow_answers.count(c.daddr_h, c.saddr_h, c.stime, answered, c.order("stime"), c.never)
            self._mark(found, findings, answered & (counts >= self.slow_reflectors), c.daddr_h, lambda i: Finding(
                REFLECTION, "DDoS", "UDP", "reflection", "T1498.002",
                f"UDP reflection: {counts[i]} port-{int(c.sport[i])} servers sent unsolicited answers to "
                f"{c.text('daddr', i)} within {self.slow_answers.window:g} s", blocks=False))
        # SYN-ACK backscatter: SYN-ACKs for connections the receiver never opened (a SYN forged
        # with the receiver's address was answered). Argus makes such a flow its SYN-ACK sender's:
        # the source sent SYN-ACKs and nothing else, the destination (the victim) at most a RST.
        synack = (c.sflags & ~0xC0) == (_TH_SYN | _TH_ACK)       # ECN bits (ECE, CWR) aside
        backscatter = c.tcp & synack & ((c.dflags & ~(_TH_RST | _TH_ACK)) == 0) & ~c.multicast
        if backscatter.any():
            members = _combine(_combine(c.saddr_h, _ints(c.sport)), _ints(c.spkts))
            counts = self.backscatter.count(c.daddr_h, members, c.ltime, backscatter, c.order("ltime"), c.never)
            self._mark(found, findings, backscatter & (counts >= self.slow_reflectors * 3), c.daddr_h,
                       lambda i: Finding(REFLECTION, "DDoS", "TCP", "reflection", "T1498.002",
                                         f"SYN-ACK reflection: {counts[i]} unsolicited SYN-ACKs to {c.text('daddr', i)} "
                                         f"within {self.backscatter.window:g} s", blocks=False))
        unsolicited = (c.spkts == 0) & (c.dpkts >= 1) & ~c.multicast
        if unsolicited.any():   # the other side of a reflection: unsolicited answers from many hosts to one
            keys = _combine(c.saddr_h, c.proto_h)
            counts = self.answers.count(keys, c.daddr_h, c.ltime, unsolicited, c.order("ltime"), c.never)
            self._mark(found, findings, unsolicited & (counts >= self.flood_sources), keys, lambda i: Finding(
                REFLECTION, "DDoS", c.proto_text(i).upper(), "reflection", "T1498.002",
                f"{c.proto_text(i).upper()} reflection: {counts[i]} hosts sent unsolicited answers to "
                f"{c.text('saddr', i)} within {self.answers.window:g} s", blocks=False))
        syn_only = c.tcp & ((c.sflags & (_TH_SYN | _TH_ACK)) == _TH_SYN)
        fast = (c.spkts >= 50) & (
            (c.icmp & (c.srate > 100)) | (syn_only & (c.srate > 100))
            | (c.udp & (c.srate > 2000) & (c.dpkts * 10 < c.spkts)))
        if fast.any():
            if flow_keys is None:
                flow_keys = _combine(_combine(c.saddr_h, c.daddr_h), c.proto_h)
            self._mark(found, findings, fast, flow_keys, lambda i: Finding(
                FLOOD_FLOW_RATE, "DoS", c.proto_text(i).upper(), _flood_technique(c.proto_text(i), int(c.sflags[i])),
                "T1498.001", f"{c.proto_text(i).upper()} flood in one flow: {c.srate[i]:,.0f} packets/s from "
                f"{c.text('saddr', i)} to {c.text('daddr', i)}"))

    # -- password guessing -----------------------------------------------------------------------
    def _brute_force(self, c, found, findings) -> None:
        auth = c.tcp & _among(c.dport, _AUTH_PORTS) & ~c.multicast
        if not auth.any():
            return
        keys = _combine(_combine(c.saddr_h, c.daddr_h), _ints(c.dport))
        sports = _ints(c.sport)
        # a connection the service took part in: it sent more than a SYN-ACK (a banner, a prompt,
        # a CONNACK). nmap's OS probes hit an open login port with a new source port each, and the
        # port answers each with one SYN-ACK or RST: probes, not logins
        spoke = auth & (c.dpkts >= 2)
        fast = self.sessions.count(keys, sports, c.stime, spoke, c.order("stime"), c.never)
        slow = self.slow_sessions.count(keys, sports, c.stime, spoke, c.order("stime"), c.never)
        quick = spoke & (fast >= self.brute_sessions)

        def guessing(i):
            port = int(c.dport[i])
            sid, n, window = (BRUTE_FORCE, fast[i], self.sessions.window) if quick[i] else \
                (BRUTE_FORCE_SLOW, slow[i], self.slow_sessions.window)
            return Finding(sid, "Theft", "BruteForce", "brute_force", "T1110",
                           f"{AUTH_SERVICES[port]} password guessing: {n} connections from {c.text('saddr', i)} to "
                           f"{c.text('daddr', i)}:{port} within {window:.0f} s")
        self._mark(found, findings, quick | (spoke & (slow >= self.brute_slow_sessions)), keys, guessing)
        self._logins(c, found, findings, auth, keys)

    def _logins(self, c, found, findings, auth, keys) -> None:
        """Ended login-shaped sessions on a login-only service, counted at their end (a session
        is known short only once it is over). Once a key has crossed, its later records are
        flagged while the count stands (one window after the crossing), so the guesser's next
        session is evidence from its first record on: the responder weighs records, and a slow
        guesser's session makes only a handful."""
        login = auth & _among(c.dport, _LOGIN_PORTS)
        if not login.any():
            return
        # the whole session in the record (its SYN: not the tail of a flow that went idle), the client
        # spoke and the server answered, small and short
        ended = (login & c.closed & ((c.sflags & _TH_SYN) != 0) & (c.spkts >= 3) & (c.dpkts >= 2)
                 & (c.sbytes <= LOGIN_MAX_BYTES) & (c.dbytes <= LOGIN_MAX_BYTES)
                 & (c.ltime - c.stime <= LOGIN_MAX_SECONDS))
        counts = self.logins.count(keys, _ints(c.sport), c.ltime, ended, c.order("ltime"), c.never)
        crossed = ended & (counts >= self.login_sessions)
        for i in np.flatnonzero(crossed).tolist():   # (since, until, count) of the key's standing count
            key, t = int(keys[i]), float(c.ltime[i])
            since = min(self.guessing[key][0], t) if key in self.guessing else t
            self.guessing[key] = (since, t + self.logins.window, int(counts[i]))
        if not self.guessing:
            return
        now = float(c.ltime.max())
        for key in [k for k, (_, until, _) in self.guessing.items() if until < now]:
            del self.guessing[key]
        while len(self.guessing) > self.MAX_GUESSERS:   # bounded: the oldest crossing goes first
            del self.guessing[min(self.guessing, key=lambda k: self.guessing[k][1])]
        standing = crossed.copy()
        count = np.where(crossed, counts, 0)
        if self.guessing:
            held = np.sort(np.fromiter(self.guessing, dtype=np.uint64, count=len(self.guessing)))
            since, until, seen = (np.array([self.guessing[int(k)][j] for k in held]) for j in range(3))
            slot = np.minimum(np.searchsorted(held, keys), len(held) - 1)
            # a record after the crossing (a replayed frame holds the records before it too)
            later = login & (held[slot] == keys) & (c.ltime >= since[slot]) & (c.ltime <= until[slot])
            count = np.where(crossed, counts, seen[slot])
            standing |= later
        self._mark(found, findings, standing, keys, lambda i: Finding(
            BRUTE_FORCE_LOGINS, "Theft", "BruteForce", "brute_force", "T1110",
            f"{AUTH_SERVICES[int(c.dport[i])]} password guessing: {int(count[i])} short login sessions from "
            f"{c.text('saddr', i)} to {c.text('daddr', i)}:{int(c.dport[i])} ended within "
            f"{self.logins.window:.0f} s"))

    # -- HTTP floods -----------------------------------------------------------------------------
    def _http_flood(self, c, found, findings) -> None:
        """Answered web connections from one source to one port of a host, counted as they end:
        a polling client or a browser completes a handful a second with one server (HTTP/1.1:
        six at a time); a flood hundreds. Per connection (source port), not per record: a record
        comes every status interval of every open flow. Only short ones (over within
        HTTP_FLOOD_SECONDS): connections held open are slow HTTP's, even when they time out together."""
        web = (c.tcp & _among(c.dport, _WEB_PORTS) & (c.dpkts >= 1) & c.closed & ~c.multicast
               & (c.ltime - c.stime <= HTTP_FLOOD_SECONDS))
        if not web.any():
            return
        keys = _combine(_combine(c.saddr_h, c.daddr_h), _ints(c.dport))
        counts = self.connections.count(keys, _ints(c.sport), c.ltime, web, c.order("ltime"), c.never)
        # and many at once: a flood runs workers in parallel, or the server falls behind and they
        # pile up; one client, even a script looping on a LAN, runs one or two at a time, a browser
        # at most six per host name. How many are open at once is the rate times how long each
        # lasts (Little's law), taken at each connection's end. Five times the rate needs no more.
        parallel = counts / self.connections.window * (c.ltime - c.stime)
        flood = (counts >= 5 * self.http_connections) | ((counts >= self.http_connections)
                                                          & (parallel >= self.http_parallel))
        self._mark(found, findings, web & flood, keys, lambda i: Finding(
            HTTP_FLOOD, "DoS", "HTTP", "http_flood", "T1499.002",
            f"HTTP flood: {counts[i]} connections from {c.text('saddr', i)} to {c.text('daddr', i)}:"
            f"{int(c.dport[i])} completed within {self.connections.window:g} s"))

    # -- slow HTTP -------------------------------------------------------------------------------
    def _slow_http(self, c, found, findings) -> None:
        web = c.tcp & _among(c.dport, _WEB_PORTS)
        if not web.any():
            return
        keys = _combine(_combine(c.saddr_h, c.daddr_h), _ints(c.dport))
        counts = self.open.count(keys, _ints(c.sport), c.ltime, web, c.order("ltime"), c.closed)
        self._mark(found, findings, web & (counts >= self.slow_http_connections), keys, lambda i: Finding(
            SLOW_HTTP, "DoS", "HTTP", "slow_http", "T1499.002",
            f"slow HTTP: {counts[i]} connections held open by {c.text('saddr', i)} on {c.text('daddr', i)}:"
            f"{int(c.dport[i])} within {self.open.window:.0f} s"))


class _Cols:
    """A batch's columns as arrays: addresses, protocol and state as hashes of their text (str() of
    the value, as .astype(str) gives it; missing: "nan"), numbers as int64 / float64. The text of
    a row is read back only for findings."""

    def __init__(self, r: pd.DataFrame):
        n = len(r)
        v = _values(r, _NEEDED)
        self.values = v
        self.proto_h, self.saddr_h, self.daddr_h, self.state_h = (
            _hashes(v[k]) for k in ("proto", "saddr", "daddr", "state"))
        self.tcp = self.proto_h == _H_TCP
        self.udp = self.proto_h == _H_UDP
        self.icmp = (self.proto_h == _H_ICMP) | (self.proto_h == _H_ICMP6)
        self.closed = (self.state_h == _H_FIN) | (self.state_h == _H_RST)
        self.multicast = _groups(v["daddr"])
        self.sport, self.dport = _port(v["sport"]), _port(v["dport"])
        self.spkts, self.dpkts = _int64(v["spkts"]), _int64(v["dpkts"])
        self.sbytes, self.dbytes = _int64(v["sbytes"]), _int64(v["dbytes"])
        self.srate = np.asarray(v["srate"], dtype=np.float64)
        self.stime, self.ltime = np.asarray(v["stime"], dtype=np.float64), np.asarray(v["ltime"], dtype=np.float64)
        self.never = np.zeros(n, dtype=bool)   # no row closes its member
        zeros = np.zeros(n, np.int64)
        self.smac, self.sflags, self.dflags = (
            _int64(v[k]) if k in v else zeros for k in ("smac", "sflags", "dflags"))
        self._orders: dict = {}

    def order(self, name: str) -> np.ndarray:
        """The rows by stime or ltime (stable), once per batch for every watcher."""
        order = self._orders.get(name)
        if order is None:
            order = self._orders[name] = np.argsort(getattr(self, name), kind="stable")
        return order

    def text(self, name: str, i: int) -> str:
        values = self.values[name]
        if isinstance(values, pd.Categorical):
            code = int(values.codes[i])
            return str(values.categories[code]) if code >= 0 else "nan"
        value = values[i]
        return "nan" if value is None or (isinstance(value, float) and value != value) else str(value)

    def proto_text(self, i: int) -> str:
        return self.text("proto", i)


def _columns(r: pd.DataFrame) -> _Cols:
    return _Cols(r)


_NEEDED = ("proto", "saddr", "daddr", "sport", "dport", "spkts", "dpkts", "sbytes", "dbytes", "srate", "stime",
           "ltime", "smac", "sflags", "dflags", "state")


def _values(r: pd.DataFrame, names) -> dict:
    """name -> the column's values (numpy array or pandas extension array), for the names present.
    Read through the frame's block manager where it has one (about 1 us a column, against some
    15 us for r[name]); r[name].array otherwise."""
    columns = r.columns
    present = [k for k in names if k in columns]
    try:
        if columns.is_unique:
            mgr = r._mgr
            out = {k: mgr.iget_values(columns.get_loc(k)) for k in present}
            if all(len(a) == len(r) and getattr(a, "ndim", 1) == 1 for a in out.values()):
                return out
    except (AttributeError, TypeError, ValueError):
        pass
    return {k: r[k].array for k in present}


def _hashes(values) -> np.ndarray:
    """The hash of each value's text (Arrow strings from their buffers, categories once each)."""
    if isinstance(values, pd.Categorical):
        categories = tuple(values.categories.tolist())
        hashes = _CATEGORY_HASHES.get(categories)
        if hashes is None:
            if len(_CATEGORY_HASHES) >= 256:
                _CATEGORY_HASHES.clear()
            hashes = _CATEGORY_HASHES[categories] = key_hashes([str(c) for c in categories] + ["nan"])
        codes = values.codes
        return hashes[np.where(codes < 0, len(hashes) - 1, codes) if (codes < 0).any() else codes]
    return _text_hashes(*_spans(_arrow_text(values)))


_CATEGORY_HASHES: dict = {}   # the categories of a column (proto, state) -> their texts' hashes, "nan" last


def _groups(daddr) -> np.ndarray:
    if isinstance(daddr, pd.Categorical):
        flags = np.array([_is_group(str(c)) for c in daddr.categories.tolist()] + [_is_group("nan")], dtype=bool)
        return flags[np.where(daddr.codes < 0, len(flags) - 1, daddr.codes)]
    array = _arrow_text(daddr)
    group = _group_destinations(*_spans(array))
    for i in np.flatnonzero(group < 0).tolist():
        text = array[i].as_py()
        group[i] = _is_group("nan" if text is None else text)
    return group.astype(bool)


def _int64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _port_set(ports) -> np.ndarray:
    table = np.zeros(65536, dtype=bool)
    table[list(ports)] = True
    return table


_AUTH_PORTS, _WEB_PORTS, _SLOW_AMPLIFIER_PORTS, _LOGIN_PORTS = (
    _port_set(p) for p in (AUTH_SERVICES, WEB_PORTS, SLOW_AMPLIFIERS, LOGIN_SERVICES))


def _among(ports: np.ndarray, table: np.ndarray) -> np.ndarray:
    """np.isin(ports, the set of `table`), by a lookup (ports outside 0..65535 are in no set)."""
    inside = (ports >= 0) & (ports < 65536)
    return table[np.where(inside, ports, 0)] & inside


def _port(values) -> np.ndarray:
    """A port column as int64; what is not a number is -1."""
    if isinstance(values, np.ndarray) and values.dtype == np.int64:
        return values
    return pd.to_numeric(pd.Series(values), errors="coerce").fillna(-1).to_numpy(np.int64)


def _multicast(daddr: np.ndarray) -> np.ndarray:
    """Group and broadcast destinations (224/4, 255.255.255.255, x.x.x.255, ff00::/8): discovery, not probing."""
    uniques, inverse = np.unique(daddr, return_inverse=True)
    flags = np.array([_is_group(u) for u in uniques.tolist()], dtype=bool)
    return flags[inverse] if len(uniques) else np.zeros(len(daddr), bool)


def _is_group(address: str) -> bool:
    if ":" in address:
        return address.lower().startswith("ff")
    head = address.split(".", 1)[0]
    return address.endswith(".255") or (head.isdigit() and 224 <= int(head) <= 239)


def _scan_kind(flags: int) -> str:
    flags &= 0x3F
    if flags == 0:
        return "null"
    if flags == _TH_FIN:
        return "fin"
    if flags & (_TH_FIN | _TH_PSH | _TH_URG) == (_TH_FIN | _TH_PSH | _TH_URG):
        return "xmas"
    if flags & _TH_ACK and flags & _TH_SYN:
        return "connect"
    return "syn" if flags & _TH_SYN else "tcp"


def _flood_technique(proto: str, flags: int) -> str:
    if proto == "tcp":
        return "syn_flood" if flags & _TH_SYN else "tcp_flood"
    return {"udp": "udp_flood", "icmp": "icmp_flood", "ipv6-icmp": "icmp_flood"}.get(proto, "flood")


def warm_up() -> float:
    """Compile every watcher's kernels before the first live batch (numba compiles on first use:
    seconds, during which a flood would overflow the capture ring; about 12 s the very first
    time, then from its cache). The records come through the flow pipeline from crafted packets,
    so they have the live records' dtypes; the watcher is thrown away, so none of them enters a
    real one's state. Returns the seconds it took."""
    import time

    from iadm.capture.batch import Batch
    from iadm.flows.pipeline import FeaturePipeline
    from iadm.synth import frame
    start = time.monotonic()
    t0 = 1_000_000.0
    packets = [(t0 + i * 1e-4, frame(f"198.51.{i // 250}.{i % 250 + 1}", "10.0.0.2", 6, 1024 + i, 80, _TH_SYN,
                                     smac="02:00:00:00:00:65")) for i in range(600)]        # forged SYNs
    packets += [(t0 + 0.1 + i * 1e-3, frame("10.0.0.9", "10.0.0.3", 6, 40000 + i, 1 + i, _TH_SYN))
                for i in range(40)]                                                     # a scan
    packets += [(t0 + 0.2 + i * 1e-3, frame("10.0.0.9", "10.0.0.3", 6, 41000 + i, 80, _TH_FIN | _TH_ACK))
                for i in range(40)]                                                     # closing web conns
    packets += [(t0 + 0.3 + i * 1e-3, frame("10.0.0.8", "10.0.0.3", 17, 53, 30000 + i, payload=100))
                for i in range(40)]                                                     # unsolicited answers
    pipe = FeaturePipeline(status_interval=0.1)
    frames = pipe.push(Batch.from_frames([f for _, f in packets], [t for t, _ in packets])) + pipe.finish()
    watcher = BehaviourWatch()
    for records in frames:
        if len(records):
            watcher(records.reset_index(drop=True))
    Distinct(1.0).add(np.arange(200, dtype=np.int64), np.zeros(200, np.int64), np.zeros(200))   # tables grow
    return time.monotonic() - start


_LABEL_COLUMNS = ("attack", "category", "subcategory", "sid", "msg", "technique", "mitre", "blocks")
_LABEL_INDEX = pd.Index(list(_LABEL_COLUMNS))
_QUIET: dict = {}   # rows -> the labels of a batch with nothing found (copied out)


def _labels(found: np.ndarray, findings: list) -> pd.DataFrame:
    """The labels frame: per row its Finding's fields (found[i], -1: none), text columns as
    categories (sorted, only the values present, as pd.Categorical of the values gives them)."""
    n, count = len(found), len(findings)
    if not count and n:
        quiet = _QUIET.get(n)
        if quiet is None:
            quiet = _quiet(n)
            if n <= 4096:
                if len(_QUIET) >= 256:
                    _QUIET.clear()
                _QUIET[n] = quiet
        return quiet.copy()
    which = np.where(found < 0, count, found)
    present = np.zeros(count + 1, dtype=bool)
    present[which] = True
    used = np.flatnonzero(present).tolist()

    def col(name, empty=""):
        values = [getattr(findings[u], name) if u < count else empty for u in used]
        categories = sorted(set(values))
        local = {v: c for c, v in enumerate(categories)}
        codes = np.full(count + 1, -1, dtype=np.int32)
        for u, v in zip(used, values):
            codes[u] = local[v]
        if not n:
            return pd.Categorical([])
        return pd.Categorical.from_codes(codes[which], dtype=_dtype(tuple(categories)), validate=False)

    def values(name, empty, dtype):
        return np.array([getattr(f, name) for f in findings] + [empty], dtype=dtype)[which]
    return _frame([(found >= 0).astype(np.int64), col("category", "Normal"), col("subcategory", "Normal"),
                   values("sid", 0, np.int64), col("msg"), col("technique"), col("mitre"),
                   values("blocks", False, bool)], n)


def _dtype(categories: tuple) -> pd.CategoricalDtype:
    """The categorical dtype of these categories, kept for the next batches (messages with counts vary)."""
    dtype = _DTYPES.get(categories)
    if dtype is None:
        if len(_DTYPES) >= 1024:
            _DTYPES.clear()
        dtype = _DTYPES[categories] = _categorical_dtype(list(categories))
    return dtype


_DTYPES: dict = {}


def _categorical_dtype(categories: list) -> pd.CategoricalDtype:
    """pd.CategoricalDtype(categories) for categories known to be unique and not missing (sorted
    from a set): without pandas' checks where it has the way (a batch's messages are new each batch)."""
    index = pd.Index(categories)
    try:
        return pd.CategoricalDtype._from_fastpath(index, False)
    except (AttributeError, TypeError):
        return pd.CategoricalDtype(index)


def _quiet(n: int) -> pd.DataFrame:
    zeros = np.zeros(n, dtype=np.int8)
    normal = pd.Categorical.from_codes(zeros, dtype=_NORMAL)
    empty = pd.Categorical.from_codes(zeros, dtype=_EMPTY)
    return _frame([np.zeros(n, np.int64), normal, normal, np.zeros(n, np.int64), empty, empty, empty,
                   np.zeros(n, bool)], n)


def _frame(columns: list, n: int) -> pd.DataFrame:
    """The labels frame of these column arrays. Built straight from the arrays where pandas has
    the way (about 50 us, against some 170 us through a dict); the public constructor otherwise."""
    try:
        return pd.DataFrame._from_arrays(columns, columns=_LABEL_INDEX, index=pd.RangeIndex(n),
                                         verify_integrity=False)
    except (AttributeError, TypeError):
        return pd.DataFrame(dict(zip(_LABEL_COLUMNS, columns)), index=pd.RangeIndex(n))


_NORMAL, _EMPTY = pd.CategoricalDtype(["Normal"]), pd.CategoricalDtype([""])
