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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="20000,50000,100000,150000")
    parser.add_argument("--spoof", action="store_true", help="forge a source per packet (every packet a flow)")
    parser.add_argument("--seconds", type=float, default=10.0, help="flood length per rate (10)")
    parser.add_argument("--workdir", default="run/bench-live")
    args = parser.parse_args()
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
