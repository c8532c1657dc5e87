"""Monitor throughput: our full path (decode, flow table, feature records) vs a dpkt baseline.

Builds (or reuses) a capture of >= 1,000,000 packets mixing a spoofed-source
SYN flood, a UDP flood, a port scan with its RST answers, and bulk TCP
(snap length 128, as a monitor would capture), then in one process on one
core runs:
  baseline  dpkt: parse every frame down to the transport header and count
  ours      read_pcap -> decode -> FlowTable -> window aggregates (records built)
and prints packets/s for each (the fastest of --repeat runs, 3 by default, on this
shared machine) and the ratio. Also the peak memory of our
path over the spoofed flood alone (tracemalloc; numpy reports to it).

    .venv/bin/python scripts/bench_monitor.py [--packets N] [--capture FILE]
"""
from __future__ import annotations

import argparse
import os
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


def ours(path: str) -> tuple[int, int]:
    pipe = FeaturePipeline()
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--capture", default="run/bench/monitor-mix.pcap")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the fastest counts (3)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the issue asks
    os.makedirs(os.path.dirname(args.capture) or ".", exist_ok=True)
    if not os.path.exists(args.capture):
        print(f"building {args.capture} ({args.packets:,} packets) ...", flush=True)
        build_capture(args.capture, args.packets)
    n_base, t_base = timed(baseline_dpkt, args.capture, repeat=args.repeat)
    warm_up()   # compiling (or loading from numba's cache) is a one-off cost, not throughput
    (n_ours, records), t_ours = timed(ours, args.capture, repeat=args.repeat)
    print(f"capture   {args.capture}: {n_ours:,} packets")
    print(f"baseline  dpkt decode-and-count      {n_base / t_base:>12,.0f} packets/s  ({t_base:.2f} s)")
    print(f"ours      decode+flows+features      {n_ours / t_ours:>12,.0f} packets/s  ({t_ours:.2f} s, "
          f"{records:,} records)")
    print(f"ratio     ours / baseline            {(n_ours / t_ours) / (n_base / t_base):>12.1f}x")
    print(f"target    1,000,000 packets/s: {'met' if n_ours / t_ours >= 1e6 else 'NOT met'}")

    flood = args.capture.replace(".pcap", "-flood.pcap")
    if not os.path.exists(flood):
        _write_flood(flood, 500_000)
    tracemalloc.start()
    (n_flood, flood_records), t_flood = timed(ours, flood)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"flood     {n_flood:,} spoofed SYNs, {flood_records:,} records: peak {peak / 2**20:,.0f} MiB "
          f"traced, {n_flood / t_flood:,.0f} packets/s under tracing")
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
