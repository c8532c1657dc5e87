"""Cross-check our flow features against real Bot-IoT rows (../shared/data).

1. Identities: how often real Bot-IoT rows satisfy the formulas our records use
   (rate = (pkts-1)/dur, srate = (spkts-1)/dur, bytes = sbytes+dbytes, ...).
2. Same kind of traffic: medians of each feature in Bot-IoT rows of a
   subcategory next to ours on a real capture of that kind of attack.

    .venv/bin/python scripts/crosscheck_botiot.py [--shared ../shared]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from iadm.flows.pipeline import records_from_pcap  # noqa: E402


def close(a, b, rel=0.02, abs_=1e-3):
    return np.isclose(a, b, rtol=rel, atol=abs_)


def identities(bot: pd.DataFrame) -> list[tuple[str, float]]:
    dur = bot["dur"].where(bot["dur"] > 0)
    checks = {
        "pkts = spkts + dpkts": close(bot.pkts, bot.spkts + bot.dpkts),
        "bytes = sbytes + dbytes": close(bot.bytes, bot.sbytes + bot.dbytes),
        "dur = ltime - stime": close(bot.dur, bot.ltime - bot.stime),
        "rate = (pkts-1)/dur  (dur > 0)": close(bot.rate, (bot.pkts - 1) / dur)[dur.notna()],
        "srate = (spkts-1)/dur  (dur > 0, spkts > 1)": close(bot.srate, (bot.spkts - 1) / dur)[
            dur.notna() & (bot.spkts > 1)],
        "drate = (dpkts-1)/dur  (dur > 0, dpkts > 1)": close(bot.drate, (bot.dpkts - 1) / dur, rel=0.05)[
            dur.notna() & (bot.dpkts > 1)],
        "srate = 0 when spkts <= 1": (bot.srate == 0)[bot.spkts <= 1],
        "min <= mean <= max": ((bot["min"] <= bot["mean"] + 1e-9) & (bot["mean"] <= bot["max"] + 1e-9)),
        "max <= sum <= dur (+1e-6)": ((bot["max"] <= bot["sum"] + 1e-6) & (bot["sum"] <= bot.dur + 1e-6)),
    }
    return [(name, float(np.mean(ok)) if len(ok) else float("nan"), int(len(ok))) for name, ok in checks.items()]


FEATURES = ["pkts", "bytes", "dur", "mean", "stddev", "min", "max", "spkts", "dpkts", "rate", "srate", "drate"]
PAIRS = [("pkt.TCP.synflood.spoofed.pcap", "DoS", "TCP"), ("pkt.TCP.synflood.spoofed.pcap", "DDoS", "TCP"),
         ("synscan.pcapng", "Reconnaissance", "Service_Scan"),
         ("activeosfingerprinting.pcapng", "Reconnaissance", "OS_Fingerprint")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
    args = parser.parse_args()
    data = os.path.join(args.shared, "data")
    bot = pd.read_csv(os.path.join(data, "bot-iot", "BoT_IoT_1000.csv"), low_memory=False)
    print(f"## Identities over {len(bot):,} real Bot-IoT rows\n")
    print("| identity | rows satisfying | rows checked |\n|---|---:|---:|")
    for name, share, n in identities(bot):
        print(f"| {name} | {share:.1%} | {n:,} |")
    for pcap, category, sub in PAIRS:
        ours, _ = records_from_pcap(os.path.join(data, "pcaps", pcap), kind="flow")
        last = ours.sort_values("seq").groupby(["saddr", "sport", "daddr", "dport", "proto"]).tail(1)
        theirs = bot[(bot.category == category) & (bot.subcategory == sub)]
        print(f"\n## {pcap} (ours, {len(last):,} flows) vs Bot-IoT {category}/{sub} ({len(theirs):,} rows): medians\n")
        print("| feature | ours | Bot-IoT |\n|---|---:|---:|")
        for f in FEATURES:
            print(f"| {f} | {last[f].median():.4g} | {theirs[f].median():.4g} |")
        print(f"| state (most common) | {last.state.mode().iat[0]} | {theirs.state.mode().iat[0]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
