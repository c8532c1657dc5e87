"""DNS tunnels: data carried in query names, or raw data on the DNS port.

Selection is vectorised: UDP and TCP packets to or from port 53 (mDNS is 5353 and LLMNR 5355:
not selected). Each message's header and first question are parsed by one compiled pass
(iadm.inspect.dnsparse: strict bounds, compression pointers only backwards, no loops, labels
<= 63, names <= 255); what does not parse is counted by reason in `counters` and skipped.
DNS over TCP: the client's segments that start a message (length prefix) are parsed; other
segments are counted, never taken as evidence.

Per client and registered domain (the last two labels of the name; see dnsparse) the watcher
keeps the unique names queried in the last `window` seconds, each with the properties of its
labels left of the registered domain. Service and attribute names (a label starting with "_":
DNS-SD, SRV, DKIM, DMARC) and reverse names (in-addr.arpa, ip6.arpa) count as names but never as
encoded ones. Conditions, one sid each, per client and domain within the window:
  2100201 `encoded_names` unique names whose left part has bytes no host name has (outside
          letters, digits, '-', '_'): binary data in labels. block
  2100202 `long_names` unique names with a label of `long_label`+ characters in the left part,
          character entropy >= `long_entropy` bits and `long_digits`+ digits: base32/base64/hex-
          encoded data (words strung into long labels, as AMP cache names are, have no digits). block
  2100203 `unique_names` unique names with a mean left part of `unique_mean_len`+ characters and
          mean entropy >= `unique_entropy`: a slower or short-label tunnel. alert only
  2100204 `qtype_names` unique names, at least `qtype_share` of them asking for TXT, NULL, MX,
          CNAME, ANY or private types (what tunnels use to get room for answers). alert only
  2100205 `null_names` unique names asked with type NULL (an experimental type no application
          uses; iodine's default). block
  2100206 (per client) `raw_payloads` distinct UDP payloads to port 53 that are not DNS at all
          (shorter than a header, impossible opcode or counts, bad names) in the window: a raw
          tunnel. block when the server also answered with non-DNS (a two-way channel); payloads
          that the capture cut short are not evidence.
Python work is per unique name: at most `group_cap` per client and domain and `batch_cap` in
all per batch (a random-subdomain flood is counted in names_not_kept beyond that).
A client that itself answers DNS (a LAN resolver forwarding other hosts' queries) is never
named for a block: its findings are alerts, and the host behind it is found on its own queries.
A browser's lookups (CDN names, many domains, few names each), reverse lookups, DNS-SD, a zone
transfer (one AXFR question over TCP) stay far below every threshold. `allow_domains` lists
registered domains whose names are never counted (a site's own service that carries data in
names on purpose, such as an antivirus reputation lookup).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from iadm.inspect import dnsparse as P
from iadm.inspect._util import Once, ip_text
from iadm.inspect.finding import MITRE_DNS, MITRE_DNS_RAW, SIDS, Finding

TUNNEL_QTYPES = frozenset((5, 10, 15, 16, 255))     # CNAME, NULL, MX, TXT, ANY (and 65280-65534 private)
COUNTERS = ("messages", "queries", "responses", "cut", "bad_udp", "tcp_skipped", "non_dns", "names_not_kept",
            "domains_evicted") + tuple(P.STATUS_NAMES)


def domain_hash(domain: str) -> int:
    """The hash dnsparse gives a registered domain: FNV-1a of its lower-case text ("example.com")."""
    h = 0xCBF29CE484222325
    for c in domain.strip(".").encode().lower():
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class _Domain:
    """Unique names of one client under one registered domain within the window, with running sums."""
    __slots__ = ("names", "n", "plain", "encoded", "long", "null", "tunnel_types", "left_sum", "entropy_sum",
                 "last")

    def __init__(self):
        self.names: OrderedDict = OrderedDict()     # name hash -> (time, entry)
        self.n = self.plain = self.encoded = self.long = self.null = self.tunnel_types = 0
        self.left_sum = 0
        self.entropy_sum = 0.0
        self.last = 0.0

    def _add(self, e, sign):
        plain, encoded, long, null, tq, left, ent = e
        self.n += sign
        self.plain += sign * plain
        self.encoded += sign * encoded
        self.long += sign * long
        self.null += sign * null
        self.tunnel_types += sign * tq
        self.left_sum += sign * left
        self.entropy_sum += sign * ent

    def put(self, t, key, e, window):
        old = self.names.pop(key, None)
        if old is not None:
            self._add(old[1], -1)
        self.names[key] = (t, e)
        self._add(e, 1)
        self.last = t
        while self.names:
            k, (s, old) = next(iter(self.names.items()))
            if t - s <= window:
                break
            del self.names[k]
            self._add(old, -1)


class DnsWatch:
    """Stateful: `__call__(batch, decoded) -> list[Finding]` on every batch."""

    def __init__(self, window: float = 60.0, repeat: float = 300.0, encoded_names: int = 3, long_label: int = 24,
                 long_entropy: float = 3.5, long_digits: int = 2, long_names: int = 8, unique_names: int = 50,
                 unique_mean_len: float = 20.0, unique_entropy: float = 3.0, qtype_names: int = 10,
                 qtype_share: float = 0.5, null_names: int = 3, raw_payloads: int = 3, group_cap: int = 256,
                 batch_cap: int = 8192,
                 max_domains: int = 8192, names_buffer: int = 1 << 16, allow_domains=()):
        self.window = window
        self.long_digits = long_digits
        self.allow = np.array(sorted({domain_hash(d) for d in allow_domains}), dtype=np.uint64)
        self.encoded_names, self.long_label, self.long_entropy, self.long_names = (
            encoded_names, long_label, long_entropy, long_names)
        self.unique_names, self.unique_mean_len, self.unique_entropy = unique_names, unique_mean_len, unique_entropy
        self.qtype_names, self.qtype_share, self.null_names = qtype_names, qtype_share, null_names
        self.raw_payloads = raw_payloads
        self.group_cap = group_cap
        self.batch_cap = batch_cap
        self.max_domains = max_domains
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._names = np.zeros(names_buffer, dtype=np.uint8)
        self._once = Once(repeat)
        self._domains: OrderedDict = OrderedDict()     # (client hi, lo, reg hash) -> _Domain
        self._raw: OrderedDict = OrderedDict()         # (client hi, lo) -> [OrderedDict sig -> t, last server non-DNS]
        self._servers: OrderedDict = OrderedDict()     # (hi, lo) of hosts that answered DNS -> last time

    # ------------------------------------------------------------------ batch
    def __call__(self, batch, decoded) -> list[Finding]:
        if len(decoded) == 0:
            return []
        buf = batch.buf
        offsets = np.ascontiguousarray(batch.offsets, dtype=np.int64)
        caplen = np.ascontiguousarray(batch.caplen, dtype=np.int64)
        args = (decoded.proto, decoded.sport, decoded.dport, decoded.l4, 53, self._names)
        found = P.scan(buf, offsets, caplen, *args)
        if found[-1][2]:            # a source that hands out frames out of order: search sorted copies
            order = np.argsort(offsets, kind="stable")
            found = P.scan(buf, offsets[order], caplen[order], *args)
        sel, start, msg_end, claimed, cut, udp, toward, role, parsed, counts = found
        self.counters["bad_udp"] += int(counts[0])
        self.counters["tcp_skipped"] += int(counts[1])
        if len(sel) == 0:
            return []
        (status, flags, qtype, name_hash, reg_hash, labels, left_len, left_max, nonldh, digits, service, arpa,
         entropy, sig, name_at, name_len) = parsed
        self.counters["messages"] += len(sel)
        self.counters["cut"] += int(cut.sum())
        for code, count in enumerate(np.bincount(status, minlength=len(P.STATUS_NAMES)).tolist()):
            self.counters[P.STATUS_NAMES[code]] += count
        busy = np.flatnonzero(role)
        if len(busy) == 0:
            return []
        out: list[Finding] = []
        t_all = decoded.ts[sel]
        src_hi, src_lo, dst_hi, dst_lo = (decoded.src_hi[sel], decoded.src_lo[sel], decoded.dst_hi[sel],
                                          decoded.dst_lo[sel])
        roles = role[busy]
        answers = busy[roles == P.ANSWER]
        self.counters["responses"] += len(answers)
        if len(answers):
            last = float(t_all[answers[-1]])
            for i in np.unique(np.stack([src_hi[answers], src_lo[answers]], axis=1), axis=0).tolist():
                self._servers[tuple(i)] = last
                self._servers.move_to_end(tuple(i))
            while len(self._servers) > 4096:
                self._servers.popitem(last=False)
        # --- raw: payloads on UDP 53 that are not DNS
        raw = busy[(roles == P.RAW_CLIENT) | (roles == P.RAW_SERVER)]
        if len(raw):
            self.counters["non_dns"] += len(raw)
            self._raw_rows(raw, toward, t_all, src_hi, src_lo, dst_hi, dst_lo, sig, sel, decoded, claimed, out)
        # --- queries
        q = busy[roles == P.QUERY]
        self.counters["queries"] += len(q)
        if len(q) and len(self.allow):
            q = q[~np.isin(reg_hash[q], self.allow)]
        if len(q):
            self._query_rows(q, t_all, src_hi, src_lo, dst_hi, dst_lo, reg_hash, name_hash, qtype, left_len,
                             left_max, nonldh, digits, service, arpa, entropy, name_at, name_len, sel, decoded, udp,
                             buf, start, msg_end, claimed, out)
        return out

    # ------------------------------------------------------------------ raw tunnels
    def _raw_rows(self, raw, toward, t_all, src_hi, src_lo, dst_hi, dst_lo, sig, sel, decoded, claimed, out):
        for i in raw.tolist()[:4096]:      # a flood of garbage to port 53: a sample is enough
            t = float(t_all[i])
            if toward[i]:
                client, server = (int(src_hi[i]), int(src_lo[i])), (int(dst_hi[i]), int(dst_lo[i]))
            else:
                client, server = (int(dst_hi[i]), int(dst_lo[i])), (int(src_hi[i]), int(src_lo[i]))
            state = self._raw.get(client)
            if state is None:
                state = self._raw[client] = [OrderedDict(), -1e18, 0]
                if len(self._raw) > self.max_domains:
                    self._raw.popitem(last=False)
            self._raw.move_to_end(client)
            sigs = state[0]
            if not toward[i]:
                state[1] = t
                state[2] += 1
                continue
            sigs.pop(int(sig[i]), None)
            sigs[int(sig[i])] = t
            while sigs and t - next(iter(sigs.values())) > self.window:
                sigs.popitem(last=False)
            if len(sigs) >= self.raw_payloads:
                two_way = t - state[1] <= self.window
                resolver = client in self._servers
                if self._once((2100206, client), t):
                    row = sel[i]
                    out.append(Finding(
                        ts=t, technique="dns_tunnel", mitre=MITRE_DNS_RAW, category="Theft", subcategory="Tunnel",
                        sid=2100206, signature=SIDS[2100206], src_mac=int(decoded.src_mac[row]),
                        src_ip=ip_text(*client), dest_ip=ip_text(*server), proto="udp",
                        src_port=int(decoded.sport[row]), dest_port=int(decoded.dport[row]),
                        evidence={"non_dns_payloads": len(sigs), "window_s": self.window,
                                  "server_non_dns": state[2], "two_way": bool(two_way),
                                  "payload_bytes": int(claimed[i]), "client_answers_dns": resolver},
                        severity=1 if two_way else 2, block=bool(two_way and not resolver)))

    # ------------------------------------------------------------------ names
    def _query_rows(self, q, t_all, src_hi, src_lo, dst_hi, dst_lo, reg_hash, name_hash, qtype, left_len, left_max,
                    nonldh, digits, service, arpa, entropy, name_at, name_len, sel, decoded, udp, buf, start, msg_end,
                    claimed, out):
        order = np.lexsort((t_all[q], name_hash[q], reg_hash[q], src_lo[q], src_hi[q]))
        q = q[order]
        hi, lo, rh, nh = src_hi[q], src_lo[q], reg_hash[q], name_hash[q]
        new_group = np.ones(len(q), dtype=bool)
        new_group[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1]) | (rh[1:] != rh[:-1])
        first_name = new_group.copy()
        first_name[1:] |= nh[1:] != nh[:-1]
        q, new_group = q[first_name], new_group[first_name]
        bounds = np.flatnonzero(np.r_[new_group, True])
        exempt = (service[q] > 0) | (arpa[q] > 0)
        plain = ~exempt
        encoded = plain & (nonldh[q] > 0)
        long = (plain & (left_max[q] >= self.long_label) & (entropy[q] >= self.long_entropy)
                & (digits[q] >= self.long_digits))
        null = qtype[q] == 10
        tq = plain & (np.isin(qtype[q], list(TUNNEL_QTYPES)) | ((qtype[q] >= 65280) & (qtype[q] <= 65534)))
        cols = np.stack([plain, encoded, long, null, tq], axis=1).astype(np.int64).tolist()
        lefts = np.where(plain, left_len[q], 0).tolist()
        ents = np.where(plain, entropy[q], 0.0).astype(np.float64).tolist()
        times = t_all[q].tolist()
        hashes = name_hash[q].tolist()
        budget = self.batch_cap
        for g in range(len(bounds) - 1):
            lo, hi = bounds[g], bounds[g + 1]
            take = min(hi - lo, self.group_cap, budget)
            self.counters["names_not_kept"] += hi - lo - take
            if take <= 0:
                continue
            budget -= take
            rows = sorted(range(lo, lo + take), key=times.__getitem__)
            r0 = q[rows[0]]
            dkey = (int(src_hi[r0]), int(src_lo[r0]), int(reg_hash[r0]))
            dom = self._domains.get(dkey)
            if dom is None:
                dom = self._domains[dkey] = _Domain()
                if len(self._domains) > self.max_domains:
                    self._domains.popitem(last=False)
                    self.counters["domains_evicted"] += 1
            self._domains.move_to_end(dkey)
            for pos, r in enumerate(rows):
                c = cols[r]
                dom.put(times[r], hashes[r], (c[0], c[1], c[2], c[3], c[4], lefts[r], ents[r]), self.window)
                hit = self._conditions(dom)
                for sid, block in hit:
                    if self._once((sid, dkey), times[r]):
                        out.append(self._name_finding(sid, block, dom, dkey, q[r], q[rows[max(0, pos - 2):pos + 1]],
                                                      t_all, dst_hi, dst_lo,
                                                      qtype, sel, decoded, udp, buf, start, msg_end, claimed,
                                                      name_at, name_len))

    def _conditions(self, d: _Domain):
        hit = []
        if d.encoded >= self.encoded_names:
            hit.append((2100201, True))
        if d.long >= self.long_names:
            hit.append((2100202, True))
        if d.null >= self.null_names:
            hit.append((2100205, True))
        if d.plain >= self.qtype_names and d.tunnel_types >= self.qtype_share * d.plain:
            hit.append((2100204, False))
        if (d.plain >= self.unique_names and d.left_sum >= self.unique_mean_len * d.plain
                and d.entropy_sum >= self.unique_entropy * d.plain):
            hit.append((2100203, False))
        return hit

    def _name_finding(self, sid, block, dom, dkey, i, group_rows, t_all, dst_hi, dst_lo, qtype, sel, decoded, udp, buf,
                      start, msg_end, claimed, name_at, name_len) -> Finding:
        client = dkey[:2]
        resolver = client in self._servers
        samples = [self._name_text(r, buf, start, msg_end, claimed, name_at, name_len)
                   for r in list(group_rows[-3:])]
        name = samples[-1] if samples else ""
        labels = name.split(".")
        row = sel[i]
        plain = max(dom.plain, 1)
        evidence = {"domain": ".".join(labels[-2:]), "unique_names": dom.n, "window_s": self.window,
                    "encoded_names": dom.encoded, "long_label_names": dom.long, "null_queries": dom.null,
                    "tunnel_qtype_names": dom.tunnel_types, "mean_left_len": round(dom.left_sum / plain, 1),
                    "mean_entropy": round(dom.entropy_sum / plain, 2), "qtype": int(qtype[i]),
                    "sample_names": samples, "client_answers_dns": resolver}
        return Finding(ts=float(t_all[i]), technique="dns_tunnel", mitre=MITRE_DNS, category="Theft",
                       subcategory="Tunnel", sid=sid, signature=SIDS[sid], src_mac=int(decoded.src_mac[row]),
                       src_ip=ip_text(*client), dest_ip=ip_text(dst_hi[i], dst_lo[i]),
                       proto="udp" if udp[i] else "tcp", src_port=int(decoded.sport[row]),
                       dest_port=int(decoded.dport[row]), evidence=evidence, severity=1 if block else 2,
                       block=bool(block and not resolver))

    def _name_text(self, i, buf, start, msg_end, claimed, name_at, name_len) -> str:
        if name_at[i] >= 0:
            raw = self._names[name_at[i]:name_at[i] + name_len[i]].tobytes()
        else:                                   # the batch's names did not all fit: parse this one again
            one = np.zeros(256, dtype=np.uint8)
            res = P.parse(buf, start[i:i + 1], msg_end[i:i + 1], claimed[i:i + 1], one)
            raw = one[res[14][0]:res[14][0] + res[15][0]].tobytes() if res[14][0] >= 0 else b""
        return raw.decode("ascii", "backslashreplace")
