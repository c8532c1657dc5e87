"""The whole live path on real captures nobody here recorded (../shared/data/corpus.toml), through
scripts/bench_detection.py: the shipped config must never block a benign host, must alert on at
most 0.5% of benign records, and must find the attacks it finds today with the right category."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
import bench_detection  # noqa: E402

MANIFEST = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "corpus.toml")
pytestmark = pytest.mark.skipif(not os.path.exists(MANIFEST), reason="../shared/data is not beside the project")


@pytest.fixture(scope="module")
def rows():
    os.environ.setdefault("IADM_OPERATOR_TOKEN", "test")
    config = bench_detection.load_monitor_config(os.path.join(os.path.dirname(__file__), "..", "..", "config",
                                                              "monitor.toml"))
    return [bench_detection.replay(entry, config) for entry in bench_detection.load_manifest(MANIFEST)
            if os.path.exists(entry["path"])]


def test_no_benign_host_is_blocked(rows):
    blocked = {r["file"]: r["blocked_wrong"] for r in rows if r["blocked_wrong"]}
    assert blocked == {}


def test_benign_records_alerted_stay_under_half_a_percent(rows):
    summary = bench_detection.summary(rows)
    assert summary["benign_captures"] >= 30
    assert summary["benign_records_alerted"] <= 0.005
    iot = [r for r in rows if "benign-iot" in r["file"]]
    assert iot and all(r["alerted"] == 0 for r in iot)     # the week-long devices: not one alert


def test_attacks_found_with_the_right_category(rows):
    summary = bench_detection.summary(rows)
    # today's floor (README's detection table): every attack found, named, with its category
    assert summary["detected"] == summary["attack_captures"] == summary["category_right"]
    assert summary["technique_right"] == summary["technique_named"]
    assert summary["detected_in_time"] >= 17 and summary["local_mitigated"] == summary["local_attackers"]
    assert summary["uplink_mitigated"] == summary["uplink_attacks"]      # by their shape, never the router
    by_file = {r["file"].rsplit("/", 1)[-1]: r for r in rows}
    for name, technique in [("nmap-null-scan.pcap", "port_scan"), ("slowloris-http.pcapng", "slow_http"),
                            ("ftp-bruteforce-ppa.pcap", "brute_force"), ("icmp-flood-hping.pcap", "icmp_flood"),
                            ("udp-flood-single-source.pcap", "udp_flood"), ("arp-poison-mitm.pcapng", "arp_spoofing"),
                            ("dns-tunnel-iodine.pcap", "dns_tunnel")]:
        row = by_file[name]
        assert row["detected"] and row["mitigated"] and technique in row["techniques"], row
    # random-MAC floods: one port guard, one line (not a line per forged MAC)
    for name in ("mac-flood-macof.pcapng", "dosattack.pcap"):
        row = by_file[name]
        assert row["mitigated"] and "mac_flood" in row["techniques"] and sum(row["categories"].values()) <= 5, row
    # slow guessers, found by the shape of their sessions or the server's refusals, well before a
    # minute (10 connections in 60 s took 60 s and 235 s)
    for name in ("ssh-bruteforce-medusa.pcapng", "ssh-bruteforce-ncrack.pcapng", "ftp-bruteforce-zeek.pcap"):
        assert by_file[name]["first_alert_s"] < 45 and by_file[name]["mitigated"], by_file[name]
