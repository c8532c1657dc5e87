"""Records/s of ZScoreDetector.score, the implementation before the compiled store beside today's.

Workloads (record frames from real captures, as the monitor's pipeline makes them):
  flood   the spoofed SYN flood capture's records, tiled with a destination per copy: every
          record is a new key (a fresh detector per run; the store fills and compacts past
          max_keys as in a flood);
  iot     the one-week IoT hub captures' records (a few hundred keys), tiled; timed on a
          detector that has seen every key once already (the steady state of a gateway);
  mix     the dense benchmark mix (run/bench/monitor-mix-*.pcap, when present): floods, a scan
          and bulk TCP, the first --records records; timed cold, as it comes.
Each is cut into batches of --batch records (the live path's 0.1 s of records is a batch).
The implementation before is read from git (--before, a commit) into a module of its own; the
outputs of both are compared batch by batch (flags, |z|, measurement), and so are the
anomalies and, where no key was dropped, the statistics of every key.

    .venv/bin/python scripts/bench_zscore.py [--records 262144] [--batch 1000 20000]
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from iadm.flows.pipeline import records_from_pcap  # noqa: E402
from iadm.stats import zscore as after  # noqa: E402

BEFORE = "b0c92c06fc5876b92ae19a68be829e490af4bfa5"   # the last commit with per-key dicts and Python lookups
PCAPS = os.path.join(ROOT, "..", "shared", "data", "pcaps")
COLUMNS = ["saddr", "daddr", "sport", "dport", "proto", "bytes", "pkts", "stime", "ltime"]


def load_before(commit: str):
    text = subprocess.run(["git", "-C", ROOT, "show", f"{commit}:iadm/stats/zscore.py"], check=True,
                          capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory(prefix="zscore-before-") as folder:
        path = os.path.join(folder, "zscore_before.py")
        with open(path, "w") as fh:
            fh.write(text)
        spec = importlib.util.spec_from_file_location("zscore_before", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def tiled(records: pd.DataFrame, count: int, new_keys: bool) -> pd.DataFrame:
    """`count` records: copies of `records`, later in time; with new_keys, each copy towards
    another destination (so no key repeats)."""
    span = float(records["ltime"].max() - records["stime"].min()) + 1.0
    parts = []
    for k in range(-(-count // len(records))):
        part = records.copy()
        part["stime"] += k * span
        part["ltime"] += k * span
        if new_keys:
            part["daddr"] = pd.Series(f"10.{k // 250}.{k % 250}.2", index=part.index, dtype=records["daddr"].dtype)
        parts.append(part)
    return pd.concat(parts, ignore_index=True).iloc[:count]


def batches(records: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    """Batches as the pipeline hands them on: fresh frames (categorical proto within a batch)."""
    out = []
    for start in range(0, len(records), size):
        part = records.iloc[start:start + size].reset_index(drop=True)
        part["proto"] = pd.Categorical(part["proto"].astype(str))
        out.append(part)
    return out


def run(module, frames, warm_frames=()) -> tuple[float, list, object]:
    det = module.ZScoreDetector()
    for frame in warm_frames:
        det.score(frame)
    outs = []
    start = time.perf_counter()
    for frame in frames:
        outs.append(det.score(frame))
    return time.perf_counter() - start, outs, det


def same(outs_a, outs_b, det_a, det_b) -> str:
    for a, b in zip(outs_a, outs_b):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    strip = [{k: v for k, v in row.items()} for row in det_a.anomaly_rows]
    assert strip == det_b.anomaly_rows, "anomalies differ"
    if det_a.stats_counters["keys_dropped"] or det_b.stats_counters["keys_dropped"]:
        return "outputs, anomalies"
    keys_a = {k: s for s, k in enumerate(det_a.keys)}
    assert set(keys_a) == set(det_b.keys), "different keys"
    for slot_b, key in enumerate(det_b.keys):
        slot_a = keys_a[key]
        for m in after.MEASUREMENTS:
            for table in ("n", "mean", "m2", "total"):
                va, vb = getattr(det_a, table)[m][slot_a], getattr(det_b, table)[m][slot_b]
                assert va == vb or (np.isnan(va) and np.isnan(vb)), (key, m, table, va, vb)
    return "outputs, anomalies, statistics"


def workloads(count: int):
    flood, _ = records_from_pcap(os.path.join(PCAPS, "pkt.TCP.synflood.spoofed.pcap"))
    yield "flood (new keys)", tiled(flood[COLUMNS], count, new_keys=True), False
    iot = [records_from_pcap(p)[0][COLUMNS] for p in sorted(glob.glob(os.path.join(PCAPS, "benign-iot", "*.pcap")))]
    yield "iot (warm keys)", tiled(pd.concat(iot, ignore_index=True), count, new_keys=False), True
    mixes = sorted(glob.glob(os.path.join(ROOT, "run", "bench", "monitor-mix-*.pcap")))
    if mixes:
        from iadm.capture.pcapfile import read_pcap
        from iadm.flows.pipeline import FeaturePipeline
        pipe, frames, have = FeaturePipeline(kind="running"), [], 0
        for batch in read_pcap(mixes[0]):
            frames += [f[COLUMNS] for f in pipe.push(batch) if len(f)]
            have = sum(len(f) for f in frames)
            if have >= count:
                break
        yield f"mix ({os.path.basename(mixes[0])})", pd.concat(frames, ignore_index=True).iloc[:count], False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=262_144)
    parser.add_argument("--batch", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument("--before", default=BEFORE, help="commit of the implementation to compare with")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    before = load_before(args.before)
    after.warm_up()
    print(f"score(): records/s, best of {args.repeat}; before = {args.before[:10]}, after = the work tree")
    print(f"{'workload':<34} {'keys':>8} {'batch':>6} {'before':>11} {'after':>11} {'ratio':>6}  identical")
    for name, records, warm in workloads(args.records):
        keys = len(records[["saddr", "daddr", "sport", "dport", "proto"]].drop_duplicates())
        for size in args.batch:
            frames = batches(records, size)
            warm_frames = frames if warm else ()
            took = {}
            for label, module in (("before", before), ("after", after)):
                best = None
                for _ in range(args.repeat if label == "after" else max(1, args.repeat - 1)):
                    seconds, outs, det = run(module, frames, warm_frames)
                    best = seconds if best is None else min(best, seconds)
                took[label] = (best, outs, det)
            checked = same(took["before"][1], took["after"][1], took["before"][2], took["after"][2])
            rate = {k: len(records) / v[0] for k, v in took.items()}
            print(f"{name:<34} {keys:>8,} {size:>6,} {rate['before']:>11,.0f} {rate['after']:>11,.0f} "
                  f"{rate['after'] / rate['before']:>5.1f}x  {checked}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
