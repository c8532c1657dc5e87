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
EXTRA_COLUMNS = ["smac", "sflags", "dflags", "rule_sid", "synack", "ackdat", "answer", "owd", "gateway"]
RECORD_COLUMNS = BASE_COLUMNS + WINDOW_COLUMNS
CSV_COLUMNS = RECORD_COLUMNS + LABEL_COLUMNS + EXTRA_COLUMNS

# Our numeric encodings (Bot-IoT's 10-best files carry proto_number and
# state_number without publishing the mapping; these are ours, stable).
PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", PROTO_ARP: "arp", 2: "igmp", 47: "gre",
               132: "sctp"}
PROTO_NUMBERS = {"tcp": 1, "arp": 2, "udp": 3, "icmp": 4, "ipv6-icmp": 5}
STATES = ["REQ", "INT", "CON", "FIN", "RST", "ECO", "ECR", "URP", "URH", "URN", "UNR", "TXD", "ACC", "RSP", "CLO"]
STATE_NUMBERS = {s: i + 1 for i, s in enumerate(STATES)}

TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10


def proto_name(number: int) -> str:
    return PROTO_NAMES.get(number, str(number))


def proto_number(name: str) -> int:
    return PROTO_NUMBERS.get(name, 100 + int(name) if name.isdigit() else 99)


_REQ, _INT, _CON, _FIN, _RST, _ECO, _ECR, _URP, _URH, _URN, _UNR, _TXD, _ACC, _RSP, _CLO = range(1, 16)
assert STATES[_ACC - 1] == "ACC" and STATES[_RSP - 1] == "RSP" and STATES[_CLO - 1] == "CLO"


@njit(cache=True, nogil=True)
def state_number(proto, r_sflags, r_dflags, f_sflags, f_dflags, f_syn, r_spkts, r_dpkts, f_nrec, icmp_type,
                 icmp_code, turned=False):
    """Argus's state of one status record, as a STATE_NUMBERS code.

    TCP follows the connection, not only the record: RST or FIN when this record carried
    one; REQ while a connection that began with a SYN is unanswered, ACC when only a SYN-ACK
    was seen, CLO once a flow that began with a SYN-ACK turned round; CON once it is
    established, and for a connection first seen mid-way (Argus calls it connected). UDP and
    others: CON when the destination answered in the record, INT otherwise. ICMP: from the
    first message (echo ECO/ECR, unreachable URN/URH/URP/UNR, time exceeded TXD). UDP, ARP
    and others, by who sent in the record: both sides CON, only the destination RSP, only the
    source INT on the flow's first record and REQ on a later one (ARP: INT, requests only).
    """
    p = proto
    if p == 6:
        flags = r_sflags | r_dflags
        if flags & TH_RST:
            return _RST
        if flags & TH_FIN:
            return _FIN
        if turned:
            return _CLO
        if f_syn and not f_dflags:
            return _REQ
        if f_sflags & TH_SYN and f_sflags & TH_ACK and not f_dflags:
            return _ACC
        return _CON
    if p == 1 or p == 58:
        v4 = p == 1
        t, c = icmp_type, icmp_code
        if t == (8 if v4 else 128):
            return _ECO
        if t == (0 if v4 else 129):
            return _ECR
        if t == (3 if v4 else 1):          # destination unreachable
            if c == (3 if v4 else 4):      # port: code 3 in ICMP, 4 in ICMPv6
                return _URP
            if c == (1 if v4 else 3):      # host
                return _URH
            if c == 0:
                return _URN
            return _UNR
        if t == (11 if v4 else 3):         # time exceeded
            return _TXD
        return _INT
    if r_spkts > 0 and r_dpkts > 0:
        return _CON
    if r_dpkts > 0:
        return _RSP
    return _REQ if f_nrec > 0 and p != PROTO_ARP else _INT


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


# Capture readers keep timestamps to the whole microsecond (iadm.capture.batch.whole_microseconds),
# held as the nearest float64, which may sit a fraction below: the microsecond is the nearest one.
US_SLACK = 0.5


def _whole_us(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds to the whole microsecond, as Argus keeps time."""
    return np.floor(seconds * 1e6 + US_SLACK) / 1e6


def make_records(of: np.ndarray, oi: np.ndarray, key_words: np.ndarray, seqs: np.ndarray,
                 merged: bool, running: bool = False) -> pd.DataFrame:
    """A record frame from the flow table's rows (iadm.flows.table): the status records'
    own values, or (merged) the flow records' (racluster's fold of the status records).
    Running records (the flow so far, at each status record) also say what their status
    record added: new_pkts and new_bytes, so a consumer that sums traffic needs no flow state,
    and new_delay, which of the flow's delays (synack, answer) they are the first to carry."""
    from iadm.flows import table as t
    if not len(of):
        return pd.DataFrame(columns=BASE_COLUMNS + EXTRA_COLUMNS)
    slots = oi[:, t.O_SLOT]
    a = oi[:, t.O_DIR].astype(bool)
    keys = key_words[slots]
    s_hi = np.where(a, keys[:, 0], keys[:, 2])
    s_lo = np.where(a, keys[:, 1], keys[:, 3])
    d_hi = np.where(a, keys[:, 2], keys[:, 0])
    d_lo = np.where(a, keys[:, 3], keys[:, 1])
    proto = oi[:, t.O_PROTO]
    if merged:
        spkts, dpkts = oi[:, t.O_MSPKTS], oi[:, t.O_MDPKTS]
        sbytes, dbytes = oi[:, t.O_MSBYTES], oi[:, t.O_MDBYTES]
        stime, ltime = of[:, t.O_MSTIME], of[:, t.O_MLTIME]
        nrec = np.maximum(oi[:, t.O_MNREC], 1)
        total, sumsq = of[:, t.O_MSUM], of[:, t.O_MSUMSQ]
        mean = total / nrec
        std = np.sqrt(np.maximum(sumsq / nrec - mean * mean, 0.0))
        low, high = of[:, t.O_MMIN], of[:, t.O_MMAX]
        state_numbers = oi[:, t.O_MSTATE]
        sflags, dflags = oi[:, t.O_FSFLAGS], oi[:, t.O_FDFLAGS]
    else:
        spkts, dpkts = oi[:, t.O_SPKTS], oi[:, t.O_DPKTS]
        sbytes, dbytes = oi[:, t.O_SBYTES], oi[:, t.O_DBYTES]
        stime, ltime = of[:, t.O_STIME], of[:, t.O_LTIME]
        total = low = high = mean = np.round((_whole_us(ltime) - _whole_us(stime)) * 1e6) / 1e6  # its own dur
        std = np.zeros(len(of))
        state_numbers = oi[:, t.O_STATE]
        sflags, dflags = oi[:, t.O_SFLAGS], oi[:, t.O_DFLAGS]
    pkts = spkts + dpkts
    # Times as Argus keeps them: truncated to whole microseconds, durations between those.
    stime, ltime = _whole_us(stime), _whole_us(ltime)
    dur = np.round((ltime - stime) * 1e6) / 1e6
    uniq_proto, proto_idx = np.unique(proto, return_inverse=True)
    uniq_names = [proto_name(p) for p in uniq_proto.tolist()]
    names = pd.Categorical.from_codes(proto_idx.ravel(), uniq_names)
    numbers = np.array([proto_number(n) for n in uniq_names], dtype=np.int64)[proto_idx.ravel()]
    frame = pd.DataFrame({
        "pkSeqID": seqs, "stime": stime, "ltime": ltime, "flgs": "e", "proto": names,
        "proto_number": numbers, "saddr": addresses(s_hi, s_lo),
        "sport": oi[:, t.O_SPORT], "daddr": addresses(d_hi, d_lo), "dport": oi[:, t.O_DPORT],
        "pkts": pkts, "bytes": sbytes + dbytes, "state": pd.Categorical.from_codes(state_numbers - 1, STATES),
        "state_number": state_numbers, "seq": seqs, "dur": dur,
        "mean": mean, "stddev": std, "sum": total, "min": np.where(np.isfinite(low), low, 0.0), "max": high,
        "spkts": spkts, "dpkts": dpkts, "sbytes": sbytes, "dbytes": dbytes,
        # Argus: (count - 1) / dur for both directions (checked against ra, docs/features.md).
        "rate": _rate(pkts, dur), "srate": _rate(spkts, dur), "drate": _rate(dpkts, dur),
        "smac": oi[:, t.O_SMAC].astype(np.uint64), "sflags": sflags, "dflags": dflags,
        # seconds, measured at the mirror: SYN to SYN-ACK (the server side), SYN-ACK to ACK (the
        # client side); empty where the flow's handshake was not seen (docs/features.md)
        "synack": of[:, t.O_SYNACK], "ackdat": of[:, t.O_ACKDAT],
        # UDP: the source's first packet to the destination's first answer (DNS, NTP, CoAP, ...)
        "answer": of[:, t.O_ANSWER],
        # a sensor's one-way delay from its own send-time stamps, above its least one lately
        # (iadm.flows.owd): the record's stamped source packets; empty where none
        "owd": of[:, t.O_OWD],
    }, copy=False)   # fresh arrays: no copy into consolidated blocks
    if running:
        frame["new_pkts"] = oi[:, t.O_SPKTS] + oi[:, t.O_DPKTS]
        frame["new_bytes"] = oi[:, t.O_SBYTES] + oi[:, t.O_DBYTES]
        # bit 0: the first record of its flow to carry synack, bit 1: answer (iadm.stats.zscore's
        # per-device delay counts each flow's handshake and answer once)
        frame["new_delay"] = oi[:, t.O_NEWDELAY]
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
