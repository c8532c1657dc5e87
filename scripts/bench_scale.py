#!/usr/bin/env python3
"""Bot-IoT scale on Dask: feature extraction and training on a LocalCluster of 1 and 2 workers,
beside today's pandas paths on the same data, in one run.

Data, all made here (no ../shared needed):
- captures: `--captures` synthetic pcaps from iadm/synth.py (benign IoT devices plus the attack
  windows, `--rounds` rounds each, snap length 128 as a monitor captures), hours apart;
- records: `--records` labelled records in Bot-IoT's shape (our records' 49 columns, as
  heavily attack-dominated as Bot-IoT), re-sampled from the pipeline's labelled records of those
  captures with +-2% noise on every float column, written by DatasetWriter as captures of
  `--per-capture` records each, one hour apart. Re-sampled, not extracted: extracting 20 M records
  would need some 40 M packets of pcap; extraction is measured on the captures themselves.

Printed: extraction packets/s (the serial `iadm features DIR -o OUT.parquet` process as the
baseline, then --dask with 1 and 2 workers), training rows/s (the pandas `iadm train DATASET`
process as the baseline, then --dask with 1 and 2 workers, and the 2-worker / 1-worker ratio), the
peak resident memory of every worker and of each baseline process, and the hold-out F1-macro of
each model on the same held-out captures. The pandas training runs under a watchdog that stops
it at --pandas-cap-gb (the machine is shared).

    .venv/bin/python scripts/bench_scale.py --records 1000000 --rounds 2      # a quick run
    .venv/bin/python scripts/bench_scale.py                                     # 20 M records
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from iadm.flows.output import DatasetWriter
from iadm.flows.pipeline import records_from_pcap, warm_up
from iadm.flows.records import RECORD_COLUMNS
from iadm.synth import attacks, benign, label_records

SNAPLEN = 128
T0 = 1_700_000_000.0
FLOW = {"status_interval": 5.0, "idle_timeout": 30.0, "max_flows": 1 << 18, "kind": "flow"}   # `iadm features`
IADM = os.path.join(os.path.dirname(sys.executable), "iadm")
GB = 1 << 30


def write_pcap(path: str, packets: list) -> int:
    """Frames cut at SNAPLEN with their wire length kept, in time order."""
    packets.sort(key=lambda p: p[0])
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, 1))
        for ts, data in packets:
            cut = data[:SNAPLEN]
            fh.write(struct.pack("<IIII", int(ts), round((ts % 1) * 1e6) % 1000000, len(cut), len(data)))
            fh.write(cut)
    return len(packets)


def make_captures(directory: str, captures: int, rounds: int) -> tuple[list, int]:
    os.makedirs(directory, exist_ok=True)
    out, total = [], 0
    for c in range(captures):
        packets, windows = [], []
        start = T0 + c * 7200.0
        for r in range(rounds):
            seed = c * 1000 + r
            packets += benign(start + r * 400.0, 300.0, devices=3, seed=seed)
            attack_packets, attack_windows = attacks(start + r * 400.0 + 60.0, seed=seed)
            packets += attack_packets
            windows += attack_windows
        path = os.path.join(directory, f"synth-{c:02d}.pcap")
        total += write_pcap(path, packets)
        out.append((path, windows))
    return out, total


def run_measured(cmd: list, cap_bytes: int | None = None) -> dict:
    """A child process's wall time, peak RSS (from wait4) and output; killed when its RSS passes cap."""
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        stopped = threading.Event()
        finished = threading.Event()

        def watch():   # reads /proc only: polling the child would reap it before wait4
            while not finished.wait(0.2):
                try:
                    with open(f"/proc/{proc.pid}/status") as fh:
                        rss = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS"))
                except (OSError, StopIteration):
                    continue
                if cap_bytes and rss > cap_bytes:
                    stopped.set()
                    os.kill(proc.pid, 9)
                    return

        threading.Thread(target=watch, daemon=True).start()
        _, status, usage = os.wait4(proc.pid, 0)
        finished.set()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"seconds": time.monotonic() - started, "peak_rss": usage.ru_maxrss * 1024, "rc": proc.returncode,
                "stdout": out.read(), "stderr": err.read(), "stopped_at_cap": stopped.is_set()}


# Today's serial extraction (what `iadm features DIR -o OUT.parquet` runs without --dask), its
# kernels loaded first as the workers' are.
SERIAL_EXTRACTION = """
import json, os, sys, time
from iadm.flows.pipeline import warm_up
from iadm.scale.features import extract_many
warm_up()
stats = extract_many(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), stream=open(os.devnull, "w"))
print(json.dumps({"seconds": stats["seconds"], "records": stats["records_written"]}))
"""

# The pandas path's fit alone (models.fit, LightGBM with 2 threads) on the same training rows, read
# without today's reader (only the feature columns): the model the Dask ones are compared with
# when `iadm train` itself cannot hold the data.
PANDAS_FIT = """
import json, sys, time
import numpy as np
from iadm.ml import evaluate
from iadm.ml.models import DEFAULT, fit
from iadm.ml.split import holdout_captures
from iadm.scale.dataset import load_matrix, parts
files = [p for p in parts(sys.argv[1]) if p.rows]
held = holdout_captures({p.capture for p in files})
start = time.monotonic()
train = load_matrix([p.path for p in files if p.capture not in held], DEFAULT, "attack")
x = train["x"].astype(np.float64)
del train["x"]
model = fit("lightgbm", x, train["attack"])
seconds = time.monotonic() - start
test = load_matrix([p.path for p in files if p.capture in held], DEFAULT, "attack")
proba = model.predict_proba(test["x"].astype(np.float64))
label = np.asarray(model.classes_)[proba.argmax(axis=1)]
truth = test["attack"].to_numpy()
f1 = evaluate.report(truth, label, truth, label, proba[:, 1])["f1_macro"]
print(json.dumps({"seconds": seconds, "train_rows": len(x), "f1_macro": f1}))
"""


def worker_peaks(client) -> list[int]:
    def peak():
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return sorted(client.run(peak).values())


def extract_on_cluster(pcaps: str, out: str, workers: int) -> dict:
    from iadm.scale.cluster import connect
    from iadm.scale.features import extract_many
    shutil.rmtree(out, ignore_errors=True)
    with connect("local", workers=workers) as client:
        client.run(warm_up)   # numba's kernels loaded before the clock starts
        with open(os.devnull, "w") as quiet:
            stats = extract_many(pcaps, out, FLOW, client=client, stream=quiet)
        stats["worker_peaks"] = worker_peaks(client)
    return stats


def training_dataset(root: str, bases: list, records: int, per_capture: int, seed: int = 0) -> int:
    """`records` rows re-sampled with noise from the labelled base frames, per_capture per capture."""
    rng = np.random.default_rng(seed)
    shutil.rmtree(root, ignore_errors=True)
    floats = [c for c in RECORD_COLUMNS if c in bases[0] and bases[0][c].dtype.kind == "f" and c not in ("stime", "ltime")]
    written, k = 0, 0
    while written < records:
        n = min(per_capture, records - written)
        base = bases[k % len(bases)]
        frame = base.iloc[rng.integers(0, len(base), n)].reset_index(drop=True)
        noise = {c: frame[c].to_numpy() * rng.uniform(0.98, 1.02, n) for c in floats}
        shift = k * 3600.0 - (frame["stime"].min() - T0)
        order = np.arange(1, n + 1)
        frame = frame.assign(**noise, stime=frame["stime"] + shift, ltime=frame["ltime"] + shift,
                             pkSeqID=order, seq=order)
        with DatasetWriter(root, f"capture-{k:04d}") as writer:
            writer.write(frame)
        written += n
        k += 1
    return k


def train_on_cluster(dataset: str, out: str, workers: int) -> dict:
    from iadm.ml.dask_train import train_on_cluster as train
    from iadm.scale.cluster import connect
    with connect("local", workers=workers) as client, open(os.devnull, "w") as quiet:
        model = train(dataset, "lightgbm", out, client, stream=quiet)
        return {"card": model.card, "worker_peaks": worker_peaks(client)}


def gb(n: float) -> str:
    return f"{n / GB:.2f} GB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=20_000_000, help="training records (20,000,000)")
    ap.add_argument("--per-capture", type=int, default=500_000, help="records per training capture (500,000)")
    ap.add_argument("--captures", type=int, default=8, help="synthetic pcaps for extraction (8)")
    ap.add_argument("--rounds", type=int, default=16, help="benign + attack rounds per pcap (16)")
    ap.add_argument("--pandas-cap-gb", type=float, default=10.0, help="stop the pandas training above this RSS")
    ap.add_argument("--workdir", help="where the data goes (a temporary directory, removed after)")
    args = ap.parse_args(argv)
    work = args.workdir or tempfile.mkdtemp(prefix="bench-scale-")
    os.makedirs(work, exist_ok=True)
    try:
        return _run(args, work)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def _run(args, work: str) -> int:
    pcaps = os.path.join(work, "pcaps")
    made = time.monotonic()
    captures, packets = make_captures(pcaps, args.captures, args.rounds)
    print(f"{args.captures} synthetic captures, {packets:,} packets ({time.monotonic() - made:.0f} s to make)",
          file=sys.stderr, flush=True)

    rows = []
    base = run_measured([sys.executable, "-c", SERIAL_EXTRACTION, pcaps, os.path.join(work, "serial.parquet"),
                         json.dumps(FLOW)])
    if base["rc"]:
        raise RuntimeError(f"serial extraction failed: {base['stderr'][-2000:]}")
    serial = json.loads(base["stdout"])
    seconds, serial_records = serial["seconds"], serial["records"]
    rows.append(("extraction", "pandas (serial, as `iadm features DIR` without --dask)", f"{packets / seconds:,.0f} packets/s",
                 f"{seconds:.1f} s", gb(base["peak_rss"]), "", ""))
    extraction = {}
    for n in (1, 2):
        stats = extract_on_cluster(pcaps, os.path.join(work, f"dask{n}.parquet"), n)
        if stats["records_written"] != serial_records or stats["failed"]:
            raise RuntimeError(f"{n} worker(s) wrote {stats['records_written']:,} records, the serial path "
                               f"{serial_records:,}; failed: {stats['failed']}")
        extraction[n] = packets / stats["seconds"]
        rows.append(("extraction", f"dask, {n} worker(s)", f"{extraction[n]:,.0f} packets/s", f"{stats['seconds']:.1f} s",
                     " / ".join(gb(p) for p in stats["worker_peaks"]), "", ""))
        print(f"extraction, {n} worker(s): {extraction[n]:,.0f} packets/s", file=sys.stderr, flush=True)
    rows.append(("extraction", "2 workers / 1 worker", f"x{extraction[2] / extraction[1]:.2f}", "", "", "", ""))

    bases = []
    for path, windows in captures:
        records, _ = records_from_pcap(path, **FLOW)
        bases.append(label_records(records, windows))
    dataset = os.path.join(work, "records.parquet")
    made = time.monotonic()
    n_captures = training_dataset(dataset, bases, args.records, args.per_capture)
    del bases
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(dataset) for f in fs)
    print(f"{args.records:,} training records in {n_captures} captures, {gb(size)} of Parquet "
          f"({time.monotonic() - made:.0f} s to make)", file=sys.stderr, flush=True)

    pandas = run_measured([IADM, "train", dataset, "--model", "lightgbm", "-o", os.path.join(work, "pandas")],
                          cap_bytes=int(args.pandas_cap_gb * GB))
    pandas_f1 = None
    if pandas["rc"] == 0:
        with open(os.path.join(work, "pandas.json")) as fh:
            card = json.load(fh)
        pandas_f1 = card["metrics"]["f1_macro"]
        secs = card["time"]["read_and_fit_seconds"]
        rows.append(("training", "pandas (`iadm train`, 1 process, 2 threads)",
                     f"{card['data']['train_rows'] / secs:,.0f} rows/s", f"{secs:.1f} s", gb(pandas["peak_rss"]),
                     f"{pandas_f1:.4f}", f"{card['data']['train_rows']:,}"))
    else:
        why = (f"stopped above {args.pandas_cap_gb:g} GB" if pandas["stopped_at_cap"]
               else f"failed: {pandas['stderr'].strip().splitlines()[-1:]}")
        rows.append(("training", "pandas (`iadm train`)", why, f"{pandas['seconds']:.1f} s", gb(pandas["peak_rss"]),
                     "", ""))
    print(f"pandas training: {rows[-1][2]}", file=sys.stderr, flush=True)
    if pandas_f1 is None:
        fitted = run_measured([sys.executable, "-c", PANDAS_FIT, dataset], cap_bytes=int(args.pandas_cap_gb * GB))
        if fitted["rc"]:
            raise RuntimeError(f"pandas fit failed: {fitted['stderr'][-2000:]}")
        got = json.loads(fitted["stdout"])
        pandas_f1 = got["f1_macro"]
        rows.append(("training", "pandas fit alone (feature columns read, models.fit, 2 threads)",
                     f"{got['train_rows'] / got['seconds']:,.0f} rows/s", f"{got['seconds']:.1f} s",
                     gb(fitted["peak_rss"]), f"{pandas_f1:.4f}", f"{got['train_rows']:,}"))
    rate = {}
    for n in (1, 2):
        got = train_on_cluster(dataset, os.path.join(work, f"dask{n}"), n)
        card = got["card"]
        secs = card["time"]["load_seconds"] + card["time"]["fit_seconds"]
        rate[n] = card["data"]["train_rows"] / secs
        f1 = card["metrics"]["f1_macro"]
        delta = f" ({(f1 - pandas_f1) * 100:+.2f} points)" if pandas_f1 is not None else ""
        rows.append(("training", f"dask lightgbm, {n} worker(s)", f"{rate[n]:,.0f} rows/s",
                     f"{secs:.1f} s (load {card['time']['load_seconds']:.1f}, fit {card['time']['fit_seconds']:.1f})",
                     " / ".join(gb(p) for p in got["worker_peaks"]), f"{f1:.4f}{delta}",
                     f"{card['data']['train_rows']:,}"))
        print(f"training, {n} worker(s): {rate[n]:,.0f} rows/s", file=sys.stderr, flush=True)
    rows.append(("training", "2 workers / 1 worker", f"x{rate[2] / rate[1]:.2f}", "", "", "", ""))

    print(f"\n{args.records:,} records ({n_captures} captures, held out: the same "
          f"{len(card['split']['holdout_captures'])} for every model); {packets:,} packets in {args.captures} "
          f"captures; {os.cpu_count()} cores\n")
    head = ("stage", "path", "throughput", "time", "peak RSS (per worker)", "hold-out F1-macro", "train rows")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
