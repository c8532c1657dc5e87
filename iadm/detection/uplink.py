"""Which MACs are routers: the next hop that LAN hosts send off-LAN traffic to.

A flood that arrives through the gateway's uplink carries the upstream router's MAC, with
forged or reflected sources; a host on the LAN that forges sources carries its own MAC. On a
mirror the two look alike, except for one property: LAN hosts address their packets for other
networks to the router's MAC. A MAC that receives packets from a private (LAN) source to a
public destination is a router's, and the responder never blocks a router by MAC (it would cut
the gateway off); configured `verdicts.uplink_macs` are routers from the start.
"""
from __future__ import annotations

import ipaddress

import numpy as np

from iadm.capture.batch import LINKTYPE_ETHERNET

_V4 = np.uint64(0x0000FFFF00000000)
_PRIVATE = [(0x0A000000, 8), (0xAC100000, 12), (0xC0A80000, 16), (0xA9FE0000, 16)]   # RFC 1918, link-local


def _private(v4: np.ndarray) -> np.ndarray:
    out = np.zeros(len(v4), dtype=bool)
    for net, bits in _PRIVATE:
        out |= (v4 >> np.uint64(32 - bits)) == np.uint64(net >> (32 - bits))
    return out


def is_public(address: str) -> bool:
    """A unicast IPv4 address outside the private, link-local, loopback and group ranges."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return ip.is_global


class UplinkWatch:
    """known: routers' MACs from the config; no_uplink: the bridge has none (a test topology)."""

    def __init__(self, known=(), no_uplink: bool = False):
        self.routers: set[str] = {m.lower() for m in known}
        self.no_uplink = no_uplink

    def __call__(self, batch, decoded) -> list:
        is_v4 = ((decoded.src_hi == 0) & ((decoded.src_lo & np.uint64(0xFFFFFFFF00000000)) == _V4)
                 & (decoded.dst_hi == 0) & ((decoded.dst_lo & np.uint64(0xFFFFFFFF00000000)) == _V4)
                 & (batch.linktype[decoded.frame] == LINKTYPE_ETHERNET))
        rows = np.flatnonzero(is_v4)
        if not len(rows):
            return []
        src = decoded.src_lo[rows] & np.uint64(0xFFFFFFFF)
        dst = decoded.dst_lo[rows] & np.uint64(0xFFFFFFFF)
        dst_multicast = (dst >> np.uint64(28)) == np.uint64(0xE)
        outbound = rows[_private(src) & ~_private(dst) & ~dst_multicast & (dst != np.uint64(0xFFFFFFFF))]
        if not len(outbound):
            return []
        starts = batch.offsets[decoded.frame[outbound]]
        macs = np.zeros(len(outbound), dtype=np.uint64)
        for k in range(6):   # the destination MAC: the frame's first six bytes
            macs = (macs << np.uint64(8)) | batch.buf[starts + k].astype(np.uint64)
        for mac in np.unique(macs).tolist():
            self.routers.add(":".join(f"{(mac >> s) & 255:02x}" for s in (40, 32, 24, 16, 8, 0)))
        return []
