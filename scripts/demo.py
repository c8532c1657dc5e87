"""The reference scenario, step by step: Host1 and Host2 talk through the
gateway, a verdict blocks Host1 at the switch, the block is lifted."""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from iadm.testbed import ControllerProcess, gateway_network

H1_IP, H2_IP = "10.0.0.1", "10.0.0.2"


def step(text):
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def ping(host, target, count=5):
    out = host.cmd(f"ping -n -c {count} -i 0.2 -W 1 {target}")
    received = int(re.search(r"(\d+) received", out).group(1))
    print(f"   {host.name} -> {target}: {received}/{count} echo replies")
    return received


def drop_counter(switch):
    out = switch.cmd(f"ovs-ofctl -O OpenFlow13 dump-flows s1 table=0,ip,nw_src={H1_IP}")
    found = re.findall(r"n_packets=(\d+).*hard_timeout=(\d+)", out)
    return (int(found[0][0]), int(found[0][1])) if found else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default="run/demo", help="config, logs and block store go here")
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "blocks.sqlite").unlink(missing_ok=True)  # a fresh run starts with no blocks
    results = {}

    step("starting the iadm controller (os-ken, OpenFlow 1.3) as its own process")
    with ControllerProcess(workdir, token="demo-token") as controller:
        print(f"   verdict API {controller.url}, log {controller.log_path}")
        step("bringing up the reference topology: Host1, Host2, monitor, OVS s1 (userspace datapath)")
        with gateway_network(controller.ofp_port) as net:
            h1, h2, switch = net.get("h1", "h2", "s1")
            step("Host1 and Host2 talk through the gateway")
            results["before"] = ping(h1, H2_IP)

            step("a verdict arrives: block Host1 (10.0.0.1) for 60 s")
            doc = controller.client().verdict(action="block", src_ip=H1_IP, duration=60,
                                              reason="demo: suspected SYN flood", source="demo")
            print(f"   block {doc['block']['block_id']} installed in table 0")
            results["blocked"] = ping(h1, H2_IP)
            counter = drop_counter(switch)
            print(f"   drop rule on the switch: {counter[0]} packets dropped, hard timeout {counter[1]} s")
            results["dropped"] = counter[0]

            step("the operator lifts the block")
            controller.client().verdict(action="unblock", block_id=doc["block"]["block_id"])
            time.sleep(0.2)
            results["after"] = ping(h1, H2_IP)

    step("summary")
    ok = results["before"] == 5 and results["blocked"] == 0 and results["dropped"] >= 5 and results["after"] == 5
    print(f"   {'before block':14} {results['before']}/5 replies")
    print(f"   {'while blocked':14} {results['blocked']}/5 replies, {results['dropped']} packets dropped at the switch")
    print(f"   {'after unblock':14} {results['after']}/5 replies")
    print(f"\n   {'DEMO PASSED' if ok else 'DEMO FAILED'}: controller log {controller.log_path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
