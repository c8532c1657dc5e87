"""Z-score per flow key with incremental (Welford/Chan) statistics, persisted in SQLite.

Key: (src, dst, sport, dport, proto, service), the statistical detector
report's "hash". Measurements per record: bytes_created and packets_created
(what this record adds to its flow: the increment since the key's previous
record) and bytes_total and packets_total (the flow's running totals).

Per key and measurement: count n, mean and M2 (sum of squared deviations),
plus the plain sum. std = sqrt(M2 / (n - 1)), the sample deviation. A value x
is anomalous when n >= min_count and |x - mean| / std > tolerance (two-sided);
with std = 0 any x != mean is (|z| is infinite). Only normal values update the
statistics. The report's own formulas divide the mean by the old count and give
the RMS instead of a deviation; these are Welford's, merged batch-wise by Chan's
rule, which is exact (tests compare with a two-pass computation).

Streaming: `score(records)` takes a batch (the live monitor's 0.1 s of records)
and judges every record against the statistics as they were before the batch,
then folds the batch's normal values in. Batch mode: `scan(records)` cuts the
records into periods of `frequency` hours by stime and scores period after
period, as the report's detector did on its schedule.

Speed (a batch of the live path, and each period of batch mode): a record's key text is
written by compiled code straight from the columns (Arrow string buffers, integers formatted
in place, categories by their codes), hashed, and looked up in an open-addressing table over
the key texts themselves (the bytes of every key in one arena, compared on a hash match, so
two keys never share a slot). The statistics are (slot, measurement) arrays; one compiled
pass judges a batch and one folds it in, with the arithmetic of the former numpy code in its
order (bincount's sums in record order, then Chan's merge), so z values, flags and statistics
are the former ones bit for bit (tests/unit/test_zscore.py holds them to a reference).

Key text: str() of each field joined by "|", as before ("10.0.0.1|10.0.0.2|40000|1883|tcp|
mqtt"); a missing field (NaN, None) is empty text. New keys of a batch take slots in the
order of their first record (before the compiled store: in sorted key order).

Bounded memory: at most max_keys keys, about 260 bytes each (200,000 keys: about 52 MB; the
arrays are zeroed memory sized for max_keys at the start, so the pages of slots never used are
never touched), plus scratch for one batch. When a batch brings F new keys and size + F > max_keys, the store
keeps max(0, min(max_keys // 2, max_keys - F)) keys: those with enough values to judge
(n >= min_count in some measurement) first, the most recently seen first within each group
(ties: the lower slot), renumbered in slot order; the rest are dropped and counted in
stats_counters["keys_dropped"]. A dropped key is not scored in the batch that dropped it; of
more than max_keys new keys in one batch only the first max_keys (in record order) are kept.

Anomalies are kept column by column (AnomalyLog, about 70 bytes each; not bounded: every one
stays on record), and `save` writes only the rows added or changed since the last save.

Feedback: an anomaly marked false positive leaves the open list and its value
is folded into the statistics; a confirmed one stays on record as confirmed.
"""
from __future__ import annotations

import hashlib
import sqlite3
import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

MEASUREMENTS = ("bytes_created", "bytes_total", "packets_created", "packets_total")
ENTITIES = {"src": "saddr", "dst": "daddr", "sport": "sport", "dport": "dport", "proto": "proto",
            "service": "service"}
TOLERANCE_RANGE = (2.0, 6.0)
FREQUENCY_RANGE = (1.0, 168.0)
SERVICES = {53: "dns", 80: "http", 443: "https", 1883: "mqtt", 8883: "mqtts", 5683: "coap", 5684: "coaps",
            123: "ntp", 22: "ssh", 23: "telnet", 8080: "http-alt", 67: "dhcp", 68: "dhcp"}

def _schema(prefix: str, fields) -> str:
    """The store's tables (a second store in the same database has its own prefix)."""
    return f"""
CREATE TABLE IF NOT EXISTS {prefix}keys (slot INTEGER PRIMARY KEY, key_id TEXT UNIQUE,
    {", ".join(f"{f} TEXT" for f in fields)}, last_bytes REAL, last_packets REAL);
CREATE TABLE IF NOT EXISTS {prefix}stats (measurement TEXT, slot INTEGER, n INTEGER, mean REAL, m2 REAL,
    total REAL, PRIMARY KEY (measurement, slot));
CREATE TABLE IF NOT EXISTS {prefix}anomalies (id INTEGER PRIMARY KEY, measurement TEXT, key_id TEXT, ts REAL,
    value REAL, z REAL, mean REAL, std REAL, n INTEGER, status TEXT);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value REAL);
"""


class SettingError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def check_settings(tolerance=None, frequency=None) -> None:
    for name, value, (lo, hi) in (("tolerance", tolerance, TOLERANCE_RANGE), ("frequency", frequency,
                                                                              FREQUENCY_RANGE)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise SettingError(name, f"{name} must be a number from {lo:g} to {hi:g}, not {value!r}")


def service_names(proto, dport) -> np.ndarray:
    """A well-known port's service name, else "proto/port"."""
    ports = pd.to_numeric(pd.Series(dport), errors="coerce").fillna(-1).astype(np.int64)
    named = ports.map(SERVICES)
    fallback = pd.Series(proto, dtype=object).astype(str) + "/" + ports.astype(str)
    return named.where(named.notna(), fallback).to_numpy(dtype=object)


# --- compiled kernels ---------------------------------------------------------------------------
# A key field's text, for the composer: _STR row i's text is data[off[i]:off[i+1]]; _INT is
# ints[i] in decimal; _DICT is category ints[i]'s text, data[off[c]:off[c+1]].
_STR, _INT, _DICT = 0, 1, 2
_BAR, _SLASH, _MINUS, _ZERO = 124, 47, 45, 48
_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@njit(cache=True, nogil=True)
def _hash_bytes(data, start, end):
    """A 64-bit hash of data[start:end], eight bytes a step, splitmix64's finaliser."""
    h = np.uint64(end - start) * _M1
    i = start
    while i + 8 <= end:
        w = np.uint64(0)
        for k in range(8):
            w |= np.uint64(data[i + k]) << np.uint64(8 * k)
        h = (h ^ w) * _M1
        h ^= h >> np.uint64(29)
        i += 8
    w = np.uint64(0)
    k = 0
    while i < end:
        w |= np.uint64(data[i]) << np.uint64(8 * k)
        i += 1
        k += 1
    h = (h ^ w) * _M1
    h = (h ^ (h >> np.uint64(30))) * _M2
    h = (h ^ (h >> np.uint64(27))) * _M3
    return h ^ (h >> np.uint64(31))


@njit(cache=True, nogil=True)
def _hash_spans(data, offs):
    out = np.empty(len(offs) - 1, dtype=np.uint64)
    for i in range(len(out)):
        out[i] = _hash_bytes(data, offs[i], offs[i + 1])
    return out


@njit(cache=True, nogil=True)
def _magnitude(v):
    if v < 0:
        return np.uint64(-(v + 1)) + np.uint64(1)
    return np.uint64(v)


@njit(cache=True, nogil=True)
def _int_len(v):
    """len(str(v)) of an int64."""
    m = _magnitude(v)
    d = 2 if v < 0 else 1
    while m >= np.uint64(10):
        m //= np.uint64(10)
        d += 1
    return d


@njit(cache=True, nogil=True)
def _put_int(buf, at, v):
    end = at + _int_len(v)
    if v < 0:
        buf[at] = _MINUS
    m = _magnitude(v)
    p = end - 1
    while True:
        buf[p] = np.uint64(_ZERO) + m % np.uint64(10)
        m //= np.uint64(10)
        p -= 1
        if m == np.uint64(0):
            break
    return end


@njit(cache=True, nogil=True)
def _field_len(kind, ints, off, i):
    if kind == _INT:
        return _int_len(ints[i])
    c = ints[i] if kind == _DICT else i
    return off[c + 1] - off[c]


@njit(cache=True, nogil=True)
def _field_put(kind, ints, off, data, i, buf, at):
    if kind == _INT:
        return _put_int(buf, at, ints[i])
    c = ints[i] if kind == _DICT else i
    for p in range(off[c], off[c + 1]):
        buf[at] = data[p]
        at += 1
    return at


@njit(cache=True, nogil=True)
def _compose(k0, i0, o0, d0, k1, i1, o1, d1, k2, i2, o2, d2, k3, i3, o3, d3, k4, i4, o4, d4,
             ports, svc_index, svc_off, svc_data):
    """Every record's key text "src|dst|sport|dport|proto|service" back to back (buf, offs)
    and its hash. service: the port's name in SERVICES, else "proto/port"."""
    n = len(ports)
    offs = np.empty(n + 1, dtype=np.int64)
    offs[0] = 0
    for i in range(n):
        port = ports[i]
        if 0 <= port < len(svc_index) and svc_index[port] >= 0:
            service = svc_off[svc_index[port] + 1] - svc_off[svc_index[port]]
        else:
            service = _field_len(k4, i4, o4, i) + 1 + _int_len(port)
        offs[i + 1] = (offs[i] + _field_len(k0, i0, o0, i) + _field_len(k1, i1, o1, i) + _field_len(k2, i2, o2, i)
                       + _field_len(k3, i3, o3, i) + _field_len(k4, i4, o4, i) + 5 + service)
    buf = np.empty(offs[n], dtype=np.uint8)
    hashes = np.empty(n, dtype=np.uint64)
    for i in range(n):
        at = _field_put(k0, i0, o0, d0, i, buf, offs[i])
        buf[at] = _BAR
        at = _field_put(k1, i1, o1, d1, i, buf, at + 1)
        buf[at] = _BAR
        at = _field_put(k2, i2, o2, d2, i, buf, at + 1)
        buf[at] = _BAR
        at = _field_put(k3, i3, o3, d3, i, buf, at + 1)
        buf[at] = _BAR
        at = _field_put(k4, i4, o4, d4, i, buf, at + 1)
        buf[at] = _BAR
        at += 1
        port = ports[i]
        if 0 <= port < len(svc_index) and svc_index[port] >= 0:
            c = svc_index[port]
            for p in range(svc_off[c], svc_off[c + 1]):
                buf[at] = svc_data[p]
                at += 1
        else:
            at = _field_put(k4, i4, o4, d4, i, buf, at)
            buf[at] = _SLASH
            at = _put_int(buf, at + 1, port)
        hashes[i] = _hash_bytes(buf, offs[i], at)
    return buf, offs, hashes


@njit(cache=True, nogil=True)
def _equal(a, a_start, a_len, b, b_start, b_end):
    if b_end - b_start != a_len:
        return False
    for k in range(a_len):
        if a[a_start + k] != b[b_start + k]:
            return False
    return True


@njit(cache=True, nogil=True)
def _find(table, mask, slot_hash, key_off, key_len, arena, hashes, offs, buf):
    """The slot of each key text buf[offs[i]:offs[i+1]], or -1. The table holds slot + 1 (0: empty)."""
    n = len(hashes)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        h = hashes[i]
        pos = np.int64(h & np.uint64(mask))
        while True:
            t = table[pos] - 1
            if t < 0:
                out[i] = -1
                break
            if slot_hash[t] == h and _equal(arena, key_off[t], key_len[t], buf, offs[i], offs[i + 1]):
                out[i] = t
                break
            pos = (pos + 1) & mask
    return out


@njit(cache=True, nogil=True)
def _insert(table, mask, slot_hash, key_off, key_len, arena, fill, size, limit, hashes, offs, buf, rows, out,
            n, mean, m2, total, last, seen, dirty):
    """out[i] for i in rows: the key's slot, a new one (the next number, its text appended to the
    arena, its statistics empty) while size < limit, else -1. Duplicates in rows share the slot
    of the first."""
    for r in range(len(rows)):
        i = rows[r]
        h = hashes[i]
        pos = np.int64(h & np.uint64(mask))
        while True:
            t = table[pos] - 1
            if t < 0:
                if size >= limit:
                    out[i] = -1
                    break
                t = size
                size += 1
                table[pos] = t + 1
                slot_hash[t] = h
                for j in range(n.shape[1]):
                    n[t, j] = mean[t, j] = m2[t, j] = total[t, j] = 0.0
                last[t, 0] = last[t, 1] = -1.0
                seen[t] = 0.0
                dirty[t] = False
                key_off[t] = fill
                key_len[t] = offs[i + 1] - offs[i]
                for p in range(offs[i], offs[i + 1]):
                    arena[fill] = buf[p]
                    fill += 1
                out[i] = t
                break
            if slot_hash[t] == h and _equal(arena, key_off[t], key_len[t], buf, offs[i], offs[i + 1]):
                out[i] = t
                break
            pos = (pos + 1) & mask
    return size, fill


@njit(cache=True, nogil=True)
def _distinct(hashes, offs, buf, rows):
    """How many different key texts rows hold."""
    size = 1
    while size < 2 * len(rows):
        size <<= 1
    mask = size - 1
    first = np.full(size, -1, dtype=np.int64)
    count = 0
    for r in range(len(rows)):
        i = rows[r]
        h = hashes[i]
        pos = np.int64(h & np.uint64(mask))
        while True:
            j = first[pos]
            if j < 0:
                first[pos] = i
                count += 1
                break
            if hashes[j] == h and _equal(buf, offs[j], offs[j + 1] - offs[j], buf, offs[i], offs[i + 1]):
                break
            pos = (pos + 1) & mask
    return count


@njit(cache=True, nogil=True)
def _reindex(table, mask, slot_hash, size):
    table[:] = 0
    for t in range(size):
        pos = np.int64(slot_hash[t] & np.uint64(mask))
        while table[pos] != 0:
            pos = (pos + 1) & mask
        table[pos] = t + 1


@njit(cache=True, nogil=True)
def _compact_arena(arena, key_off, key_len, order):
    """Move the texts of the slots in `order` (ascending) to the front, as slots 0, 1, ...
    The arena is in slot order, so every text moves towards the front: in place is safe."""
    fill = 0
    for k in range(len(order)):
        t = order[k]
        start, length = key_off[t], key_len[t]
        for p in range(length):
            arena[fill + p] = arena[start + p]
        key_off[k] = fill
        key_len[k] = length
        fill += length
    return fill


@njit(cache=True, nogil=True)
def _z(v, count, mu, m2):
    """A value's z against (count, mean, M2): the sample deviation; with a deviation of 0, 0 for
    the mean itself and an infinite z for anything else (NaN for NaN)."""
    std = np.sqrt(m2 / max(count - 1.0, 1.0)) if count > 1 else np.nan
    if std > 0:
        return (v - mu) / std
    if v == mu:
        return 0.0
    d = v - mu
    return np.inf if d > 0 else (-np.inf if d < 0 else np.nan)


@njit(cache=True, nogil=True)
def _judge(slots, bytes_total, packets_total, ts, last, n, mean, m2, seen, dirty, min_count, tolerance):
    """Each record's four measurements (MEASUREMENTS order) and z values against its key's
    statistics before the batch; flags (bit j: measurement j anomalous), the largest judged
    |z|, the first anomalous measurement (-1: none). Updates each key's last totals, seen, dirty."""
    rows = len(slots)
    x = np.zeros((rows, 4))
    z = np.zeros((rows, 4))
    flags = np.zeros(rows, dtype=np.uint8)
    best = np.zeros(rows)
    which = np.full(rows, -1, dtype=np.int8)
    for i in range(rows):
        s = slots[i]
        if s < 0:
            continue
        seen[s] = ts[i]
        dirty[s] = True
        for k in range(2):
            total = bytes_total[i] if k == 0 else packets_total[i]
            prev = last[s, k]
            x[i, 2 * k] = total - prev if (prev >= 0 and total >= prev) else total
            x[i, 2 * k + 1] = total
            last[s, k] = total
        top = 0.0
        for j in range(4):
            v, count, mu = x[i, j], n[s, j], mean[s, j]
            zj = _z(v, count, mu, m2[s, j])
            z[i, j] = zj
            if count >= min_count:
                a = abs(zj)
                if a > tolerance:
                    if flags[i] == 0:
                        which[i] = j
                    flags[i] |= np.uint8(1 << j)
                if a > top:
                    top = a
        best[i] = top
    return x, z, flags, best, which


@njit(cache=True, nogil=True)
def _judge_values(slots, x, ts, n, mean, m2, seen, dirty, min_count, tolerance):
    """_judge for measurements given as values (x: rows x measurements, NaN: not measured in this
    row): z against each key's statistics before the batch; flags (bit j: anomalous), skip (bit
    j: anomalous or not measured, so not folded), the largest judged |z| and its measurement."""
    rows, m = x.shape
    z = np.full((rows, m), np.nan)
    flags = np.zeros(rows, dtype=np.uint8)
    skip = np.zeros(rows, dtype=np.uint8)
    best = np.zeros(rows)
    which = np.full(rows, -1, dtype=np.int8)
    for i in range(rows):
        s = slots[i]
        if s < 0:
            continue
        seen[s] = ts[i]
        dirty[s] = True
        top = 0.0
        for j in range(m):
            v = x[i, j]
            if v != v:
                skip[i] |= np.uint8(1 << j)
                continue
            count, mu = n[s, j], mean[s, j]
            zj = _z(v, count, mu, m2[s, j])
            z[i, j] = zj
            if count >= min_count:
                a = abs(zj)
                if a > tolerance:
                    if flags[i] == 0:
                        which[i] = j
                    flags[i] |= np.uint8(1 << j)
                    skip[i] |= np.uint8(1 << j)
                if a > top:
                    top = a
        best[i] = top
    return z, flags, skip, best, which


@njit(cache=True, nogil=True)
def _fold_batch(slots, x, flags, n, mean, m2, total, local):
    """Chan's merge of each key's normal values of the batch into its (n, mean, M2) and sum:
    the batch's sums in record order, its mean, its M2 about that mean, then the merge."""
    rows, m = len(slots), x.shape[1]
    uniq = np.empty(rows, dtype=np.int64)
    u = 0
    for i in range(rows):          # local[s]: 1 + the key's place among the batch's keys (0: none)
        s = slots[i]
        if s >= 0 and local[s] == 0:
            uniq[u] = s
            u += 1
            local[s] = u
    count = np.zeros((u, m))
    sums = np.zeros((u, m))
    sq = np.zeros((u, m))
    for i in range(rows):
        s = slots[i]
        if s < 0:
            continue
        g, f = local[s] - 1, flags[i]
        for j in range(m):
            if not (f >> j) & 1:
                count[g, j] += 1.0
                sums[g, j] += x[i, j]
    batch_mean = np.zeros((u, m))
    for g in range(u):
        for j in range(m):
            if count[g, j] > 0:
                batch_mean[g, j] = sums[g, j] / count[g, j]
    for i in range(rows):
        s = slots[i]
        if s < 0:
            continue
        g, f = local[s] - 1, flags[i]
        for j in range(m):
            if not (f >> j) & 1:
                d = x[i, j] - batch_mean[g, j]
                sq[g, j] += d * d
    for g in range(u):
        s = uniq[g]
        for j in range(m):
            nb = count[g, j]
            if nb > 0:
                na, ma = n[s, j], mean[s, j]
                both = na + nb
                delta = batch_mean[g, j] - ma
                mean[s, j] = ma + delta * nb / both
                m2[s, j] = m2[s, j] + sq[g, j] + delta * delta * na * nb / both
                n[s, j] = both
                total[s, j] += sums[g, j]
        local[s] = 0


def _most_recent(seen: np.ndarray, group: np.ndarray, count: int) -> np.ndarray:
    """The `count` slots of `group` (ascending) seen last, ties to the lower slot, ascending
    (what a stable sort by -seen would pick; a never-set NaN counts as least recent)."""
    if count >= len(group):
        return group
    if count <= 0:
        return group[:0]
    when = seen[group]
    when = np.where(np.isnan(when), -np.inf, when)
    cut = np.partition(when, len(when) - count)[len(when) - count]    # the count-th most recent time
    chosen = when > cut
    ties = np.flatnonzero(when == cut)
    chosen[ties[:count - int(chosen.sum())]] = True
    return group[chosen]


# --- key texts from record columns -----------------------------------------------------------
def _ro(a, dtype) -> np.ndarray:
    """C-contiguous and read-only: one array type per kernel argument, one compilation."""
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


_NO_INTS, _NO_BYTES = _ro(np.zeros(0), np.int64), _ro(np.zeros(0), np.uint8)


def _spans(texts) -> tuple[np.ndarray, np.ndarray]:
    """Texts back to back as UTF-8 (writable) and their offsets."""
    encoded = [t.encode() for t in texts]
    offs = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offs[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offs


def _to_arrow(values: pd.Series):
    array = values.array
    if hasattr(array, "__arrow_array__"):
        return pa.array(array)
    return pa.array(np.asarray(values, dtype=object), from_pandas=True)


def _arrow_spans(array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, bytes) of an Arrow string array, zero-copy where it can; nulls as empty text."""
    if isinstance(array, pa.ChunkedArray):
        array = array.chunk(0) if array.num_chunks == 1 else array.combine_chunks()
    if array.null_count:
        array = pc.fill_null(array, "")
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = array.cast(pa.large_string())
    _, offsets, data = array.buffers()
    wide = pa.types.is_large_string(array.type)
    off = np.frombuffer(offsets, dtype=np.int64 if wide else np.int32, count=array.offset + len(array) + 1)
    data = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size else _NO_BYTES
    return _ro(off[array.offset:], np.int64), _ro(data, np.uint8)


def _generic_text(values) -> pa.Array:
    """The key's text of any column: str() of each value (as the key always was); missing: null."""
    return _to_arrow(pd.Series(values, dtype=object).astype(str))


def _is_text(dtype) -> bool:
    return isinstance(dtype, pd.StringDtype) or (isinstance(dtype, pd.ArrowDtype) and (
        pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(dtype.pyarrow_dtype)))


def _field_text(column: pd.Series) -> tuple:
    dtype = column.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        ints = column.to_numpy()
        if dtype.kind == "i" or not len(ints) or ints.max() <= np.iinfo(np.int64).max:
            return _INT, _ro(ints, np.int64), _NO_INTS, _NO_BYTES
    if isinstance(dtype, pd.CategoricalDtype):
        categories = dtype.categories
        if _is_text(categories.dtype):    # text categories are their own text
            texts = pa.array(categories.array) if hasattr(categories.array, "__arrow_array__") else \
                _to_arrow(pd.Series(categories))
        else:
            texts = _generic_text(np.asarray(categories, dtype=object))
        codes = np.array(column.array.codes, dtype=np.int64)
        if (codes < 0).any():
            texts = pa.concat_arrays([texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts,
                                      pa.array([""], type=texts.type)])
            codes[codes < 0] = len(dtype.categories)
        return (_DICT, _ro(codes, np.int64), *_arrow_spans(texts))
    if _is_text(dtype):
        return (_STR, _NO_INTS, *_arrow_spans(_to_arrow(column)))
    return (_STR, _NO_INTS, *_arrow_spans(_generic_text(column.to_numpy())))


def _service_table():
    names = list(dict.fromkeys(SERVICES.values()))
    index = np.full(max(SERVICES) + 1, -1, dtype=np.int64)
    for port, name in SERVICES.items():
        index[port] = names.index(name)
    data, offs = _spans(names)
    return _ro(index, np.int64), _ro(offs, np.int64), _ro(data, np.uint8)


_SERVICE_TABLE = _service_table()


def key_texts(records: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every record's key text as UTF-8 bytes back to back (buf, offs) and its hash."""
    columns = [records[c] for c in ("saddr", "daddr", "sport", "dport", "proto")]
    fields = [f for column in columns for f in _field_text(column)]
    dport = columns[3].to_numpy()
    if dport.dtype != np.int64:   # service_names' port: numeric, else -1
        dport = pd.to_numeric(pd.Series(dport), errors="coerce").fillna(-1).astype(np.int64).to_numpy()
    return _compose(*fields, _ro(dport, np.int64), *_SERVICE_TABLE)


_MEASUREMENT_NAMES = np.array(["", *MEASUREMENTS], dtype=object)
# The column type pandas gives an object array of text (pandas 3: its Arrow-backed str); built
# from Arrow directly when it is Arrow-backed (inferring it from objects costs ~0.2 us a record).
_TEXT_DTYPE = pd.Series(np.array([""], dtype=object)).dtype
_ARROW_TEXT = _is_text(_TEXT_DTYPE) and _TEXT_DTYPE.storage == "pyarrow"
_MEASUREMENT_DATA, _MEASUREMENT_OFFS = _spans(_MEASUREMENT_NAMES.tolist())


@njit(cache=True, nogil=True)
def _gather_names(which, offs, data):
    """Arrow string buffers (int32 offsets, bytes) of name which[i] + 1 for every i."""
    n = len(which)
    out_offs = np.empty(n + 1, dtype=np.int32)
    out_offs[0] = 0
    for i in range(n):
        c = which[i] + 1
        out_offs[i + 1] = out_offs[i] + offs[c + 1] - offs[c]
    out = np.empty(out_offs[n], dtype=np.uint8)
    for i in range(n):
        c = which[i] + 1
        out[out_offs[i]:out_offs[i + 1]] = data[offs[c]:offs[c + 1]]
    return out_offs, out


def _measurement_column(which: np.ndarray):
    if not _ARROW_TEXT:
        return _MEASUREMENT_NAMES[which.astype(np.int64) + 1]
    offs, data = _gather_names(which, _MEASUREMENT_OFFS, _MEASUREMENT_DATA)
    array = pa.StringArray.from_buffers(len(which), pa.py_buffer(offs), pa.py_buffer(data))
    return pd.arrays.ArrowStringArray(array, dtype=_TEXT_DTYPE)


_warmed = False


def warm_up() -> None:
    """Compile every kernel (or load it from numba's cache) on a few records, once per process,
    so that the first batch a live monitor scores does not wait for a compiler."""
    global _warmed
    if _warmed:
        return
    _warmed = True
    det = ZScoreDetector(min_count=2, max_keys=3)
    frame = pd.DataFrame({"saddr": ["10.0.0.1", "10.0.0.2", "10.0.0.3"], "daddr": "10.0.0.9",
                          "sport": np.array([1, 2, 3]), "dport": np.array([80, 5, 5]),
                          "proto": pd.Categorical(["tcp", "udp", "udp"]), "bytes": [1.0, 2.0, 3.0],
                          "pkts": [1.0, 1.0, 1.0], "stime": 0.0, "ltime": 0.0,
                          "synack": [0.01, np.nan, np.nan], "answer": np.nan, "owd": [0.001, np.nan, 0.002]})
    for step in range(4):   # the delays too: the device store's kernels, an anomaly at the last step
        det.score(frame.assign(bytes=frame["bytes"] * (1 + step), ltime=float(step),
                               owd=frame["owd"] * (1 + 99 * (step == 3)), synack=frame["synack"] * (1 + step % 2)))
    det.score(frame.assign(saddr=["10.0.1.1", "10.0.1.2", "10.0.1.3"]))   # a compaction
    data, offs = _spans(["a|b"])
    _hash_spans(data, offs)


STATUSES = ("open", "confirmed", "false_positive")
ANOMALY_FIELDS = ("id", "measurement", "key_id", "ts", "value", "z", "mean", "std", "n", "status")
_MEASUREMENT_OBJECTS = np.array(MEASUREMENTS, dtype=object)
_STATUS_OBJECTS = np.array(STATUSES, dtype=object)


class AnomalyLog:
    """Every anomaly recorded, column by column, in id order: about 70 bytes each, where a dict
    per anomaly cost ~600 bytes, ~1 us to build, and the garbage collector's time over them all.
    Rows come out as dicts with ANOMALY_FIELDS (the database's columns, in order)."""

    def __init__(self, names=MEASUREMENTS):
        self._names = np.array(names, dtype=object)
        self.count = 0
        self.saved = 0          # rows [0, saved) are in the database, as they are unless in `changed`
        self.changed: set[int] = set()
        self.capacity = 0
        self._alloc(1024)

    def _alloc(self, capacity: int) -> None:
        def grow(name, dtype):
            new = np.empty(capacity, dtype=dtype) if dtype is not object else np.full(capacity, None, dtype=object)
            if self.capacity:
                new[:self.count] = getattr(self, name)[:self.count]
            setattr(self, name, new)
        for name, dtype in (("id", np.int64), ("measurement", np.int8), ("key_id", object), ("ts", np.float64),
                            ("value", np.float64), ("z", np.float64), ("mean", np.float64), ("std", np.float64),
                            ("n", np.int64), ("status", np.int8)):
            grow(name, dtype)
        self.capacity = capacity

    def extend(self, first_id: int, measurement: int, key_id, ts, value, z, mean, std, n, status=None) -> None:
        k, at = len(ts), self.count
        if at + k > self.capacity:
            self._alloc(max(2 * self.capacity, at + k))
        self.id[at:at + k] = np.arange(first_id, first_id + k) if np.isscalar(first_id) else first_id
        self.measurement[at:at + k] = measurement
        self.key_id[at:at + k] = key_id
        for name, column in (("ts", ts), ("value", value), ("z", z), ("mean", mean), ("std", std), ("n", n)):
            getattr(self, name)[at:at + k] = column
        self.status[at:at + k] = 0 if status is None else status
        self.count = at + k

    def rows(self, index) -> list[dict]:
        columns = [self.id[index].tolist(), self._names[self.measurement[index]].tolist(),
                   self.key_id[index].tolist(), self.ts[index].tolist(), self.value[index].tolist(),
                   self.z[index].tolist(), self.mean[index].tolist(), self.std[index].tolist(),
                   self.n[index].tolist(), _STATUS_OBJECTS[self.status[index]].tolist()]
        return [dict(zip(ANOMALY_FIELDS, row)) for row in zip(*columns)]

    def find(self, anomaly_id: int) -> int | None:
        i = int(np.searchsorted(self.id[:self.count], anomaly_id))
        return i if i < self.count and self.id[i] == anomaly_id else None

    def unsaved(self) -> list[tuple]:
        """The rows to write (new or changed since the last call), as database tuples."""
        index = np.array(sorted(self.changed | set(range(self.saved, self.count))), dtype=np.int64)
        self.saved, self.changed = self.count, set()
        return [tuple(row.values()) for row in self.rows(index)]


class ZScoreDetector:
    """The per-flow-key store (module doc). A store with another key and other measurements is a
    subclass that sets MEASUREMENTS, KEY_FIELDS (the key text's "|"-separated fields), PREFIX (its
    tables' names in the database) and its own score(): DeviceDelay below. delay: keep the
    per-device delay store beside this one (self.delay), whose anomalies score() merges in."""

    MEASUREMENTS = MEASUREMENTS
    KEY_FIELDS = tuple(ENTITIES)
    PREFIX = ""

    def __init__(self, db: str | None = None, tolerance: float = 3.0, frequency: float = 24.0, min_count: int = 10,
                 max_keys: int = 200_000, delay: bool = True):
        check_settings(tolerance, frequency)
        if min_count < 2:
            raise SettingError("min_count", "min_count must be at least 2 (a deviation needs two values)")
        warm_up()
        self.tolerance, self.frequency, self.min_count = float(tolerance), float(frequency), int(min_count)
        self.max_keys = int(max_keys)
        self.stats_counters = {"keys_dropped": 0}
        self._lock = threading.RLock()
        self._slots_by_id: dict[str, int] | None = None
        self._rewrite = False
        self.size = 0
        self.capacity = 0
        self._arena = np.zeros(1 << 16, dtype=np.uint8)   # every key's text, in slot order
        self._fill = 0
        self._alloc(max(1, self.max_keys))
        self._anomalies = AnomalyLog(self.MEASUREMENTS)
        self.next_anomaly = 1
        self.db = sqlite3.connect(db, check_same_thread=False) if db else None
        if self.db:
            self.db.executescript(_schema(self.PREFIX, self.KEY_FIELDS))
            self._load()
        self.delay = DeviceDelay(db, self.tolerance, self.frequency, self.min_count, max_keys) if delay else None

    # --- storage ------------------------------------------------------------------------------
    def _alloc(self, capacity: int) -> None:
        """Per-slot arrays for `capacity` slots (kept values copied), and a key table at most half
        full. Zeroed memory: the pages of slots never used are never touched. A new slot's
        values are set when a key takes it (_insert)."""
        def grow(old, shape, dtype=np.float64):
            new = np.zeros(shape, dtype=dtype) if dtype is not object else np.full(shape, None, dtype=object)
            if old is not None:
                new[:self.size] = old[:self.size]
            return new
        first = self.capacity == 0
        old = (lambda name: None) if first else (lambda name: getattr(self, name))
        self._n = grow(old("_n"), (capacity, len(self.MEASUREMENTS)))                 # per slot and self.MEASUREMENTS column
        self._mean = grow(old("_mean"), (capacity, len(self.MEASUREMENTS)))
        self._m2 = grow(old("_m2"), (capacity, len(self.MEASUREMENTS)))
        self._total = grow(old("_total"), (capacity, len(self.MEASUREMENTS)))
        self._last = grow(old("_last"), (capacity, 2))           # the key's last bytes, packets totals (-1: none)
        self.seen = grow(old("seen"), capacity)
        self.dirty = grow(old("dirty"), capacity, bool)
        self._hash = grow(old("_hash"), capacity, np.uint64)
        self._key_off = grow(old("_key_off"), capacity, np.int64)
        self._key_len = grow(old("_key_len"), capacity, np.int64)
        self._key_ids = grow(old("_key_ids"), capacity, object)   # slot -> key id, computed when asked for
        self._local = np.zeros(capacity, dtype=np.int64)          # scratch of _fold_batch, kept at 0
        self.capacity = capacity
        size = 1
        while size < 2 * capacity:
            size <<= 1
        self._table = np.zeros(size, dtype=np.int64)              # slot + 1, 0: empty
        self._mask = np.int64(size - 1)
        if self.size:
            _reindex(self._table, self._mask, self._hash, self.size)
        self.n = {m: self._n[:, j] for j, m in enumerate(self.MEASUREMENTS)}
        self.mean = {m: self._mean[:, j] for j, m in enumerate(self.MEASUREMENTS)}
        self.m2 = {m: self._m2[:, j] for j, m in enumerate(self.MEASUREMENTS)}
        self.total = {m: self._total[:, j] for j, m in enumerate(self.MEASUREMENTS)}
        self.last = {"bytes": self._last[:, 0], "packets": self._last[:, 1]}

    def _reserve(self, slots: int, text_bytes: int) -> None:
        if slots > self.capacity:
            self._alloc(max(slots, 2 * self.capacity))
        if self._fill + text_bytes > len(self._arena):
            arena = np.zeros(max(2 * len(self._arena), self._fill + text_bytes), dtype=np.uint8)
            arena[:self._fill] = self._arena[:self._fill]
            self._arena = arena

    def _insert(self, hashes, offs, buf, rows, slots, limit) -> None:
        self._reserve(min(self.size + len(rows), max(limit, self.size)), int((offs[rows + 1] - offs[rows]).sum()))
        before = self.size
        self.size, self._fill = _insert(self._table, self._mask, self._hash, self._key_off, self._key_len,
                                        self._arena, self._fill, self.size, limit, hashes, offs, buf, rows, slots,
                                        self._n, self._mean, self._m2, self._total, self._last, self.seen,
                                        self.dirty)
        self._key_ids[before:self.size] = None
        self._slots_by_id = None

    def _slots(self, buf: np.ndarray, offs: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """The slot of each record's key; new keys get slots (compacting the store when it would
        pass max_keys); -1 for a record whose key is not tracked."""
        slots = _find(self._table, self._mask, self._hash, self._key_off, self._key_len, self._arena, hashes, offs,
                      buf)
        new = np.flatnonzero(slots < 0)
        if not len(new):
            return slots
        if self.size + len(new) > self.max_keys:
            fresh = _distinct(hashes, offs, buf, new)
            if self.size + fresh > self.max_keys:
                renumbered = self._compact(keep=max(0, min(self.max_keys // 2, self.max_keys - fresh)))
                old = slots >= 0
                slots[old] = renumbered[slots[old]]
        self._insert(hashes, offs, buf, new, slots, self.max_keys)   # past max_keys new keys: not tracked
        return slots

    def _compact(self, keep: int) -> np.ndarray:
        """Bounded memory (a forged-source flood is a new key per record): keep the keys with
        enough values to judge, most recently seen first, and drop the rest (counted).
        Returns each old slot's new number, -1 if dropped."""
        size = self.size
        established = self._n[:size, 0] >= self.min_count     # a column at a time: max(axis=1) is slow
        for j in range(1, len(self.MEASUREMENTS)):
            established |= self._n[:size, j] >= self.min_count
        chosen = np.zeros(size, dtype=bool)
        first = _most_recent(self.seen, np.flatnonzero(established), keep)
        chosen[first] = True
        chosen[_most_recent(self.seen, np.flatnonzero(~established), keep - len(first))] = True
        order = np.flatnonzero(chosen)
        kept = len(order)
        renumbered = np.full(size, -1, dtype=np.int64)
        renumbered[order] = np.arange(kept)
        self.stats_counters["keys_dropped"] += size - kept
        for arr in (self._n, self._mean, self._m2, self._total, self._last, self.seen, self._hash, self._key_ids):
            arr[:kept] = arr[order]
        self._fill = _compact_arena(self._arena, self._key_off, self._key_len, order)
        _reindex(self._table, self._mask, self._hash, kept)
        self._slots_by_id = None
        self.size = kept
        self.dirty[:] = False
        self.dirty[:kept] = True
        self._rewrite = True
        return renumbered

    # --- scoring ------------------------------------------------------------------------------
    def std(self, measurement: str, slots) -> np.ndarray:
        n = self.n[measurement][slots]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 1, np.sqrt(self.m2[measurement][slots] / np.maximum(n - 1, 1)), np.nan)

    def score(self, records: pd.DataFrame) -> pd.DataFrame:
        """Per record: zscore_attack (any measurement anomalous), zscore_max |z|, zscore_measurement;
        with the delay store, also its devices' delays (DeviceDelay): a record whose device's delay is
        anomalous is flagged, with delay_device (the device), delay_measurement (synack, answer or
        owd), delay_value (its delay, seconds), delay_z and delay_excess (seconds above the device's
        mean); zscore_max is the larger |z| of the two
        stores, and zscore_measurement names the delay where the flow key's own are normal."""
        n = len(records)
        if n == 0:
            return pd.DataFrame({"zscore_attack": np.zeros(0, dtype=np.int64), "zscore_max": np.zeros(0),
                                 "zscore_measurement": np.full(0, "", dtype=object),
                                 **_no_delay(0)})
        buf, offs, hashes = key_texts(records)
        bytes_total = np.ascontiguousarray(records["bytes"].to_numpy(dtype=float))
        packets_total = np.ascontiguousarray(records["pkts"].to_numpy(dtype=float))
        ts = np.ascontiguousarray(records["ltime"].to_numpy(dtype=float))
        with self._lock:
            slots = self._slots(buf, offs, hashes)
            x, z, flags, best, which = _judge(slots, bytes_total, packets_total, ts, self._last, self._n, self._mean,
                                              self._m2, self.seen, self.dirty, float(self.min_count),
                                              self.tolerance)
            if flags.any():
                self._record_anomalies(slots, ts, x, z, flags)
            _fold_batch(slots, x, flags, self._n, self._mean, self._m2, self._total, self._local)
        attack = (flags != 0).astype(np.int64)
        measurement = _measurement_column(which)
        delayed = self.delay.delays(records) if self.delay is not None else None
        if delayed is None:
            delayed = _no_delay(n)
        else:
            delay_anomaly = delayed["delay_device"] != ""
            attack |= delay_anomaly
            best = np.maximum(best, delayed.pop("best"))
            if delay_anomaly.any():
                named = np.asarray(pd.Series(measurement).to_numpy(dtype=object), dtype=object)
                mine = (flags == 0) & delay_anomaly
                named[mine] = delayed["delay_measurement"][mine]
                measurement = named
        return pd.DataFrame({"zscore_attack": attack, "zscore_max": best, "zscore_measurement": measurement,
                             **delayed}, copy=False)

    def _fold(self, m: str, slots: np.ndarray, x: np.ndarray) -> None:
        """Chan's merge of a batch of values into each slot's (n, mean, M2) (feedback's path)."""
        if not len(slots):
            return
        uniq, inv = np.unique(slots, return_inverse=True)
        nb = np.bincount(inv).astype(float)
        mean_b = np.bincount(inv, weights=x) / nb
        m2_b = np.bincount(inv, weights=(x - mean_b[inv]) ** 2)
        na, mean_a = self.n[m][uniq], self.mean[m][uniq]
        total_n = na + nb
        delta = mean_b - mean_a
        self.mean[m][uniq] = mean_a + delta * nb / total_n
        self.m2[m][uniq] = self.m2[m][uniq] + m2_b + delta ** 2 * na * nb / total_n
        self.n[m][uniq] = total_n
        self.total[m][uniq] += np.bincount(inv, weights=x)

    def _record_anomalies(self, slots, ts, x, z, flags) -> None:
        """One open anomaly per record and anomalous measurement, measurement by measurement in
        record order, against the statistics before the batch (call before the fold)."""
        for j, m in enumerate(self.MEASUREMENTS):
            rows = np.flatnonzero(flags & (1 << j))
            if not len(rows):
                continue
            s = slots[rows]
            std = self.std(m, s)
            self._anomalies.extend(self.next_anomaly, j, self.key_ids(s), ts[rows], x[rows, j], z[rows, j],
                                   self.mean[m][s], np.where(np.isfinite(std), std, 0.0), self.n[m][s])
            self.next_anomaly += len(rows)

    @property
    def anomaly_rows(self) -> list[dict]:
        """Every anomaly recorded, as dicts (ANOMALY_FIELDS), in id order."""
        with self._lock:
            return self._anomalies.rows(np.arange(self._anomalies.count))

    def scan(self, records: pd.DataFrame) -> pd.DataFrame:
        """Batch mode: periods of `frequency` hours by stime, scored one after another."""
        records = records.sort_values("stime", kind="stable").reset_index(drop=True)
        period = np.floor(records["stime"].to_numpy(dtype=float) / (self.frequency * 3600.0))
        parts = [self.score(records[period == p]) for p in np.unique(period)]
        return pd.concat(parts, ignore_index=True) if parts else self.score(records)

    # --- operators ----------------------------------------------------------------------------
    def configure(self, tolerance=None, frequency=None) -> dict:
        check_settings(tolerance, frequency)
        with self._lock:
            if tolerance is not None:
                self.tolerance = float(tolerance)
            if frequency is not None:
                self.frequency = float(frequency)
            if self.db:
                self.db.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)",
                                    [("tolerance", self.tolerance), ("frequency", self.frequency)])
                self.db.commit()
            if self.delay is not None:     # one tolerance for both stores
                self.delay.configure(tolerance, frequency)
        return self.settings()

    def settings(self) -> dict:
        return {"tolerance": self.tolerance, "frequency": self.frequency, "min_count": self.min_count}

    def key_text(self, slot: int) -> str:
        """A key's text, "src|dst|sport|dport|proto|service"."""
        start = int(self._key_off[slot])
        return self._arena[start:start + int(self._key_len[slot])].tobytes().decode()

    @property
    def keys(self) -> list[str]:
        """Every key's text, in slot order."""
        with self._lock:
            return [self.key_text(s) for s in range(self.size)]

    def key_id(self, slot: int) -> str:
        """A short stable name of a key (its text hashed), for URLs."""
        if self._key_ids[slot] is None:
            self._key_ids[slot] = hashlib.sha1(self.key_text(slot).encode()).hexdigest()[:12]
        return self._key_ids[slot]

    def key_ids(self, slots: np.ndarray) -> np.ndarray:
        ids = self._key_ids[slots]
        unknown = pd.isna(ids)
        if unknown.any():
            for slot in np.unique(slots[unknown]).tolist():
                self.key_id(slot)
            ids = self._key_ids[slots]
        return ids

    def key_fields(self, slot: int) -> list[str]:
        return self.key_text(slot).split("|")

    def slot_of(self, key_id: str) -> int | None:
        with self._lock:
            if self._slots_by_id is None:
                self._slots_by_id = {self.key_id(s): s for s in range(self.size)}
            return self._slots_by_id.get(key_id)

    def key_stats(self, measurement: str, slot: int) -> dict:
        fields = dict(zip(self.KEY_FIELDS, self.key_fields(slot)))
        std = self.std(measurement, np.array([slot]))[0]
        return {"key_id": self.key_id(slot), **fields, "count": int(self.n[measurement][slot]),
                "mean": float(self.mean[measurement][slot]), "std": None if np.isnan(std) else float(std),
                "sum": float(self.total[measurement][slot]), "m2": float(self.m2[measurement][slot])}

    def stats(self, measurement: str) -> list[dict]:
        with self._lock:
            return [self.key_stats(measurement, s) for s in range(self.size) if self.n[measurement][s] > 0]

    def entities(self, kind: str) -> list[str]:
        column = list(ENTITIES).index(kind)
        with self._lock:
            parts = pd.Series(self.keys, dtype=object).str.split("|", expand=True)
            return sorted(parts[column].unique().tolist()) if len(parts) else []

    def anomalies(self, measurement: str, since: float | None = None, until: float | None = None,
                  key_id: str | None = None, status: str = "open") -> list[dict]:
        with self._lock:
            log, count = self._anomalies, self._anomalies.count
            if measurement not in self.MEASUREMENTS or (status != "all" and status not in STATUSES):
                return []
            keep = log.measurement[:count] == self.MEASUREMENTS.index(measurement)
            if status != "all":
                keep &= log.status[:count] == STATUSES.index(status)
            if since is not None:
                keep &= log.ts[:count] >= since
            if until is not None:
                keep &= log.ts[:count] <= until
            if key_id is not None:
                keep &= log.key_id[:count] == key_id
            return log.rows(np.flatnonzero(keep))

    def feedback(self, measurement: str, anomaly_id: int, verdict: str) -> dict:
        if verdict not in ("confirmed", "false_positive"):
            raise SettingError("verdict", f"verdict must be 'confirmed' or 'false_positive', not {verdict!r}")
        with self._lock:
            log = self._anomalies
            i = log.find(anomaly_id)
            if i is None or measurement not in self.MEASUREMENTS or log.measurement[i] != self.MEASUREMENTS.index(measurement):
                raise LookupError(f"no anomaly {anomaly_id} in {measurement}")
            if log.status[i] != 0:
                raise SettingError("verdict", f"anomaly {anomaly_id} already has feedback: {STATUSES[log.status[i]]}")
            log.status[i] = STATUSES.index(verdict)
            log.changed.add(i)
            [row] = log.rows([i])
            if verdict == "false_positive":
                slot = self.slot_of(row["key_id"])
                self._fold(measurement, np.array([slot]), np.array([row["value"]]))
                self.dirty[slot] = True
            return dict(row)

    def false_positives(self, src: str, dst: str, since: float | None = None, until: float | None = None) -> int:
        """The console's "not an attack" on the flows from src to dst: every open anomaly of their keys
        (within since..until) becomes a false positive, as feedback() does one by one (its value is
        folded into its key's statistics). Returns how many anomalies changed."""
        with self._lock:
            log, count = self._anomalies, self._anomalies.count
            keep = log.status[:count] == 0
            if since is not None:
                keep &= log.ts[:count] >= since
            if until is not None:
                keep &= log.ts[:count] <= until
            rows = np.flatnonzero(keep)
            if not len(rows):
                return 0
            mine = {}
            for key_id in dict.fromkeys(log.key_id[rows].tolist()):
                slot = self.slot_of(key_id)
                if slot is not None and self.key_fields(slot)[:2] == [src, dst]:
                    mine[key_id] = slot
            rows = [i for i in rows.tolist() if log.key_id[i] in mine]
            for i in rows:
                log.status[i] = STATUSES.index("false_positive")
                log.changed.add(i)
                m = self.MEASUREMENTS[int(log.measurement[i])]
                slot = mine[log.key_id[i]]
                self._fold(m, np.array([slot]), np.array([float(log.value[i])]))
                self.dirty[slot] = True
            return len(rows)

    # --- persistence --------------------------------------------------------------------------
    def save(self) -> None:
        if self.delay is not None:
            self.delay.save()
        if not self.db:
            return
        with self._lock:
            slots = np.flatnonzero(self.dirty[:self.size])
            if self._rewrite:   # slots were renumbered by a compaction
                self.db.execute(f"DELETE FROM {self.PREFIX}keys")
                self.db.execute(f"DELETE FROM {self.PREFIX}stats")
                self._rewrite = False
            marks = ",".join("?" * (4 + len(self.KEY_FIELDS)))
            self.db.executemany(f"INSERT OR REPLACE INTO {self.PREFIX}keys VALUES ({marks})",
                                [(int(s), self.key_id(s), *self.key_fields(s), float(self.last["bytes"][s]),
                                  float(self.last["packets"][s])) for s in slots])
            self.db.executemany(f"INSERT OR REPLACE INTO {self.PREFIX}stats VALUES (?,?,?,?,?,?)",
                                [(m, int(s), int(self.n[m][s]), float(self.mean[m][s]), float(self.m2[m][s]),
                                  float(self.total[m][s])) for m in self.MEASUREMENTS for s in slots])
            self.db.executemany(f"INSERT OR REPLACE INTO {self.PREFIX}anomalies VALUES (?,?,?,?,?,?,?,?,?,?)",
                                self._anomalies.unsaved())
            self.db.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)",
                                [("tolerance", self.tolerance), ("frequency", self.frequency)])
            self.db.commit()
            self.dirty[:] = False

    def _load(self) -> None:
        k = len(self.KEY_FIELDS)
        rows = self.db.execute(f"SELECT slot, key_id, {', '.join(self.KEY_FIELDS)}, last_bytes, last_packets "
                               f"FROM {self.PREFIX}keys ORDER BY slot").fetchall()
        if rows:
            if len(rows) > self.capacity:    # a database written with a larger max_keys
                self._alloc(len(rows))
            buf, offs = _spans("|".join(r[2:2 + k]) for r in rows)
            slots = np.empty(len(rows), dtype=np.int64)
            self._insert(_hash_spans(buf, offs), offs, buf, np.arange(len(rows)), slots, self.capacity)
            if self.size != len(rows):
                raise ValueError(f"{len(rows) - self.size} keys of the Z-score database are stored twice")
            self._key_ids[:len(rows)] = [r[1] for r in rows]
            self.last["bytes"][:self.size] = [r[2 + k] for r in rows]
            self.last["packets"][:self.size] = [r[3 + k] for r in rows]
        for m, slot, n, mean, m2, total in self.db.execute(f"SELECT * FROM {self.PREFIX}stats"):
            self.n[m][slot], self.mean[m][slot], self.m2[m][slot], self.total[m][slot] = n, mean, m2, total
        stored = self.db.execute(f"SELECT * FROM {self.PREFIX}anomalies ORDER BY id").fetchall()
        if stored:
            ids, measurement, key_id, ts, value, z, mean, std, n, status = zip(*stored)
            self._anomalies.extend(np.array(ids, dtype=np.int64), [self.MEASUREMENTS.index(m) for m in measurement],
                                   key_id, ts, value, z, mean, std, n, [STATUSES.index(s) for s in status])
            self._anomalies.saved = self._anomalies.count
        self.next_anomaly = (int(self._anomalies.id[self._anomalies.count - 1]) if stored else 0) + 1
        for name, value in self.db.execute("SELECT name, value FROM settings"):
            setattr(self, name, float(value))

    def close(self) -> None:
        self.save()
        if self.db:
            self.db.close()
        if self.delay is not None and self.delay.db:
            self.delay.db.close()


DELAYS = ("synack", "answer", "owd")


def _no_delay(n: int) -> dict:
    """The delay columns of n records without a delay anomaly."""
    return {"delay_device": np.full(n, "", dtype=object), "delay_measurement": np.full(n, "", dtype=object),
            "delay_value": np.full(n, np.nan), "delay_z": np.full(n, np.nan), "delay_excess": np.full(n, np.nan)}


class DeviceDelay(ZScoreDetector):
    """Per-device delay: the same store, statistics, tolerance and minimum count as the flow keys',
    keyed by a device's address, over the delays the records measured for it:
      synack  the TCP handshake's server side (SYN to SYN-ACK) of the flows it answers (daddr);
      answer  its first answer to a UDP request (DNS, NTP, CoAP) of the flows it answers (daddr);
      owd     its own one-way delay, read from its send-time stamps (saddr; iadm.flows.owd).
    A record measures synack and answer once per flow (running records: the first record to carry
    them, by new_delay; other kinds: every record that carries them), and owd on every record that
    has it; an empty column (NaN) is no measurement, never a zero. A device whose delay jumps (a
    flood filling the queue in front of it) is anomalous in that measurement: its z and value go
    to the records that measured it (ZScoreDetector.score), its anomaly to this store's list."""

    MEASUREMENTS = DELAYS
    KEY_FIELDS = ("device",)
    PREFIX = "device_"

    def __init__(self, db: str | None = None, tolerance: float = 3.0, frequency: float = 24.0, min_count: int = 10,
                 max_keys: int = 200_000):
        super().__init__(db, tolerance, frequency, min_count, max_keys, delay=False)

    def measurements(self, records: pd.DataFrame):
        """(record of each measurement row, device text, values rows x DELAYS) for the records'
        delays, or None when there are none."""
        n = len(records)

        def column(name, bit=0):
            if name not in records:
                return None
            v = records[name].to_numpy(dtype=float, na_value=np.nan)
            if bit and "new_delay" in records:
                v = np.where(records["new_delay"].to_numpy() & bit, v, np.nan)
            return v if np.isfinite(v).any() else None

        synack, answer, owd = column("synack", 1), column("answer", 2), column("owd")
        if synack is None and answer is None and owd is None:
            return None
        nothing = np.full(n, np.nan)
        synack, answer, owd = (nothing if v is None else v for v in (synack, answer, owd))
        served = np.flatnonzero(np.isfinite(synack) | np.isfinite(answer))   # about the destination
        sent = np.flatnonzero(np.isfinite(owd))                              # about the source
        record = np.concatenate([served, sent])
        x = np.full((len(record), len(DELAYS)), np.nan)
        x[:len(served), 0], x[:len(served), 1] = synack[served], answer[served]
        x[len(served):, 2] = owd[sent]
        device = pd.concat([records["daddr"].iloc[served], records["saddr"].iloc[sent]], ignore_index=True)
        return record, device, x

    def delays(self, records: pd.DataFrame):
        """Judge and fold the records' delay measurements; per record (arrays of len(records)): the
        delay columns of ZScoreDetector.score (the strongest anomaly among the record's devices)
        and `best`, the largest judged |z| of its delays (0 none). None when they measured none."""
        found = self.measurements(records)
        if found is None:
            return None
        record, device, x = found
        texts = device if _is_text(device.dtype) else device.astype(object).astype(str)
        offs, data = _arrow_spans(_to_arrow(texts))
        buf, offs = np.array(data), np.array(offs)    # writable: the kernels' one array type
        hashes = _hash_spans(buf, offs)
        ts = np.ascontiguousarray(records["ltime"].to_numpy(dtype=float)[record])
        with self._lock:
            slots = self._slots(buf, offs, hashes)
            z, flags, skip, best, _ = _judge_values(slots, x, ts, self._n, self._mean, self._m2, self.seen,
                                                    self.dirty, float(self.min_count), self.tolerance)
            if flags.any():
                self._record_anomalies(slots, ts, x, z, flags)
            hit = np.flatnonzero(flags)
            before = self._mean[slots[hit]]          # the devices' means the batch was judged against
            _fold_batch(slots, x, skip, self._n, self._mean, self._m2, self._total, self._local)
        n = len(records)
        out = {**_no_delay(n), "best": np.zeros(n)}
        np.maximum.at(out["best"], record, best)
        if len(hit):
            bits = (flags[hit, None] >> np.arange(len(DELAYS), dtype=np.uint8)) & 1
            strength = np.where(bits == 1, np.abs(z[hit]), -1.0)
            j = np.argmax(strength, axis=1)
            order = np.argsort(strength[np.arange(len(hit)), j], kind="stable")   # the strongest last: it wins
            rows, j, before = hit[order], j[order], before[order]
            at = record[rows]
            out["delay_device"][at] = device.to_numpy(dtype=object)[rows]
            out["delay_measurement"][at] = np.array(DELAYS, dtype=object)[j]
            out["delay_value"][at] = x[rows, j]
            out["delay_z"][at] = z[rows, j]
            out["delay_excess"][at] = x[rows, j] - before[np.arange(len(rows)), j]
        return out
