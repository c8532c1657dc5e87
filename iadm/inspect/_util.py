"""Small helpers the inspectors share: frame bounds, address text, a rate limiter for findings."""
from __future__ import annotations

import ipaddress
from collections import OrderedDict

import numpy as np
from numba import njit

from iadm.capture.batch import LINKTYPE_ETHERNET

_MAPPED = 0x0000FFFF00000000
FNV_BASIS, FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)   # FNV-1a, 64-bit


def frame_ends(batch, at: np.ndarray) -> np.ndarray:
    """End (exclusive) in batch.buf of the captured bytes of the frame holding each offset in `at`.

    Decoded carries where a header starts (l4), not which frame it came from; the frame is the one
    whose [offset, offset + caplen) holds it. Sources hand out frames in increasing offsets, so a
    binary search finds it; if a source ever does not, the frames are sorted first.
    """
    at = np.asarray(at, dtype=np.int64)
    if len(at) == 0:
        return at
    offsets = np.asarray(batch.offsets, dtype=np.int64)
    caplen = np.asarray(batch.caplen, dtype=np.int64)
    i = np.searchsorted(offsets, at, side="right") - 1
    i = np.clip(i, 0, len(offsets) - 1)
    ok = (offsets[i] <= at) & (at < offsets[i] + caplen[i])
    if not ok.all():
        order = np.argsort(offsets, kind="stable")
        so, sc = offsets[order], caplen[order]
        j = np.clip(np.searchsorted(so, at, side="right") - 1, 0, len(so) - 1)
        return np.where((so[j] <= at) & (at < so[j] + sc[j]), so[j] + sc[j], at)   # not found: no bytes
    return offsets[i] + caplen[i]


@njit(cache=True, nogil=True)
def message_keys(a_hi, a_lo, b_hi, b_lo, x, y):
    """One 64-bit key per (from, to, x, y): two addresses (as Decoded's words) and two numbers
    (an echo id and sequence, a service port, or zeros for the pair alone)."""
    out = np.empty(len(a_hi), dtype=np.uint64)
    for i in range(len(a_hi)):
        h = FNV_BASIS
        for v in (a_hi[i], a_lo[i], b_hi[i], b_lo[i], np.uint64(x[i]), np.uint64(y[i])):
            h = (h ^ v) * FNV_PRIME
            h ^= h >> np.uint64(29)
        out[i] = h
    return out


def frame_mac(batch, decoded, i: int, source: bool) -> int:
    """The Ethernet source (or destination) MAC of decoded packet i's frame; 0 on a link without
    Ethernet."""
    frame = int(decoded.frame[i]) if decoded.frame is not None else -1
    if frame < 0 or int(batch.linktype[frame]) != LINKTYPE_ETHERNET:
        return 0
    at = int(batch.offsets[frame]) + (6 if source else 0)
    return int.from_bytes(bytes(batch.buf[at:at + 6]), "big")


def ip_text(hi: int, lo: int) -> str:
    hi, lo = int(hi), int(lo)
    if hi == 0 and (lo & 0xFFFFFFFF00000000) == _MAPPED:
        v = lo & 0xFFFFFFFF
        return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def ipv4_text(v: int) -> str:
    v = int(v)
    return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"


def ipv4_value(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


class Once:
    """Say a thing once per key per `repeat` seconds of capture time (a finding is not repeated for
    every packet of the same spoofing or tunnel), and at most `rate` new findings a second per
    signature (a storm of forged packets must not become a storm of findings: the rest are
    counted in `suppressed`). Keys are kept in time order and forgotten after `repeat`; at most
    `keep` of them are remembered."""

    def __init__(self, repeat: float, rate: int = 50, keep: int = 1 << 16):
        self.repeat = repeat
        self.rate = rate
        self.keep = keep
        self.suppressed = 0
        self._last: OrderedDict = OrderedDict()
        self._second: dict = {}        # signature -> [second, findings in it]

    def __call__(self, key, now: float, sid=None) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self.repeat:
            return False
        sid = key[0] if sid is None and isinstance(key, tuple) else sid
        tally = self._second.setdefault(sid, [int(now), 0])
        if tally[0] != int(now):
            tally[0], tally[1] = int(now), 0
        if tally[1] >= self.rate:
            self.suppressed += 1
            return False
        tally[1] += 1
        self._last[key] = now
        self._last.move_to_end(key)
        while self._last:
            k, t = next(iter(self._last.items()))
            if now - t < self.repeat and len(self._last) <= self.keep:
                break
            del self._last[k]
        return True
