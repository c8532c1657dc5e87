"""Flow-table slots -> Bot-IoT-shaped record frames (pandas), vectorised.

Column names and order follow the Bot-IoT full dataset plus the 10-best
aggregates (DESIGN.md section 4); `smac` (the source's MAC, which the
controller needs to block a flood with forged IPv4 sources) trails them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from numba import njit

from iadm.capture.decode import PROTO_ARP

BASE_COLUMNS = [
    "pkSeqID", "stime", "ltime", "flgs", "proto", "proto_number", "saddr", "sport", "daddr", "dport",
    "pkts", "bytes", "state", "state_number", "seq", "dur", "mean", "stddev", "sum", "min", "max",
    "spkts", "dpkts", "sbytes", "dbytes", "rate", "srate", "drate",
]
WINDOW_COLUMNS = [
    "TnBPSrcIP", "TnBPDstIP", "TnP_PSrcIP", "TnP_PDstIP", "TnP_PerProto", "TnP_Per_Dport",
    "AR_P_Proto_P_SrcIP", "AR_P_Proto_P_DstIP", "N_IN_Conn_P_DstIP", "N_IN_Conn_P_SrcIP",
    "AR_P_Proto_P_Sport", "AR_P_Proto_P_Dport", "Pkts_P_State_P_Protocol_P_DestIP",
    "Pkts_P_State_P_Protocol_P_SrcIP",
]
LABEL_COLUMNS = ["attack", "category", "subcategory"]
EXTRA_COLUMNS = ["smac", "sflags", "dflags", "rule_sid"]
RECORD_COLUMNS = BASE_COLUMNS + WINDOW_COLUMNS
CSV_COLUMNS = RECORD_COLUMNS + LABEL_COLUMNS + EXTRA_COLUMNS

# Our numeric encodings (Bot-IoT's 10-best files carry proto_number and
# state_number without publishing the mapping; these are ours, stable).
PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", PROTO_ARP: "arp", 2: "igmp", 47: "gre",
               132: "sctp"}
PROTO_NUMBERS = {"tcp": 1, "arp": 2, "udp": 3, "icmp": 4, "ipv6-icmp": 5}
STATES = ["REQ", "INT", "CON", "FIN", "RST", "ECO", "ECR", "URP", "URH", "URN", "UNR", "TXD", "ACC"]
STATE_NUMBERS = {s: i + 1 for i, s in enumerate(STATES)}

TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10


def proto_name(number: int) -> str:
    return PROTO_NAMES.get(number, str(number))


def proto_number(name: str) -> int:
    return PROTO_NUMBERS.get(name, 100 + int(name) if name.isdigit() else 99)


_REQ, _INT, _CON, _FIN, _RST, _ECO, _ECR, _URP, _URH, _URN, _UNR, _TXD, _ACC = range(1, 14)
assert STATES[_ACC - 1] == "ACC" and STATES[_TXD - 1] == "TXD"


@njit(cache=True, nogil=True)
def _state_numbers(proto, sflags, dflags, dpkts, icmp_type, icmp_code):
    """Argus-like state per record, as STATE_NUMBERS codes.

    TCP: RST if either side reset, FIN if either closed, CON once the
    destination answered, ACC if only a SYN-ACK was seen, REQ for unanswered
    SYNs, INT otherwise. UDP and others: CON with replies, INT without.
    ICMP: from the first message (echo ECO/ECR, unreachable URN/URH/URP/UNR,
    time exceeded TXD). ARP: CON when answered, REQ otherwise.
    """
    n = len(proto)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        p, sf, answered = proto[i], sflags[i], dpkts[i] > 0
        flags = sf | dflags[i]
        if p == 6:
            if flags & TH_RST:
                out[i] = _RST
            elif flags & TH_FIN:
                out[i] = _FIN
            elif answered:
                out[i] = _CON
            elif sf & TH_SYN and sf & TH_ACK:
                out[i] = _ACC
            elif sf & TH_SYN:
                out[i] = _REQ
            else:
                out[i] = _INT
        elif p == 1 or p == 58:
            v4 = p == 1
            t, c = icmp_type[i], icmp_code[i]
            if t == (8 if v4 else 128):
                out[i] = _ECO
            elif t == (0 if v4 else 129):
                out[i] = _ECR
            elif t == (3 if v4 else 1):          # destination unreachable
                if c == (3 if v4 else 4):        # port: code 3 in ICMP, 4 in ICMPv6
                    out[i] = _URP
                elif c == (1 if v4 else 3):      # host
                    out[i] = _URH
                elif c == 0:
                    out[i] = _URN
                else:
                    out[i] = _UNR
            elif t == (11 if v4 else 3):         # time exceeded
                out[i] = _TXD
            else:
                out[i] = _INT
        elif p == PROTO_ARP:
            out[i] = _CON if answered else _REQ
        else:
            out[i] = _CON if answered else _INT
    return out


_MAPPED = np.uint64(0x0000FFFF00000000)


_STR = pd.StringDtype("pyarrow", na_value=np.nan)


@njit(cache=True, nogil=True)
def _format_quads(v4):
    """The text of IPv4 addresses back to back, and the Arrow offsets into it."""
    n = len(v4)
    data = np.empty(n * 15, dtype=np.uint8)
    offsets = np.empty(n + 1, dtype=np.int32)
    at = 0
    offsets[0] = 0
    for i in range(n):
        for k in range(4):
            octet = np.int64((v4[i] >> np.uint64(24 - 8 * k)) & np.uint64(255))
            if octet >= 100:
                data[at] = 48 + octet // 100
                at += 1
            if octet >= 10:
                data[at] = 48 + (octet // 10) % 10
                at += 1
            data[at] = 48 + octet % 10
            at += 1
            if k < 3:
                data[at] = 46   # "."
                at += 1
        offsets[i + 1] = at
    return data[:at], offsets


def _dotted_quads(v4: np.ndarray) -> pd.Series:
    """IPv4 addresses (uint64, low 32 bits) to an Arrow string column, formatted in compiled code."""
    data, offsets = _format_quads(np.ascontiguousarray(v4, dtype=np.uint64))
    array = pa.StringArray.from_buffers(len(v4), pa.py_buffer(offsets), pa.py_buffer(data))
    return pd.Series(array, dtype=_STR)


def addresses(hi: np.ndarray, lo: np.ndarray) -> pd.Series:
    """Printable addresses: dotted quads for IPv4-mapped, RFC 5952 text for IPv6."""
    import ipaddress
    v4 = (hi == 0) & ((lo & np.uint64(0xFFFFFFFF00000000)) == _MAPPED)
    if v4.all():
        return _dotted_quads(lo & np.uint64(0xFFFFFFFF))
    out = np.empty(len(hi), dtype=object)
    out[v4] = _dotted_quads(lo[v4] & np.uint64(0xFFFFFFFF)).to_numpy(dtype=object)
    for i in np.flatnonzero(~v4).tolist():
        out[i] = str(ipaddress.IPv6Address((int(hi[i]) << 64) | int(lo[i])))
    return pd.Series(out, dtype=_STR)


def mac_text(value: int) -> str:
    """A MAC kept as an integer (records carry `smac` numeric) as text."""
    return ":".join(f"{(int(value) >> s) & 255:02x}" for s in (40, 32, 24, 16, 8, 0)) if value else ""


def _rate(count, span):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((count > 1) & (span > 0), (count - 1) / np.where(span > 0, span, 1), 0.0)


def make_records(c: dict, init_is_a: np.ndarray, slots: np.ndarray, seqs: np.ndarray) -> pd.DataFrame:
    if not len(slots):
        return pd.DataFrame(columns=BASE_COLUMNS + EXTRA_COLUMNS)
    a = init_is_a[slots]
    s_hi = np.where(a, c["a_hi"][slots], c["b_hi"][slots])
    s_lo = np.where(a, c["a_lo"][slots], c["b_lo"][slots])
    d_hi = np.where(a, c["b_hi"][slots], c["a_hi"][slots])
    d_lo = np.where(a, c["b_lo"][slots], c["a_lo"][slots])
    proto = c["proto"][slots]
    spkts, dpkts = c["spkts"][slots], c["dpkts"][slots]
    sbytes, dbytes = c["sbytes"][slots], c["dbytes"][slots]
    stime, ltime = c["stime"][slots], c["ltime"][slots]
    pkts = spkts + dpkts
    dur = ltime - stime
    nseg = np.maximum(c["nseg"][slots], 1)
    mean = c["seg_sum"][slots] / nseg
    std = np.sqrt(np.maximum(c["seg_sumsq"][slots] / nseg - mean * mean, 0.0))
    state_numbers = _state_numbers(proto, c["sflags"][slots], c["dflags"][slots], dpkts, c["icmp_type"][slots],
                                   c["icmp_code"][slots])
    uniq_proto, proto_idx = np.unique(proto, return_inverse=True)
    uniq_names = [proto_name(p) for p in uniq_proto.tolist()]
    names = pd.Categorical.from_codes(proto_idx.ravel(), uniq_names)
    numbers = np.array([proto_number(n) for n in uniq_names], dtype=np.int64)[proto_idx.ravel()]
    frame = pd.DataFrame({
        "pkSeqID": seqs, "stime": stime, "ltime": ltime, "flgs": "e", "proto": names,
        "proto_number": numbers, "saddr": addresses(s_hi, s_lo),
        "sport": c["sport"][slots], "daddr": addresses(d_hi, d_lo), "dport": c["dport"][slots],
        "pkts": pkts, "bytes": sbytes + dbytes, "state": pd.Categorical.from_codes(state_numbers - 1, STATES),
        "state_number": state_numbers, "seq": seqs, "dur": dur,
        "mean": mean, "stddev": std, "sum": c["seg_sum"][slots],
        "min": np.where(np.isfinite(c["seg_min"][slots]), c["seg_min"][slots], 0.0),
        "max": c["seg_max"][slots], "spkts": spkts, "dpkts": dpkts, "sbytes": sbytes, "dbytes": dbytes,
        "rate": _rate(pkts, dur),
        "srate": _rate(spkts, dur),   # Bot-IoT: 99.3% of real rows (docs/features.md)
        "drate": _rate(dpkts, c["d_last"][slots] - c["d_first"][slots]),
        "smac": c["smac"][slots], "sflags": c["sflags"][slots].astype(np.int64),
        "dflags": c["dflags"][slots].astype(np.int64),
    }, copy=False)   # fresh arrays: no copy into consolidated blocks
    # The addresses as numbers, for the window aggregates (which would otherwise hash the text).
    frame.attrs["addresses"] = NumericAddresses(s_hi, s_lo, d_hi, d_lo)
    return frame


class NumericAddresses:
    """Source and destination addresses as uint64 pairs, riding along in a record frame's attrs.
    Compared by identity, so pandas never propagates it into frames built from several."""
    __slots__ = ("arrays",)

    def __init__(self, *arrays):
        self.arrays = arrays

    def __deepcopy__(self, memo):
        return self   # pandas deep-copies attrs on every derived frame; these arrays are never changed
