"""Vectorised decoder: a Batch of frames -> columns of header fields.

Every field is one numpy gather over the whole batch (no per-packet Python),
which is what lets the monitor keep up with a flood. Frames that cannot be
used are counted by reason and left out, never raised:

  truncated        a header runs past the captured bytes
  bad_header       IPv4 IHL < 5 or total length < IHL, TCP data offset < 5, wrong IP version
  fragments        every IPv4/IPv6 fragment; non-first fragments carry no ports and are
                   left out, first fragments are decoded as usual
  other_ethertype  neither IPv4, IPv6 nor ARP (LLDP, ...)
  unsupported      a link type the decoder does not know

Protocols: Ethernet (one or two VLAN tags), Linux cooked v1/v2, raw IP;
ARP, IPv4, IPv6 (hop-by-hop, routing, destination-options and fragment
headers skipped); TCP (ports, flags, window), UDP, ICMP and ICMPv6 (type,
code, echo id). Addresses are kept as two uint64 words each: IPv4 as
IPv4-mapped IPv6 (::ffff:a.b.c.d), so one flow table serves both.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from iadm.capture.batch import (LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL,
                                LINKTYPE_LINUX_SLL2, LINKTYPE_RAW, Batch)

PROTO_ARP = 256          # not an IP protocol number: ARP gets a code of its own
IPV4_MAPPED = np.uint64(0x0000FFFF00000000)
ECHO_TYPES = {1: (8, 0), 58: (128, 129)}
COUNTERS = ("packets", "decoded", "truncated", "bad_header", "fragments", "other_ethertype", "unsupported")
_VLAN = (0x8100, 0x88A8, 0x9100)


@dataclass
class Decoded:
    ts: np.ndarray
    wirelen: np.ndarray
    proto: np.ndarray        # int32: IP protocol number, or PROTO_ARP
    src_hi: np.ndarray       # uint64 x 4: addresses
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    sport: np.ndarray        # int32; ICMP echo: the echo id on both sides (pairs request and reply)
    dport: np.ndarray
    tcp_flags: np.ndarray    # uint8 (0 for non-TCP)
    tcp_window: np.ndarray   # int32
    icmp_type: np.ndarray    # int16, -1 for non-ICMP
    icmp_code: np.ndarray
    src_mac: np.ndarray      # uint64, 0 when the link has no Ethernet header
    counters: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.ts)


class _Reader:
    """Bounds-safe big-endian gathers from one byte buffer."""

    def __init__(self, buf: np.ndarray):
        self.buf = buf
        self.last = len(buf) - 1

    def u8(self, idx):
        # mode="clip" bounds the index in C; callers mask out what lies past the capture.
        return np.take(self.buf, idx, mode="clip").astype(np.int64)

    def _bytes(self, idx, width):
        # One gather of `width` bytes per index, read as a big-endian integer.
        rows = np.take(self.buf, idx[:, None] + np.arange(width), mode="clip")
        return rows.view(f">u{width}").ravel()

    def be16(self, idx):
        return self._bytes(idx, 2).astype(np.int64)

    def be32(self, idx):
        return self._bytes(idx, 4).astype(np.int64)

    def be64(self, idx):
        return self._bytes(idx, 8).astype(np.uint64)

    def mac(self, idx):
        rows = np.zeros((len(idx), 8), dtype=np.uint8)
        rows[:, 2:] = np.take(self.buf, idx[:, None] + np.arange(6), mode="clip")
        return rows.view(">u8").ravel().astype(np.uint64)


def decode(batch: Batch, counters: dict | None = None) -> Decoded:
    counters = counters if counters is not None else dict.fromkeys(COUNTERS, 0)
    r = _Reader(batch.buf)
    off = batch.offsets
    end = off + batch.caplen
    lt = batch.linktype
    n = len(off)
    counters["packets"] += n

    def has(pos, nbytes):
        return pos + nbytes <= end

    # --- link layer: l3 offset and ethertype --------------------------------
    l3 = np.zeros(n, dtype=np.int64)
    ethertype = np.zeros(n, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    truncated = np.zeros(n, dtype=bool)
    src_mac = np.zeros(n, dtype=np.uint64)

    is_eth = lt == LINKTYPE_ETHERNET
    et = r.be16(off + 12)
    l3_eth = off + 14
    for _ in range(2):  # up to two VLAN tags (802.1Q, 802.1ad)
        tagged = np.isin(et, _VLAN)
        et = np.where(tagged, r.be16(l3_eth + 2), et)
        l3_eth = np.where(tagged, l3_eth + 4, l3_eth)
    np.putmask(ethertype, is_eth, et)
    np.putmask(l3, is_eth, l3_eth)
    truncated |= is_eth & ~has(l3_eth, 0)
    np.putmask(src_mac, is_eth, r.mac(off + 6))

    is_sll = lt == LINKTYPE_LINUX_SLL
    np.putmask(ethertype, is_sll, r.be16(off + 14))
    np.putmask(l3, is_sll, off + 16)
    truncated |= is_sll & ~has(off, 16)

    is_sll2 = lt == LINKTYPE_LINUX_SLL2
    np.putmask(ethertype, is_sll2, r.be16(off))
    np.putmask(l3, is_sll2, off + 20)
    truncated |= is_sll2 & ~has(off, 20)

    is_raw = np.isin(lt, (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6))
    version = r.u8(off) >> 4
    np.putmask(ethertype, is_raw, np.where(version == 4, 0x0800, np.where(version == 6, 0x86DD, 0)))
    np.putmask(l3, is_raw, off)
    truncated |= is_raw & ~has(off, 1)

    unsupported = ~(is_eth | is_sll | is_sll2 | is_raw)
    counters["unsupported"] += int(unsupported.sum())
    alive &= ~unsupported & ~truncated

    is4 = alive & (ethertype == 0x0800)
    is6 = alive & (ethertype == 0x86DD)
    isarp = alive & (ethertype == 0x0806)
    other = alive & ~(is4 | is6 | isarp)
    counters["other_ethertype"] += int(other.sum())
    alive &= ~other

    bad = np.zeros(n, dtype=bool)
    frag = np.zeros(n, dtype=bool)
    skip = np.zeros(n, dtype=bool)
    proto = np.zeros(n, dtype=np.int64)
    l4 = np.zeros(n, dtype=np.int64)
    src_hi = np.zeros(n, dtype=np.uint64)
    src_lo = np.zeros(n, dtype=np.uint64)
    dst_hi = np.zeros(n, dtype=np.uint64)
    dst_lo = np.zeros(n, dtype=np.uint64)

    # --- IPv4 -------------------------------------------------------------
    t4 = is4 & ~has(l3, 20)
    truncated |= t4
    ok4 = is4 & ~t4
    vihl = r.u8(l3)
    ihl = (vihl & 0x0F) * 4
    bad4 = ok4 & (((vihl >> 4) != 4) | (ihl < 20) | (r.be16(l3 + 2) < ihl))
    bad |= bad4
    ok4 &= ~bad4
    truncated |= ok4 & ~has(l3, ihl)
    ok4 &= has(l3, ihl)
    fragword = r.be16(l3 + 6)
    frag4 = ok4 & ((fragword & 0x3FFF) != 0)
    frag |= frag4
    skip |= frag4 & ((fragword & 0x1FFF) != 0)
    np.putmask(proto, ok4, r.u8(l3 + 9))
    np.putmask(l4, ok4, l3 + ihl)
    np.putmask(src_lo, ok4, IPV4_MAPPED | r.be32(l3 + 12).astype(np.uint64))
    np.putmask(dst_lo, ok4, IPV4_MAPPED | r.be32(l3 + 16).astype(np.uint64))

    # --- IPv6 (skipped when the batch has none) ---------------------------------
    ok6 = np.zeros(n, dtype=bool)
    if is6.any():
        t6 = is6 & ~has(l3, 40)
        truncated |= t6
        ok6 = is6 & ~t6
        bad6 = ok6 & ((r.u8(l3) >> 4) != 6)
        bad |= bad6
        ok6 &= ~bad6
        nh = r.u8(l3 + 6)
        l4_6 = l3 + 40
        for _ in range(3):  # extension headers before the transport header
            ext = ok6 & np.isin(nh, (0, 43, 60)) & has(l4_6, 2)
            fr = ok6 & (nh == 44) & has(l4_6, 8)
            frag |= fr
            skip |= fr & ((r.be16(l4_6 + 2) & 0xFFF8) != 0)
            step = np.where(ext, (r.u8(l4_6 + 1) + 1) * 8, np.where(fr, 8, 0))
            nh = np.where(ext | fr, r.u8(l4_6), nh)
            l4_6 = l4_6 + step
        np.putmask(proto, ok6, nh)
        np.putmask(l4, ok6, l4_6)
        np.putmask(src_hi, ok6, r.be64(l3 + 8))
        np.putmask(src_lo, ok6, r.be64(l3 + 16))
        np.putmask(dst_hi, ok6, r.be64(l3 + 24))
        np.putmask(dst_lo, ok6, r.be64(l3 + 32))

    # --- ARP, IPv4 over Ethernet (skipped when the batch has none) ---------------
    okarp = np.zeros(n, dtype=bool)
    if isarp.any():
        tarp = isarp & ~has(l3, 28)
        truncated |= tarp
        okarp = isarp & ~tarp
        badarp = okarp & ((r.be16(l3 + 2) != 0x0800) | (r.u8(l3 + 5) != 4))
        bad |= badarp
        okarp &= ~badarp
        np.putmask(proto, okarp, PROTO_ARP)
        np.putmask(src_lo, okarp, IPV4_MAPPED | r.be32(l3 + 14).astype(np.uint64))
        np.putmask(dst_lo, okarp, IPV4_MAPPED | r.be32(l3 + 24).astype(np.uint64))

    ip = (ok4 | ok6) & ~skip
    # --- transport ------------------------------------------------------------
    sport = np.zeros(n, dtype=np.int64)
    dport = np.zeros(n, dtype=np.int64)
    flags = np.zeros(n, dtype=np.int64)
    window = np.zeros(n, dtype=np.int64)
    itype = np.full(n, -1, dtype=np.int64)
    icode = np.full(n, -1, dtype=np.int64)

    tcp = ip & (proto == 6)
    ttcp = tcp & ~has(l4, 20)
    truncated |= ttcp
    tcp &= ~ttcp
    badtcp = tcp & ((r.u8(l4 + 12) >> 4) < 5)
    bad |= badtcp
    tcp &= ~badtcp
    udp = ip & (proto == 17)
    tudp = udp & ~has(l4, 8)
    truncated |= tudp
    udp &= ~tudp
    ports = tcp | udp
    np.putmask(sport, ports, r.be16(l4))
    np.putmask(dport, ports, r.be16(l4 + 2))
    np.putmask(flags, tcp, r.u8(l4 + 13))
    np.putmask(window, tcp, r.be16(l4 + 14))

    icmp = ip & (((proto == 1) & ok4) | ((proto == 58) & ok6))
    ticmp = icmp & ~has(l4, 4)
    truncated |= ticmp
    icmp &= ~ticmp
    np.putmask(itype, icmp, r.u8(l4))
    np.putmask(icode, icmp, r.u8(l4 + 1))
    echo = icmp & (((proto == 1) & np.isin(itype, ECHO_TYPES[1])) | ((proto == 58) & np.isin(itype, ECHO_TYPES[58])))
    techo = echo & ~has(l4, 8)
    truncated |= techo
    echo &= ~techo
    icmp &= ~techo
    echo_id = r.be16(l4 + 4)
    np.putmask(sport, echo, echo_id)
    np.putmask(dport, echo, echo_id)

    # Other IP protocols (IGMP, GRE, ...) keep their addresses and no ports.
    transport_broken = ttcp | badtcp | tudp | ticmp | techo
    keep = ((ip & ~transport_broken) | okarp) & ~bad & ~truncated
    counters["truncated"] += int(truncated.sum())
    counters["bad_header"] += int(bad.sum())
    counters["fragments"] += int(frag.sum())
    counters["decoded"] += int(keep.sum())

    return Decoded(
        ts=batch.ts[keep], wirelen=batch.wirelen[keep], proto=proto[keep].astype(np.int32),
        src_hi=src_hi[keep], src_lo=src_lo[keep], dst_hi=dst_hi[keep], dst_lo=dst_lo[keep],
        sport=sport[keep].astype(np.int32), dport=dport[keep].astype(np.int32),
        tcp_flags=flags[keep].astype(np.uint8), tcp_window=window[keep].astype(np.int32),
        icmp_type=itype[keep].astype(np.int16), icmp_code=icode[keep].astype(np.int16),
        src_mac=src_mac[keep], counters=counters)
