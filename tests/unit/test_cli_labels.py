"""`iadm features --rules`: records written with the rule engine's labels."""
import pandas as pd
from pcaptools import write_pcap
from scapy.all import IP, TCP, Ether

from iadm.cli import main


def test_features_with_rules_labels_a_forged_source_syn_flood(tmp_path, capsys):
    template = bytearray(bytes(Ether(src="00:00:00:00:00:65", dst="00:00:00:00:00:02")
                               / IP(src="0.0.0.0", dst="10.0.0.2") / TCP(sport=1024, dport=80, flags="S")))
    packets = []
    for i in range(300):
        template[26:30] = bytes([100, 64, i // 250, i % 250 + 1])  # a new forged source per SYN
        packets.append((1_700_000_000 + i * 0.001, bytes(template)))
    pcap, out = tmp_path / "flood.pcap", tmp_path / "flows.csv"
    write_pcap(pcap, packets)
    assert main(["features", str(pcap), "-o", str(out), "--rules", "rules/iot.rules",
                 "--vars", "rules/variables.conf"]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 300
    flagged = frame[frame.attack == 1]
    # once the window holds 50 such records, and 50 of those matched within a second (detection_filter)
    assert 195 <= len(flagged) <= 205 and flagged.index.min() >= 95
    assert set(flagged.category) == {"DDoS"} and set(flagged.subcategory) == {"TCP"}
    assert set(flagged.rule_sid) == {1000001}
    assert (frame[frame.attack == 0].category == "Normal").all()
    assert "labelled by rules: " in capsys.readouterr().err


def test_features_refuses_broken_rules_without_writing(tmp_path, capsys):
    bad = tmp_path / "bad.rules"
    bad.write_text("alert tcp any any -> any 80 (sid:1; srte > 3;)\n")
    pcap = tmp_path / "x.pcap"
    write_pcap(pcap, [(1.0, bytes(Ether() / IP() / TCP()))])
    assert main(["features", str(pcap), "-o", str(tmp_path / "o.csv"), "--rules", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:1:" in err and "unknown feature 'srte'" in err
    assert not (tmp_path / "o.csv").exists()


def test_every_record_names_its_gateway(tmp_path):
    import socket
    packets = [(1_700_000_000 + i, bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000 + i, dport=80)))
               for i in range(3)]
    pcap = tmp_path / "p.pcap"
    write_pcap(pcap, packets)
    assert main(["features", str(pcap), "-o", str(tmp_path / "named.csv"), "--gateway", "gw-lab-1"]) == 0
    assert main(["features", str(pcap), "-o", str(tmp_path / "host.csv")]) == 0
    assert pd.read_csv(tmp_path / "named.csv").gateway.tolist() == ["gw-lab-1"] * 3
    assert pd.read_csv(tmp_path / "host.csv").gateway.tolist() == [socket.gethostname()] * 3
