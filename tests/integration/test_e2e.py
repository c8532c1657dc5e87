"""End to end on the reference topology: attacks detected by the live monitor and blocked at the switch.

Real OVS, real Mininet hosts, real generators; the controller and the monitor
as their own processes, talking over the management link.
"""
import http.client
import json
import subprocess
from pathlib import Path

import pytest

from iadm.alerts.log import read_events
from iadm.scenario.report import outcomes, packet_times
from iadm.scenario.runner import run_scenario
from iadm.scenario.spec import host_mac, load_scenario
from iadm.testbed import MGMT_CONTROLLER

SCENARIO = """
name = "{name}"
duration = {duration}
devices = 0
attackers = 2

[background]
devices = ["h1"]
scale = 4.0
{attacks}
"""
SYN_FLOOD = """
[[attack]]
kind = "syn-flood"
hosts = ["a1"]
target = "h2"
start = 3
duration = 3
rate = 10000
spoof = true
"""
FORGED_AS_MONITOR = """
[[attack]]
kind = "udp-flood"
hosts = ["a2"]
target = "h2"
start = 8
duration = 3
rate = 10000
spoof_as = "10.0.0.253"
"""


def scenario(tmp_path: Path, name: str, duration: int, *attacks: str):
    path = tmp_path / f"{name}.toml"
    path.write_text(SCENARIO.format(name=name, duration=duration, attacks="".join(attacks)))
    return load_scenario(str(path))


OPERATOR_SEEN = {}


def _ask_the_operator_api(net, controller):
    """While the run is still up: the live monitor's operator API over the management link."""
    from iadm.scenario.runner import OPERATOR_PORT, TOKEN
    from iadm.testbed import MGMT_MONITOR
    conn_args = (MGMT_MONITOR, OPERATOR_PORT)
    for path in ("/status", "/alerts?limit=500", "/blocks", "/bytes_total/stats?limit=1"):
        conn = http.client.HTTPConnection(*conn_args, timeout=5)
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        OPERATOR_SEEN[path.split("?")[0]] = (resp.status, json.loads(resp.read()))
        conn.close()
    conn = http.client.HTTPConnection(*conn_args, timeout=5)
    conn.request("GET", "/metrics")
    OPERATOR_SEEN["/metrics"] = conn.getresponse().read().decode()
    conn.close()
    conn = http.client.HTTPConnection(MGMT_CONTROLLER, controller.api_port, timeout=5)
    conn.request("GET", "/metrics")
    OPERATOR_SEEN["controller /metrics"] = conn.getresponse().read().decode()
    conn.close()


@pytest.fixture(scope="module")
def blocking_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    return run_scenario(scenario(tmp, "blocking", 14, SYN_FLOOD, FORGED_AS_MONITOR), tmp / "run",
                        say=lambda text: None, before_teardown=_ask_the_operator_api)


def test_syn_flood_is_blocked_at_the_attackers_port_and_benign_traffic_flows(blocking_run):
    syn = outcomes(blocking_run)[0]
    assert syn.blocked is not None and syn.blocked_hosts == [host_mac("a1")]
    assert syn.time_to_block < 2.0
    assert syn.after <= 0.01 * (syn.before + syn.after)   # the switch drops what follows the block
    a1_block = next(b for b in blocking_run.blocks if b["match"].get("eth_src") == host_mac("a1"))
    assert a1_block["action"] == "block" and a1_block["match"]["in_port"] >= 4   # a1's own switch port
    counts = blocking_run.devices["h1"]["counts"]
    sent, answered = (sum(c[k] for c in counts.values()) for k in ("sent", "answered"))
    assert sent >= 30 and answered >= 0.95 * sent


def test_alert_log_holds_the_verdict_with_rule_and_model_opinions(blocking_run):
    events = [e for e in read_events(str(blocking_run.alert_log)) if e.get("src_mac") == host_mac("a1")]
    decided = [e for e in events if "verdict" in e]
    assert decided, events
    first = decided[0]
    assert first["alert"]["action"] == "blocked" and first["alert"]["signature_id"] >= 1000001
    assert "rule" in first["verdict_source"] and first["features"]
    assert first["model"]["name"] == "default" and 0.0 <= first["model"]["score"] <= 1.0
    assert first["verdict"]["installed_on"] == ["0000000000000001"]


def test_flood_forged_as_an_allowlisted_host_blocks_the_sender_not_that_host(blocking_run):
    forged = outcomes(blocking_run)[1]
    assert forged.blocked_hosts == [host_mac("a2")]
    matches = [b["match"] for b in blocking_run.blocks]
    assert all(m.get("ipv4_src") != "10.0.0.253" and m.get("eth_src") != host_mac("monitor") for m in matches)
    by_source = [m for m in matches if "eth_src" in m or "ipv4_src" in m]
    assert {m.get("eth_src") for m in by_source} == {host_mac("a1"), host_mac("a2")}   # nobody else
    # the floods' shapes (many sources at one victim): rate limits on the victim, no source named
    shaped = [b for b in blocking_run.blocks if b["match"] not in by_source]
    assert all(b["action"] == "rate_limit" and b["match"]["ipv4_dst"] == "10.0.0.2" for b in shaped)


def test_the_live_monitors_operator_api_and_metrics(blocking_run):
    status, doc = OPERATOR_SEEN["/status"]
    assert status == 200 and doc["components"]["capture"]["packets"] > 1000
    assert doc["components"]["model"]["name"] == "default" and doc["components"]["rules"]["rules"] == 15
    # the two attackers' MACs, and the forged floods' shape on their victim (a rate limit)
    assert doc["components"]["responder"]["verdicts_sent"] == 3
    status, alerts = OPERATOR_SEEN["/alerts"]
    assert {a.get("src_mac") for a in alerts["items"] if "verdict" in a} == {host_mac("a1"), host_mac("a2"), None}
    status, blocks = OPERATOR_SEEN["/blocks"]
    assert status == 200 and len(blocks["blocks"]) == 3                # read through from the controller
    assert sorted(b["action"] for b in blocks["blocks"]) == ["block", "block", "rate_limit"]
    status, stats = OPERATOR_SEEN["/bytes_total/stats"]
    assert status == 200 and stats["total"] > 0                        # the Z-score saw the background
    assert 'iadm_monitor_verdicts_total{category=' in OPERATOR_SEEN["/metrics"]
    assert "iadm_monitor_kernel_drops_total 0.0" in OPERATOR_SEEN["/metrics"]
    assert 'iadm_controller_blocks_active{action="block"} 2.0' in OPERATOR_SEEN["controller /metrics"]


def test_alert_only_mode_marks_and_lets_the_flood_through(tmp_path):
    result = run_scenario(scenario(tmp_path, "alert-only", 8, SYN_FLOOD), tmp_path / "run", alert_only=True,
                          say=lambda text: None)
    assert result.blocks and all(b["action"] == "alert" for b in result.blocks)
    events = list(read_events(str(result.alert_log)))
    assert any(e.get("src_mac") == host_mac("a1") and e["alert"]["action"] == "allowed" for e in events)
    ts, src = packet_times(result.victim_pcaps["h2"])
    window = result.windows[0]
    reached = int(((src == int(host_mac("a1").replace(":", ""), 16)) & (ts > window.start + 1.0)).sum())
    assert reached > 5000   # 10,000 packets/s for 3 s: the last two seconds arrive although detected


def test_no_leftovers_after_the_runs():
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "iadm-mgmt0" not in links and "s1-eth" not in links


def test_dataset_capture_labels_records_by_injection_window(tmp_path, capsys):
    """`iadm dataset capture` without detection: the attack runs its whole window and its records carry its label."""
    import pandas as pd

    from iadm.cli import main
    path = tmp_path / "tiny.toml"
    path.write_text(SCENARIO.format(name="tiny", duration=8, attacks="""
[[attack]]
kind = "udp-flood"
hosts = ["a1"]
target = "h2"
start = 2
duration = 2
rate = 2000
"""))
    assert main(["dataset", "capture", str(path), "-o", str(tmp_path / "out")]) == 0
    table = capsys.readouterr().out
    assert "DoS" in table and "UDP" in table and "Normal" in table
    records = pd.read_parquet(tmp_path / "out" / "records.parquet")
    flood = records[(records.smac == host_mac("a1")) & (records.proto == "udp")]
    assert len(flood) > 50 and (flood.subcategory == "UDP").all() and (flood.attack == 1).all()
    window = json.loads((tmp_path / "out" / "run.json").read_text())["windows"][0]
    before = records[(records.smac == host_mac("a1")) & (records.ltime < window["start"])]   # its ping before the run
    assert len(before) and (before.category == "Normal").all()
    benign = records[records.smac == host_mac("h1")]
    assert len(benign) > 10 and (benign.category == "Normal").all()
    assert not (tmp_path / "out" / "alerts.json").exists()    # no monitor ran: nothing was decided
