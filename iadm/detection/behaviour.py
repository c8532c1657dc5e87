"""Behaviour over time: what a rule over one record cannot say, counted per source across records.

Each watcher counts distinct things (ports, hosts, connections) per key over a time window of
capture time, the way Snort's portscan and Zeek's scan policy do, with state kept across batches:
- port_scan: one source probing >= 20 ports of one host within 60 s (payload-free TCP probes or
  unanswered UDP datagrams), kind from the probes' flags (syn, connect, null, fin, xmas, udp);
  a sweep of >= 20 hosts on one port within 60 s (on telnet/SSH ports: Mirai-style guessing);
- floods from one source: >= 100 new one-way flows to one host within 1 s, or one flow sending
  faster than a protocol's benign ceiling (ICMP 100/s, a SYN-only flow 100/s, one-way UDP 2,000/s);
- a flood with forged sources behind one MAC: >= 50 source addresses of one-way flows to one host
  within 1 s from one MAC (a LAN host forging; a router's MAC is never blocked, see uplink.py);
- floods from many sources (DDoS, about the destination: alert only, no source is blocked on it): >= 50 sources of one-way flows to one host within 1 s, or >= 20
  sources of unanswered SYNs within 60 s (a slow distributed SYN flood); reflection: >= 50 hosts
  sending unsolicited answers (SYN-ACKs, DNS responses) to one host within 1 s, or >= 10 amplifiers
  (DNS, NTP, SNMP, ...) within 60 s, or >= 30 unsolicited SYN-ACKs within 60 s;
- brute_force: many short connections from one source to one authentication service of a host
  (>= 10 within 60 s, or >= 30 within 600 s);
- slow_http: >= 50 connections held open at once by one source on one web port of a host.
A record is flagged when it is part of what crossed the threshold; its label carries the
technique and the ATT&CK id, with the numbers in its message.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd

AUTH_SERVICES = {21: "ftp", 22: "ssh", 23: "telnet", 2323: "telnet", 3389: "rdp", 5900: "vnc", 1883: "mqtt",
                 110: "pop3", 143: "imap", 389: "ldap", 3306: "mysql", 5432: "postgresql"}
WEB_PORTS = (80, 443, 8000, 8008, 8080, 8443)
# UDP services that answer a small request with a large one: reflection amplifiers
AMPLIFIERS = {19, 53, 111, 123, 137, 161, 389, 1900, 3702, 5353, 11211, 47808, 500}
SLOW_AMPLIFIERS = {19, 53, 111, 123, 137, 161, 389, 500, 11211}
_TH_FIN, _TH_SYN, _TH_RST, _TH_PSH, _TH_ACK, _TH_URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


class Distinct:
    """Distinct members per key within a sliding window of time: key -> ({member: last seen}, events).

    `add` walks its triples in time order and returns, for each, the count at that triple's own
    time, so a record is only ever judged on what had happened by its time (a replayed batch
    spanning minutes is judged as the live monitor would have judged it, tick by tick)."""

    def __init__(self, window: float, max_keys: int = 200_000):
        self.window = window
        self.max_keys = max_keys
        self.keys: dict = {}
        self.swept_at = -np.inf

    def add(self, keys: list, members: list, times, closing=None) -> np.ndarray:
        """closing (optional, per triple): the member ends here (a closed connection) and stops counting."""
        times = np.asarray(times, dtype=np.float64)
        counts = np.zeros(len(keys), dtype=np.int64)
        table, window = self.keys, self.window
        for i in np.argsort(times, kind="stable").tolist():
            key, member, t = keys[i], members[i], float(times[i])
            if key is None:   # not counted here
                continue
            state = table.get(key)
            if state is None:
                state = table[key] = ({}, deque())
            last, events = state
            since = t - window
            while events and events[0][0] < since:
                t0, m0 = events.popleft()
                if last.get(m0) == t0:
                    del last[m0]
            if closing is not None and closing[i]:
                last.pop(member, None)
            elif last.get(member, -np.inf) < t:
                last[member] = t
                events.append((t, member))
            counts[i] = len(last)
        if len(times):
            self._sweep(float(times.max()))
        return counts

    def drop(self, key, member) -> None:
        state = self.keys.get(key)
        if state:
            state[0].pop(member, None)

    def _sweep(self, now: float) -> None:
        """Forget keys with nothing inside the window (a forged-source flood makes millions of keys)."""
        if now - self.swept_at < self.window and len(self.keys) < self.max_keys:
            return
        since = now - self.window
        self.keys = {k: v for k, v in self.keys.items() if v[1] and v[1][-1][0] >= since}
        if len(self.keys) >= self.max_keys:   # still too many: keep the most recent half
            newest = sorted(self.keys, key=lambda k: self.keys[k][1][-1][0], reverse=True)
            self.keys = {k: self.keys[k] for k in newest[: self.max_keys // 2]}
        self.swept_at = now


@dataclass(frozen=True)
class Finding:
    sid: int
    category: str
    subcategory: str
    technique: str
    mitre: str
    msg: str
    blocks: bool = True   # evidence against the record's source; False: about its destination (alert only)


SCAN_TCP = 2000001
SCAN_UDP = 2000002
SWEEP = 2000003
FLOOD_FLOWS = 2000010
FLOOD_FLOW_RATE = 2000011
FLOOD_SOURCES = 2000012
REFLECTION = 2000013
FORGED_SOURCES = 2000014
BRUTE_FORCE = 2000020
BRUTE_FORCE_SLOW = 2000021
SLOW_HTTP = 2000030


class BehaviourWatch:
    """Per-record labels (the rule engine's shape plus technique) from behaviour over time."""

    def __init__(self, scan_ports: int = 20, scan_hosts: int = 20, scan_seconds: float = 60.0,
                 flood_flows: int = 100, flood_seconds: float = 1.0, flood_sources: int = 50,
                 slow_flood_sources: int = 20, slow_flood_seconds: float = 60.0, slow_reflectors: int = 10, brute_sessions: int = 10,
                 brute_seconds: float = 60.0, brute_slow_sessions: int = 30, brute_slow_seconds: float = 600.0,
                 slow_http_connections: int = 50, slow_http_seconds: float = 120.0):
        self.scan_ports, self.scan_hosts = scan_ports, scan_hosts
        self.flood_flows, self.flood_sources, self.slow_flood_sources = flood_flows, flood_sources, slow_flood_sources
        self.brute_sessions, self.brute_slow_sessions = brute_sessions, brute_slow_sessions
        self.slow_http_connections = slow_http_connections
        self.ports = Distinct(scan_seconds)
        self.hosts = Distinct(scan_seconds)
        self.flows = Distinct(flood_seconds)
        self.sources = Distinct(flood_seconds)
        self.slow_sources = Distinct(slow_flood_seconds)
        self.answers = Distinct(flood_seconds)
        self.forged = Distinct(flood_seconds)
        self.slow_answers = Distinct(slow_flood_seconds)
        self.backscatter = Distinct(slow_flood_seconds)
        self.slow_reflectors = slow_reflectors
        self.sessions = Distinct(brute_seconds)
        self.slow_sessions = Distinct(brute_slow_seconds)
        self.open = Distinct(slow_http_seconds)
        self.sids = {SCAN_TCP, SCAN_UDP, SWEEP, FLOOD_FLOWS, FLOOD_FLOW_RATE, FLOOD_SOURCES, REFLECTION,
                     FORGED_SOURCES, BRUTE_FORCE, BRUTE_FORCE_SLOW, SLOW_HTTP}

    def __call__(self, records: pd.DataFrame) -> pd.DataFrame:
        n = len(records)
        found: list = [None] * n
        if n:
            cols = _columns(records)
            self._scans(cols, found)
            self._floods(cols, found)
            self._brute_force(cols, found)
            self._slow_http(cols, found)
        return _labels(found)

    # -- scans -----------------------------------------------------------------------------------
    def _scans(self, c, found) -> None:
        sent = c.spkts >= 1
        probe_tcp = c.tcp & sent & (c.spkts <= 3) & (c.sbytes <= 100 * c.spkts) & (c.dbytes <= 200)
        probe_udp = c.udp & sent & (c.spkts <= 2) & (c.dpkts <= 1) & ~c.multicast
        for mask, sid, proto in ((probe_tcp, SCAN_TCP, "TCP"), (probe_udp, SCAN_UDP, "UDP")):
            rows = np.flatnonzero(mask & ~c.multicast)
            if not len(rows):
                continue
            keys = list(zip(c.saddr[rows], c.daddr[rows]))
            counts = self.ports.add([(proto,) + k for k in keys], c.dport[rows].tolist(), c.ltime[rows])
            for i, key, ports in zip(rows, keys, counts.tolist()):
                if ports >= self.scan_ports and found[i] is None:
                    kind = _scan_kind(int(c.sflags[i])) if proto == "TCP" else "udp"
                    found[i] = Finding(sid, "Reconnaissance", "Service_Scan", "port_scan", "T1046",
                                       f"{proto} port scan ({kind}): {ports} ports of {key[1]} probed by {key[0]} "
                                       f"within {self.ports.window:.0f} s")
        rows = np.flatnonzero((probe_tcp | probe_udp) & ~c.multicast)
        if len(rows):
            keys = list(zip(c.saddr[rows], c.proto[rows], c.dport[rows].tolist()))
            counts = self.hosts.add(keys, c.daddr[rows].tolist(), c.ltime[rows])
            for i, key, hosts in zip(rows, keys, counts.tolist()):
                if hosts >= self.scan_hosts and found[i] is None:
                    service = AUTH_SERVICES.get(key[2]) if key[2] in (22, 23, 2323) else None
                    found[i] = Finding(SWEEP, "Reconnaissance", "Service_Scan",
                                       "brute_force" if service else "port_scan", "T1110" if service else "T1046",
                                       f"{key[1].upper()} sweep of port {key[2]}{' (' + service + ')' if service else ''}:"
                                       f" {hosts} hosts probed by {key[0]} within {self.hosts.window:.0f} s")

    # -- floods from one source ------------------------------------------------------------------
    def _floods(self, c, found) -> None:
        # one-way: nothing came back, or a TCP source that never got as far as an ACK
        one_way = (c.spkts >= 1) & ((c.dpkts == 0) | (c.tcp & ((c.sflags & _TH_ACK) == 0) & (c.spkts <= 3)))
        rows = np.flatnonzero(one_way)
        if len(rows):   # group destinations count too: a flood is a rate, whatever the address
            keys = list(zip(c.saddr[rows], c.daddr[rows], c.proto[rows]))
            counts = self.flows.add(keys, list(zip(c.sport[rows].tolist(), c.dport[rows].tolist())), c.stime[rows])
            for i, key, flows in zip(rows, keys, counts.tolist()):
                if flows >= self.flood_flows and found[i] is None:
                    technique = _flood_technique(key[2], int(c.sflags[i]))
                    found[i] = Finding(FLOOD_FLOWS, "DoS", key[2].upper(), technique, "T1498.001",
                                       f"{key[2].upper()} flood from one source: {flows} one-way flows from {key[0]} "
                                       f"to {key[1]} within {self.flows.window:g} s")
        rows = np.flatnonzero(one_way & (c.smac != 0))
        if len(rows):   # many source addresses behind one MAC, one destination: a LAN host forging sources
            keys = list(zip(c.smac[rows].tolist(), c.daddr[rows], c.proto[rows]))
            counts = self.forged.add(keys, c.saddr[rows].tolist(), c.stime[rows]).tolist()
            for i, key, n in zip(rows, keys, counts):
                if n >= self.flood_sources and found[i] is None:
                    found[i] = Finding(FORGED_SOURCES, "DoS", key[2].upper(),
                                       _flood_technique(key[2], int(c.sflags[i])), "T1498.001",
                                       f"{key[2].upper()} flood with forged sources: {n} source addresses behind one "
                                       f"MAC sent one-way flows to {key[1]} within {self.forged.window:g} s")
        rows = np.flatnonzero(one_way & ~c.multicast)
        if len(rows):   # many sources, one destination: forged sources or a botnet (DDoS). The
            # finding is about the destination: a benign client of a flooded server has one-way
            # flows too, so no source is blocked on it (blocks=False); mitigation is shaped on the victim.
            keys = list(zip(c.daddr[rows], c.proto[rows]))
            sources = c.saddr[rows].tolist()
            fast = self.sources.add(keys, sources, c.stime[rows]).tolist()
            syn = ((c.sflags[rows] & (_TH_SYN | _TH_ACK)) == _TH_SYN) & c.tcp[rows]
            slow = self.slow_sources.add([k if s else None for k, s in zip(keys, syn)], sources, c.stime[rows])
            for j, (i, key) in enumerate(zip(rows, keys)):
                if found[i] is not None:
                    continue
                if fast[j] >= self.flood_sources:
                    n, window = fast[j], self.sources.window
                elif syn[j] and slow[j] >= self.slow_flood_sources:
                    n, window = int(slow[j]), self.slow_sources.window
                else:
                    continue
                reflected = key[1] == "udp" and int(c.sport[i]) in AMPLIFIERS
                found[i] = Finding(FLOOD_SOURCES, "DDoS", key[1].upper(),
                                   "reflection" if reflected else _flood_technique(key[1], int(c.sflags[i])),
                                   "T1498.002" if reflected else "T1498.001",
                                   f"{key[1].upper()} {'reflection' if reflected else 'flood'} from many sources: "
                                   f"{n} sources sent one-way flows to {key[0]} within {window:g} s", blocks=False)
        # Slow reflection: unsolicited answers (a flow whose first packet is a reply) from many
        # amplifiers within a minute; a benign host only gets answers on flows it opened. Services
        # that answer multicast queries by unicast (mDNS, SSDP, WS-Discovery) are left out.
        rows = np.flatnonzero(one_way & c.udp & np.isin(c.sport, list(SLOW_AMPLIFIERS)) & ~c.multicast)
        if len(rows):
            keys = list(zip(c.daddr[rows], c.proto[rows]))
            counts = self.slow_answers.add(keys, c.saddr[rows].tolist(), c.stime[rows]).tolist()
            for i, key, n in zip(rows, keys, counts):
                if n >= self.slow_reflectors and found[i] is None:
                    found[i] = Finding(REFLECTION, "DDoS", "UDP", "reflection", "T1498.002",
                                       f"UDP reflection: {n} port-{int(c.sport[i])} servers sent unsolicited answers "
                                       f"to {key[0]} within {self.slow_answers.window:g} s", blocks=False)
        # SYN-ACK backscatter: SYN-ACKs for connections the receiver never opened (the record's
        # source sent nothing; its destination answered a SYN forged with the receiver's address)
        synack = (c.dflags & (_TH_SYN | _TH_ACK)) == (_TH_SYN | _TH_ACK)
        rows = np.flatnonzero(c.tcp & (c.spkts == 0) & synack & ~c.multicast)
        if len(rows):
            keys = [(a, "synack") for a in c.saddr[rows].tolist()]
            members = list(zip(c.daddr[rows].tolist(), c.dport[rows].tolist(), c.dpkts[rows].tolist()))
            counts = self.backscatter.add(keys, members, c.ltime[rows]).tolist()
            for i, key, n in zip(rows, keys, counts):
                if n >= self.slow_reflectors * 3 and found[i] is None:
                    found[i] = Finding(REFLECTION, "DDoS", "TCP", "reflection", "T1498.002",
                                       f"SYN-ACK reflection: {n} unsolicited SYN-ACKs to {key[0]} "
                                       f"within {self.backscatter.window:g} s", blocks=False)
        rows = np.flatnonzero((c.spkts == 0) & (c.dpkts >= 1) & ~c.multicast)
        if len(rows):   # the other side of a reflection: unsolicited answers from many hosts to one
            keys = list(zip(c.saddr[rows], c.proto[rows]))
            counts = self.answers.add(keys, c.daddr[rows].tolist(), c.ltime[rows]).tolist()
            for i, key, n in zip(rows, keys, counts):
                if n >= self.flood_sources and found[i] is None:
                    found[i] = Finding(REFLECTION, "DDoS", key[1].upper(), "reflection", "T1498.002",
                                       f"{key[1].upper()} reflection: {n} hosts sent unsolicited answers to {key[0]} "
                                       f"within {self.answers.window:g} s", blocks=False)
        syn_only = c.tcp & ((c.sflags & (_TH_SYN | _TH_ACK)) == _TH_SYN)
        fast = (c.spkts >= 50) & (
            (c.icmp & (c.srate > 100)) | (syn_only & (c.srate > 100))
            | (c.udp & (c.srate > 2000) & (c.dpkts * 10 < c.spkts)))
        for i in np.flatnonzero(fast):
            if found[i] is None:
                technique = _flood_technique(c.proto[i], int(c.sflags[i]))
                found[i] = Finding(FLOOD_FLOW_RATE, "DoS", c.proto[i].upper(), technique, "T1498.001",
                                   f"{c.proto[i].upper()} flood in one flow: {c.srate[i]:,.0f} packets/s from "
                                   f"{c.saddr[i]} to {c.daddr[i]}")

    # -- password guessing -----------------------------------------------------------------------
    def _brute_force(self, c, found) -> None:
        auth = c.tcp & np.isin(c.dport, list(AUTH_SERVICES)) & ~c.multicast
        rows = np.flatnonzero(auth)
        if not len(rows):
            return
        keys = list(zip(c.saddr[rows], c.daddr[rows], c.dport[rows].tolist()))
        sports, starts = c.sport[rows].tolist(), c.stime[rows]
        fast = self.sessions.add(keys, sports, starts).tolist()
        slow = self.slow_sessions.add(keys, sports, starts).tolist()
        for j, (i, key) in enumerate(zip(rows, keys)):
            if found[i] is not None:
                continue
            service = AUTH_SERVICES[key[2]]
            if fast[j] >= self.brute_sessions:
                sid, sessions, window = BRUTE_FORCE, fast[j], self.sessions.window
            elif slow[j] >= self.brute_slow_sessions:
                sid, sessions, window = BRUTE_FORCE_SLOW, slow[j], self.slow_sessions.window
            else:
                continue
            found[i] = Finding(sid, "Theft", "BruteForce", "brute_force", "T1110",
                               f"{service} password guessing: {sessions} connections from {key[0]} to {key[1]}:"
                               f"{key[2]} within {window:.0f} s")

    # -- slow HTTP -------------------------------------------------------------------------------
    def _slow_http(self, c, found) -> None:
        web = c.tcp & np.isin(c.dport, WEB_PORTS)
        rows = np.flatnonzero(web)
        if not len(rows):
            return
        keys = list(zip(c.saddr[rows], c.daddr[rows], c.dport[rows].tolist()))
        sports = c.sport[rows].tolist()
        closed = np.isin(c.state[rows], ("FIN", "RST")).tolist()
        counts = self.open.add(keys, sports, c.ltime[rows], closed).tolist()
        for i, key, held in zip(rows, keys, counts):
            if held >= self.slow_http_connections and found[i] is None:
                found[i] = Finding(SLOW_HTTP, "DoS", "HTTP", "slow_http", "T1499.002",
                                   f"slow HTTP: {held} connections held open by {key[0]} on {key[1]}:{key[2]} "
                                   f"within {self.open.window:.0f} s")


@dataclass
class _Cols:
    proto: np.ndarray
    saddr: np.ndarray
    daddr: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    spkts: np.ndarray
    dpkts: np.ndarray
    sbytes: np.ndarray
    dbytes: np.ndarray
    srate: np.ndarray
    stime: np.ndarray
    ltime: np.ndarray
    smac: np.ndarray
    sflags: np.ndarray
    dflags: np.ndarray
    state: np.ndarray
    tcp: np.ndarray
    udp: np.ndarray
    icmp: np.ndarray
    multicast: np.ndarray


def _columns(r: pd.DataFrame) -> _Cols:
    proto = r["proto"].astype(str).to_numpy()
    daddr = r["daddr"].astype(str).to_numpy()
    ints = {k: pd.to_numeric(r[k], errors="coerce").fillna(-1).to_numpy(np.int64) for k in ("sport", "dport")}
    multicast = _multicast(daddr)
    return _Cols(proto, r["saddr"].astype(str).to_numpy(), daddr, ints["sport"], ints["dport"],
                 r["spkts"].to_numpy(np.int64), r["dpkts"].to_numpy(np.int64), r["sbytes"].to_numpy(np.int64),
                 r["dbytes"].to_numpy(np.int64), r["srate"].to_numpy(np.float64), r["stime"].to_numpy(np.float64),
                 r["ltime"].to_numpy(np.float64),
                 r["smac"].to_numpy(np.int64) if "smac" in r else np.zeros(len(r), np.int64),
                 r["sflags"].to_numpy(np.int64) if "sflags" in r else np.zeros(len(r), np.int64),
                 r["dflags"].to_numpy(np.int64) if "dflags" in r else np.zeros(len(r), np.int64),
                 r["state"].astype(str).to_numpy(), proto == "tcp", proto == "udp",
                 (proto == "icmp") | (proto == "ipv6-icmp"), multicast)


def _multicast(daddr: np.ndarray) -> np.ndarray:
    """Group and broadcast destinations (224/4, 255.255.255.255, x.x.x.255, ff00::/8): discovery, not probing."""
    uniques, inverse = np.unique(daddr, return_inverse=True)
    flags = np.array([_is_group(u) for u in uniques.tolist()], dtype=bool)
    return flags[inverse] if len(uniques) else np.zeros(len(daddr), bool)


def _is_group(address: str) -> bool:
    if ":" in address:
        return address.lower().startswith("ff")
    head = address.split(".", 1)[0]
    return address.endswith(".255") or (head.isdigit() and 224 <= int(head) <= 239)


def _scan_kind(flags: int) -> str:
    flags &= 0x3F
    if flags == 0:
        return "null"
    if flags == _TH_FIN:
        return "fin"
    if flags & (_TH_FIN | _TH_PSH | _TH_URG) == (_TH_FIN | _TH_PSH | _TH_URG):
        return "xmas"
    if flags & _TH_ACK and flags & _TH_SYN:
        return "connect"
    return "syn" if flags & _TH_SYN else "tcp"


def _flood_technique(proto: str, flags: int) -> str:
    if proto == "tcp":
        return "syn_flood" if flags & _TH_SYN else "tcp_flood"
    return {"udp": "udp_flood", "icmp": "icmp_flood", "ipv6-icmp": "icmp_flood"}.get(proto, "flood")


def _labels(found: list) -> pd.DataFrame:
    hit = np.array([f is not None for f in found], dtype=bool)
    def col(name, empty=""):
        return pd.Categorical([getattr(f, name) if f is not None else empty for f in found])
    return pd.DataFrame({
        "attack": hit.astype(np.int64), "category": col("category", "Normal"),
        "subcategory": col("subcategory", "Normal"),
        "sid": np.array([f.sid if f is not None else 0 for f in found], dtype=np.int64),
        "msg": col("msg"), "technique": col("technique"), "mitre": col("mitre"),
        "blocks": np.array([f.blocks if f is not None else False for f in found], dtype=bool)})
