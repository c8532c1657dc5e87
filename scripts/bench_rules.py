"""Rule engine throughput: 100 rules over 1,000,000 flow records, against a plain per-record loop.

Rules: the shipped rules/iot.rules plus rules generated from labelled data
(`iadm rules generate`, several seeds) up to 100. Records: real Bot-IoT rows
(../shared/data, window aggregates computed by our own code) and the monitor's
records of the real attack captures, replicated to 1,000,000.
  baseline  a plain Python loop: for each record, for each parsed rule, test it
            (the same AddressSet/PortSet/predicate objects), on a sample
  ours      RuleEngine.evaluate over the whole batch
Both must find the same matches on the sample before any time is printed.

    .venv/bin/python scripts/bench_rules.py [--records N] [--sample N] [--shared ../shared]
"""
from __future__ import annotations

import argparse
import operator
import os
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from iadm.flows.pipeline import records_from_pcap  # noqa: E402
from iadm.flows.window import WindowAggregator  # noqa: E402
from iadm.rules.engine import RuleEngine  # noqa: E402
from iadm.rules.generate import generate  # noqa: E402
from iadm.rules.parser import load_rules, parse_rules  # noqa: E402

OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq,
       "!=": operator.ne}
FAMILY = {"tcp": ("tcp",), "udp": ("udp",), "icmp": ("icmp", "ipv6-icmp")}


def build_rules(bot: pd.DataFrame, want: int = 100):
    rules = load_rules(["rules/iot.rules"], "rules/variables.conf")
    seed, sid = 0, 2_000_000
    while len(rules) < want and seed < 50:
        text = generate(bot, first_sid=sid, min_leaf=20, seed=seed, source="bench").text
        rules += parse_rules(text, f"<generated seed {seed}>")
        sid = max(r.sid for r in rules) + 1
        seed += 1
    return rules[:want]


def build_records(shared: str, count: int) -> pd.DataFrame:
    bot = pd.read_csv(os.path.join(shared, "data", "bot-iot", "BoT_IoT_1000.csv"), low_memory=False)
    bot = WindowAggregator()(bot.assign(sport=pd.to_numeric(bot.sport, errors="coerce").fillna(-1),
                                        dport=pd.to_numeric(bot.dport, errors="coerce").fillna(-1)))
    parts = [bot]
    for name in ("pkt.TCP.synflood.spoofed.pcap", "synscan.pcapng", "activeosfingerprinting.pcapng", "dosattack.pcap"):
        records, _ = records_from_pcap(os.path.join(shared, "data", "pcaps", name))
        parts.append(records)
    base = pd.concat(parts, ignore_index=True)
    base["sflags"] = base.get("sflags", pd.Series(0, index=base.index)).fillna(0).astype(np.int64)
    base["proto"] = base["proto"].astype(str)
    reps = -(-count // len(base))
    return pd.concat([base] * reps, ignore_index=True).iloc[:count].reset_index(drop=True)


def plain_loop(rules, frame: pd.DataFrame) -> list[list[int]]:
    rows = frame.to_dict("records")
    out = []
    for rec in rows:
        proto = rec["proto"]
        try:
            sport, dport = int(float(rec["sport"])), int(float(rec["dport"]))
        except (TypeError, ValueError):
            sport = dport = -1
        hits = []
        for i, rule in enumerate(rules):
            if rule.proto != "ip" and proto not in FAMILY[rule.proto]:
                continue

            def ports_ok(spec, port):
                return (not spec.include and not spec.exclude) or (port >= 0 and spec.contains(port))

            def one_way(s, sp, d, dp):
                return rule.src.contains(s) and ports_ok(rule.sport, sp) and rule.dst.contains(d) and \
                    ports_ok(rule.dport, dp)
            try:
                ok = one_way(rec["saddr"], sport, rec["daddr"], dport) or (
                    rule.direction == "<>" and one_way(rec["daddr"], dport, rec["saddr"], sport))
            except ValueError:
                ok = not rule.src.include and not rule.src.exclude and not rule.dst.include and not rule.dst.exclude
            if not ok:
                continue
            if rule.flags is not None:
                mode, bits = rule.flags
                f = int(rec["sflags"])
                if not ((f & 0xFF) == bits if mode == "exact" else (f & bits) == bits if mode == "all" else f & bits):
                    continue
            if all(OPS[p.op](float(rec[p.feature]), p.value) for p in rule.predicates):
                hits.append(i)
        if any(rules[i].action == "pass" for i in hits):   # pass wins over alert and drop
            hits = [i for i in hits if rules[i].action == "pass"]
        out.append(hits)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=20_000, help="records the plain loop runs over")
    parser.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
    args = parser.parse_args()
    bot = pd.read_csv(os.path.join(args.shared, "data", "bot-iot", "BoT_IoT_1000.csv"), low_memory=False)
    rules = build_rules(bot)
    frame = build_records(args.shared, args.records)
    engine = RuleEngine(rules)
    order = {id(r): i for i, r in enumerate(engine.ruleset.rules)}
    sample = frame.iloc[:args.sample].reset_index(drop=True)

    start = time.perf_counter()
    expected = plain_loop(engine.ruleset.rules, sample)
    t_plain = time.perf_counter() - start
    got = engine.evaluate(sample)
    mismatched = sum(1 for i in range(len(sample)) if sorted(order[id(r)] for r in got.for_row(i)) != expected[i])
    if mismatched:
        print(f"engine and plain loop disagree on {mismatched} of {len(sample)} records", file=sys.stderr)
        return 1

    engine = RuleEngine(rules)
    start = time.perf_counter()
    matches = engine.evaluate(frame)
    t_engine = time.perf_counter() - start
    start = time.perf_counter()
    matches.labels()   # what `--rules` labelling adds on top: the best rule's label per record
    t_labels = time.perf_counter() - start
    flagged = int((matches.best() >= 0).sum())
    print(f"rules     {len(rules)} ({sum(1 for r in rules if r.sid < 2_000_000)} shipped, the rest generated)")
    print(f"records   {len(frame):,} ({flagged:,} matched at least one rule); plain loop on the first {len(sample):,}")
    print(f"baseline  plain per-record loop   {len(sample) / t_plain:>12,.0f} records/s")
    print(f"ours      vectorised engine       {len(frame) / t_engine:>12,.0f} records/s  ({t_engine:.2f} s)")
    print(f"          with labels per record      {len(frame) / (t_engine + t_labels):>12,.0f} records/s")
    print(f"ratio     ours / baseline         {(len(frame) / t_engine) / (len(sample) / t_plain):>12.1f}x")
    print(f"target    1,000,000 records/s: {'met' if len(frame) / t_engine >= 1e6 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
