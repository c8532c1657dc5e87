"""Labelled training data the project makes itself, and the default model built from it.

Benign IoT devices for the whole capture, attacks from one attacker host in
known windows (iadm/synth.py), written as a pcap, turned into records by the
monitor's own pipeline, labelled by injection window and sender.

    .venv/bin/python scripts/make_training_data.py -o run/data/synthetic.csv
    .venv/bin/iadm train run/data/synthetic.csv --model lightgbm --target category -o models/default
"""
from __future__ import annotations

import argparse
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from iadm.flows.output import RecordWriter  # noqa: E402
from iadm.flows.pipeline import records_from_pcap  # noqa: E402
from iadm.synth import attacks, benign, label_records  # noqa: E402


def write_pcap(path, packets):
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, data in sorted(packets, key=lambda p: p[0]):
            fh.write(struct.pack("<IIII", int(ts), int(round((ts % 1) * 1e6)) % 1000000, len(data), len(data)))
            fh.write(data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", default="run/data/synthetic.csv")
    parser.add_argument("--rounds", type=int, default=3, help="benign + attack rounds, each with its own seed")
    args = parser.parse_args()
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    pcap = os.path.splitext(args.output)[0] + ".pcap"
    packets, windows = [], []
    t0 = 1_700_000_000.0
    for r in range(args.rounds):
        start = t0 + r * 400.0
        packets += benign(start, 300.0, devices=3, seed=r)
        attack_packets, attack_windows = attacks(start + 60.0, seed=r)
        packets += attack_packets
        windows += attack_windows
    write_pcap(pcap, packets)
    records, stats = records_from_pcap(pcap)
    labelled = label_records(records, windows)
    writer = RecordWriter(args.output)
    writer.write(labelled)
    writer.close()
    counts = labelled.groupby(["category", "subcategory"]).size()
    print(f"{pcap}: {stats['packets']:,} packets -> {len(labelled):,} records -> {args.output}")
    print(counts.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
