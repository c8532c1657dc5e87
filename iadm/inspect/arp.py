"""ARP spoofing: who claims which address, and whether anybody asked.

Every ARP packet (selected from the decoded columns with numpy; fields read from batch.buf at
Decoded.l4) is one claim: "IP address X is at MAC M" (sender protocol and hardware address).
A claim is one of
  request      M asks for another address and gives its own (sender fields) on the way
  announcement gratuitous ARP: sender IP = target IP (request or reply): M announces X itself
  solicited    a reply for X to a host that asked for X within `request_window` seconds
  unsolicited  any other reply: nobody asked, yet M says where X is (the ARP spoofing tool's packet)
  probe        sender IP 0.0.0.0 (RFC 5227 address probe, DHCP clients): claims nothing
Per address the watcher keeps every MAC that claimed it (first/last time, how often by each kind)
and per MAC when it last sent ARP (its activity).

Conditions (one sid each; the MAC named is always the Ethernet source of the offending frame, the
spoofer, never the address's owner):
  2100001 an unsolicited reply claiming X while another MAC that established X (by requests,
          announcements or solicited replies) is still active (ARP within `active` s); or, when
          the owner speaks up again, a rival that had claimed X unsolicited. block.
  2100002 an unsolicited reply claiming a gateway address by a MAC that has never announced or
          answered for that address itself, when another MAC owns it or the claimant owns
          another address. block. Gateways: the configured list; otherwise learned, simply: the
          address that the most distinct hosts ask for (at least `gateway_min_askers`), which on a
          LAN is the router (every host resolves its default gateway).
  2100003 one MAC claims `multi_count` or more addresses (that it never announced or answered for)
          in unsolicited replies within `multi_window` s. block.
  2100004 the ARP sender MAC is not the frame's Ethernet source. Not a block on its own (some
          bridges rewrite one of the two).
  2100005 two MACs both answer or announce one address while both are active, and neither ever
          claimed it unsolicited (an address conflict, or a spoofer that only races replies or
          forges announcements): the newer claimant is named; block only when the address is a
          gateway's and the newer claimant announced it (gratuitous ARP for the router).
  2100006 an ARP sweep: one MAC asks for `sweep_count` or more distinct addresses within
          `sweep_window` s (32 in 10 s; arp-scan and nmap -sn ask for a /24 in a second or two; a
          host asks for its gateway and the few peers it talks to). Host discovery, often the
          first step of spoofing, but also what inventory apps and routers do: an alert, no block.
Not findings: gratuitous announcements of an address nobody else holds, probes, a router
answering (solicited or not) for an address it announced or answered for itself, a host asking
often, an address that moves to a new MAC after its old owner went quiet (DHCP reassignment).
Activity is seen from ARP alone (cheap: no per-packet work outside ARP); a host that holds an
address but has sent no ARP for `active` seconds counts as gone.
"""
from __future__ import annotations

import numpy as np

from iadm.capture.decode import PROTO_ARP
from iadm.inspect._util import Once, ipv4_text, ipv4_value
from iadm.inspect.finding import MITRE_ARP, MITRE_ARP_SWEEP, SIDS, Finding, format_mac

REQUEST, ANNOUNCE, SOLICITED, UNSOLICITED = "request", "announcement", "solicited", "unsolicited"
COUNTERS = ("arp", "requests", "replies", "announcements", "probes", "solicited", "unsolicited", "not_ethernet_ipv4",
            "other_op", "no_offset", "repeats")


class _Claim:
    __slots__ = ("first", "last", "solicited", "unsolicited", "announced", "requested", "forged", "actor")

    def __init__(self, t: float, actor: int):
        self.first = self.last = t
        self.solicited = self.unsolicited = self.announced = self.requested = self.forged = 0
        self.actor = actor

    @property
    def established(self) -> bool:
        return self.solicited + self.announced + self.requested > 0

    @property
    def answered_itself(self) -> bool:
        return self.solicited + self.announced > 0


class ArpWatch:
    """Stateful: call it on every batch, `__call__(batch, decoded) -> list[Finding]` (usually empty)."""

    def __init__(self, gateways=(), request_window: float = 3.0, active: float = 300.0, multi_count: int = 2,
                 multi_window: float = 60.0, gateway_min_askers: int = 2, learn_gateway: bool = True,
                 repeat: float = 60.0, forget: float = 3600.0, sweep_count: int = 32, sweep_window: float = 10.0):
        self.gateways = {ipv4_value(g) for g in gateways}
        self.request_window = request_window
        self.active = active
        self.multi_count = multi_count
        self.multi_window = multi_window
        self.gateway_min_askers = gateway_min_askers
        self.learn_gateway = learn_gateway
        self.forget = forget
        self.sweep_count = sweep_count
        self.sweep_window = sweep_window
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._once = Once(repeat)
        self._claims: dict[int, dict[int, _Claim]] = {}   # address -> MAC -> claim
        self._seen: dict[int, float] = {}                  # MAC -> last ARP sent
        self._requests: dict[tuple, float] = {}            # (asked-for address, asker's address) -> time
        self._askers: dict[int, set] = {}                  # address -> distinct addresses that asked for it
        self._learned: tuple[int, int] = (0, 0)            # (address, askers) the most asked-for
        self._unsolicited: dict[int, dict[int, float]] = {}  # actor MAC -> address -> last unsolicited claim
        self._asked: dict[int, dict[int, float]] = {}        # actor MAC -> address asked for -> last time
        self._pruned = None

    # ------------------------------------------------------------------ batch
    def __call__(self, batch, decoded) -> list[Finding]:
        sel = np.flatnonzero(decoded.proto == PROTO_ARP)
        if len(sel) == 0:
            return []
        at = decoded.l4[sel].astype(np.int64)
        good = at >= 0
        self.counters["no_offset"] += int((~good).sum())
        sel, at = sel[good], at[good]
        self.counters["arp"] += len(sel)
        # The decoder checked 28 bytes of an IPv4-over-something ARP header are there (ptype 0x0800, plen 4).
        rows = batch.buf[at[:, None] + np.arange(28)].astype(np.uint64)
        ether = (rows[:, 0] == 0) & (rows[:, 1] == 1) & (rows[:, 4] == 6)
        self.counters["not_ethernet_ipv4"] += int((~ether).sum())
        rows, sel = rows[ether], sel[ether]
        if len(sel) == 0:
            return []
        op = (rows[:, 6] << np.uint64(8)) | rows[:, 7]
        sha, tha = _be(rows[:, 8:14]), _be(rows[:, 18:24])
        spa, tpa = _be(rows[:, 14:18]), _be(rows[:, 24:28])
        eth = decoded.src_mac[sel]
        ts = decoded.ts[sel]
        if len(sel) > 256:       # a storm: the same packet again within a second is one claim (its first time)
            key = np.stack([eth, op, sha, spa, tha, tpa, np.floor(ts).astype(np.uint64)], axis=1)
            _, first = np.unique(key, axis=0, return_index=True)
            if len(first) < len(sel):
                first.sort()
                self.counters["repeats"] += len(sel) - len(first)
                eth, op, sha, spa, tha, tpa, ts = eth[first], op[first], sha[first], spa[first], tha[first], \
                    tpa[first], ts[first]
        out: list[Finding] = []
        for t, e, o, sm, sp, tm, tp in zip(ts.tolist(), eth.tolist(), op.tolist(), sha.tolist(), spa.tolist(),
                                            tha.tolist(), tpa.tolist()):
            self._packet(t, e, o, sm, sp, tm, tp, out)
        self._prune(float(ts[-1]))
        return out

    # ------------------------------------------------------------------ one packet
    def _packet(self, t, eth, op, sha, spa, tha, tpa, out):
        actor = eth or sha
        self._seen[actor] = t
        if sha:
            self._seen[sha] = t
        if eth and sha != eth and self._once((2100004, eth, sha), t):
            out.append(self._finding(t, 2100004, eth, spa, tpa, severity=2, block=False,
                                     evidence={"arp_sender_mac": format_mac(sha), "ethernet_source": format_mac(eth),
                                               "claimed_ip": ipv4_text(spa), "op": op}))
        if op == 1:
            self.counters["requests"] += 1
            if spa != tpa:
                self._sweep(t, actor, spa, tpa, out)
        elif op == 2:
            self.counters["replies"] += 1
        else:
            self.counters["other_op"] += 1
            return
        if spa == 0:                         # address probe: asks, claims nothing
            self.counters["probes"] += 1
            if op == 1:
                self._requests[(tpa, 0)] = t
            return
        if spa == tpa:
            kind = ANNOUNCE
            self.counters["announcements"] += 1
        elif op == 1:
            kind = REQUEST
            self._requests[(tpa, spa)] = t
            self._learn_asker(tpa, spa)
        else:
            asked = self._requests.get((spa, tpa))
            if asked is None:
                asked = self._requests.get((spa, 0))
            kind = SOLICITED if asked is not None and t - asked <= self.request_window else UNSOLICITED
            self.counters["solicited" if kind == SOLICITED else "unsolicited"] += 1
        self._claim(t, spa, sha or actor, actor, kind, tpa, tha, out)

    def _claim(self, t, ip, mac, actor, kind, tpa, tha, out):
        holders = self._claims.setdefault(ip, {})
        me = holders.get(mac)
        if me is None:
            me = holders[mac] = _Claim(t, actor)
        rivals = [(m, c) for m, c in holders.items()
                  if m != mac and t - max(self._seen.get(m, -1e18), self._seen.get(c.actor, -1e18)) <= self.active]
        owners = [(m, c) for m, c in rivals if c.established]
        gateway = self._is_gateway(ip)

        def base():        # evidence text is made only for a finding that is said
            return {"claimed_ip": ipv4_text(ip), "claim": kind, "target_ip": ipv4_text(tpa),
                    "target_mac": format_mac(tha), "sender_mac": format_mac(mac)}
        if kind == UNSOLICITED:
            me.unsolicited += 1
            me.forged += 1
            if owners:
                m, c = max(owners, key=lambda mc: mc[1].last)
                self._say(out, t, 2100001, actor, ip, tpa, 1, True,
                          lambda: {**base(), "owner_mac": format_mac(m), "owner_last_seen": round(t - c.last, 3),
                                   "unsolicited_claims": me.unsolicited})
            if gateway and not me.answered_itself:
                others = [(m, c) for m, c in holders.items() if m != mac and c.established]
                owns_other = any(a != ip and c.established for a, c in self._owned(mac))
                if others or owns_other:
                    self._say(out, t, 2100002, actor, ip, tpa, 1, True,
                              lambda: {**base(), "gateway": ipv4_text(ip),
                                       "gateway_mac": format_mac(others[0][0]) if others else "",
                                       "gateway_source": "configured" if ip in self.gateways else "learned"})
            if not me.answered_itself:
                mine = self._unsolicited.setdefault(actor, {})
                mine[ip] = t
                recent = {a: s for a, s in mine.items() if t - s <= self.multi_window}
                self._unsolicited[actor] = recent
                if len(recent) >= self.multi_count:
                    self._say(out, t, 2100003, actor, ip, tpa, 1, True,
                              lambda: {**base(), "addresses": sorted(ipv4_text(a) for a in recent),
                                       "window_s": self.multi_window}, key=(2100003, actor))
        else:
            if kind == SOLICITED:
                me.solicited += 1
            elif kind == ANNOUNCE:
                me.announced += 1
            else:
                me.requested += 1
            if rivals:
                spoofers = [(m, c) for m, c in rivals if c.unsolicited]
                if me.unsolicited:
                    m, c = rivals[0]
                    self._say(out, t, 2100001, actor, ip, tpa, 1, True,
                              lambda: {**base(), "owner_mac": format_mac(m), "unsolicited_claims": me.unsolicited})
                elif spoofers:
                    for m, c in spoofers:
                        self._say(out, t, 2100001, c.actor, ip, tpa, 1, True,
                                  lambda m=m, c=c: {**base(), "claim": "earlier unsolicited",
                                                    "sender_mac": format_mac(m), "owner_mac": format_mac(mac),
                                                    "owner_claim": kind, "unsolicited_claims": c.unsolicited})
                else:
                    m, c = max(rivals, key=lambda mc: mc[1].first)
                    newer_is_me = me.first >= c.first
                    name_mac, name = (mac, me) if newer_is_me else (m, c)
                    other_mac = m if newer_is_me else mac
                    forged = gateway and name.announced > 0
                    self._say(out, t, 2100005, name.actor, ip, tpa, 1 if forged else 2, forged,
                              lambda: {**base(), "sender_mac": format_mac(name_mac),
                                       "other_mac": format_mac(other_mac), "gateway": gateway})
        me.last = t
        me.actor = actor

    def _sweep(self, t, actor, spa, tpa, out):
        """Distinct addresses one MAC asked for within the sweep window (probes included: a
        scanner may ask from 0.0.0.0)."""
        asked = self._asked.get(actor)
        if asked is None:
            if len(self._asked) >= 4096:   # bounded: forget who asked what (a storm of forged senders)
                self._asked.clear()
            asked = self._asked[actor] = {}
        asked.pop(tpa, None)   # kept in time order: the stale ones leave from the front
        asked[tpa] = t
        while t - next(iter(asked.values())) > self.sweep_window:
            del asked[next(iter(asked))]
        if len(asked) >= self.sweep_count:
            targets = sorted(asked)
            self._say(out, t, 2100006, actor, spa, tpa, 2, False,
                      lambda: {"addresses_asked": len(targets), "window_s": self.sweep_window,
                               "first": ipv4_text(targets[0]), "last": ipv4_text(targets[-1]),
                               "sender_ip": ipv4_text(spa), "sender_mac": format_mac(actor)},
                      key=(2100006, actor))

    # ------------------------------------------------------------------ helpers
    def _owned(self, mac):
        for ip, holders in self._claims.items():
            c = holders.get(mac)
            if c is not None:
                yield ip, c

    def _learn_asker(self, target, asker):
        askers = self._askers.get(target)
        if askers is None:
            if len(self._askers) >= 4096:     # an ARP sweep: enough targets known to find the most asked
                return
            askers = self._askers[target] = set()
        if asker in askers or len(askers) >= 256:
            return
        askers.add(asker)
        if len(askers) > self._learned[1]:
            self._learned = (target, len(askers))

    def _is_gateway(self, ip) -> bool:
        if ip in self.gateways:
            return True
        return (self.learn_gateway and self._learned[0] == ip and self._learned[1] >= self.gateway_min_askers)

    @property
    def learned_gateway(self) -> str | None:
        ip, n = self._learned
        return ipv4_text(ip) if n >= self.gateway_min_askers else None

    def _say(self, out, t, sid, actor, ip, tpa, severity, block, evidence, key=None):
        if self._once(key or (sid, actor, ip), t):
            out.append(self._finding(t, sid, actor, ip, tpa, severity, block, evidence()))

    @staticmethod
    def _finding(t, sid, actor, ip, tpa, severity, block, evidence) -> Finding:
        if sid == 2100006:   # a sweep: host discovery by the sender's own address
            return Finding(ts=t, technique="arp_sweep", mitre=MITRE_ARP_SWEEP, category="Reconnaissance",
                           subcategory="ARP_Sweep", sid=sid, signature=SIDS[sid], src_mac=int(actor),
                           src_ip=ipv4_text(ip) if ip else "", dest_ip="", proto="arp", evidence=evidence,
                           severity=severity, block=block)
        # src_ip stays empty: the sender address of a forged ARP is the one it steals, and the
        # spoofer is mitigated by its MAC; the stolen address is evidence["claimed_ip"].
        return Finding(ts=t, technique="arp_spoofing", mitre=MITRE_ARP, category="Theft", subcategory="ARP_Spoofing",
                       sid=sid, signature=SIDS[sid], src_mac=int(actor), src_ip="", dest_ip=ipv4_text(tpa),
                       proto="arp", evidence=evidence, severity=severity, block=block)

    def _prune(self, now: float) -> None:
        if self._pruned is not None and now - self._pruned < 60.0:
            return
        self._pruned = now
        self._requests = {k: s for k, s in self._requests.items() if now - s <= self.request_window}
        for ip in list(self._claims):
            holders = {m: c for m, c in self._claims[ip].items() if now - c.last <= self.forget}
            if holders:
                self._claims[ip] = holders
            else:
                del self._claims[ip]
        self._seen = {m: s for m, s in self._seen.items() if now - s <= self.forget}
        self._unsolicited = {a: {ip: s for ip, s in d.items() if now - s <= self.multi_window}
                             for a, d in self._unsolicited.items()}
        self._unsolicited = {a: d for a, d in self._unsolicited.items() if d}
        self._asked = {a: d for a, d in ((a, {ip: s for ip, s in d.items() if now - s <= self.sweep_window})
                                         for a, d in self._asked.items()) if d}


def _be(cols: np.ndarray) -> np.ndarray:
    """Big-endian unsigned integers from columns of bytes (uint64)."""
    out = np.zeros(len(cols), dtype=np.uint64)
    for j in range(cols.shape[1]):
        out = (out << np.uint64(8)) | cols[:, j]
    return out
