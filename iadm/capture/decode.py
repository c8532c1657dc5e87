"""Vectorised decoder: a Batch of frames -> columns of header fields.

One compiled pass (numba) over the frames of a batch, no per-packet Python,
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
`l4` is where each kept packet's transport header (its ARP header for ARP)
starts in batch.buf, so that payload inspectors (iadm.inspect) read contents
without parsing the link and IP layers again; it is not checked against the
captured length beyond what the decoder itself read.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from iadm.capture.batch import (LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL,
                                LINKTYPE_LINUX_SLL2, LINKTYPE_RAW, Batch)

PROTO_ARP = 256          # not an IP protocol number: ARP gets a code of its own
IPV4_MAPPED = np.uint64(0x0000FFFF00000000)
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
    l4: np.ndarray           # int32: offset in batch.buf of the transport header (IP) or the ARP header, else -1
    frame: np.ndarray = None  # int64: index of each decoded packet's frame in its batch
    owd: np.ndarray = None    # float64: one-way delay of a sensor's stamped packet (iadm.flows.owd), NaN: none
    counters: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.ts)


@njit(cache=True, nogil=True)
def _u8(buf, at):
    # Reads past the buffer give 0; callers check the captured length before using a field.
    return np.int64(buf[at]) if at < len(buf) else np.int64(0)


@njit(cache=True, nogil=True)
def _be16(buf, at):
    return (_u8(buf, at) << 8) | _u8(buf, at + 1)


@njit(cache=True, nogil=True)
def _be32(buf, at):
    return (_be16(buf, at) << 16) | _be16(buf, at + 2)


@njit(cache=True, nogil=True)
def _be64(buf, at):
    return (np.uint64(_be32(buf, at)) << np.uint64(32)) | np.uint64(_be32(buf, at + 4))


# Per-packet outcome codes, in the order of COUNTERS after "packets" and "decoded".
_KEEP, _TRUNCATED, _BAD, _SKIP, _OTHER, _UNSUPPORTED = 0, 1, 2, 3, 4, 5


@njit(cache=True, nogil=True)
def _decode(buf, offsets, caplen, linktype):
    """One pass over the frames; returns the kept packets' fields (compacted) and the counts."""
    n = len(offsets)
    keep = np.empty(n, dtype=np.int64)
    # every output slot of a kept packet is written below: no need to clear them first
    proto_o = np.empty(n, dtype=np.int32)
    src_hi_o = np.empty(n, dtype=np.uint64)
    src_lo_o = np.empty(n, dtype=np.uint64)
    dst_hi_o = np.empty(n, dtype=np.uint64)
    dst_lo_o = np.empty(n, dtype=np.uint64)
    sport_o = np.empty(n, dtype=np.int32)
    dport_o = np.empty(n, dtype=np.int32)
    flags_o = np.empty(n, dtype=np.uint8)
    window_o = np.empty(n, dtype=np.int32)
    itype_o = np.empty(n, dtype=np.int16)
    icode_o = np.empty(n, dtype=np.int16)
    mac_o = np.empty(n, dtype=np.uint64)
    l4_o = np.empty(n, dtype=np.int32)
    counts = np.zeros(6, dtype=np.int64)   # truncated, bad_header, fragments, other_ethertype, unsupported, decoded
    mapped = IPV4_MAPPED
    k = 0
    for i in range(n):
        o = offsets[i]
        end = o + caplen[i]
        lt = linktype[i]
        mac = np.uint64(0)
        # --- link layer ---
        if lt == LINKTYPE_ETHERNET:          # up to two VLAN tags
            et = _be16(buf, o + 12)
            l3 = o + 14
            for _ in range(2):
                if et == _VLAN[0] or et == _VLAN[1] or et == _VLAN[2]:
                    et = _be16(buf, l3 + 2)
                    l3 += 4
            mac = (np.uint64(_be16(buf, o + 6)) << np.uint64(32)) | np.uint64(_be32(buf, o + 8))
            short = l3 > end
        elif lt == LINKTYPE_LINUX_SLL:
            et = _be16(buf, o + 14)
            l3 = o + 16
            short = o + 16 > end
        elif lt == LINKTYPE_LINUX_SLL2:
            et = _be16(buf, o)
            l3 = o + 20
            short = o + 20 > end
        elif lt == LINKTYPE_RAW or lt == LINKTYPE_IPV4 or lt == LINKTYPE_IPV6:
            version = _u8(buf, o) >> 4
            et = 0x0800 if version == 4 else (0x86DD if version == 6 else 0)
            l3 = o
            short = o + 1 > end
        else:
            counts[4] += 1
            continue
        if short:
            counts[0] += 1
            continue
        outcome = _KEEP
        proto = 0
        l4 = 0
        s_hi = s_lo = d_hi = d_lo = np.uint64(0)
        is4 = False
        fragment = False
        if et == 0x0800:
            is4 = True
            if l3 + 20 > end:
                outcome = _TRUNCATED
            else:
                vihl = _u8(buf, l3)
                ihl = (vihl & 0x0F) * 4
                if (vihl >> 4) != 4 or ihl < 20 or _be16(buf, l3 + 2) < ihl:
                    outcome = _BAD
                elif l3 + ihl > end:
                    outcome = _TRUNCATED
                else:
                    fragword = _be16(buf, l3 + 6)
                    if fragword & 0x3FFF:
                        fragment = True
                        if fragword & 0x1FFF:
                            outcome = _SKIP
                    proto = _u8(buf, l3 + 9)
                    l4 = l3 + ihl
                    s_lo = mapped | np.uint64(_be32(buf, l3 + 12))
                    d_lo = mapped | np.uint64(_be32(buf, l3 + 16))
        elif et == 0x86DD:
            if l3 + 40 > end:
                outcome = _TRUNCATED
            elif (_u8(buf, l3) >> 4) != 6:
                outcome = _BAD
            else:
                nh = _u8(buf, l3 + 6)
                l4 = l3 + 40
                for _ in range(3):   # extension headers before the transport header
                    ext = (nh == 0 or nh == 43 or nh == 60) and l4 + 2 <= end
                    fr = nh == 44 and l4 + 8 <= end
                    if fr:
                        fragment = True
                        if _be16(buf, l4 + 2) & 0xFFF8:
                            outcome = _SKIP
                    if ext:
                        step = (_u8(buf, l4 + 1) + 1) * 8
                    elif fr:
                        step = 8
                    else:
                        step = 0
                    if ext or fr:
                        nh = _u8(buf, l4)
                    l4 += step
                proto = nh
                s_hi, s_lo = _be64(buf, l3 + 8), _be64(buf, l3 + 16)
                d_hi, d_lo = _be64(buf, l3 + 24), _be64(buf, l3 + 32)
        elif et == 0x0806:
            if l3 + 28 > end:
                outcome = _TRUNCATED
            elif _be16(buf, l3 + 2) != 0x0800 or _u8(buf, l3 + 5) != 4:
                outcome = _BAD
            else:
                proto = PROTO_ARP
                l4 = l3
                s_lo = mapped | np.uint64(_be32(buf, l3 + 14))
                d_lo = mapped | np.uint64(_be32(buf, l3 + 24))
        else:
            counts[3] += 1
            continue
        if fragment:
            counts[2] += 1
        if outcome == _TRUNCATED:
            counts[0] += 1
            continue
        if outcome == _BAD:
            counts[1] += 1
            continue
        if outcome == _SKIP:
            continue
        sport = dport = flags = window = 0
        itype = icode = -1
        if proto == 6:
            if l4 + 20 > end:
                counts[0] += 1
                continue
            if (_u8(buf, l4 + 12) >> 4) < 5:
                counts[1] += 1
                continue
            sport, dport = _be16(buf, l4), _be16(buf, l4 + 2)
            flags, window = _u8(buf, l4 + 13), _be16(buf, l4 + 14)
        elif proto == 17:
            if l4 + 8 > end:
                counts[0] += 1
                continue
            sport, dport = _be16(buf, l4), _be16(buf, l4 + 2)
        elif (proto == 1 and is4) or (proto == 58 and not is4 and et == 0x86DD):
            if l4 + 4 > end:
                counts[0] += 1
                continue
            itype, icode = _u8(buf, l4), _u8(buf, l4 + 1)
            # echo request and reply: ICMP 8 and 0, ICMPv6 128 and 129
            if (proto == 1 and (itype == 8 or itype == 0)) or (proto == 58 and (itype == 128 or itype == 129)):
                if l4 + 8 > end:
                    counts[0] += 1
                    continue
                sport = dport = _be16(buf, l4 + 4)   # the echo id pairs request and reply
        keep[k] = i
        proto_o[k] = proto
        src_hi_o[k], src_lo_o[k], dst_hi_o[k], dst_lo_o[k] = s_hi, s_lo, d_hi, d_lo
        sport_o[k], dport_o[k] = sport, dport
        flags_o[k], window_o[k] = flags, window
        itype_o[k], icode_o[k] = itype, icode
        mac_o[k] = mac
        l4_o[k] = l4 if l4 <= 0x7FFFFFFF else -1   # a buffer past 2 GiB: no offset rather than a wrong one
        k += 1
    counts[5] = k
    return (keep[:k], proto_o[:k], src_hi_o[:k], src_lo_o[:k], dst_hi_o[:k], dst_lo_o[:k], sport_o[:k],
            dport_o[:k], flags_o[:k], window_o[:k], itype_o[:k], icode_o[:k], mac_o[:k], l4_o[:k], counts)


def decode(batch: Batch, counters: dict | None = None) -> Decoded:
    counters = counters if counters is not None else dict.fromkeys(COUNTERS, 0)
    (keep, proto, src_hi, src_lo, dst_hi, dst_lo, sport, dport, flags, window, itype, icode, mac, l4,
     counts) = _decode(batch.buf, np.ascontiguousarray(batch.offsets, dtype=np.int64),
                       np.ascontiguousarray(batch.caplen, dtype=np.int64),
                       np.ascontiguousarray(batch.linktype, dtype=np.int64))
    counters["packets"] += len(batch.offsets)
    for name, value in zip(("truncated", "bad_header", "fragments", "other_ethertype", "unsupported", "decoded"),
                           counts.tolist()):
        counters[name] += value
    return Decoded(ts=batch.ts[keep], wirelen=batch.wirelen[keep], proto=proto, src_hi=src_hi, src_lo=src_lo,
                   dst_hi=dst_hi, dst_lo=dst_lo, sport=sport, dport=dport, tcp_flags=flags, tcp_window=window,
                   icmp_type=itype, icmp_code=icode, src_mac=mac, l4=l4,
                   frame=np.arange(len(batch.offsets), dtype=np.int64)[keep], counters=counters)
