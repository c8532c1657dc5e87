"""The responder: fused verdicts -> at most one controller verdict per attacker + alert lines.

It turns attack verdicts into at most one controller verdict per
attacker and one alert line per decision, because a flood is hundreds of
thousands of attack records a second:
- The attacker is the record's source MAC (the host that sent the flow's
  first packet), so a flood with forged IPv4 sources is blocked by the MAC
  and switch port it really comes from; the controller pins the block to
  the port where it learned the MAC. Records without a MAC fall back to
  the source address.
- Evidence before a block: within the last `evidence_seconds`, at least
  `min_records` rule-flagged records of the attacker (or `model_min_records`
  flagged by the model alone), and attack records at least `min_share` of
  all its records. Window features (N_IN_Conn_*) describe the destination,
  so while a flood hits a server, a benign host's odd record to that server
  can match a flood rule; that host's other, normal records keep its share
  low, and it gets an alert line ("allowed"), not a block. A flooder's
  records are nearly all attacks. The Z-score's opinion alone is logged,
  never blocked on: an unusual value is not yet an attack.
- While a block on an attacker stands, its further attack records are
  counted and summarised in one alert line every `realert_seconds`.
- A refused verdict (allowlisted target) or an unreachable controller is
  logged with the reason and retried no sooner than `realert_seconds`.
- A MAC flood (a new random source MAC per frame) has no one MAC to block: the
  verdict guards the port it enters at (`guard`, named by one MAC the flood
  sent: the controller knows where it came in), and the flood is one alert
  line with its counts; the records of its forged MACs are folded into it
  instead of making a line each (see iadm/detection/macflood.py).
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from iadm.alerts.log import eve_timestamp
from iadm.columns import objects
from iadm.detection.behaviour import AMPLIFIERS
from iadm.detection.macflood import MacFloodFold
from iadm.flows.records import mac_text
from iadm.inspect.finding import format_mac
from iadm.sdn.verdicts import UPLINK

log = logging.getLogger("iadm.detection")
PUBLIC_SOURCES = 3
# A reflection whose answers come from one of these services is dropped by its shape; the others
# (DNS 53, NTP 123: what LAN hosts ask their own resolvers and time servers) are rate-limited, so
# the victim's own answers of that shape still get through.
DROPPED_REFLECTIONS = frozenset(AMPLIFIERS - {53, 123})
SHAPE_MIN_SOURCES = 10   # distinct sources among a batch's flagged rows before a shape is made of them
MAX_SOURCES_TRACKED = 65536   # MACs whose public sources are remembered


@dataclass
class _Attacker:
    """What the responder remembers about one attacker."""
    held_until: float = 0.0          # no new verdict before this
    last_alert: float = 0.0
    unreported: int = 0              # attack records since the last alert line
    block: dict = field(default_factory=dict)
    sids: dict = field(default_factory=dict)         # signature id -> time of its last alert line
    evidence: deque = field(default_factory=deque)   # (time, records, attack records, rule-flagged)
    shapes: dict = field(default_factory=dict)       # a victim's: shape (sorted items) -> held until
    shape_checked: float = 0.0                       # when its flood's shape was last worked out

    def weigh(self, now: float, horizon: float, total: int, attacks: int, by_rule: int) -> tuple[int, int, int]:
        self.evidence.append((now, total, attacks, by_rule))
        while self.evidence and self.evidence[0][0] < now - horizon:
            self.evidence.popleft()
        sums = np.sum([e[1:] for e in self.evidence], axis=0)
        return int(sums[0]), int(sums[1]), int(sums[2])


class Responder:
    def __init__(self, client, alert_log, block_seconds: int = 300, min_records: int = 3,
                 model_min_records: int = 10, evidence_seconds: float = 2.0, min_share: float = 0.5,
                 realert_seconds: float = 10.0, detector=None, clock=time.time,
                 replay: bool = False, model_block_score: float = 0.9, uplink=None, shaped_rate_pps: int = 1000,
                 gateway_id: str = "", mac_floods=None):
        self.client = client
        self.alert_log = alert_log
        self.block_seconds = block_seconds
        self.min_records = min_records
        self.model_min_records = model_min_records
        self.evidence_seconds = evidence_seconds
        self.min_share = min_share
        self.realert_seconds = realert_seconds
        self.model_name = detector.model_name if detector else ""
        self.detector = detector
        # Replaying a capture, "now" is the capture's time (the records' latest ltime), so that
        # evidence windows and alert timestamps mean what they mean live.
        self.replay_now = 0.0
        self.clock = (lambda: self.replay_now) if replay else clock
        self.replaying = replay
        self.model_block_score = model_block_score
        self.uplink = uplink   # an UplinkWatch: which MACs are routers
        self.shaped_rate_pps = shaped_rate_pps   # the rate a flood's shape is limited to
        self.gateway_id = gateway_id             # EVE's "host": which gateway saw it (a fleet's collector keys on it)
        self.public_sources: dict[str, set] = {}   # MAC -> public source addresses seen (up to a few)
        self._window_sids_of: tuple = (None, [])
        self._column_cache: dict = {}
        self.attackers: dict[str, _Attacker] = {}
        self.counts = {"attack_records": 0, "verdicts_sent": 0, "verdicts_refused": 0, "alerts": 0}
        self.fold = MacFloodFold(mac_floods)   # a MAC flood's forged MACs: one line per flood
        self.verdicts_by: dict[tuple, int] = {}   # (source, category) -> verdicts sent, for the metrics

    def __call__(self, records: pd.DataFrame, verdicts: pd.DataFrame) -> list[dict]:
        attack = verdicts["attack"].to_numpy(dtype=bool)
        if not attack.any():
            return []
        records = records.reset_index(drop=True)
        self._column_cache = {}
        self.replay_now = max(self.replay_now, float(records["ltime"].max()))
        self.counts["attack_records"] += int(attack.sum())
        events: list[dict] = []
        said = _voters(verdicts["source"])
        by_rule = attack & (said("rule") | said("behaviour"))
        # The model's word alone never blocks: it acts only when confident and confirmed by the
        # Z-score (this key's value is out of its own history); otherwise it is an alert line.
        confirmed = (attack & said("model") & said("zscore")
                     & (verdicts["model_score"].to_numpy(dtype=float) >= self.model_block_score))
        # A record is evidence against its source only if the source sent something in it: a
        # reflection's victim (the receiver of unsolicited SYN-ACKs) is the record's source too.
        acting = (by_rule | confirmed) & ((records["spkts"].to_numpy() > 0) if "spkts" in records else True)
        if "about_destination" in verdicts:   # a DDoS finding names the victim, not this source
            acting &= ~verdicts["about_destination"].to_numpy(dtype=bool)
        # Certain evidence needs no share of the attacker's records: a behaviour watcher's finding
        # (already counted per source over time) or a rule on the record's own fields. A rule on
        # window features (N_IN_Conn_*, which describe the destination) does: see the docstring.
        window_sids = self._window_sids()
        # A behaviour finding is a count that crossed its threshold over time (5 login sessions,
        # 20 ports): its one crossing record is the proof, whereas a rule's one record is not.
        proven = acting & said("behaviour")
        certain = acting & (said("behaviour") | (
            ~np.isin(verdicts["rule_sid"].to_numpy(), window_sids) if window_sids is not None else False))
        folded = self.fold.forged(records, attack)
        if folded.any():   # records of a MAC flood's forged MACs: counted on the flood's line
            events += self._folded(int(folded.sum()))
            attack = attack & ~folded
            if not attack.any():
                return events
        attacker_ids = _attacker_ids(records)
        if "about_destination" in verdicts:   # a DDoS finding is about its victim: its line names no source
            about = verdicts["about_destination"].to_numpy(dtype=bool)
            if about.any():
                attacker_ids = attacker_ids.astype(object)
                sent = records["spkts"].to_numpy() > 0 if "spkts" in records else np.ones(len(records), bool)
                victims = np.where(sent, records["daddr"].astype(str).to_numpy(dtype=object),
                                   records["saddr"].astype(str).to_numpy(dtype=object))   # a backscatter's victim sent nothing
                attacker_ids[about] = "to " + victims[about]
        ids, who = np.unique(attacker_ids.astype(str), return_inverse=True)
        totals = np.bincount(who, minlength=len(ids))
        ltime = records["ltime"].to_numpy(dtype=np.float64)
        saddr = records["saddr"].astype(str).to_numpy()
        # each attacker's rows by one sort (a MAC flood brings thousands of attackers a batch)
        order = np.argsort(who, kind="stable")
        starts = np.concatenate(([0], np.cumsum(totals)[:-1]))
        for k in np.flatnonzero(np.bincount(who[attack], minlength=len(ids))):
            rows = order[starts[k]:starts[k] + totals[k]]
            mine = rows[attack[rows]]
            self._learn_sources(str(ids[k]), saddr[rows])
            # Replayed, "now" is when the evidence was there: the time of the attacker's
            # min_records-th acting record in this frame (else its first attack record).
            act = np.sort(ltime[mine[acting[mine]]])
            at = act[min(self.min_records, len(act)) - 1] if len(act) else ltime[mine].min()
            if proven[mine].any():   # a behaviour finding proves it at its first flagged record
                at = min(at, float(ltime[mine[proven[mine]]].min()))
            if str(ids[k]).startswith("to "):
                events += self._shape(str(ids[k]), records, verdicts, mine, float(np.sort(ltime[mine])[
                    min(self.min_records, len(mine)) - 1]))
                continue
            events += self._decide(str(ids[k]), records, verdicts, mine, mine[by_rule[mine]], int(totals[k]),
                                   int(acting[mine].sum()), float(at), int(certain[mine].sum()),
                                   mine[acting[mine]], proven=bool(proven[mine].any()))
        return events

    def _shape(self, attacker: str, records, verdicts, mine: np.ndarray, at: float) -> list[dict]:
        """A flood on one victim from many sources (or reflected at it): no source to block, so
        the verdict is the attack's shape, rate-limited (what is under the rate still passes), or
        dropped when it is UDP from a reflector service's port (DROPPED_REFLECTIONS).
        One per victim and finding: a DNS reflection on a host already rate-limited for a SYN
        flood gets its own shape."""
        now = at if self.replaying else self.clock()
        sids = verdicts["rule_sid"].to_numpy()[mine]
        events = []
        for sid in dict.fromkeys(sids.tolist()):
            rows = mine[sids == sid]
            state = self.attackers.setdefault(f"{attacker} sid {int(sid)}", _Attacker())
            state.unreported += len(rows)
            seen, _, _ = state.weigh(now, self.evidence_seconds, len(rows), len(rows), len(rows))
            verdict = None
            # While one shape of this victim and finding stands, a flood of another shape (the same
            # finding on another port or protocol) gets its own verdict: the shape is worked out
            # again at most once a second, and only a shape not already held is sent.
            ready = ((now >= state.held_until or now >= state.shape_checked + 1.0)
                     and seen >= self.min_records and self.client is not None)
            # A shape answers a flood from many sources, or one behind a router's MAC. Flagged rows of
            # LAN hosts from a handful of sources (a scan passing by while the count of a flood's
            # sources stands) are not one: a shape made of them (all TCP to the victim, no port
            # shared) would limit the victim's benign traffic; those hosts answer for themselves.
            many = ready and (self._from_shared_macs(records, rows)
                              or records["saddr"].iloc[rows].nunique() >= SHAPE_MIN_SOURCES)
            shape = _attack_shape(records.iloc[rows], attacker.removeprefix("to ")) if many else None
            if shape:
                state.shape_checked = now
                if now < state.shapes.get(tuple(sorted(shape.items())), 0.0):
                    shape = None
            if shape:
                row = int(rows[0])
                reason = (f"{verdicts['category'].iat[row]}/{verdicts['subcategory'].iat[row]}: "
                          f"{verdicts['rule_msg'].iat[row]}")
                source = f"iadm-monitor behaviour sid {int(sid)}"
                category = str(verdicts["category"].iat[row])
                # Through the uplink (its packets carry a router's MAC): only what enters there, so
                # the LAN's own traffic of the same shape is left alone; without the narrowing when
                # the controller has no uplink port to resolve it to.
                narrowed = [{**shape, "in_port": UPLINK}] if self._through_uplink(records, rows) else []
                for candidate in narrowed + [shape]:
                    verdict = None
                    if shape.get("ip_proto") == 17 and shape.get("src_port") in DROPPED_REFLECTIONS:
                        # answers from a reflector service the victim is no client of: dropped
                        verdict = self._request(candidate, f"{reason} (dropped: UDP from reflectors' port "
                                                f"{shape['src_port']})", source, category, "behaviour", now,
                                                action="block")
                    if verdict is None or "error" in verdict:   # else (or refused: an allowlisted victim): limited
                        verdict = self._request(candidate, reason, source, category, "behaviour", now,
                                                action="rate_limit", rate_pps=self.shaped_rate_pps)
                    if "error" not in verdict:
                        break
                held = now + (self.block_seconds if "block_id" in verdict else self.realert_seconds)
                state.shapes[tuple(sorted(shape.items()))] = held
                state.held_until = max(state.held_until, held) if "block_id" in verdict else held
            elif now - state.last_alert < self.realert_seconds:
                continue
            events.append(self._alert(attacker, state, records, verdicts, rows, rows[:1], now, verdict))
        return events

    def _columns(self, frame) -> "_Columns":
        """A frame's columns as arrays, taken once per batch: an alert line reads a dozen cells of a
        row, and a pandas cell costs some 40 µs (a MAC flood makes thousands of lines a batch)."""
        cols = self._column_cache.get(id(frame))
        if cols is None or cols.frame is not frame:
            cols = self._column_cache[id(frame)] = _Columns(frame)
        return cols

    def _window_sids(self) -> list | None:
        """Sids of rules on window features; None when the rules are unknown (then every rule hit
        needs the share). Worked out once per rule set (a reload brings a new one)."""
        if self.detector is None:
            return None
        ruleset = self.detector.engine.ruleset
        if self._window_sids_of[0] is not ruleset:
            from iadm.flows.records import WINDOW_COLUMNS
            self._window_sids_of = (ruleset, [r.sid for r in ruleset.rules
                                              if any(p.feature in WINDOW_COLUMNS for p in r.predicates)])
        return self._window_sids_of[1]

    def findings(self, found: list) -> list[dict]:
        """Packet inspectors' findings (iadm/inspect): one alert line per attacker and signature per
        realert period; a block on the actor's MAC when the finding is strong enough alone
        (`block`), the MAC is not a router's, and no block on it stands already."""
        events = []
        for f in found:
            mac = format_mac(f.src_mac) if f.src_mac else ""
            port_of = format_mac(f.ingress_mac) if f.ingress_mac else ""
            attacker = mac or f.src_ip or f"{f.technique}:{f.dest_ip}"
            now = f.ts if self.replaying else self.clock()
            self.replay_now = max(self.replay_now, f.ts)
            state = self.attackers.setdefault(attacker, _Attacker())
            state.unreported += 1
            if port_of:
                self.fold.found(f, attacker)
            if now - state.sids.get(f.sid, -np.inf) < self.realert_seconds:
                continue
            verdict = None
            reason = f"{f.category}/{f.subcategory}: {f.signature}"
            if f.block and now >= state.held_until and self.client is not None:
                if mac and not self.shared(mac):
                    verdict = self._request(mac, reason, f"iadm-monitor inspector sid {f.sid}", f.category,
                                            "inspector", now)
                elif port_of and not mac and not self.shared(port_of):
                    # no one source (a MAC flood forges one per frame): the port it enters at is
                    # guarded, named by a MAC it sent there (the controller knows the port)
                    verdict = self._request(port_of, reason, f"iadm-monitor inspector sid {f.sid}", f.category,
                                            "inspector", now, action="guard")
                if verdict is not None:
                    state.held_until = now + (self.block_seconds if "block_id" in verdict else self.realert_seconds)
            events.append(self._finding_alert(f, mac, state, now, verdict))
        return events

    def _folded(self, records: int) -> list[dict]:
        """A MAC flood's forged-MAC records: counted on the flood's state; its line again (with
        the count) once per realert period while the flood goes on."""
        finding, attacker = self.fold.latest
        state = self.attackers.setdefault(attacker, _Attacker())
        state.unreported += records
        self.counts["folded_records"] = self.counts.get("folded_records", 0) + records
        now = self.replay_now if self.replaying else self.clock()
        if finding is None or now - state.last_alert < self.realert_seconds:
            return []
        return [self._finding_alert(finding, "", state, now, None)]

    def _finding_alert(self, f, mac: str, state, now: float, verdict) -> dict:
        standing = verdict if verdict is not None else (state.block if now < state.held_until else {})
        blocked = standing.get("action") in ("block", "guard") and bool(standing.get("installed_on"))
        meta = {"technique": [f.technique], "mitre_technique_id": [f.mitre]}
        event = {
            "timestamp": eve_timestamp(now), "event_type": "alert", "host": self.gateway_id or None, "flow_id": None,
            "src_ip": f.src_ip or None, "src_port": f.src_port, "dest_ip": f.dest_ip or None,
            "dest_port": f.dest_port, "proto": (f.proto or "").upper(), "src_mac": mac or None,
            "alert": {"action": "blocked" if blocked else "allowed", "gid": 1, "signature_id": f.sid, "rev": 1,
                      "signature": f.signature, "category": f.category, "severity": f.severity, "metadata": meta},
            "verdict_source": "inspector", "subcategory": f.subcategory, "evidence": f.evidence,
            "records": state.unreported, "first_seen": f.ts,
        }
        if f.ingress_mac and not f.src_mac:   # what is done about a flood with no one source, and why
            event["mitigation"] = (
                f"port guard at the port where {format_mac(f.ingress_mac)} (one of the flood's MACs) entered: "
                "learning stops there and frames from sources not learned there are dropped; the hosts "
                "learned there keep working. No one MAC to block: the flood forges one per frame.")
        if verdict is not None:
            event["verdict"] = verdict
            state.block = verdict
        self.alert_log.write(event)
        self.counts["alerts"] += 1
        state.sids[f.sid] = now
        state.last_alert, state.unreported = now, 0
        return event

    def _share_of_macs(self, records, rows, which) -> bool:
        """Most (80%) of these records came from source MACs for which which(mac text) holds."""
        if "smac" not in records or not len(rows):
            return False
        macs = records["smac"].to_numpy()[rows]
        values, counts = np.unique(macs, return_counts=True)
        held = sum(int(c) for v, c in zip(values.tolist(), counts.tolist()) if v and which(mac_text(v), macs == v))
        return held >= 0.8 * len(rows)

    def _through_uplink(self, records, rows) -> bool:
        """Most of a flood's records came from a router's MAC: it entered through the uplink."""
        if self.uplink is None or not self.uplink.routers:
            return False
        return self._share_of_macs(records, rows, lambda mac, _: mac in self.uplink.routers)

    def _from_shared_macs(self, records, rows) -> bool:
        """Most of these records came from MACs that carry others' traffic (a router's, or one
        behind which many public sources are seen, learned from these very rows)."""
        saddr = records["saddr"].to_numpy()[rows].astype(str)

        def carries_others(mac, mine):
            self._learn_sources(mac, saddr[mine])
            return self.shared(mac)
        return self._share_of_macs(records, rows, carries_others)

    def shared(self, attacker: str) -> bool:
        """A router's MAC (LAN hosts send it their off-LAN traffic) carries everyone behind the
        uplink: blocking it would cut the gateway off, so it is never blocked by MAC. Until a
        router is known, a MAC sourcing several public addresses may be one (or a LAN host forging
        sources): not blocked by MAC either, unless the bridge has no uplink (`no_uplink`)."""
        if self.uplink is None:
            return False
        if attacker in self.uplink.routers:
            return True
        return (not self.uplink.routers and not self.uplink.no_uplink
                and len(self.public_sources.get(attacker, ())) >= PUBLIC_SOURCES)

    def _learn_sources(self, mac: str, addresses: np.ndarray) -> None:
        """Public source addresses seen behind an attacking MAC (a few are enough to tell); only
        while no router is known, the one case shared() asks."""
        if (":" not in mac or mac.startswith("to ") or self.uplink is None or self.uplink.routers
                or self.uplink.no_uplink):
            return
        from iadm.detection.uplink import is_public
        seen = self.public_sources.get(mac)
        if seen is None:
            if len(self.public_sources) >= MAX_SOURCES_TRACKED:   # a random-MAC flood: start over
                self.public_sources.clear()
            seen = self.public_sources[mac] = set()
        for addr in dict.fromkeys(addresses[:256].tolist()):
            if len(seen) >= PUBLIC_SOURCES:
                break
            if is_public(addr):
                seen.add(addr)

    def _decide(self, attacker: str, records, verdicts, mine: np.ndarray, by_rule: np.ndarray,
                total: int, acting: int, at: float | None = None, certain: int = 0,
                acting_rows: np.ndarray | None = None, proven: bool = False) -> list[dict]:
        now = at if self.replaying and at is not None else self.clock()
        state = self.attackers.setdefault(attacker, _Attacker())
        state.unreported += len(mine)
        seen, attacks, flagged = state.weigh(now, self.evidence_seconds, total, acting, len(by_rule))
        enough = proven or flagged >= self.min_records or attacks - flagged >= self.model_min_records
        actionable = (enough and (attacks >= self.min_share * seen or certain >= self.min_records or proven)
                      and not self.shared(attacker))
        # A signature this attacker has not been alerted for lately gets its own line even inside
        # the realert period: a null probe first, then the scan it belongs to, are two findings.
        sids = verdicts["rule_sid"].to_numpy()[by_rule]
        if len(by_rule):   # judged per distinct signature, not per row (a flood is thousands of rows)
            distinct, which = np.unique(sids, return_inverse=True)
            due = np.array([now - state.sids.get(int(x), -np.inf) >= self.realert_seconds
                            for x in distinct.tolist()], dtype=bool)
            fresh = by_rule[due[which.ravel()]]
        else:
            fresh = by_rule
        quiet = now - state.last_alert < self.realert_seconds and not len(fresh)
        if len(fresh):
            by_rule = fresh
        verdict = None
        if now < state.held_until:
            if quiet:
                return []
        elif actionable and self.client is not None:
            why = acting_rows if acting_rows is not None and len(acting_rows) else (by_rule if len(by_rule) else mine)
            verdict = self._send(attacker, records, verdicts, why, now)
            state.held_until = now + (self.block_seconds if "block_id" in verdict else self.realert_seconds)
        elif quiet:
            return []
        # one line per signature found in this frame (the verdict rides on the first)
        firsts = [by_rule]
        if len(by_rule):
            sids_of = verdicts["rule_sid"].to_numpy()[by_rule]
            firsts = [by_rule[sids_of == sid][:1] for sid in dict.fromkeys(sids_of.tolist())]
        events = []
        for k, rows in enumerate(firsts):
            events.append(self._alert(attacker, state, records, verdicts, mine, rows, now,
                                      verdict if k == 0 else None))
        return events

    def blocks_active(self) -> int:
        now = self.clock()
        return sum(1 for a in self.attackers.values() if a.held_until > now
                   and a.block.get("action") in ("block", "guard") and a.block.get("installed_on"))

    def _send(self, attacker: str, records, verdicts, rows, now: float) -> dict:
        row = rows[0]
        V = self._columns(verdicts)
        category = f"{V['category'][row]}/{V['subcategory'][row]}".rstrip("/")
        said = V["rule_msg"][row] if _strong(V["source"][row]) else ""
        reason = f"{category}: {said or 'model ' + str(V['model_label'][row])}"
        source = f"iadm-monitor {V['source'][row]}" + (
            f" sid {int(V['rule_sid'][row])}" if _strong(V["source"][row]) else "")
        return self._request(attacker, reason, source, str(V["category"][row]),
                             str(V["source"][row]), now)

    def _request(self, attacker, reason: str, source: str, category: str, who: str, now: float,
                 action: str = "block", **extra) -> dict:
        """One verdict to the controller (it turns it into a mark when it runs alert-only): against a
        source (attacker: a MAC or an address) or, given a dict, the attack's shape."""
        target = attacker if isinstance(attacker, dict) else (
            {"src_mac": attacker} if ":" in attacker else {"src_ip": attacker})
        try:
            doc = self.client.verdict(action=action, duration=self.block_seconds, reason=reason[:256],
                                      source=source[:128], **target, **extra)
        except Exception as exc:  # refused (4xx) or unreachable: logged, retried later, never fatal
            self.counts["verdicts_refused"] += 1
            log.warning("verdict %s %s not applied: %s", action, target, exc)
            return {"action": action, "error": str(exc), "sent_at": now}
        self.counts["verdicts_sent"] += 1
        self.verdicts_by[(who, category)] = self.verdicts_by.get((who, category), 0) + 1
        block = doc.get("block", {})
        return {"action": block.get("action", action), "block_id": block.get("block_id"),
                "match": block.get("match"), "sent_at": now, "installed_at": doc.get("installed_at"),
                "installed_on": doc.get("installed_on", [])}

    def _alert(self, attacker, state, records, verdicts, mine, by_rule, now, verdict) -> dict:
        R, V = self._columns(records), self._columns(verdicts)
        row = int(by_rule[0]) if len(by_rule) else int(mine[np.argmax(V["model_score"][mine])])
        sid = int(V["rule_sid"][row]) if _strong(V["source"][row]) else 0
        state.sids[sid] = now
        rule = self.detector.rule(sid) if (self.detector and sid) else None
        standing = verdict if verdict is not None else (state.block if now < state.held_until else {})
        blocked = standing.get("action") == "block" and bool(standing.get("installed_on"))
        score = V["model_score"][row]
        event = {
            "timestamp": eve_timestamp(now), "event_type": "alert", "host": self.gateway_id or None,
            "flow_id": int(R["pkSeqID"][row]) if "pkSeqID" in R else None,
            "src_ip": str(R["saddr"][row]), "src_port": _port(R["sport"][row]),
            "dest_ip": str(R["daddr"][row]), "dest_port": _port(R["dport"][row]),
            "proto": str(R["proto"][row]).upper(),
            "src_mac": attacker if ":" in attacker and not attacker.startswith("to ") else None,
            "alert": {"action": "blocked" if blocked else "allowed", "gid": 1, "signature_id": sid,
                      "rev": rule.rev if rule else 0,
                      "signature": _signature(V, row, sid, self.model_name),
                      "category": str(V["category"][row]),
                      "severity": rule.priority if rule else (2 if sid else 3),
                      **_metadata(V, row)},
            "verdict_source": str(V["source"][row]),
            "subcategory": str(V["subcategory"][row]),
            "model": {"name": self.model_name, "label": str(V["model_label"][row]),
                      "score": None if np.isnan(score) else round(float(score), 4)},
            "zscore": _finite(V["zscore"][row]) if "zscore" in V else None,
            "features": {p.feature: _number(R[p.feature][row]) for p in rule.predicates
                         if p.feature in R} if rule else {},
            "flow": {"stime": float(R["stime"][row]), "ltime": float(R["ltime"][row]),
                     "pkts": int(R["pkts"][row]), "bytes": int(R["bytes"][row]),
                     "state": str(R["state"][row])},
            "records": state.unreported,
            "first_seen": float(R["stime"][mine].min()),
        }
        delayed = _delay_of(V, row)
        if delayed:   # a device's delay out of its history (the Z-score's per-device delay store)
            event["delay"] = delayed
        if verdict is not None:
            event["verdict"] = verdict
            state.block = verdict
        self.alert_log.write(event)
        self.counts["alerts"] += 1
        state.last_alert, state.unreported = now, 0
        return event


class _Columns:
    """Columns of a frame as numpy arrays, each taken on first use."""

    def __init__(self, frame):
        self.frame = frame
        self.arrays: dict = {}

    def __getitem__(self, name):
        array = self.arrays.get(name)
        if array is None:
            array = self.arrays[name] = self.frame[name].to_numpy()
        return array

    def __contains__(self, name) -> bool:
        return name in self.frame


_IP_PROTO = {"tcp": 6, "udp": 17, "icmp": 1}


def _attack_shape(rows: pd.DataFrame, victim: str) -> dict | None:
    """What a flood's packets toward its victim have in common: destination, protocol, and the port
    that at least 80% of them share (the victim's service port, or an amplifier's source port)."""
    if "." not in victim or ":" in victim:
        return None   # IPv4 only: the verdict API matches IPv4
    proto = rows["proto"].astype(str).mode()
    if not len(proto) or proto.iat[0] not in _IP_PROTO:
        return {"dst_ip": victim}
    shape = {"dst_ip": victim, "ip_proto": _IP_PROTO[proto.iat[0]]}
    if shape["ip_proto"] in (6, 17):
        rows = rows[rows["proto"].astype(str) == proto.iat[0]]
        towards = rows["daddr"].astype(str).to_numpy() == victim   # else a backscatter row: victim is saddr
        dst_ports = np.where(towards, pd.to_numeric(rows["dport"], errors="coerce"),
                             pd.to_numeric(rows["sport"], errors="coerce"))
        src_ports = np.where(towards, pd.to_numeric(rows["sport"], errors="coerce"),
                             pd.to_numeric(rows["dport"], errors="coerce"))
        for name, ports in (("src_port", src_ports), ("dst_port", dst_ports)):
            values, counts = np.unique(ports[np.isfinite(ports)].astype(np.int64), return_counts=True)
            if not len(values) or counts.max() < 0.8 * len(ports) or not 1 <= values[counts.argmax()] <= 65535:
                continue
            port = int(values[counts.argmax()])
            if name == "src_port" and port not in AMPLIFIERS and port >= 1024:
                continue   # a shared source port names a reflector's service (DNS 53, NTP 123, HTTP 80, ...)
            shape[name] = port
            break
    return shape


def _metadata(verdicts, row: int) -> dict:
    """Suricata's alert.metadata (lists of strings, as ET rules carry mitre_technique_id)."""
    technique = str(verdicts["technique"][row]) if "technique" in verdicts else ""
    mitre = str(verdicts["mitre"][row]) if "mitre" in verdicts else ""
    meta = {k: [v] for k, v in (("technique", technique), ("mitre_technique_id", mitre)) if v}
    return {"metadata": meta} if meta else {}


def _voters(source: pd.Series):
    """voted(name): per row, whether `name` is among the record's voters (source "rule+model", ...);
    read off the few distinct sources, not row by row."""
    codes, names = pd.factorize(source, use_na_sentinel=False)
    names = [str(n) for n in names]
    return lambda name: np.array([name in n for n in names] or [False], dtype=bool)[codes]


def _strong(source: str) -> bool:
    """A rule's or a behaviour watcher's word: evidence a block may rest on."""
    return "rule" in source or "behaviour" in source


def _attacker_ids(records: pd.DataFrame) -> np.ndarray:
    """The source MAC of each record as text, or its source address where no MAC was captured."""
    saddr = objects(records["saddr"])
    if "smac" not in records:
        return saddr.astype(str)
    unique, inverse = np.unique(records["smac"].to_numpy(), return_inverse=True)
    text = np.array([mac_text(int(m)) if m else "" for m in unique], dtype=object)[inverse.ravel()]
    return np.where(text == "", saddr, text).astype(str)


def _port(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _signature(verdicts, row: int, sid: int, model_name: str) -> str:
    if sid:
        return str(verdicts["rule_msg"][row])
    if "model" in verdicts["source"][row]:
        return f"model {model_name}: {verdicts['model_label'][row]} (score {verdicts['model_score'][row]:.2f})"
    return f"z-score anomaly in {verdicts['subcategory'][row]}: |z| = {verdicts['zscore'][row]:.1f}"


def _delay_of(verdicts, row: int) -> dict | None:
    """The record's device-delay anomaly (ZScoreDetector's delay store), for the alert: the device,
    which delay (synack, answer, owd), its value in seconds and its z; None when it has none."""
    if "delay_device" not in verdicts:
        return None
    device = verdicts["delay_device"][row]
    if not isinstance(device, str) or not device:
        return None
    return {"device": device, "measurement": str(verdicts["delay_measurement"][row]),
            "seconds": _seconds(verdicts["delay_value"][row]), "z": _finite(verdicts["delay_z"][row])}


def _seconds(value):
    value = float(value)
    return round(value, 6) if np.isfinite(value) else None


def _finite(value):
    value = float(value)
    return round(value, 3) if np.isfinite(value) else (None if np.isnan(value) else "inf")


def _number(value):
    return value.item() if hasattr(value, "item") else value
