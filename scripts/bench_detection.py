#!/usr/bin/env python3
"""The detection corpus benchmark: every capture of a manifest through the whole live path.

    scripts/bench_detection.py ../shared/data/corpus.toml [--config config/monitor.toml] [--only TEXT]

Each capture is replayed through the monitor the config composes (flows -> rules + model + Z-score ->
fusion -> responder), with a fresh Z-score store, verdicts sent to an in-process stand-in for the
controller that validates and records them, and the capture's clock as the monitor's. One row per
capture, then a summary against the targets of the detection issue:
  0 benign hosts blocked; at most 0.5 % of benign records alerted; every attack capture detected,
  its first alert within 2 s (capture time) of its first attack packet, with the right category
  (and technique, where the manifest names one); every attacker that arrives "local" mitigated.

The category is right when an alert about the attack names one of the manifest's categories; the
time to detection is to the first such alert (a real capture carries background noise: a scanner
passing by during a flood is alerted too, under its own category).

A host is "blocked" when the responder asks the controller to block it (drop, rate limit, or guard
the port it enters at): on a benign capture every such verdict is a benign host blocked; on an
attack capture, a verdict whose target is not one of the attackers is (an attack arriving through
the uplink carries the upstream router's MAC: a block of that MAC would cut the gateway off, so it
counts as a benign host blocked). A guard names one MAC the flood sent: the port it entered at.

Exit status: 1 when a benign host would be blocked, 2 (with --strict) when another target is missed.
The manifest format is ../shared/data/corpus.toml's (read its header); any manifest of that format runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
import tomllib
from collections import Counter

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from iadm.alerts.log import parse_timestamp, read_events  # noqa: E402
from iadm.config import load_monitor_config  # noqa: E402
from iadm.detection.compose import build_monitor  # noqa: E402
from iadm.flows.records import mac_text  # noqa: E402
from iadm.sdn.verdicts import parse_verdict  # noqa: E402

TARGETS = {"benign_records_alerted": 0.005, "first_alert_s": 2.0}


class RecordingController:
    """Stands in for the controller's verdict API: validates each verdict as the controller does
    and records it; every block is 'installed' on port 1."""

    def __init__(self):
        self.verdicts: list[dict] = []

    def verdict(self, **fields) -> dict:
        doc = {k: v for k, v in fields.items() if v is not None}
        parse_verdict(json.dumps(doc).encode())   # a malformed verdict raises, as the API would refuse it
        self.verdicts.append(doc)
        block_id = len(self.verdicts)
        match = {k: doc[k] for k in ("src_mac", "src_ip", "dst_ip", "ip_proto", "src_port", "dst_port", "in_port")
                 if k in doc}
        return {"block": {"action": doc.get("action", "block"), "block_id": block_id, "match": match},
                "installed_at": time.time(), "installed_on": [1]}


@dataclasses.dataclass
class Tally:
    records: int = 0
    alerted: int = 0
    by_source: Counter = dataclasses.field(default_factory=Counter)
    sids: Counter = dataclasses.field(default_factory=Counter)     # alerted records by rule / watcher sid
    hosts: dict = dataclasses.field(default_factory=dict)       # source MAC text -> set of source addresses
    first_attack: float = float("inf")
    learn: float = 0.0                 # seconds of learning at the start, not counted
    started: float | None = None

    def observe(self, records, verdicts, attackers, victim):
        if self.learn:
            if self.started is None:
                self.started = float(records["ltime"].min())
            after = (records["ltime"].to_numpy() >= self.started + self.learn)
            records, verdicts = records[after].reset_index(drop=True), verdicts[after].reset_index(drop=True)
        self.records += len(records)
        attack = verdicts["attack"].to_numpy(dtype=bool)
        # the Z-score's opinion alone is an anomaly note, not an alert (logged, never blocked on)
        self.alerted += int((attack & (verdicts["source"].to_numpy() != "zscore")).sum())
        for sid, n in Counter(verdicts["rule_sid"].to_numpy()[attack].tolist()).items():
            self.sids[int(sid)] += n
        for source, n in Counter(verdicts["source"].to_numpy()[attack]).items():
            for part in str(source).split("+"):
                self.by_source[part] += n
        saddr = records["saddr"].astype(str).to_numpy()
        daddr = records["daddr"].astype(str).to_numpy()
        if "smac" in records:
            for mac, addr in set(zip(records["smac"].to_numpy().tolist(), saddr.tolist())):
                self.hosts.setdefault(mac_text(int(mac)) if mac else addr, set()).add(addr)
        mine = _is_attacker(saddr, attackers, victim)
        if victim not in ("many", ""):
            mine &= (daddr == victim) | (saddr == victim) | np.isin(saddr, list(attackers or []))
        if mine.any():
            self.first_attack = min(self.first_attack, float(records["stime"].to_numpy()[mine].min()))


def _is_attacker(addresses: np.ndarray, attackers, victim) -> np.ndarray:
    if attackers is None:   # "sources except victim"
        return addresses != victim
    return np.isin(addresses, list(attackers))


def load_manifest(path: str) -> list[dict]:
    with open(path, "rb") as fh:
        doc = tomllib.load(fh)
    base = os.path.dirname(os.path.abspath(path))
    captures = []
    for i, entry in enumerate(doc.get("capture", [])):
        where = f"{path}: capture #{i + 1}"
        for key in ("file", "truth"):
            if key not in entry:
                raise SystemExit(f"{where}: no {key!r}")
        if entry["truth"] not in ("benign", "attack"):
            raise SystemExit(f"{where}: truth must be 'benign' or 'attack', not {entry['truth']!r}")
        entry = dict(entry)
        entry["path"] = os.path.join(base, entry["file"])
        category = entry.get("category", [])
        entry["category"] = [category] if isinstance(category, str) else list(category)
        attackers = entry.get("attackers", "sources except victim")
        entry["attackers"] = None if attackers == "sources except victim" else set(attackers)
        entry.setdefault("victim", "many")
        entry.setdefault("arrives", "local")
        captures.append(entry)
    return captures


def replay(entry: dict, config, learn: float = 0.0) -> dict:
    """One capture through the whole path; what it alerted and asked to block. learn: a learning
    period (site adaptation) of this many seconds at the start of each benign capture; records in
    it are not counted (an attack capture has its attack from the start: no learning there)."""
    learn = learn if entry["truth"] == "benign" else 0.0
    with tempfile.TemporaryDirectory(prefix="iadm-bench-") as tmp:
        config = dataclasses.replace(config, alert_log=os.path.join(tmp, "alerts.json"),
                                     zscore_db=os.path.join(tmp, "zscore.sqlite"), api=False, verdict_url=None,
                                     learn_seconds=learn or config.learn_seconds)
        controller = RecordingController()
        monitor = build_monitor(config, replay=True, client=controller)
        tally = Tally(learn=learn)
        attackers = entry["attackers"] if entry["truth"] == "attack" else set()
        monitor.labeller.observers.append(lambda r, v: tally.observe(r, v, attackers, entry["victim"]))
        started = time.monotonic()
        try:
            stats = monitor.run({"pcap": entry["path"]}, status_every=1e9, stream=io.StringIO())
        finally:
            monitor.close()
        took = time.monotonic() - started
        events = list(read_events(config.alert_log, [])) if os.path.exists(config.alert_log) else []
    return judge(entry, stats, tally, controller.verdicts, events, took)


def judge(entry, stats, tally, verdicts, events, took) -> dict:
    attack = entry["truth"] == "attack"

    def concerns_attack(event) -> bool:
        if not attack:
            return False
        src = event.get("src_ip")
        if entry["attackers"] is None:   # every source but the victim; the victim may be either end
            return True
        return src in entry["attackers"] or (event.get("src_mac") or "") in _macs_of(tally, entry["attackers"])

    def attacker_target(verdict) -> bool:
        if not attack:
            return False
        if entry["arrives"] == "uplink" and "src_mac" in verdict:
            return False   # the upstream router's MAC: blocking it cuts the gateway off
        if "src_mac" in verdict:
            addresses = tally.hosts.get(verdict["src_mac"], set())
            if entry["attackers"] is None:
                return entry["victim"] not in addresses
            return bool(addresses & entry["attackers"])
        if "src_ip" in verdict:
            return verdict["src_ip"] != entry["victim"] if entry["attackers"] is None \
                else verdict["src_ip"] in entry["attackers"]
        return True   # a verdict shaped on the attack (destination, protocol, port), not on a host

    # a mitigation: a drop, a rate limit, or a port guard (a MAC flood's ingress port stops
    # learning and drops the sources it has not learned: the verdict names one MAC the flood sent)
    blocks = [v for v in verdicts if v.get("action", "block") in ("block", "rate_limit", "guard")]
    wrong = [v for v in blocks if not attacker_target(v)]
    # an alert is the responder's line about a rule's, a model's or an inspector's verdict; the
    # Z-score's opinion alone is an anomaly note (logged, never blocked on), counted apart
    alerts = [e for e in events if e.get("verdict_source", "") not in ("zscore", "")]
    hits = [e for e in alerts if concerns_attack(e)]
    # A real capture has background noise (a scanner passing by during a flood): the attack counts
    # as found by its first alert of a right category, or failing that by its first alert at all.
    right = [e for e in hits if e.get("alert", {}).get("category") in entry["category"]]
    first = min(right or hits, key=lambda e: parse_timestamp(e["timestamp"])) if hits else None
    first_at = parse_timestamp(first["timestamp"]) if first else None
    mitigations = [v for v in blocks if attacker_target(v)]
    techniques = sorted({str(e.get("alert", {}).get("metadata", {}).get("technique", [""])[0] or "")
                         for e in hits} - {""})
    row = {
        "file": entry["file"], "truth": entry["truth"], "packets": stats.get("packets", 0),
        "records": tally.records, "alerted": tally.alerted, "by_rule": tally.by_source.get("rule", 0),
        "by_model": tally.by_source.get("model", 0), "by_zscore": tally.by_source.get("zscore", 0),
        "by_inspector": sum(1 for e in alerts if e.get("verdict_source") == "inspector"), "by_behaviour": tally.by_source.get("behaviour", 0),
        "blocked_wrong": sorted({_target_text(v, tally) for v in wrong}),
        "sids": dict(tally.sids.most_common()),
        "categories": dict(Counter(e.get("alert", {}).get("category", "") for e in alerts)),
        "seconds": round(took, 2),
    }
    if attack:
        delay = None if first_at is None or not np.isfinite(tally.first_attack) else first_at - tally.first_attack
        row |= {
            "detected": first is not None, "first_alert_s": None if delay is None else round(max(delay, 0.0), 3),
            "category": first["alert"]["category"] if first else "",
            "category_right": bool(first) and first["alert"]["category"] in entry["category"],
            "technique_wanted": entry.get("technique", ""), "techniques": techniques,
            "technique_right": (not entry.get("technique")) or entry.get("technique") in techniques,
            "arrives": entry["arrives"], "mitigated": bool(mitigations),
            "mitigation_s": _first_verdict_delay(hits, tally.first_attack),
        }
    return row


def _first_verdict_delay(hits, first_attack: float):
    sent = [parse_timestamp(e["timestamp"]) for e in hits if "block_id" in e.get("verdict", {})]
    return round(max(min(sent) - first_attack, 0.0), 3) if sent and np.isfinite(first_attack) else None


def _macs_of(tally: Tally, addresses) -> set:
    return {mac for mac, seen in tally.hosts.items() if seen & set(addresses)}


def _target_text(verdict: dict, tally: Tally) -> str:
    if "src_mac" in verdict:
        seen = ",".join(sorted(tally.hosts.get(verdict["src_mac"], set()))[:3])
        return f"{verdict['src_mac']} ({seen})"
    return ", ".join(f"{k}={verdict[k]}" for k in ("src_ip", "dst_ip", "ip_proto", "dst_port") if k in verdict)


def summary(rows: list[dict]) -> dict:
    benign = [r for r in rows if r["truth"] == "benign"]
    attacks = [r for r in rows if r["truth"] == "attack"]
    benign_records = sum(r["records"] for r in benign)
    benign_alerted = sum(r["alerted"] for r in benign)
    local = [r for r in attacks if r["arrives"] == "local"]
    uplink = [r for r in attacks if r["arrives"] == "uplink"]
    return {
        "benign_captures": len(benign), "benign_records": benign_records,
        "benign_records_alerted": benign_alerted / benign_records if benign_records else 0.0,
        "benign_captures_alerted": sum(1 for r in benign if r["alerted"]),
        "benign_hosts_blocked": sum(len(r["blocked_wrong"]) for r in rows),
        "attack_captures": len(attacks),
        "detected": sum(r["detected"] for r in attacks),
        "detected_in_time": sum(r["detected"] and r["first_alert_s"] is not None
                                and r["first_alert_s"] <= TARGETS["first_alert_s"] for r in attacks),
        "category_right": sum(r["category_right"] for r in attacks),
        "technique_right": sum(r["technique_right"] for r in attacks if r["technique_wanted"]),
        "technique_named": sum(1 for r in attacks if r["technique_wanted"]),
        "local_attackers": len(local), "local_mitigated": sum(r["mitigated"] for r in local),
        "uplink_attacks": len(uplink), "uplink_mitigated": sum(r["mitigated"] for r in uplink),
    }


def print_table(rows: list[dict], out=sys.stdout) -> None:
    head = (f"{'capture':44} {'packets':>8} {'records':>8} {'alerted':>7} {'rule':>6} {'behav':>6} {'model':>6} {'insp':>5} "
            f"{'z':>6}  {'result'}")
    print(head, file=out)
    for r in rows:
        name = r["file"].removeprefix("pcaps/")[-44:]
        counts = (f"{name:44} {r['packets']:>8,} {r['records']:>8,} {r['alerted']:>7,} {r['by_rule']:>6,} {r['by_behaviour']:>6,} "
                  f"{r['by_model']:>6,} {r['by_inspector']:>5,} {r['by_zscore']:>6,}")
        if r["truth"] == "benign":
            result = "benign: " + ("BLOCKED " + "; ".join(r["blocked_wrong"]) if r["blocked_wrong"] else "no block")
        else:
            when = f"{r['first_alert_s']:.2f}s" if r["first_alert_s"] is not None else "-"
            result = (f"{'DETECTED' if r['detected'] else 'MISSED  '} {when:>7} {r['category'] or '-':15}"
                      f"{'' if r['category_right'] else ' (wrong category)'}"
                      f" technique {','.join(r['techniques']) or '-'}"
                      f"{'' if r['technique_right'] else ' (wanted ' + r['technique_wanted'] + ')'}"
                      f" {r['arrives']}:{' mitigated' if r['mitigated'] else (' NOT mitigated' if r['arrives'] == 'local' else '')}")
            if r["mitigation_s"] is not None:
                result += f" in {r['mitigation_s']:.2f}s"
            if r["blocked_wrong"]:
                result += " BLOCKED-WRONG " + "; ".join(r["blocked_wrong"])
        print(f"{counts}  {result}", file=out)


def print_summary(s: dict, out=sys.stdout) -> None:
    print(f"\nbenign: {s['benign_captures']} captures, {s['benign_records']:,} records, "
          f"{100 * s['benign_records_alerted']:.2f}% alerted (target <= {100 * TARGETS['benign_records_alerted']:.1f}%), "
          f"{s['benign_captures_alerted']} captures with any alert; "
          f"benign hosts blocked: {s['benign_hosts_blocked']} (target 0)", file=out)
    print(f"attacks: {s['attack_captures']} captures, {s['detected']} detected, {s['detected_in_time']} within "
          f"{TARGETS['first_alert_s']:.0f} s, {s['category_right']} with the right category, technique right "
          f"{s['technique_right']}/{s['technique_named']}; local attackers mitigated "
          f"{s['local_mitigated']}/{s['local_attackers']}; uplink attacks mitigated by their shape "
          f"{s['uplink_mitigated']}/{s['uplink_attacks']}", file=out)


def targets_met(s: dict) -> bool:
    return (s["benign_hosts_blocked"] == 0 and s["benign_records_alerted"] <= TARGETS["benign_records_alerted"]
            and s["detected_in_time"] == s["attack_captures"] and s["category_right"] == s["attack_captures"]
            and s["technique_right"] == s["technique_named"] and s["local_mitigated"] == s["local_attackers"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("manifest")
    ap.add_argument("--config", default=os.path.join(ROOT, "config", "monitor.toml"))
    ap.add_argument("--only", action="append", help="only captures whose file contains this text (repeatable)")
    ap.add_argument("--json", help="also write the rows and the summary to this file")
    ap.add_argument("--strict", action="store_true", help="exit 2 when any target is missed")
    ap.add_argument("--learn", type=float, default=0.0, metavar="SECONDS",
                    help="site adaptation: a learning period at the start of each benign capture (not counted)")
    args = ap.parse_args(argv)
    os.environ.setdefault("IADM_OPERATOR_TOKEN", "bench")
    config = load_monitor_config(args.config)
    captures = load_manifest(args.manifest)
    if args.only:
        captures = [c for c in captures if any(t in c["file"] for t in args.only)]
    rows = []
    for entry in captures:
        if not os.path.exists(entry["path"]):
            print(f"{entry['file']}: missing, skipped", file=sys.stderr)
            continue
        rows.append(replay(entry, config, args.learn))
        print_table(rows[-1:], out=sys.stderr) if len(rows) > 1 else print_table(rows, out=sys.stderr)
    print()
    print_table(rows)
    s = summary(rows)
    print_summary(s)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "summary": s}, fh, indent=1, default=str)
    if s["benign_hosts_blocked"]:
        return 1
    return 2 if args.strict and not targets_met(s) else 0


if __name__ == "__main__":
    sys.exit(main())
