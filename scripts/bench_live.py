"""Live monitor on the Mininet topology: the highest mirrored rate it keeps with zero kernel drops.

Brings up the controller and the reference topology with one attacker host,
runs `iadm monitor` (full path: ring, decode, flows, features) on the
monitor host's mirror port, and floods Host2 from the attacker at rising
rates (bounded: --seconds each, 10 by default: longer than the
monitor's 64 MiB ring can absorb, so only sustained processing counts). For each rate it prints what the generator sent,
what OVS put on the mirror port, what the monitor's kernel ring took and
dropped. Baseline in the same run: tcpdump on the same port at the same
rate (capture only, no analysis).

    .venv/bin/python scripts/bench_live.py [--rates 20000,50000,100000,150000] [--spoof]
    .venv/bin/python scripts/bench_live.py --ticks     # in process: the cost of a quiet 0.1 s tick

--ticks fills the flow table with --flows flows at the live status interval (0.1 s), then times
`advance(now)` on ticks where nothing is due (a quiet link) and where 1% of the flows' records are,
beside the baseline of the same run: one scan of every table slot, which each tick cost before.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from iadm.testbed import ControllerProcess, gateway_network  # noqa: E402

FLOOD = Path(__file__).with_name("traffic") / "flood.py"


def mirror_tx(switch) -> int:
    out = switch.cmd("ovs-ofctl -O OpenFlow13 dump-ports s1 3")
    return int(re.search(r"tx pkts=(\d+)", out).group(1))


def run_rate(net, rate: int, spoof: bool, seconds: float, capture: str) -> dict:
    attacker, monitor, switch = net.get("a1", "monitor", "s1")
    if capture == "iadm":
        cmd = [sys.executable, "-m", "iadm.cli", "monitor", "--iface", "monitor-eth0", "--duration", str(seconds + 4),
               "--status-every", "100"]
    else:
        cmd = ["timeout", "-s", "INT", str(seconds + 4), "tcpdump", "-n", "-q", "-i", "monitor-eth0", "-w", "/dev/null"]
    mon = monitor.popen(cmd)
    time.sleep(1.0)
    before = mirror_tx(switch)
    flood = attacker.popen([sys.executable, str(FLOOD), "--iface", "a1-eth0", "--dst", "10.0.0.2",
                            "--dst-mac", "00:00:00:00:00:02", "--rate", str(rate), "--duration", str(seconds)]
                           + (["--spoof"] if spoof else []))
    out, _ = flood.communicate(timeout=seconds + 30)
    sent = json.loads(out.decode().strip().splitlines()[-1])
    time.sleep(0.5)
    mirrored = mirror_tx(switch) - before
    _, err = mon.communicate(timeout=seconds + 60)
    text = err.decode()
    if capture == "iadm":
        line = text.strip().splitlines()[-1]
        got = int(re.search(r"packets ([\d,]+)", line).group(1).replace(",", ""))
        drops = int(re.search(r"kernel-drops ([\d,]+)", line).group(1).replace(",", ""))
    else:
        got = int(re.search(r"(\d+) packets captured", text).group(1))
        drops = int(re.search(r"(\d+) packets dropped by kernel", text).group(1))
    return {"rate": rate, "sent_pps": sent["rate"], "mirrored": mirrored, "captured": got, "kernel_drops": drops}


def tick_costs(flows: int) -> None:
    import numpy as np

    from iadm.capture.batch import Batch
    from iadm.flows.pipeline import FeaturePipeline, warm_up
    from iadm.synth import frame
    warm_up()
    pipe = FeaturePipeline(status_interval=0.1, kind="running", flow_timeout=30.0)
    t0 = 1_700_000_000.0
    frames = [frame(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "10.255.0.1", 17, 1024 + i % 60000, 53)
              for i in range(flows)]
    for lo in range(0, flows, 20000):   # every flow sends once, spread over the first 10 ms
        part = frames[lo:lo + 20000]
        pipe.push(Batch.from_frames(part, [t0 + 0.01 * (lo + k) / flows for k in range(len(part))]))
    pipe.advance(t0 + 1.0)                   # their records close: the table now only waits
    waiting = len(pipe.table)
    quiet = []
    for k in range(200):
        start = time.perf_counter()
        pipe.advance(t0 + 1.0 + 0.1 * (k + 1))
        quiet.append(time.perf_counter() - start)
    busy_flows = max(1, flows // 100)
    busy = []
    t = t0 + 30.0
    for k in range(20):
        t += 0.1
        pipe.push(Batch.from_frames(frames[:busy_flows], [t] * busy_flows))
        start = time.perf_counter()
        pipe.advance(t + 0.11)
        busy.append(time.perf_counter() - start)
    active = np.ones(pipe.table.capacity, dtype=bool)
    scans = []
    for _ in range(50):
        start = time.perf_counter()
        np.flatnonzero(active & (pipe.table.SF[:, 0] < np.inf))
        scans.append(time.perf_counter() - start)
    q, b, s = (float(np.median(x)) * 1e3 for x in (quiet, busy, scans))
    print(f"table of {pipe.table.capacity:,} slots, {waiting:,} flows at a 0.1 s status interval")
    print(f"quiet tick (nothing due)          {q:8.3f} ms   (target 0.5 ms: {'met' if q <= 0.5 else 'NOT met'})")
    print(f"tick with {busy_flows:,} records due     {b:8.3f} ms   ({b / busy_flows * 1e3:.2f} us a record)")
    print(f"baseline: one scan of every slot  {s:8.3f} ms   (quiet tick / scan: {q / s:.3f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", action="store_true", help="time quiet ticks in process (no topology)")
    parser.add_argument("--flows", type=int, default=200_000, help="flows in the table for --ticks (200,000)")
    parser.add_argument("--rates", default="20000,50000,100000,150000")
    parser.add_argument("--spoof", action="store_true", help="forge a source per packet (every packet a flow)")
    parser.add_argument("--seconds", type=float, default=10.0, help="flood length per rate (10)")
    parser.add_argument("--workdir", default="run/bench-live")
    args = parser.parse_args()
    if args.ticks:
        tick_costs(args.flows)
        return 0
    workdir = Path(args.workdir).resolve()
    with ControllerProcess(workdir) as controller, gateway_network(controller.ofp_port, attackers=1) as net:
        net.get("a1").cmd("ping -c1 -W1 10.0.0.2")  # learned: the flood is forwarded and mirrored
        print(f"{'capture':8} {'target':>9} {'sent/s':>9} {'mirrored':>9} {'captured':>9} {'drops':>7}")
        best = {}
        for capture in ("tcpdump", "iadm"):
            for rate in [int(r) for r in args.rates.split(",")]:
                row = run_rate(net, rate, args.spoof, args.seconds, capture)
                print(f"{capture:8} {row['rate']:>9,} {row['sent_pps']:>9,} {row['mirrored']:>9,} "
                      f"{row['captured']:>9,} {row['kernel_drops']:>7,}", flush=True)
                if row["kernel_drops"] == 0:
                    best[capture] = max(best.get(capture, 0), row["mirrored"] / args.seconds)
        for capture, rate in best.items():
            print(f"highest mirrored rate with zero kernel drops, {capture}: about {rate:,.0f} packets/s")
        if "iadm" in best and "tcpdump" in best:
            print(f"ratio iadm / tcpdump (capture only): {best['iadm'] / best['tcpdump']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
