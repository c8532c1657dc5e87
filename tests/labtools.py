"""Helpers for tests on real Mininet hosts."""
import re


def ping(host, target, count=3):
    """Packets received of `count` echo requests."""
    out = host.cmd(f"ping -n -c {count} -i 0.2 -W 1 {target}")
    match = re.search(r"(\d+) received", out)
    assert match, out
    return int(match.group(1))


def flow_packets(switch, spec):
    """Packet counters of the flows matching an ovs-ofctl flow spec."""
    out = switch.cmd(f"ovs-ofctl -O OpenFlow13 dump-flows {switch.name} '{spec}'")
    return [int(n) for n in re.findall(r"n_packets=(\d+)", out)]
