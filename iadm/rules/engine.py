"""The rule engine: a rule set evaluated over batches of flow records (or packets), vectorised.

Each rule becomes a boolean mask over the batch: protocol, address sets
(CIDR tests on integer addresses, computed once per distinct address),
port sets, feature predicates and TCP flags; `<>` rules test both
orientations. Then, in order:
- thresholds and detection filters, per rule and tracked address, over the
  records' `ltime` (packets: their timestamps), with state kept across batches;
- pass rules: a record that matches any pass rule loses its alert and drop matches;
- the matches of each record, sorted by priority (1 first) then sid.
Per-rule hit counters count what survives. `reload()` parses the new files
completely before swapping: a file with errors raises and the old rules stay.
"""
from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit

from iadm.capture.decode import Decoded
from iadm.columns import text_spans
from iadm.flows.records import addresses, proto_name
from iadm.rules.model import AddressSet, PortSet, Rule
from iadm.rules.parser import load_rules

_OPS = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal, "==": np.equal,
        "!=": np.not_equal}
_PROTO_FAMILY = {"tcp": ("tcp",), "udp": ("udp",), "icmp": ("icmp", "ipv6-icmp")}


@dataclass
class _Addresses:
    """A column of addresses as distinct values (codes) with integer IPv4 forms."""
    codes: np.ndarray          # per row, index into uniques
    v4: np.ndarray             # uint32 per unique (0 for non-IPv4)
    is_v4: np.ndarray          # bool per unique
    uniques: list              # text per unique (for the IPv6 fallback)

    @classmethod
    def from_text(cls, column) -> "_Addresses":
        codes, uniques = pd.factorize(pd.Series(column), use_na_sentinel=False)
        if uniques.dtype == object and any(not isinstance(u, str) for u in uniques):
            uniques = pd.Index([str(u) for u in uniques], dtype=object)   # numbers, NaN: compared as text
        offsets, data, valid = text_spans(uniques)
        v4 = np.zeros(len(uniques), dtype=np.uint32)
        is_v4 = np.zeros(len(uniques), dtype=bool)
        _parse_v4(offsets, data, v4, is_v4)
        is_v4 &= valid
        return cls(np.asarray(codes), v4, is_v4, uniques)

    def matches(self, spec: AddressSet) -> np.ndarray:
        if not spec.include and not spec.exclude:
            return np.ones(len(self.codes), dtype=bool)
        per_unique = np.ones(len(self.v4), dtype=bool) if not spec.include else self._inside(spec.include)
        if spec.exclude:
            per_unique &= ~self._inside(spec.exclude)
        return per_unique[self.codes]

    def _inside(self, networks) -> np.ndarray:
        hit = np.zeros(len(self.v4), dtype=bool)
        for net in networks:
            if net.version == 4:
                mask = np.uint32((0xFFFFFFFF << (32 - net.prefixlen)) & 0xFFFFFFFF)
                hit |= self.is_v4 & ((self.v4 & mask) == np.uint32(int(net.network_address)))
            else:
                for i in np.flatnonzero(~self.is_v4):
                    try:
                        hit[i] |= ipaddress.ip_address(str(self.uniques[i])) in net
                    except ValueError:
                        pass
        return hit


@njit(cache=True, nogil=True)
def _parse_v4(offsets, data, v4, ok):
    """Strict dotted quads, as inet_pton(AF_INET) reads them: four decimal octets of 1-3 digits,
    each at most 255, no leading zero; anything else (IPv6, MACs, blanks) is not IPv4."""
    for i in range(len(v4)):
        start, end = offsets[i], offsets[i + 1]
        value, octet, digits, parts, good = 0, 0, 0, 0, True
        for p in range(start, end + 1):
            c = data[p] if p < end else 46   # a '.' closes the last octet
            if 48 <= c <= 57:
                if digits > 0 and octet == 0:   # a leading zero
                    good = False
                    break
                octet = octet * 10 + (c - 48)
                digits += 1
                if digits > 3 or octet > 255:
                    good = False
                    break
            elif c == 46 and digits > 0 and parts < 4:
                value = (value << 8) | octet
                parts += 1
                octet, digits = 0, 0
            else:
                good = False
                break
        if good and parts == 4:
            v4[i] = value
            ok[i] = True


def _ports(column) -> np.ndarray:
    """Ports as integers; hex strings (Bot-IoT's ARP/ICMP rows) and blanks become -1, matching no port."""
    return pd.to_numeric(pd.Series(column), errors="coerce").fillna(-1).to_numpy(np.int64)


def _port_match(ports: np.ndarray, spec: PortSet) -> np.ndarray:
    def inside(ranges):
        hit = np.zeros(len(ports), dtype=bool)
        for lo, hi in ranges:
            hit |= (ports >= lo) & (ports <= hi)
        return hit
    if not spec.include and not spec.exclude:
        return np.ones(len(ports), dtype=bool)       # any: even ports we could not read
    ok = inside(spec.include) if spec.include else ports >= 0
    if spec.exclude:
        ok &= ~inside(spec.exclude)
    return ok


class _Batch:
    """The columns a rule set reads, from records or from decoded packets, with per-batch caches:
    many rules share a protocol, an address set, a port set or a feature column."""

    def __init__(self, proto, saddr: _Addresses, daddr: _Addresses, sport, dport, times, flags, features):
        self.proto_codes, self.proto_names = pd.factorize(pd.Series(proto).astype(str))
        self.saddr, self.daddr = saddr, daddr
        self.sport, self.dport = sport, dport
        self.times = times
        self.flags = flags          # TCP flags of the source side, or None
        self.features = features    # the DataFrame for predicates, or None for packets
        self.n = len(sport)
        self._cache = {}

    def cached(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def proto_mask(self, proto: str) -> np.ndarray | None:
        if proto == "ip":
            return None
        wanted = [i for i, name in enumerate(self.proto_names) if name in _PROTO_FAMILY[proto]]
        return self.cached(("proto", proto), lambda: np.isin(self.proto_codes, wanted))

    def address_mask(self, side: str, spec: AddressSet) -> np.ndarray | None:
        if not spec.include and not spec.exclude:
            return None
        column = self.saddr if side == "src" else self.daddr
        return self.cached(("addr", side, spec), lambda: column.matches(spec))

    def port_mask(self, side: str, spec: PortSet) -> np.ndarray | None:
        if not spec.include and not spec.exclude:
            return None
        column = self.sport if side == "src" else self.dport
        return self.cached(("port", side, spec), lambda: _port_match(column, spec))

    def feature(self, name: str) -> np.ndarray | None:
        if self.features is None or name not in self.features:
            return None
        return self.cached(("feature", name), lambda: pd.to_numeric(self.features[name], errors="coerce")
                           .to_numpy(np.float64))

    @classmethod
    def from_records(cls, frame: pd.DataFrame) -> "_Batch":
        flags = frame["sflags"].to_numpy(np.int64) if "sflags" in frame else None
        times = frame["ltime"].to_numpy(np.float64) if "ltime" in frame else np.zeros(len(frame))
        return cls(frame["proto"].to_numpy(), _Addresses.from_text(frame["saddr"]),
                   _Addresses.from_text(frame["daddr"]), _ports(frame["sport"]), _ports(frame["dport"]),
                   times, flags, frame)

    @classmethod
    def from_packets(cls, packets: Decoded) -> "_Batch":
        numbers, codes = np.unique(packets.proto, return_inverse=True)
        names = np.array([proto_name(int(p)) for p in numbers], dtype=object)[codes.ravel()]
        return cls(names, _Addresses.from_text(addresses(packets.src_hi, packets.src_lo)),
                   _Addresses.from_text(addresses(packets.dst_hi, packets.dst_lo)),
                   packets.sport.astype(np.int64), packets.dport.astype(np.int64), packets.ts,
                   packets.tcp_flags.astype(np.int64), None)


def _and(*masks):
    """AND of the masks that are not None (None: no constraint); None if all are.

    May return one of its arguments (a cached mask): masks are never written after they are built.
    """
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else (out & m)
    return out


class RuleSet:
    """Rules in evaluation order (priority, then sid), ready to run."""

    def __init__(self, rules: list[Rule], sources: tuple = ()):
        self.rules = sorted(rules, key=lambda r: (r.priority, r.sid or 1 << 62, r.line))
        self.sources = sources
        self.hits = np.zeros(len(self.rules), dtype=np.int64)
        self._threshold_state = [dict() for _ in self.rules]

    def __len__(self) -> int:
        return len(self.rules)


def _flags_match(flags, spec) -> np.ndarray:
    """Snort's semantics: the ignored bits are masked off first; exact compares all eight bits."""
    mode, bits, ignored = spec
    flags = flags & 0xFF & ~ignored
    if mode == "exact":
        return flags == bits
    if mode == "all":
        return (flags & bits) == bits
    if mode == "none":
        return (flags & bits) == 0
    return (flags & bits) != 0


def _rule_mask(rule: Rule, b: _Batch) -> np.ndarray:
    everything = np.ones(b.n, dtype=bool)
    mask = b.proto_mask(rule.proto)
    if mask is not None and not mask.any():
        return mask
    forward = _and(b.address_mask("src", rule.src), b.port_mask("src", rule.sport),
                   b.address_mask("dst", rule.dst), b.port_mask("dst", rule.dport))
    if rule.direction == "<>" and forward is not None:
        backward = _and(b.address_mask("dst", rule.src), b.port_mask("dst", rule.sport),
                        b.address_mask("src", rule.dst), b.port_mask("src", rule.dport))
        forward = forward | (everything if backward is None else backward)
    mask = _and(mask, forward)
    if rule.flags is not None:
        if b.flags is None:
            return np.zeros(b.n, dtype=bool)  # records without TCP flags cannot satisfy a flags option
        mask = _and(mask, b.cached(("flags", rule.flags), lambda: _flags_match(b.flags, rule.flags)))
    for pred in rule.predicates:
        values = b.feature(pred.feature)
        if values is None:
            return np.zeros(b.n, dtype=bool)
        mask = _and(mask, _OPS[pred.op](values, pred.value))
    return everything if mask is None else mask


_THRESHOLD_KINDS = {"limit": 0, "threshold": 1, "both": 2, "detection_filter": 3}


def _apply_threshold(rule: Rule, rows: np.ndarray, b: _Batch, state: dict) -> np.ndarray:
    """Which of a rule's matching rows survive its threshold (Snort semantics), in time order.
    state: tracked address -> (window start, count, fired), kept across batches."""
    t = rule.threshold
    track = b.saddr if t.track == "by_src" else b.daddr
    order = rows[np.argsort(b.times[rows], kind="stable")]
    codes, which = np.unique(track.codes[order], return_inverse=True)
    keys = [str(k) for k in track.uniques[codes].tolist()] if len(codes) else []
    start, count = np.zeros(len(keys)), np.zeros(len(keys), dtype=np.int64)
    fired, known = np.zeros(len(keys), dtype=bool), np.zeros(len(keys), dtype=bool)
    for j, key in enumerate(keys):
        held = state.get(key)
        if held is not None:
            start[j], count[j], fired[j], known[j] = held[0], held[1], held[2], True
    ok = _threshold_walk(b.times[order], which.ravel(), start, count, fired, known,
                         _THRESHOLD_KINDS.get(t.kind, 3), t.count, float(t.seconds))
    for j, key in enumerate(keys):
        state[key] = (float(start[j]), int(count[j]), bool(fired[j]))
    return np.sort(order[ok])


@njit(cache=True, nogil=True)
def _threshold_walk(times, which, start, count, fired, known, kind, limit, seconds):
    """The walk of _apply_threshold over rows in time order; which[i]: the row's tracked address."""
    ok = np.zeros(len(times), dtype=np.bool_)
    for i in range(len(times)):
        j, now = which[i], times[i]
        if not known[j] or now - start[j] >= seconds:
            start[j], count[j], fired[j], known[j] = now, 0, False, True
        count[j] += 1
        if kind == 0:
            ok[i] = count[j] <= limit
        elif kind == 1:
            ok[i] = count[j] % limit == 0
        elif kind == 2:
            ok[i] = count[j] >= limit and not fired[j]
            fired[j] = fired[j] or ok[i]
        else:   # detection_filter: only once the rate is above count per seconds
            ok[i] = count[j] > limit
    return ok


@dataclass
class Matches:
    """The rules each row matched, best first (priority, then sid).

    Kept per rule, in rule order: sorted row indices, or a boolean mask when
    the rule matched more than an eighth of the batch (fewer bytes then). A
    batch where broad rules match most records holds millions of (row, rule)
    pairs, and nothing needs them sorted by row.
    """
    per_rule: list        # [(index into ruleset.rules, rows or mask)], in rule order
    ruleset: RuleSet
    n: int

    def for_row(self, row: int) -> list[Rule]:
        out = []
        for i, hit in self.per_rule:
            if hit.dtype == bool:
                found = bool(hit[row])
            else:
                pos = np.searchsorted(hit, row)
                found = pos < len(hit) and hit[pos] == row
            if found:
                out.append(self.ruleset.rules[i])
        return out

    def best(self) -> np.ndarray:
        """Per row, the index of its best matching rule, or -1."""
        out = np.full(self.n, -1, dtype=np.int64)
        for i, hit in self.per_rule:
            if hit.dtype == bool:
                out[hit & (out < 0)] = i
            else:
                out[hit[out[hit] < 0]] = i
        return out

    def labels(self) -> pd.DataFrame:
        """Per row, from its best rule: attack (0/1), category, subcategory, sid, msg, action.

        A row is an attack when its best rule alerts or drops with an attack
        classtype; a best `pass` rule, a `policy` classtype or no match is Normal.
        """
        # Every column is first resolved per rule (plus a last entry for "no match", which
        # best == -1 indexes), then spread over the rows as a categorical: no per-row objects.
        rules = self.ruleset.rules
        is_attack = np.array([r.action != "pass" and r.category not in (None, "Normal") for r in rules] + [False])
        best = self.best()

        def column(values):
            codes, uniques = pd.factorize(pd.Series(values, dtype=object))
            return pd.Categorical.from_codes(codes[best], uniques)

        return pd.DataFrame({
            "attack": is_attack[best].astype(np.int64),
            "category": column([r.category if a else "Normal" for r, a in zip(rules, is_attack)] + ["Normal"]),
            "subcategory": column([(r.subcategory or r.category) if a else "Normal"
                                   for r, a in zip(rules, is_attack)] + ["Normal"]),
            "sid": np.array([r.sid for r in rules] + [0], dtype=np.int64)[best],
            "msg": column([r.msg for r in rules] + [""]),
            "action": column([r.action for r in rules] + [""]),
            "technique": column([r.technique if a else "" for r, a in zip(rules, is_attack)] + [""]),
            "mitre": column([r.mitre if a else "" for r, a in zip(rules, is_attack)] + [""]),
        })


class RuleEngine:
    def __init__(self, rules: list[Rule] | None = None, sources: tuple = ()):
        self._lock = threading.Lock()
        self.ruleset = RuleSet(rules or [], sources)

    @classmethod
    def from_files(cls, paths: list[str], variables: str | None = None) -> "RuleEngine":
        return cls(load_rules(paths, variables), (tuple(paths), variables))

    def reload(self, paths: list[str] | None = None, variables: str | None = None) -> RuleSet:
        """Parse the files completely, then swap; on any error raise and keep the running rules."""
        paths = paths or list(self.ruleset.sources[0])
        variables = variables if variables is not None else (self.ruleset.sources[1] if self.ruleset.sources
                                                              else None)
        fresh = RuleSet(load_rules(paths, variables), (tuple(paths), variables))
        with self._lock:
            self.ruleset = fresh
        return fresh

    def evaluate(self, records: pd.DataFrame) -> Matches:
        return self._run(_Batch.from_records(records))

    def evaluate_packets(self, packets: Decoded) -> Matches:
        """Header and flags rules over single packets (rules with feature predicates are skipped)."""
        return self._run(_Batch.from_packets(packets), packet_level=True)

    def _run(self, b: _Batch, packet_level: bool = False) -> Matches:
        ruleset = self.ruleset  # one consistent rule set for the whole batch, even during a reload
        passed = np.zeros(b.n, dtype=bool)
        order = [i for i, r in enumerate(ruleset.rules) if r.action == "pass"] + \
                [i for i, r in enumerate(ruleset.rules) if r.action != "pass"]
        kept = {}
        any_passed = None   # known once the pass rules, which come first, are done
        for i in order:   # pass rules first: what they match, no alert or drop rule may claim
            rule = ruleset.rules[i]
            if packet_level and not rule.packet_level:
                continue
            mask = _rule_mask(rule, b)
            if rule.action != "pass":
                if any_passed is None:
                    any_passed = bool(passed.any())
                if any_passed:
                    mask = mask & ~passed
            if rule.threshold is not None:
                rows = np.flatnonzero(mask)
                if len(rows):
                    rows = _apply_threshold(rule, rows, b, ruleset._threshold_state[i])
                hit, count = rows, len(rows)
            else:
                count = int(np.count_nonzero(mask))
                hit = mask if count > b.n // 8 else np.flatnonzero(mask)
            if rule.action == "pass":
                passed[hit] = True
            if count:
                ruleset.hits[i] += count
                kept[i] = hit
        return Matches([(i, kept[i]) for i in sorted(kept)], ruleset, b.n)

    def hit_counts(self) -> dict:
        return {(r.sid, r.msg): int(h) for r, h in zip(self.ruleset.rules, self.ruleset.hits)}
