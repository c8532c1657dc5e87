"""Floods through the uplink, on the topology with the router r1 and the outside client o1 behind it.

A UDP reflection (200 "reflectors" in 203.0.113.0/24 answering from SNMP's port 161) and a SYN
flood from forged addresses of 198.18.0.0/15 at Host2's port 80, both sent from r1, so that every
packet carries the router's MAC; a UDP flood from the LAN attacker a1 in the same run. The uplink
floods must be mitigated by their shape (the entries' and meters' counters read back from the
switch show the drops), the LAN attacker by its MAC at its port, r1's MAC and port never blocked,
and Host2 must keep answering Host1 and o1. Real OVS, real Mininet hosts, real generators, the
controller and the monitor as their own processes.
"""
import subprocess
from pathlib import Path

import pytest

from iadm.scenario.report import benign_during, outcomes, uplink_blocks
from iadm.scenario.runner import run_scenario
from iadm.scenario.spec import host_mac, load_scenario

SCENARIO = """
name = "uplink"
duration = 20
devices = 0
attackers = 1
uplink = true
shaped_rate_pps = 100

[background]
devices = ["h1", "o1"]
scale = 4.0

[[attack]]
kind = "reflection"
hosts = ["r1"]
target = "h2"
start = 3
duration = 4
rate = 10000
port = 161

[[attack]]
kind = "syn-flood"
hosts = ["r1"]
target = "h2"
start = 9
duration = 4
rate = 10000
spoof = true

[[attack]]
kind = "udp-flood"
hosts = ["a1"]
target = "h2"
start = 15
duration = 3
rate = 10000
"""


@pytest.fixture(scope="module")
def uplink_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uplink")
    path = tmp / "uplink.toml"
    path.write_text(SCENARIO)
    result = run_scenario(load_scenario(str(path)), tmp / "run", say=lambda text: None)
    return result, outcomes(result)


def test_the_reflection_is_dropped_by_its_shape(uplink_run):
    result, rows = uplink_run
    reflection = rows[0]
    assert reflection.uplink and reflection.mitigation == "shape drop", reflection
    match = reflection.block_matches[0]
    assert (match["ipv4_dst"], match["ip_proto"], match["udp_src"]) == ("10.0.0.2", 17, 161)
    # no source MAC; narrowed to what enters through the uplink, r1's port (in_port "uplink" resolved)
    assert "eth_src" not in match and match["in_port"] == int(result.uplink_port.rsplit("eth", 1)[1])
    counters = result.switch[reflection.block_ids[0]]
    assert counters["drop"] and counters["n_packets"] > 10_000   # read back from the switch
    assert reflection.time_to_block < 1.5
    assert reflection.after <= 0.01 * counters["n_packets"]       # what follows the drop stays off Host2


def test_the_forged_syn_flood_is_rate_limited_by_its_shape(uplink_run):
    result, rows = uplink_run
    syn = rows[1]
    assert syn.uplink and syn.mitigation == "rate limit", syn
    match = syn.block_matches[0]
    assert (match["ipv4_dst"], match["ip_proto"], match["tcp_dst"]) == ("10.0.0.2", 6, 80)
    assert match["in_port"] == int(result.uplink_port.rsplit("eth", 1)[1])   # the LAN's own :80 traffic is not limited
    counters = result.switch[syn.block_ids[0]]
    assert counters["meter_id"] == 256 + syn.block_ids[0]
    assert counters["meter_dropped"] > 10_000 and counters["n_packets"] >= counters["meter_dropped"]
    assert syn.time_to_block < 1.5
    assert counters["meter_dropped"] >= 0.95 * (counters["meter_dropped"] + syn.after)


def test_the_lan_attacker_is_blocked_by_mac_in_the_same_run(uplink_run):
    result, rows = uplink_run
    lan = rows[2]
    assert not lan.uplink and lan.mitigation == "MAC block" and lan.blocked_hosts == [host_mac("a1")]
    assert lan.block_matches[0]["in_port"] == 4   # a1's own port, not the uplink's
    assert result.switch[lan.block_ids[0]]["n_packets"] > 0


def test_the_router_is_never_blocked_and_benign_traffic_to_host2_flows(uplink_run):
    result, rows = uplink_run
    assert result.uplink_port == "s1-eth5"
    assert uplink_blocks(result) == []
    assert all(b["match"].get("eth_src") != host_mac("r1") for b in result.blocks)
    # who was blocked by source: a1 only
    assert {b["match"].get("eth_src") for b in result.blocks if "eth_src" in b["match"]} == {host_mac("a1")}
    for host in ("h1", "o1"):   # Host1 on the LAN and o1 behind the router
        counts = result.devices[host]["counts"]
        sent, answered = (sum(c[k] for c in counts.values()) for k in ("sent", "answered"))
        assert sent >= 40 and answered >= 0.9 * sent, (host, counts)
    during = benign_during(result, rows)
    assert during["o1"]["share"] >= 0.7 and during["h1"]["share"] >= 0.7, during


def test_no_leftovers_after_the_run(uplink_run):
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "iadm-mgmt0" not in links and "s1-eth" not in links
    assert not Path("/var/run/netns").exists() or "r1" not in " ".join(p.name for p in Path("/var/run/netns").iterdir())
