"""Monitor cost, in process and as whole commands, against dpkt and Argus on the same captures.

Workloads: the dense mix (a spoofed-source SYN flood, a UDP flood, a port scan with its RST
answers and bulk TCP over 10 s; snap length 128, as a monitor captures), the one-week IoT
captures of ../shared/data/pcaps/benign-iot/ (when present), and a generated week (1,000,000
packets of 10,000 flows over 7 days). For each, on one core, in this one run:
  dpkt      parse every frame down to the transport header and count (the baseline)
  argus     `argus -r` and `ra` writing CSV (the peer: the tool that made Bot-IoT's records)
  in-proc   read_pcap -> decode -> flow table -> window aggregates (flow records built)
  features  the whole `iadm features FILE -o out.csv` process: start to exit, CSV written
  monitor   the whole `iadm monitor --pcap FILE --config` process, shipped config, alerts only
  detect    records/s of rules + model + Z-score + fusion + responder over the running records
with the peak resident memory of each process. In-process figures are the fastest of --repeat.

    .venv/bin/python scripts/bench_monitor.py [--packets N] [--quick]
    .venv/bin/python scripts/bench_monitor.py --memory-sweep   # peak memory on every shared capture
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import tempfile
import random
import struct
import sys
import time
import tracemalloc


sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from iadm.capture.pcapfile import read_pcap  # noqa: E402
from iadm.flows.pipeline import FeaturePipeline, warm_up  # noqa: E402

SNAPLEN = 128
MAC_VICTIM, MAC_ATTACKER = b"\x00\x00\x00\x00\x00\x02", b"\x00\x00\x00\x00\x00\x65"


def _frame(src, dst, proto, sport, dport, flags=0, payload=0, smac=MAC_ATTACKER, dmac=MAC_VICTIM):
    l4 = (struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, flags, 64240, 0, 0) if proto == 6
          else struct.pack("!HHHH", sport, dport, 8 + payload, 0))
    total = 20 + len(l4) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, proto, 0, src, dst)
    frame = dmac + smac + b"\x08\x00" + ip + l4 + b"\x00" * payload
    return frame[:SNAPLEN], 14 + total


def build_capture(path: str, packets: int, seed: int = 7) -> None:
    """A mixed attack capture: 40% spoofed SYN flood, 25% UDP flood, 10% scan, 25% bulk TCP, over 10 s."""
    rng = random.Random(seed)
    victim, scanner, udp_src = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 102]), bytes([10, 0, 0, 101])
    plan = []
    n_syn, n_udp, n_scan = int(packets * 0.40), int(packets * 0.25), int(packets * 0.05)
    n_bulk = packets - n_syn - n_udp - 2 * n_scan
    for _ in range(n_syn):
        plan.append(_frame(rng.getrandbits(32).to_bytes(4, "big"), victim, 6, rng.randrange(1024, 65535), 80, 0x02))
    for _ in range(n_udp):
        plan.append(_frame(udp_src, victim, 17, rng.randrange(1024, 65535), 53, payload=512))
    for port in range(n_scan):
        plan.append(_frame(scanner, victim, 6, 40000, 1 + port % 65535, 0x02))
        plan.append(_frame(victim, scanner, 6, 1 + port % 65535, 40000, 0x14, smac=MAC_VICTIM, dmac=MAC_ATTACKER))
    for i in range(n_bulk):
        conn = i % 8
        client = bytes([10, 0, 0, 1])
        if i % 3:
            plan.append(_frame(client, victim, 6, 50000 + conn, 443, 0x18, payload=1448,
                               smac=b"\x00\x00\x00\x00\x00\x01"))
        else:
            plan.append(_frame(victim, client, 6, 443, 50000 + conn, 0x10, smac=MAC_VICTIM,
                               dmac=b"\x00\x00\x00\x00\x00\x01"))
    order = list(range(len(plan)))
    rng.shuffle(order)  # interleave the streams over the capture's 10 seconds
    t0 = 1_700_000_000.0
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, 1))
        for k, i in enumerate(order):
            frame, wire = plan[i]
            ts = t0 + 10.0 * k / len(order)
            fh.write(struct.pack("<IIII", int(ts), int((ts % 1) * 1e6), len(frame), wire))
            fh.write(frame)


def baseline_dpkt(path: str) -> int:
    import dpkt
    count = 0
    with open(path, "rb") as fh:
        for _ts, buf in dpkt.pcap.Reader(fh):
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, (dpkt.tcp.TCP, dpkt.udp.UDP)):
                count += 1
    return count


def ours(path: str, kind: str = "flow") -> tuple[int, int]:
    pipe = FeaturePipeline(kind=kind)
    records = 0
    for batch in read_pcap(path):
        records += sum(len(f) for f in pipe.push(batch))
    records += sum(len(f) for f in pipe.finish())
    return pipe.counters["packets"], records


def timed(fn, *args, repeat: int = 1):
    """The result and the shortest time of `repeat` runs (as timeit reports: the least disturbed run)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return result, best


def run_process(argv: list[str], env=None) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one whole process. GNU time reports the peak: a child
    forked from this (large) process would carry this process's peak in its own rusage."""
    with tempfile.NamedTemporaryFile("r") as peak:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak.name, *argv], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=env)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.decode()[-500:]}")
        return wall, int(peak.read().split()[-1]) / 1024


def argus_seconds(path: str, work: str) -> float | None:
    """argus -r, then ra to CSV: the peer's whole cost on the same file (None without Argus)."""
    if not (shutil.which("argus") and shutil.which("ra")):
        return None
    out = os.path.join(work, "argus.out")
    start = time.perf_counter()
    subprocess.run(["argus", "-S", "5", "-r", path, "-w", out], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(work, "ra.csv"), "w") as fh:
        subprocess.run(["ra", "-r", out, "-n", "-u", "-c", ","], check=True, stdout=fh, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def monitor_config(work: str) -> str:
    """The shipped monitor config with its log and database moved into the scratch folder."""
    here = os.path.join(os.path.dirname(__file__), "..", "config", "monitor.toml")
    text = open(here).read().replace("/var/log/iadm/", work + "/").replace("/var/lib/iadm/", work + "/")
    path = os.path.join(work, "monitor.toml")
    with open(path, "w") as fh:
        fh.write(text)
    return path


def detection_rate(path: str, work: str) -> tuple[int, float]:
    """Records/s of the whole decision path (rules, model, Z-score, fusion, responder writing alert
    lines; no controller), over the running records of a capture built beforehand."""
    from iadm.alerts.log import AlertLog
    from iadm.config import load_monitor_config
    from iadm.monitor import Labeller
    from iadm.stats.zscore import ZScoreDetector
    config = load_monitor_config(monitor_config(work))
    pipe = FeaturePipeline(kind="running", status_interval=config.status_interval)
    frames = []
    for batch in read_pcap(path):
        frames += pipe.push(batch)
    frames += pipe.finish()
    db = os.path.join(work, "bench-zscore.sqlite")
    if os.path.exists(db):
        os.remove(db)
    labeller = Labeller.from_rules(config.rule_files, config.variables, model=config.model or None,
                                   zscore=ZScoreDetector(db, config.zscore_tolerance, config.zscore_frequency,
                                                         config.zscore_min_count),
                                   responder_options={"client": None, "alert_log": AlertLog(
                                       os.path.join(work, "bench-alerts.json"), 1 << 30, 1),
                                       "replay": True})
    start = time.perf_counter()
    for frame in frames:
        if len(frame):
            labeller(frame)
    took = time.perf_counter() - start
    labeller.close()
    return sum(len(f) for f in frames), took


def build_week(path: str, packets: int = 1_000_000, flows: int = 10_000, seed: int = 5) -> None:
    """A sparse capture: `packets` packets of `flows` flows (UDP and TCP between 200 hosts) spread
    at random over 7 days, in time order."""
    rng = random.Random(seed)
    ends = [(bytes([10, 1, h // 250, h % 250 + 1]), bytes([10, 2, 0, rng.randrange(1, 50)]),
             rng.choice((6, 17)), rng.randrange(1024, 65535), rng.choice((53, 80, 123, 443, 1883, 5683)))
            for h in (rng.randrange(200) for _ in range(flows))]
    t0, span = 1_700_000_000.0, 7 * 86400.0
    times = sorted(rng.random() * span for _ in range(packets))
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, 1))
        for t in times:
            src, dst, proto, sport, dport = ends[rng.randrange(flows)]
            if rng.random() < 0.4:   # an answer
                frame, wire = _frame(dst, src, proto, dport, sport, 0x18, payload=64, smac=MAC_VICTIM)
            else:
                frame, wire = _frame(src, dst, proto, sport, dport, 0x18, payload=64)
            ts = t0 + t
            fh.write(struct.pack("<IIII", int(ts), int((ts % 1) * 1e6), len(frame), wire))
            fh.write(frame)


def workloads(args) -> list[tuple[str, str]]:
    out = [("dense mix", args.capture), ("generated week", args.week)]
    shared = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "pcaps", "benign-iot")
    out += [(os.path.basename(p), p) for p in sorted(glob.glob(os.path.join(shared, "*.pcap")))]
    return out


def memory_sweep(iadm: str, env: dict, limit_mib: float = 500.0) -> int:
    """Peak resident memory of `iadm features` and `iadm monitor --pcap` (the shipped config) on
    every capture of ../shared/data/pcaps: the issue's bound is 500 MiB on each."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "pcaps")
    captures = sorted(glob.glob(os.path.join(root, "**", "*.pcap*"), recursive=True))
    worst = [0.0, 0.0]
    print("| capture | `iadm features` s, peak MiB | `iadm monitor --pcap` s, peak MiB |\n|---|---:|---:|")
    with tempfile.TemporaryDirectory() as work:
        for path in captures:
            fresh = tempfile.mkdtemp(dir=work)
            t_feat, mem_feat = run_process([iadm, "features", path, "-o", os.path.join(fresh, "out.csv")], env)
            t_mon, mem_mon = run_process([iadm, "monitor", "--pcap", path, "--config", monitor_config(fresh)], env)
            worst = [max(worst[0], mem_feat), max(worst[1], mem_mon)]
            print(f"| {os.path.relpath(path, root)} | {t_feat:.2f}, {mem_feat:,.0f} | {t_mon:.2f}, {mem_mon:,.0f} |",
                  flush=True)
    print(f"\nlargest peak: features {worst[0]:,.0f} MiB, monitor {worst[1]:,.0f} MiB "
          f"(bound {limit_mib:,.0f} MiB on each: {'met' if max(worst) <= limit_mib else 'NOT met'})")
    return 0 if max(worst) <= limit_mib else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=5_000_000, help="packets of the dense mix (5,000,000)")
    parser.add_argument("--capture", default=None, help="the dense mix file (built once, run/bench/)")
    parser.add_argument("--week", default="run/bench/week-1M.pcap")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each in-process figure; the fastest counts")
    parser.add_argument("--quick", action="store_true", help="one run each, 1,000,000-packet dense mix")
    parser.add_argument("--memory-sweep", action="store_true",
                        help="only the peak memory of both commands on every shared capture")
    args = parser.parse_args()
    if args.memory_sweep:
        os.environ.setdefault("IADM_OPERATOR_TOKEN", "bench")
        return memory_sweep(os.path.join(os.path.dirname(sys.executable), "iadm"), dict(os.environ))
    if args.quick:
        args.repeat, args.packets = 1, min(args.packets, 1_000_000)
    args.capture = args.capture or f"run/bench/monitor-mix-{args.packets // 1000}k.pcap"
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the issue asks
    os.makedirs("run/bench", exist_ok=True)
    if not os.path.exists(args.capture):
        print(f"building {args.capture} ({args.packets:,} packets) ...", flush=True)
        build_capture(args.capture, args.packets)
    if not os.path.exists(args.week):
        print(f"building {args.week} (1,000,000 packets, 10,000 flows, 7 days) ...", flush=True)
        build_week(args.week)
    warm_up()   # compiling (or loading from numba's cache) is a one-off cost, not throughput
    iadm = os.path.join(os.path.dirname(sys.executable), "iadm")
    os.environ.setdefault("IADM_OPERATOR_TOKEN", "bench")   # the shipped config opens the operator API
    env = dict(os.environ)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, path in workloads(args):
            # each capture from a fresh state, as a user's first replay of it: no Z-score keys,
            # alert store or baseline left by the workload before
            fresh = os.path.join(work, name.replace("/", "_"))
            os.makedirs(fresh, exist_ok=True)
            config = monitor_config(fresh)
            n_base, t_base = timed(baseline_dpkt, path, repeat=args.repeat)
            t_argus = argus_seconds(path, work)
            (n, records), t_in = timed(ours, path, repeat=args.repeat)
            t_feat, mem_feat = run_process([iadm, "features", path, "-o", os.path.join(work, "out.csv")], env)
            t_mon, mem_mon = run_process([iadm, "monitor", "--pcap", path, "--config", config], env)
            n_det, t_det = detection_rate(path, fresh)
            rows.append((name, n, records, n_base / t_base, t_argus, n / t_in, t_feat, mem_feat, t_mon, mem_mon,
                         n_det / t_det if t_det else 0.0))
            print(f"  {name}: done", flush=True)
    print()
    print("| workload | packets | flow records | dpkt pkts/s | argus+ra s | in-process pkts/s (x dpkt) | "
          "`iadm features` s (pkts/s), peak MiB | `iadm monitor --pcap` s (pkts/s), peak MiB | detection path records/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, records, base, t_argus, inproc, t_feat, mem_feat, t_mon, mem_mon, det in rows:
        argus = f"{t_argus:.2f}" if t_argus is not None else "n/a"
        print(f"| {name} | {n:,} | {records:,} | {base:,.0f} | {argus} | {inproc:,.0f} ({inproc / base:.1f}x) | "
              f"{t_feat:.2f} ({n / t_feat:,.0f}), {mem_feat:,.0f} | {t_mon:.2f} ({n / t_mon:,.0f}), {mem_mon:,.0f} | "
              f"{det:,.0f} |")
    return 0


def _write_flood(path: str, packets: int) -> None:
    rng = random.Random(11)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, 1))
        for k in range(packets):
            frame, wire = _frame(rng.getrandbits(32).to_bytes(4, "big"), bytes([10, 0, 0, 2]), 6,
                                 rng.randrange(1024, 65535), 80, 0x02)
            ts = 1_700_000_000.0 + 10.0 * k / packets
            fh.write(struct.pack("<IIII", int(ts), int((ts % 1) * 1e6), len(frame), wire))
            fh.write(frame)


if __name__ == "__main__":
    sys.exit(main())
