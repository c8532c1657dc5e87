"""One-way delay (OWD) from sensors that stamp their own send time into their payload.

The stamp (docs/features.md, "Sensor send-time stamps"): the last bytes of a UDP or TCP payload
are the four ASCII bytes ``~ts=`` and exactly 16 ASCII digits, the sender's clock in whole
microseconds (the Unix epoch for a synchronised sensor, any origin for one that is not), with
at most one line feed after them::

    b"17 temp=21.30 hum=44 ~ts=1718000000123456\\n"

Anchored at the payload's end and of fixed length, it is found with one comparison of the tag
per packet, and it cannot be mistaken for a prefix of something longer: a segment cut inside
the digits does not end in tag + 16 digits. UDP payloads end where the UDP length says; TCP
payloads at the end of the captured frame, and only when the frame was captured whole (a
snapshot length shorter than the packet hides the stamp).

Offset estimate. A sensor's clock is not the gateway's: raw = arrival - stamp is the true
delay plus the clocks' offset. Per device (the sender's address), the monitor keeps the least
raw value seen in a sliding window (`window` seconds of arrival time, in `buckets` buckets:
the minimum is exact to one bucket's width) and takes it for offset + the path's least delay:
owd = raw - min. So owd is the delay above the least one seen lately, which is what a queue
building up under a flood adds; it is never an absolute delay (the path's own least delay is
in the baseline), a device's first stamped packet reads 0, and a delay that lasts longer than
the window becomes the new baseline. A sensor clock that drifts by d ppm shifts raw by up to
d * window microseconds within a window (50 ppm over 300 s: 15 ms); a clock stepped back reads
as added delay until the window forgets the older minimum, a clock stepped forward as none.
The estimate is causal (from the packets before and at this one), so live and offline runs
give the same values.

Hot path: one compiled pass over a batch's TCP/UDP packets finds the stamps; the device
lookup (a compiled hash index) and the window minimum run only on stamped packets.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from iadm.flows.slotindex import SlotIndex, grow_free_stack

TAG = b"~ts="
DIGITS = 16
TRAILER = len(TAG) + DIGITS
_T0, _T1, _T2, _T3 = TAG
_NONE = np.int64(-1)


@njit(cache=True, nogil=True)
def _stamp_at(buf, start, end):
    """The stamp in buf[start:end] (a payload), or -1."""
    if end - start >= 1 and buf[end - 1] == 10:    # one line feed may follow the digits
        end -= 1
    at = end - TRAILER
    if at < start:
        return _NONE
    if buf[at] != _T0 or buf[at + 1] != _T1 or buf[at + 2] != _T2 or buf[at + 3] != _T3:
        return _NONE
    value = np.int64(0)
    for k in range(at + 4, end):
        d = np.int64(buf[k]) - 48
        if d < 0 or d > 9:
            return _NONE
        value = value * 10 + d
    return value


@njit(cache=True, nogil=True)
def find_stamps(buf, l4, proto, frame, offsets, caplen, wirelen):
    """Each decoded packet's send-time stamp in microseconds, or -1 (no stamp, not TCP/UDP), and
    how many were found. frame[i]: packet i's frame in the batch (offsets, caplen, wirelen)."""
    n = len(l4)
    out = np.full(n, _NONE, dtype=np.int64)
    found = 0
    for i in range(n):
        p, at = proto[i], np.int64(l4[i])
        if at < 0 or (p != 6 and p != 17):
            continue
        f = frame[i]
        end = offsets[f] + caplen[f]
        if p == 17:
            if at + 8 > end:
                continue
            ulen = (np.int64(buf[at + 4]) << 8) | np.int64(buf[at + 5])
            if ulen < 8:
                continue
            out[i] = _stamp_at(buf, at + 8, min(end, at + ulen))
        elif caplen[f] >= wirelen[f]:      # TCP: the payload ends with the frame, if captured whole
            if at + 20 > end:
                continue
            start = at + (np.int64(buf[at + 12]) >> 4) * 4
            if start < end:
                out[i] = _stamp_at(buf, start, end)
        if out[i] >= 0:
            found += 1
    return out, found


@njit(cache=True, nogil=True)
def _whole_us(ts):
    return np.int64(np.floor(ts * 1e6 + 0.5))


@njit(cache=True, nogil=True)
def _delays(rows, device, ts, stamp, bucket_id, bucket_min, latest, width_us, out):
    """owd (seconds) of each stamped packet rows[k] of device[k], against the least raw delay of
    its device over the window's buckets (this packet included)."""
    nb = bucket_id.shape[1]
    for k in range(len(rows)):
        i, s = rows[k], device[k]
        if s < 0:            # more new devices in one batch than the table holds: not estimated
            continue
        arrival = _whole_us(ts[i])
        raw = arrival - stamp[i]
        b = max(arrival // width_us, latest[s])   # a capture's clock that steps back: the latest bucket
        latest[s] = b
        j = b % nb
        if bucket_id[s, j] != b:
            bucket_id[s, j] = b
            bucket_min[s, j] = raw
        elif raw < bucket_min[s, j]:
            bucket_min[s, j] = raw
        base = raw
        for q in range(nb):
            if bucket_id[s, q] > b - nb and bucket_id[s, q] <= b and bucket_min[s, q] < base:
                base = bucket_min[s, q]
        out[i] = (raw - base) / 1e6


class OwdReader:
    """`reader(batch, decoded) -> owd per decoded packet` (seconds, NaN where no stamp), keeping
    each device's offset estimate across batches (module doc). A batch without stamps gives a
    zero-length array (the flow table reads it as "none"). At most `max_devices` devices are
    remembered (the table starts small and doubles); when a new one finds it full, every estimate
    starts afresh (counted in `stats["resets"]`): a device's next packets read 0 until its window
    fills again."""

    INITIAL = 64
    _NOTHING = np.zeros(0)

    def __init__(self, window: float = 300.0, buckets: int = 10, max_devices: int = 1 << 14):
        if window <= 0 or buckets < 1 or max_devices < 1:
            raise ValueError("window must be positive, buckets and max_devices at least 1")
        self.window, self.buckets, self.max_devices = float(window), int(buckets), int(max_devices)
        self.width_us = np.int64(max(1, round(self.window * 1e6 / self.buckets)))
        self.stats = {"stamped": 0, "devices": 0, "resets": 0}
        self._clear()

    def _clear(self) -> None:
        c = self.capacity = min(self.INITIAL, self.max_devices)
        self.index = SlotIndex(c, 2)
        self.free = np.arange(c - 1, -1, -1, dtype=np.int64)
        self.nfree = c
        self.bucket_id = np.full((c, self.buckets), np.iinfo(np.int64).min, dtype=np.int64)
        self.bucket_min = np.zeros((c, self.buckets), dtype=np.int64)
        self.latest = np.full(c, np.iinfo(np.int64).min, dtype=np.int64)

    def _widen(self, wanted: int) -> None:
        old = self.capacity
        new = min(self.max_devices, max(2 * old, 1 << max(wanted - 1, 1).bit_length()))

        def wider(array, fill):
            out = np.full((new,) + array.shape[1:], fill, dtype=array.dtype)
            out[:old] = array
            return out

        low = np.iinfo(np.int64).min
        self.bucket_id, self.bucket_min, self.latest = (wider(self.bucket_id, low), wider(self.bucket_min, 0),
                                                        wider(self.latest, low))
        self.free, self.nfree = grow_free_stack(self.free, self.nfree, old, new)
        self.index.grow(new)
        self.capacity = new

    def _devices(self, keys: np.ndarray) -> np.ndarray:
        device, _, self.nfree = self.index.insert(keys, self.free, self.nfree)
        missing = np.flatnonzero(device < 0)
        if len(missing) and self.capacity < self.max_devices:
            self._widen(len(self.index) + len(missing))
            device[missing], _, self.nfree = self.index.insert(keys[missing], self.free, self.nfree)
            missing = missing[device[missing] < 0]
        if len(missing):     # full: start afresh (documented above)
            self.stats["resets"] += 1
            self._clear()
            device, _, self.nfree = self.index.insert(keys, self.free, self.nfree)
        return device

    def __call__(self, batch, decoded) -> np.ndarray:
        if len(decoded) == 0:
            return self._NOTHING
        stamps, found = find_stamps(batch.buf, decoded.l4, decoded.proto, decoded.frame, batch.offsets,
                                    batch.caplen, batch.wirelen)
        if not found:
            return self._NOTHING
        rows = np.flatnonzero(stamps >= 0)
        keys = np.empty((len(rows), 2), dtype=np.uint64)
        keys[:, 0], keys[:, 1] = decoded.src_hi[rows], decoded.src_lo[rows]
        device = self._devices(keys)
        self.stats["stamped"] += len(rows)
        self.stats["devices"] = len(self.index)
        out = np.full(len(decoded), np.nan)
        _delays(rows, device, decoded.ts, stamps, self.bucket_id, self.bucket_min, self.latest, self.width_us, out)
        return out


def stamp(microseconds: int) -> bytes:
    """The trailer a sensor appends to its payload (without the optional line feed)."""
    if not 0 <= microseconds < 10 ** DIGITS:
        raise ValueError(f"a stamp is 0 to {10 ** DIGITS - 1} microseconds")
    return TAG + b"%016d" % microseconds
