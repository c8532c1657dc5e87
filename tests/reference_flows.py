"""A straightforward reference of the flow table's record semantics: one Python dict per flow,
one packet at a time, no rings, buffers, slots or eviction. The compiled table must write the
same records (tests/unit/test_flow_reference.py); see iadm/flows/table.py for the rules."""
from __future__ import annotations

import math

TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10


def _source_is_sender(proto, flags, sport, dport):
    if proto != 6:
        return True
    if flags & TH_SYN:
        return True
    return not (sport < 1024 <= dport)


def _state(proto, rec, flow, itype, icode, arp):
    if proto == 6:
        if (rec["sflags"] | rec["dflags"]) & TH_RST:
            return "RST"
        if (rec["sflags"] | rec["dflags"]) & TH_FIN:
            return "FIN"
        if flow["sa"] == "turned":
            return "CLO"
        if flow["syn"] and not flow["dflags"]:
            return "REQ"
        if flow["sflags"] & TH_SYN and flow["sflags"] & TH_ACK and not flow["dflags"]:
            return "ACC"
        return "CON"
    if proto in (1, 58):
        v4 = proto == 1
        names = {(8 if v4 else 128): "ECO", (0 if v4 else 129): "ECR", (11 if v4 else 3): "TXD"}
        if itype == (3 if v4 else 1):
            return {(3 if v4 else 4): "URP", (1 if v4 else 3): "URH", 0: "URN"}.get(icode, "UNR")
        return names.get(itype, "INT")
    if rec["spkts"] and rec["dpkts"]:
        return "CON"
    if rec["dpkts"]:
        return "RSP"
    return "REQ" if flow["nrec"] and proto != arp else "INT"


def _us(t):
    """Whole microseconds, as Argus keeps time (readers keep timestamps to the microsecond)."""
    return math.floor(t * 1e6 + 0.5)


def reference(packets, interval=5.0, idle=30.0, arp=None):
    """packets: dicts with ts, src, dst, sport, dport, proto, flags, wirelen, itype, icode (in
    capture order). Returns (status records, flow records) as lists of dicts."""
    if arp is None:
        from iadm.capture.decode import PROTO_ARP as arp
    flows, status = {}, []
    clock = -math.inf

    def close(f):
        rec = f["rec"]
        # a flow's later records are dated from their first source packet, the first from its first
        start = rec["sfirst"] if f["nrec"] and rec["sfirst"] is not None else rec["stime"]
        first, last = _us(start), _us(rec["ltime"])
        dur = (last - first) / 1e6
        state = _state(f["proto"], rec, f, f["itype"], f["icode"], arp)
        f["nrec"] += 1
        status.append(dict(rec, stime=first / 1e6, ltime=last / 1e6, dur=dur, state=state, saddr=f["saddr"], daddr=f["daddr"], sport=f["sport"],
                           dport=f["dport"], proto=f["proto"]))
        f["records"].append(status[-1])
        f["rec"] = None

    def open_flow(f, p):
        sender_is_source = _source_is_sender(p["proto"], p["flags"], p["sport"], p["dport"])
        src, dst = (p["src"], p["dst"]) if sender_is_source else (p["dst"], p["src"])
        icmp = p["itype"] >= 0
        if icmp:
            ports = (p["itype"], p["icode"])
        else:
            ports = (p["sport"], p["dport"]) if sender_is_source else (p["dport"], p["sport"])
        raw_sport = p["sport"] if sender_is_source else p["dport"]
        f.update(nrec=0, saddr=src, daddr=dst, sport=ports[0], dport=ports[1], sflags=0, dflags=0, source=(src, raw_sport),
                 syn=p["proto"] == 6 and bool(p["flags"] & TH_SYN) and not p["flags"] & TH_ACK,
                 sa="pending" if p["proto"] == 6 and p["flags"] & TH_SYN and p["flags"] & TH_ACK else None)

    for p in packets:
        clock = max(clock, p["ts"])
        t = p["ts"]
        key = (p["proto"], *sorted([(p["src"], p["sport"]), (p["dst"], p["dport"])]))
        f = flows.get(key)
        if f is not None and f["rec"] is not None and clock >= f["due"]:
            close(f)
        if f is None:
            f = flows[key] = {"proto": p["proto"], "rec": None, "records": [],
                              "itype": p["itype"], "icode": p["icode"], "last": t}
            open_flow(f, p)
        elif t - f["last"] >= idle:
            if f["rec"] is not None:
                close(f)
            open_flow(f, p)
        elif f["sa"] == "pending":   # a SYN-ACK flow: turned round by the first packet that is not one
            if p["flags"] & TH_RST:
                f["sa"] = "settled"
            elif (p["flags"] & (TH_SYN | TH_ACK)) != (TH_SYN | TH_ACK):
                f["sa"] = "turned"
                f["saddr"], f["daddr"], f["sport"], f["dport"] = f["daddr"], f["saddr"], f["dport"], f["sport"]
                f["source"] = (f["saddr"], f["sport"])
                f["sflags"], f["dflags"] = f["dflags"], f["sflags"]
                if f["rec"] is not None:
                    r = f["rec"]
                    for a, b in (("spkts", "dpkts"), ("sbytes", "dbytes"), ("sflags", "dflags")):
                        r[a], r[b] = r[b], r[a]
        if f["rec"] is None:
            f["rec"] = {"stime": t, "ltime": t, "spkts": 0, "dpkts": 0, "sbytes": 0, "dbytes": 0,
                        "sflags": 0, "dflags": 0, "sfirst": None}
            f["due"] = clock + interval
        rec = f["rec"]
        rec["ltime"] = max(rec["ltime"], t)   # stime stays the first packet's, in capture order
        f["last"] = max(f["last"], t)
        side = "s" if (p["src"], p["sport"]) == f["source"] else "d"
        if (side == "s") != (f["sa"] == "turned") and rec["sfirst"] is None:
            rec["sfirst"] = t
        rec[side + "pkts"] += 1
        rec[side + "bytes"] += p["wirelen"]
        rec[side + "flags"] |= p["flags"]
        f[side + "flags"] |= p["flags"]
    for f in flows.values():
        if f["rec"] is not None:
            close(f)
    merged = []
    for f in flows.values():
        recs = f["records"]
        durs = [r["dur"] for r in recs]
        mean = sum(durs) / len(durs)
        merged.append({
            "saddr": recs[-1]["saddr"], "daddr": recs[-1]["daddr"], "sport": recs[-1]["sport"],
            "dport": recs[-1]["dport"], "proto": f["proto"], "stime": min(r["stime"] for r in recs),
            "ltime": max(r["ltime"] for r in recs), "state": recs[-1]["state"],
            **{k: sum(r[k] for r in recs) for k in ("spkts", "dpkts", "sbytes", "dbytes")},
            "sum": sum(durs), "mean": mean, "min": min(durs), "max": max(durs),
            "stddev": math.sqrt(max(sum(d * d for d in durs) / len(durs) - mean * mean, 0.0))})
    return status, merged
