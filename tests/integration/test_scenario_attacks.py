"""The attacks IoT gateways meet most, generated on the reference topology and met by the live monitor.

Password guessing against login listeners on a device host, ARP spoofing of Host2's address,
a DNS tunnel to a host playing the outside resolver, slow HTTP against Host2's web server and a
ping flood, each from its own host: each must be detected with its technique
(alert.metadata.technique) and, where it can be blocked, blocked by the attacker's MAC at its
own switch port; no other host is blocked and Host1's requests are answered. Real OVS, real
Mininet hosts, real generators, the controller and the monitor as their own processes.
"""
import json
from pathlib import Path

import pytest

from iadm.scenario.report import outcomes
from iadm.scenario.runner import run_scenario
from iadm.scenario.spec import host_mac, load_scenario

SCENARIO = """
name = "attacks"
duration = 19
devices = 3          # d1: the device whose login listeners are guessed; d2: the ARP victim; d3: tunnels
attackers = 6        # a4 plays the outside resolver

[background]
devices = ["h1"]
scale = 4.0

[[attack]]
kind = "ssh-guess"
hosts = ["a1"]
target = "d1"
start = 2
duration = 5
rate = 4

[[attack]]
kind = "telnet-guess"
hosts = ["a2"]
target = "d1"
start = 3
duration = 5
rate = 4

[[attack]]
kind = "arp-spoof"
hosts = ["a3"]
target = "h2"
victim = "d2"
start = 4
duration = 4
rate = 2

[[attack]]
kind = "dns-tunnel"
hosts = ["d3"]
target = "a4"
start = 6
duration = 4
rate = 10

[[attack]]
kind = "slow-http"
hosts = ["a5"]
target = "h2"
start = 9
duration = 5

[[attack]]
kind = "icmp-flood"
hosts = ["a6"]
target = "h2"
start = 14
duration = 3
rate = 2000
"""
SEEN = {}


def _victims_cache(net, controller):
    """While the run is still up: where d2 now thinks Host2's address is (the forged replies' work)."""
    SEEN["d2 neigh"] = net.get("d2").cmd("ip neigh show 10.0.0.2")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attacks")
    path = tmp / "attacks.toml"
    path.write_text(SCENARIO)
    result = run_scenario(load_scenario(str(path)), tmp / "run", say=lambda text: None,
                          before_teardown=_victims_cache)
    return result, {r.kind: r for r in outcomes(result)}


KINDS = ["ssh-guess", "telnet-guess", "arp-spoof", "dns-tunnel", "slow-http", "icmp-flood"]


@pytest.mark.parametrize("kind", KINDS)
def test_detected_with_its_technique_and_blocked_at_the_attackers_port(run, kind):
    result, rows = run
    row = rows[kind]
    window = next(w for w in result.windows if w.kind == kind)
    assert row.detected is not None, f"{kind} not detected"
    assert row.expected_technique and row.expected_technique in row.techniques, (kind, row.techniques)
    if row.blockable:
        assert row.blocked is not None, f"{kind} detected as {row.techniques} but not blocked"
        match = row.block_matches[0]
        assert match["eth_src"] == host_mac(window.hosts[0]) and match.get("in_port") is not None
        assert row.blocked_hosts == [host_mac(window.hosts[0])]
    else:
        assert row.named


def test_the_generators_met_real_listeners(run):
    result, _ = run
    out = {}
    for name, text in result.generators.items():
        lines = [line for line in text.splitlines() if line.startswith("{")]
        out[name] = json.loads(lines[-1]) if lines else {}
    by_kind = {w.kind: next(v for k, v in out.items() if k.endswith(f"-{w.hosts[0]}")) for w in result.windows}
    # blocked at the fifth login-shaped session: at least that many met the listener before
    assert by_kind["ssh-guess"]["sessions"] >= 5 and by_kind["ssh-guess"]["refused"] >= 5
    assert by_kind["telnet-guess"]["refused"] >= 5
    assert by_kind["dns-tunnel"]["queries"] >= 30 and by_kind["dns-tunnel"]["answered"] >= 1
    assert by_kind["slow-http"]["opened"] >= 50
    assert by_kind["arp-spoof"]["frames"] >= 4
    assert by_kind["icmp-flood"]["sent"] >= 4000
    listener = Path(result.outdir / "logs" / "listen-d1-22.log").read_text()
    assert '"sessions"' in listener or '"ready"' in listener


def test_the_forged_replies_poisoned_the_victim_and_only_the_spoofer_was_blocked(run):
    result, _ = run
    assert host_mac("a3") in SEEN["d2 neigh"], SEEN["d2 neigh"]     # the spoof was real
    blocked = {b["match"].get("eth_src") for b in result.blocks if b["action"] == "block"}
    for innocent in ("h1", "h2", "d1", "d2", "a4", "monitor"):
        assert host_mac(innocent) not in blocked, innocent
    counts = result.devices["h1"]["counts"]
    sent, answered = (sum(c[k] for c in counts.values()) for k in ("sent", "answered"))
    assert sent >= 30 and answered >= 0.95 * sent
