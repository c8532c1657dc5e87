"""Labelling by injection windows, edges included; scenario files checked key by key."""
import pandas as pd
import pytest

from iadm.config import ConfigError
from iadm.scenario.label import Window, label_by_windows, summary_table
from iadm.scenario.spec import load_scenario

A1, A2, H1 = 0x65, 0x66, 0x01
SYN = Window("syn", "syn-flood", ["a1"], ["00:00:00:00:00:65"], "h2", 100.0, 110.0, "DoS", "TCP")
SCAN = Window("scan", "service-scan", ["a1"], ["00:00:00:00:00:65"], "h2", 112.0, 115.0, "Reconnaissance",
              "Service_Scan")
DDOS = Window("ddos", "udp-flood", ["a1", "a2"], ["00:00:00:00:00:65", "00:00:00:00:00:66"], "h2", 120.0, 125.0,
              "DDoS", "UDP")


def records(*rows):
    return pd.DataFrame(rows, columns=["smac", "stime", "ltime"])


@pytest.mark.parametrize("smac, stime, ltime, expected", [
    (A1, 99.0, 99.9, "Normal"),           # ends before the window opens
    (A1, 99.0, 100.0, "TCP"),             # touches the start edge: overlaps
    (A1, 105.0, 105.0, "TCP"),
    (A1, 110.9, 111.0, "TCP"),            # inside the grace after the end
    (A1, 111.01, 111.5, "Normal"),        # past end + grace, before the next window
    (A1, 109.0, 113.0, "TCP"),            # straddles two windows: 2 s in the flood (with grace), 1 s in the scan
    (A1, 110.5, 114.5, "Service_Scan"),   # 0.5 s in the flood's grace, 2.5 s in the scan
    (H1, 105.0, 106.0, "Normal"),         # a benign host during an attack
    (A2, 121.0, 121.5, "UDP"),            # the second host of a DDoS
    (A2, 105.0, 106.0, "Normal"),         # a2 was not in the SYN flood
])
def test_window_edges(smac, stime, ltime, expected):
    labelled = label_by_windows(records((smac, stime, ltime)), [SYN, SCAN, DDOS])
    assert labelled.subcategory.iat[0] == expected
    assert labelled.attack.iat[0] == (expected != "Normal")


def test_summary_counts_per_label():
    labelled = label_by_windows(records((A1, 105, 105), (A2, 121, 121), (H1, 1, 2), (H1, 3, 4)), [SYN, DDOS])
    text = summary_table(labelled)
    assert "DDoS" in text and "total" in text and text.splitlines()[-1].strip().endswith("4")


def test_shipped_scenarios_load():
    demo = load_scenario("scenarios/demo.toml")
    assert [a.kind for a in demo.attacks][:4] == ["syn-flood", "udp-flood", "service-scan", "exfiltration"]
    full = load_scenario("scenarios/dataset.toml")
    assert {a.category for a in full.attacks} == {"DoS", "DDoS", "Reconnaissance", "Theft"}


@pytest.mark.parametrize("text, words", [
    ('name="x"\nduration=10\n[[attack]]\nkind="nuke"\nhosts=["a1"]\ntarget="h2"\nstart=1\nduration=1\n',
     "attack 1: kind 'nuke'"),
    ('name="x"\nduration=10\n[[attack]]\nkind="syn-flood"\nhosts=["a9"]\ntarget="h2"\nstart=1\nduration=1\n',
     "no host 'a9'"),
    ('name="x"\nduration=10\n[[attack]]\nkind="syn-flood"\nhosts=["a1"]\ntarget="h2"\nstart=8\nduration=5\n',
     "after the run"),
    ('name="x"\nduration=10\nextra=1\n', "unknown key(s) extra"),
    ('name="x"\n', "duration is required"),
])
def test_bad_scenarios_name_file_and_key(tmp_path, text, words):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as err:
        load_scenario(str(path))
    assert str(path) in str(err.value) and words in str(err.value)


def test_the_delay_table_shows_a_victim_answering_later_during_an_attack(tmp_path):
    """Benign handshakes to Host2 answered in 1 ms before and after an attack, in 40 ms during it:
    the demo's delay table says so; the attacker's own flows are not counted."""
    from scapy.all import IP, TCP, Ether

    from iadm.scenario.label import Window
    from iadm.scenario.report import AttackOutcome, delay_table
    from iadm.scenario.runner import RunResult
    from tests.pcaptools import write_pcap
    h1, h2, a1 = "00:00:00:00:00:01", "00:00:00:00:00:02", "00:00:00:00:00:65"
    packets = []
    for n, (t, rtt) in enumerate([(100 + i, 0.001) for i in range(5)] + [(110 + i * 0.5, 0.040) for i in range(4)]
                                 + [(113 + i, 0.001) for i in range(5)]):
        port = 40000 + n
        for dt, src, dst, s, d, sp, dp, flags in ((0, h1, h2, "10.0.0.1", "10.0.0.2", port, 80, "S"),
                                                  (rtt, h2, h1, "10.0.0.2", "10.0.0.1", 80, port, "SA"),
                                                  (rtt + 0.0002, h1, h2, "10.0.0.1", "10.0.0.2", port, 80, "A")):
            packets.append((t + dt, bytes(Ether(src=src, dst=dst) / IP(src=s, dst=d) / TCP(sport=sp, dport=dp, flags=flags))))
    packets += [(110.1 + i * 0.01, bytes(Ether(src=a1, dst=h2) / IP(src="10.0.0.101", dst="10.0.0.2")
                                         / TCP(sport=1000 + i, dport=80, flags="S"))) for i in range(50)]
    packets.sort(key=lambda p: p[0])
    write_pcap(tmp_path / "monitor.pcap", packets)
    window = Window("syn-flood a1->h2", "syn-flood", ["a1"], [a1], "h2", 109.5, 113.0, "DoS", "TCP")
    result = RunResult(outdir=tmp_path, t0=90.0, windows=[window], pcap=tmp_path / "monitor.pcap")
    row = AttackOutcome(window.name, 109.5, 110.0, 110.2, 112.0, 0, 0, 0, [])
    text = delay_table(result, [row])
    cells = " ".join(text.splitlines()[-1].split())
    # synack before / during / after (median ms and count), then the answers (none: no UDP)
    assert cells.startswith("syn-flood a1->h2 10.0.0.2 1.00 ( 5) 40.00 ( 4) 1.00 ( 5)"), text
