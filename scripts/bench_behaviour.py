#!/usr/bin/env python3
"""Records/s of BehaviourWatch (iadm/detection/behaviour.py): the Python implementation before the
compiled Distinct beside today's, in the same process, on the same record frames.

Workloads (the records the live pipeline makes: status every 0.1 s, flows cut at 30 s, as
iadm.flows.pipeline.records_from_pcap(path, status_interval=0.1, flow_timeout=30.0) gives them):
  syn-flood   ../shared/data/pcaps/pkt.TCP.synflood.spoofed.pcap (forged sources: a new key a record);
  mix         the first --records records of run/bench/monitor-mix-5000k.pcap (scripts/bench_monitor.py
              makes it): floods, a scan and bulk TCP, dense (the pipeline is fed until it has them);
  iot-week    ../shared/data/pcaps/benign-iot/lockly-hub-01.pcap (a smart-lock hub's week: sparse).
Each is judged as one frame, and in 0.1 s slices of ltime (live-like: what one tick of the monitor
hands over; the slices of a sparse capture hold one or two records, so there the figure is the
fixed cost of a call, also printed as us/batch). Every watcher is fresh for each run; the after
figure is the best of --repeat runs, the before one of --repeat-before (it is slow). Labels of the
two are compared batch by batch (identical: every column, categories included).

The implementation before is read from git (--before, a commit) into a temporary folder (removed
at exit).

    .venv/bin/python scripts/bench_behaviour.py [--records 300000] [--repeat 3] [--repeat-before 1]
"""
from __future__ import annotations

import argparse
import gc
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

from iadm.detection import behaviour as after  # noqa: E402
from iadm.flows.pipeline import FeaturePipeline, records_from_pcap  # noqa: E402

BEFORE = "3912f559a35a6693a956695ae578b1d50da82770"   # the last commit with the Python Distinct
PCAPS = os.path.join(ROOT, "..", "shared", "data", "pcaps")
MIX = os.path.join(ROOT, "run", "bench", "monitor-mix-5000k.pcap")
OPTIONS = {"status_interval": 0.1, "flow_timeout": 30.0}
TARGET = 300_000


def load_before(commit: str, folder: str):
    text = subprocess.run(["git", "-C", ROOT, "show", f"{commit}:iadm/detection/behaviour.py"], check=True,
                          capture_output=True, text=True).stdout
    path = os.path.join(folder, "behaviour_before.py")
    with open(path, "w") as fh:
        fh.write(text)
    spec = importlib.util.spec_from_file_location("behaviour_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["behaviour_before"] = module   # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def first_records(path: str, count: int) -> pd.DataFrame:
    """The first `count` records of a capture, as records_from_pcap would give them (in emission
    order), without reading the rest of it."""
    from iadm.capture.pcapfile import read_pcap
    pipe, frames, have = FeaturePipeline(**OPTIONS), [], 0
    for batch in read_pcap(path):
        made = [f for f in pipe.push(batch) if len(f)]
        frames += made
        have += sum(map(len, made))
        if have >= count:
            break
    else:
        frames += [f for f in pipe.finish() if len(f)]
    return pd.concat(frames, ignore_index=True).iloc[:count].reset_index(drop=True)


def slices(records: pd.DataFrame, step: float = 0.1) -> list[pd.DataFrame]:
    """The records in slices of `step` seconds of ltime, in time order (each in emission order)."""
    tick = np.floor(records["ltime"].to_numpy() / step)
    order = np.argsort(tick, kind="stable")
    cuts = np.flatnonzero(np.diff(tick[order])) + 1
    return [records.iloc[rows].reset_index(drop=True) for rows in np.split(order, cuts)]


def run(module, batches: list[pd.DataFrame], repeat: int):
    """(best seconds, labels of the last run)."""
    best, labels = float("inf"), None
    for _ in range(repeat):
        labels = None
        gc.collect()
        watch = module.BehaviourWatch()
        start = time.perf_counter()
        labels = [watch(b) for b in batches]
        best = min(best, time.perf_counter() - start)
    return best, labels


def identical(a: list, b: list) -> bool:
    for x, y in zip(a, b):
        try:
            pd.testing.assert_frame_equal(x, y)
        except AssertionError:
            return False
    return len(a) == len(b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help="commit of the implementation to compare with")
    parser.add_argument("--records", type=int, default=300_000, help="records of the dense mix")
    parser.add_argument("--repeat", type=int, default=3, help="runs of today's implementation (best taken)")
    parser.add_argument("--repeat-before", type=int, default=1, help="runs of the implementation before")
    args = parser.parse_args()
    workloads = {"syn-flood": os.path.join(PCAPS, "pkt.TCP.synflood.spoofed.pcap"), "mix": MIX,
                 "iot-week": os.path.join(PCAPS, "benign-iot", "lockly-hub-01.pcap")}
    with tempfile.TemporaryDirectory(prefix="behaviour-before-") as folder:
        before = load_before(args.before, folder)
        frames = {}
        for name, path in workloads.items():
            if not os.path.exists(path):
                print(f"{name}: {path} is missing (the mix is made by scripts/bench_monitor.py); skipped")
                continue
            frames[name] = first_records(path, args.records) if name == "mix" else \
                records_from_pcap(path, **OPTIONS)[0]
        warm = next(iter(frames.values())).iloc[:2000]
        for module in (before, after):   # compile (or load from numba's cache) before timing
            module.BehaviourWatch()(warm)
        print(f"BehaviourWatch: records/s; before = {args.before[:10]} (Python Distinct, best of "
              f"{args.repeat_before}), after = the work tree (best of {args.repeat})")
        print(f"{'workload':<10} {'as':<7} {'records':>8} {'batches':>8} {'before':>10} {'after':>11} "
              f"{'ratio':>6} {'us/batch':>9}  identical  target {TARGET:,}")
        met = True
        for name, records in frames.items():
            for shape, batches in (("frame", [records]), ("slices", slices(records))):
                took_after, labels_after = run(after, batches, args.repeat)
                took_before, labels_before = run(before, batches, args.repeat_before)
                n = len(records)
                rate = n / took_after
                met &= rate >= TARGET
                print(f"{name:<10} {shape:<7} {n:>8,} {len(batches):>8,} {n / took_before:>10,.0f} {rate:>11,.0f} "
                      f"{took_before / took_after:>5.1f}x {took_after / len(batches) * 1e6:>9,.0f}  "
                      f"{'yes' if identical(labels_before, labels_after) else 'NO':<9}  "
                      f"{'met' if rate >= TARGET else 'not met'}", flush=True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
