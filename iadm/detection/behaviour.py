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

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit

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
        """closing (optional, per triple): the member ends here (a closed connection) and stops
        counting. A key None is not counted. Keys met once in the batch and unknown before (a
        forged-source flood makes one per packet) take a bulk path: their count is 1."""
        n = len(keys)
        times = np.asarray(times, dtype=np.float64)
        counts = np.zeros(n, dtype=np.int64)
        if not n:
            return counts
        table, window = self.keys, self.window
        seen_in_batch = Counter(keys)
        t_list = times.tolist()
        slow = []
        for i, key in enumerate(keys):
            if key is None:
                continue
            if seen_in_batch[key] == 1 and key not in table and (closing is None or not closing[i]):
                member, t = members[i], t_list[i]
                table[key] = ({member: t}, deque(((t, member),)))
                counts[i] = 1
            else:
                slow.append(i)
        if len(slow) >= BIG_GROUP:   # keys with many rows (one victim of a flood): compiled, per key
            by_key: dict = {}
            for i in slow:
                by_key.setdefault(keys[i], []).append(i)
            slow = []
            for key, rows in by_key.items():
                if len(rows) >= BIG_GROUP and closing is None:
                    self._add_group(key, rows, members, times, counts)
                else:
                    slow += rows
        if slow:
            slow.sort(key=t_list.__getitem__)
            never = float("-inf")
            for i in slow:
                key, member, t = keys[i], members[i], t_list[i]
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
                elif last.get(member, never) < t:
                    last[member] = t
                    events.append((t, member))
                counts[i] = len(last)
        self._sweep(max(t_list))
        return counts

    def _add_group(self, key, rows: list, members: list, times: np.ndarray, counts: np.ndarray) -> None:
        """One key's rows at once: its state and the rows as codes, the window walked by a compiled loop."""
        last, _ = self.keys.get(key, ({}, None))
        rows = np.asarray(rows)[np.argsort(times[rows], kind="stable")]
        before = sorted(((t, m) for m, t in last.items()), key=lambda e: e[0])
        names = [m for _, m in before] + [members[i] for i in rows.tolist()]
        codes, uniques = pd.factorize(pd.Series(names, dtype=object))
        at = np.concatenate([np.array([t for t, _ in before], dtype=np.float64), times[rows]])
        out, last_t = _window_walk(at, codes.astype(np.int64), len(uniques), self.window, len(before))
        counts[rows] = out
        end = at[-1] - self.window
        keep = np.flatnonzero(last_t >= end)
        order = keep[np.argsort(last_t[keep], kind="stable")]
        kept = uniques.take(order).tolist() if len(order) else []
        state_last = dict(zip(kept, last_t[order].tolist()))
        self.keys[key] = (state_last, deque(zip(last_t[order].tolist(), kept)))

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


BIG_GROUP = 256


@njit(cache=True, nogil=True)
def _window_walk(at, codes, n_members, window, n_before):
    """Distinct members within the window at each of the rows after the first n_before events
    (the key's state, already in time order). Returns the counts and each member's last time."""
    last_t = np.full(n_members, -np.inf)
    counts = np.zeros(len(at) - n_before, dtype=np.int64)
    live = 0
    head = 0
    for i in range(len(at)):
        t = at[i]
        while head < i and at[head] < t - window:
            m = codes[head]
            if last_t[m] == at[head]:
                last_t[m] = -np.inf
                live -= 1
            head += 1
        m = codes[i]
        if last_t[m] < t:
            if last_t[m] == -np.inf:
                live += 1
            last_t[m] = t
        if i >= n_before:
            counts[i - n_before] = live
    return counts, last_t


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

    @staticmethod
    def _mark(found: list, rows: np.ndarray, hit: np.ndarray, keys: list, make) -> None:
        """found[row] = make(j) for the rows over a threshold that nothing claimed yet; one
        Finding per key per batch (a flood flags thousands of rows with the same finding)."""
        made: dict = {}
        for j in np.flatnonzero(hit).tolist():
            i = rows[j]
            if found[i] is None:
                key = keys[j]
                finding = made.get(key)
                if finding is None:
                    finding = made[key] = make(j)
                found[i] = finding

    # -- scans -----------------------------------------------------------------------------------
    def _scans(self, c, found) -> None:
        sent = c.spkts >= 1
        probe_tcp = c.tcp & sent & (c.spkts <= 3) & (c.sbytes <= 100 * c.spkts) & (c.dbytes <= 200)
        probe_udp = c.udp & sent & (c.spkts <= 2) & (c.dpkts <= 1) & ~c.multicast
        for mask, sid, proto in ((probe_tcp, SCAN_TCP, "TCP"), (probe_udp, SCAN_UDP, "UDP")):
            rows = np.flatnonzero(mask & ~c.multicast)
            if not len(rows):
                continue
            keys = list(zip(c.saddr[rows].tolist(), c.daddr[rows].tolist()))
            counts = self.ports.add([(proto,) + k for k in keys], c.dport[rows].tolist(), c.ltime[rows])

            def scan(j, rows=rows, keys=keys, counts=counts, sid=sid, proto=proto):
                kind = _scan_kind(int(c.sflags[rows[j]])) if proto == "TCP" else "udp"
                return Finding(sid, "Reconnaissance", "Service_Scan", "port_scan", "T1046",
                               f"{proto} port scan ({kind}): {counts[j]} ports of {keys[j][1]} probed by {keys[j][0]} "
                               f"within {self.ports.window:.0f} s")
            self._mark(found, rows, counts >= self.scan_ports, keys, scan)
        rows = np.flatnonzero((probe_tcp | probe_udp) & ~c.multicast)
        if len(rows):
            keys = list(zip(c.saddr[rows].tolist(), c.proto[rows].tolist(), c.dport[rows].tolist()))
            counts = self.hosts.add(keys, c.daddr[rows].tolist(), c.ltime[rows])

            def sweep(j):
                source, proto, port = keys[j]
                service = AUTH_SERVICES.get(port) if port in (22, 23, 2323) else None
                return Finding(SWEEP, "Reconnaissance", "Service_Scan", "brute_force" if service else "port_scan",
                               "T1110" if service else "T1046",
                               f"{proto.upper()} sweep of port {port}{' (' + service + ')' if service else ''}: "
                               f"{counts[j]} hosts probed by {source} within {self.hosts.window:.0f} s")
            self._mark(found, rows, counts >= self.scan_hosts, keys, sweep)

    # -- floods ----------------------------------------------------------------------------------
    def _floods(self, c, found) -> None:
        # one-way: nothing came back, or a TCP source that never got as far as an ACK
        one_way = (c.spkts >= 1) & ((c.dpkts == 0) | (c.tcp & ((c.sflags & _TH_ACK) == 0) & (c.spkts <= 3)))
        rows = np.flatnonzero(one_way)
        if len(rows):   # from one source; group destinations count too: a flood is a rate, whatever the address
            keys = list(zip(c.saddr[rows].tolist(), c.daddr[rows].tolist(), c.proto[rows].tolist()))
            counts = self.flows.add(keys, list(zip(c.sport[rows].tolist(), c.dport[rows].tolist())), c.stime[rows])

            def one_source(j):
                source, dest, proto = keys[j]
                return Finding(FLOOD_FLOWS, "DoS", proto.upper(), _flood_technique(proto, int(c.sflags[rows[j]])),
                               "T1498.001", f"{proto.upper()} flood from one source: {counts[j]} one-way flows from "
                               f"{source} to {dest} within {self.flows.window:g} s")
            self._mark(found, rows, counts >= self.flood_flows, keys, one_source)
        rows = np.flatnonzero(one_way & (c.smac != 0))
        if len(rows):   # many source addresses behind one MAC, one destination: a LAN host forging sources
            keys = list(zip(c.smac[rows].tolist(), c.daddr[rows].tolist(), c.proto[rows].tolist()))
            counts = self.forged.add(keys, c.saddr[rows].tolist(), c.stime[rows])

            def forged(j):
                _, dest, proto = keys[j]
                return Finding(FORGED_SOURCES, "DoS", proto.upper(), _flood_technique(proto, int(c.sflags[rows[j]])),
                               "T1498.001", f"{proto.upper()} flood with forged sources: {counts[j]} source addresses "
                               f"behind one MAC sent one-way flows to {dest} within {self.forged.window:g} s")
            self._mark(found, rows, counts >= self.flood_sources, keys, forged)
        rows = np.flatnonzero(one_way & ~c.multicast)
        if len(rows):   # many sources, one destination: forged sources or a botnet (DDoS). The
            # finding is about the destination: a benign client of a flooded server has one-way
            # flows too, so no source is blocked on it (blocks=False); mitigation is shaped on the victim.
            keys = list(zip(c.daddr[rows].tolist(), c.proto[rows].tolist()))
            sources = c.saddr[rows].tolist()
            fast = self.sources.add(keys, sources, c.stime[rows])
            syn = ((c.sflags[rows] & (_TH_SYN | _TH_ACK)) == _TH_SYN) & c.tcp[rows]
            slow = self.slow_sources.add([k if s else None for k, s in zip(keys, syn.tolist())], sources,
                                         c.stime[rows])
            quick = fast >= self.flood_sources

            def many(j):
                dest, proto = keys[j]
                n, window = (fast[j], self.sources.window) if quick[j] else (slow[j], self.slow_sources.window)
                reflected = proto == "udp" and int(c.sport[rows[j]]) in AMPLIFIERS
                return Finding(FLOOD_SOURCES, "DDoS", proto.upper(),
                               "reflection" if reflected else _flood_technique(proto, int(c.sflags[rows[j]])),
                               "T1498.002" if reflected else "T1498.001",
                               f"{proto.upper()} {'reflection' if reflected else 'flood'} from many sources: "
                               f"{n} sources sent one-way flows to {dest} within {window:g} s", blocks=False)
            self._mark(found, rows, quick | (syn & (slow >= self.slow_flood_sources)), keys, many)
        # Slow reflection: unsolicited answers (a flow whose first packet is a reply) from many
        # amplifiers within a minute; a benign host only gets answers on flows it opened. Services
        # that answer multicast queries by unicast (mDNS, SSDP, WS-Discovery) are left out.
        rows = np.flatnonzero(one_way & c.udp & np.isin(c.sport, list(SLOW_AMPLIFIERS)) & ~c.multicast)
        if len(rows):
            keys = c.daddr[rows].tolist()
            counts = self.slow_answers.add(keys, c.saddr[rows].tolist(), c.stime[rows])
            self._mark(found, rows, counts >= self.slow_reflectors, keys, lambda j: Finding(
                REFLECTION, "DDoS", "UDP", "reflection", "T1498.002",
                f"UDP reflection: {counts[j]} port-{int(c.sport[rows[j]])} servers sent unsolicited answers to "
                f"{keys[j]} within {self.slow_answers.window:g} s", blocks=False))
        # SYN-ACK backscatter: SYN-ACKs for connections the receiver never opened (the record's
        # source sent nothing; its destination answered a SYN forged with the receiver's address)
        synack = (c.dflags & (_TH_SYN | _TH_ACK)) == (_TH_SYN | _TH_ACK)
        rows = np.flatnonzero(c.tcp & (c.spkts == 0) & synack & ~c.multicast)
        if len(rows):
            keys = c.saddr[rows].tolist()
            members = list(zip(c.daddr[rows].tolist(), c.dport[rows].tolist(), c.dpkts[rows].tolist()))
            counts = self.backscatter.add(keys, members, c.ltime[rows])
            self._mark(found, rows, counts >= self.slow_reflectors * 3, keys, lambda j: Finding(
                REFLECTION, "DDoS", "TCP", "reflection", "T1498.002",
                f"SYN-ACK reflection: {counts[j]} unsolicited SYN-ACKs to {keys[j]} "
                f"within {self.backscatter.window:g} s", blocks=False))
        rows = np.flatnonzero((c.spkts == 0) & (c.dpkts >= 1) & ~c.multicast)
        if len(rows):   # the other side of a reflection: unsolicited answers from many hosts to one
            keys = list(zip(c.saddr[rows].tolist(), c.proto[rows].tolist()))
            counts = self.answers.add(keys, c.daddr[rows].tolist(), c.ltime[rows])
            self._mark(found, rows, counts >= self.flood_sources, keys, lambda j: Finding(
                REFLECTION, "DDoS", keys[j][1].upper(), "reflection", "T1498.002",
                f"{keys[j][1].upper()} reflection: {counts[j]} hosts sent unsolicited answers to {keys[j][0]} "
                f"within {self.answers.window:g} s", blocks=False))
        syn_only = c.tcp & ((c.sflags & (_TH_SYN | _TH_ACK)) == _TH_SYN)
        fast = (c.spkts >= 50) & (
            (c.icmp & (c.srate > 100)) | (syn_only & (c.srate > 100))
            | (c.udp & (c.srate > 2000) & (c.dpkts * 10 < c.spkts)))
        rows = np.flatnonzero(fast)
        if len(rows):
            keys = list(zip(c.saddr[rows].tolist(), c.daddr[rows].tolist(), c.proto[rows].tolist()))
            self._mark(found, rows, np.ones(len(rows), dtype=bool), keys, lambda j: Finding(
                FLOOD_FLOW_RATE, "DoS", keys[j][2].upper(), _flood_technique(keys[j][2], int(c.sflags[rows[j]])),
                "T1498.001", f"{keys[j][2].upper()} flood in one flow: {c.srate[rows[j]]:,.0f} packets/s from "
                f"{keys[j][0]} to {keys[j][1]}"))

    # -- password guessing -----------------------------------------------------------------------
    def _brute_force(self, c, found) -> None:
        auth = c.tcp & np.isin(c.dport, list(AUTH_SERVICES)) & ~c.multicast
        rows = np.flatnonzero(auth)
        if not len(rows):
            return
        keys = list(zip(c.saddr[rows].tolist(), c.daddr[rows].tolist(), c.dport[rows].tolist()))
        sports, starts = c.sport[rows].tolist(), c.stime[rows]
        fast = self.sessions.add(keys, sports, starts)
        slow = self.slow_sessions.add(keys, sports, starts)
        quick = fast >= self.brute_sessions

        def guessing(j):
            source, dest, port = keys[j]
            sid, n, window = (BRUTE_FORCE, fast[j], self.sessions.window) if quick[j] else \
                (BRUTE_FORCE_SLOW, slow[j], self.slow_sessions.window)
            return Finding(sid, "Theft", "BruteForce", "brute_force", "T1110",
                           f"{AUTH_SERVICES[port]} password guessing: {n} connections from {source} to {dest}:{port} "
                           f"within {window:.0f} s")
        self._mark(found, rows, quick | (slow >= self.brute_slow_sessions), keys, guessing)

    # -- slow HTTP -------------------------------------------------------------------------------
    def _slow_http(self, c, found) -> None:
        web = c.tcp & np.isin(c.dport, WEB_PORTS)
        rows = np.flatnonzero(web)
        if not len(rows):
            return
        keys = list(zip(c.saddr[rows].tolist(), c.daddr[rows].tolist(), c.dport[rows].tolist()))
        closed = np.isin(c.state[rows], ("FIN", "RST")).tolist()
        counts = self.open.add(keys, c.sport[rows].tolist(), c.ltime[rows], closed)
        self._mark(found, rows, counts >= self.slow_http_connections, keys, lambda j: Finding(
            SLOW_HTTP, "DoS", "HTTP", "slow_http", "T1499.002",
            f"slow HTTP: {counts[j]} connections held open by {keys[j][0]} on {keys[j][1]}:{keys[j][2]} "
            f"within {self.open.window:.0f} s"))


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
