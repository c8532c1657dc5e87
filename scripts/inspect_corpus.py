"""Run the packet inspectors (ARP, MAC flood, DNS tunnel) over every capture of a manifest.

    .venv/bin/python scripts/inspect_corpus.py [../shared/data/corpus.toml] [--only TEXT] [-v]

Prints one row per capture: truth, the technique the manifest names, findings by technique,
whether a finding of the capture's technique names the attacker (ARP: the Ethernet source MAC of
the attacker's packets; DNS: the attacker's address; MAC flood: any source) and the capture time
from the first attack packet (approximated as the first packet from an attacker) to that finding.
Exits non-zero when a benign capture has a finding or an inspected technique is missed or late.
The manifest format is corpus.toml's (read its header); paths are relative to the manifest.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import time
import tomllib
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from iadm.capture.decode import decode  # noqa: E402
from iadm.capture.pcapfile import read_pcap  # noqa: E402
from iadm.inspect import ArpWatch, DnsWatch, MacFloodWatch  # noqa: E402
from iadm.inspect.finding import format_mac  # noqa: E402

DEFAULT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "corpus.toml")
INSPECTED = ("arp_spoofing", "mac_flood", "dns_tunnel")
DEADLINE = 2.0


def load(manifest: str) -> list[dict]:
    with open(manifest, "rb") as fh:
        doc = tomllib.load(fh)
    base = os.path.dirname(os.path.abspath(manifest))
    out = []
    for entry in doc.get("capture", []):
        entry = dict(entry)
        entry["path"] = os.path.join(base, entry["file"])
        attackers = entry.get("attackers", "sources except victim")
        entry["attackers"] = None if attackers == "sources except victim" else list(attackers)
        out.append(entry)
    return out


def _words(address: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(address)
    value = int(ip) | (0xFFFF << 32) if ip.version == 4 else int(ip)
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


def inspect_capture(entry: dict) -> dict:
    """Findings of the three watchers over one capture, and where the attacker first appears."""
    watchers = {"arp": ArpWatch(), "macs": MacFloodWatch(), "dns": DnsWatch()}
    findings = []
    attackers = [_words(a) for a in entry["attackers"] or []]
    victim = entry.get("victim", "")
    victim_words = _words(victim) if victim and victim != "many" else None
    first_attack = None
    attacker_macs: set[int] = set()
    packets = 0
    spent = 0.0
    for batch in read_pcap(entry["path"]):
        d = decode(batch)
        packets += len(d)
        start = time.perf_counter()
        for w in watchers.values():
            findings += w(batch, d)
        spent += time.perf_counter() - start
        if entry["truth"] != "attack" or not len(d):
            continue
        if entry["attackers"] is None:
            mine = np.ones(len(d), dtype=bool)
            if victim_words is not None:
                mine = ~((d.src_hi == np.uint64(victim_words[0])) & (d.src_lo == np.uint64(victim_words[1])))
        else:
            mine = np.zeros(len(d), dtype=bool)
            for hi, lo in attackers:
                mine |= (d.src_hi == np.uint64(hi)) & (d.src_lo == np.uint64(lo)) & (d.proto != 256)
        idx = np.flatnonzero(mine)
        if len(idx):
            t = float(d.ts[idx].min())
            first_attack = t if first_attack is None else min(first_attack, t)
            attacker_macs |= set(d.src_mac[idx].tolist())
    return {"findings": findings, "first_attack": first_attack, "attacker_macs": attacker_macs,
            "packets": packets, "seconds": spent, "counters": {k: w.counters for k, w in watchers.items()}}


def judge(entry: dict, result: dict) -> dict:
    """Did the capture's technique get found, naming the attacker, in time? Benign: no finding at all."""
    findings = result["findings"]
    technique = entry.get("technique", "")
    row = {"file": entry["file"], "truth": entry["truth"], "technique": technique,
           "by_technique": Counter(f.technique for f in findings), "named": None, "delay": None, "ok": True}
    if entry["truth"] == "benign":
        row["ok"] = not findings
        return row
    if technique not in INSPECTED:
        return row
    mine = [f for f in findings if f.technique == technique]
    if technique == "arp_spoofing":
        named = [f for f in mine if f.src_mac in result["attacker_macs"]]
        wrong = [f for f in mine if f.src_mac not in result["attacker_macs"]]
    elif technique == "dns_tunnel":
        attackers = set(entry["attackers"] or [])
        named = [f for f in mine if entry["attackers"] is None or f.src_ip in attackers]
        wrong = [f for f in mine if f not in named]
    else:
        named, wrong = mine, []
    row["named"] = bool(named) and not wrong
    if named and result["first_attack"] is not None:
        row["delay"] = min(f.ts for f in named) - result["first_attack"]
    row["ok"] = bool(row["named"]) and row["delay"] is not None and row["delay"] <= DEADLINE
    row["wrong"] = sorted({format_mac(f.src_mac) if f.src_mac else f.src_ip for f in wrong})
    return row


def table(rows: list[dict]) -> str:
    lines = [f"{'capture':52s} {'truth':6s} {'technique':13s} {'arp':>4s} {'mac':>4s} {'dns':>4s} "
             f"{'named':>5s} {'delay s':>8s} {'ok':>3s}"]
    for r in rows:
        c = r["by_technique"]
        delay = "" if r["delay"] is None else f"{r['delay']:.3f}"
        named = "" if r["named"] is None else ("yes" if r["named"] else "NO")
        lines.append(f"{os.path.basename(r['file'])[:52]:52s} {r['truth']:6s} {r['technique'][:13]:13s} "
                     f"{c.get('arp_spoofing', 0):4d} {c.get('mac_flood', 0):4d} {c.get('dns_tunnel', 0):4d} "
                     f"{named:>5s} {delay:>8s} {'ok' if r['ok'] else 'NO':>3s}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", nargs="?", default=DEFAULT)
    parser.add_argument("--only", default=None, help="captures whose file name contains TEXT")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every finding")
    args = parser.parse_args()
    rows = []
    packets = spent = 0
    for entry in load(args.manifest):
        if args.only and args.only not in entry["file"]:
            continue
        result = inspect_capture(entry)
        packets += result["packets"]
        spent += result["seconds"]
        rows.append(judge(entry, result))
        if args.verbose:
            for f in result["findings"]:
                who = format_mac(f.src_mac) if f.src_mac else ""
                print(f"  {os.path.basename(entry['file'])}: t+{f.ts - (result['first_attack'] or f.ts):.3f} "
                      f"sid {f.sid} {f.technique} {f.signature} [{who} {f.src_ip} -> {f.dest_ip}] "
                      f"block={f.block} {f.evidence}")
    print(table(rows))
    bad = [r for r in rows if not r["ok"]]
    print(f"\n{len(rows)} captures, {packets:,} packets, inspectors {spent:.3f} s; "
          f"{len(bad)} not as expected" + (": " + ", ".join(os.path.basename(r["file"]) for r in bad) if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
