"""Argus's record rules, each on a few crafted packets: Argus 3.0.8 itself (argus + ra) writes the
expected status records, and iadm's must be the same rows (start, end, orientation, counts,
state). These are the rules the corpus comparison (test_argus_agreement.py) found: who is the
source of a flow first seen at a SYN-ACK, RST or mid-way packet; when a SYN-ACK flow turns round;
which packet dates a later status record; a capture whose time steps back."""
import shutil
import subprocess

import pytest
from scapy.all import IP, TCP, UDP, Ether, wrpcap

from iadm.flows.pipeline import records_from_pcap

pytestmark = pytest.mark.skipif(not shutil.which("argus") or not shutil.which("ra"),
                                reason="Argus is not installed (scripts/setup installs argus-server and argus-client)")

A, B = "10.0.0.1", "10.0.0.2"      # A: the client side (high port), B: the server side
C = (A, B, 50000, 80)              # client to server
S = (B, A, 80, 50000)              # server to client
HANDSHAKE = [(C, "S", 1.0), (S, "SA", 1.05), (C, "A", 1.1)]

CASES = {
    "lone SYN-ACK: its sender is the source (ACC)": [(S, "SA", 1.0)],
    "SYN-ACK between high ports": [((B, A, 40000, 50000), "SA", 1.0)],
    "repeated SYN-ACKs stay as they are": [(S, "SA", 1.0), (S, "SA", 2.0)],
    "SYN-ACK then the client's ACK turns the flow round (CLO)": [(S, "SA", 1.0), (C, "A", 1.1)],
    "SYN-ACK then more from its sender turns it round too": [(S, "SA", 1.0), (S, "PA", 1.1)],
    "a turn in a later record leaves the first as written": [(S, "SA", 1.0), (C, "A", 7.0), (C, "PA", 8.0)],
    "a turned flow dates later records from the SYN-ACK sender": [(S, "SA", 1.0), (C, "A", 1.1), (C, "PA", 7.0),
                                                                 (S, "PA", 7.1), (S, "FA", 13.1)],
    "SYN-ACK then FIN: turned, FIN": [(S, "SA", 1.0), (C, "FA", 1.1)],
    "SYN-ACK then RST settles it: no turn": [(S, "SA", 1.0), (C, "R", 1.1), (C, "A", 1.2)],
    "lone RST from the server port: its receiver is the source": [(S, "R", 1.0)],
    "mid-way data from a well-known port: its receiver is the source": [((B, A, 22, 50000), "PA", 1.0),
                                                                       ((A, B, 50000, 22), "A", 1.2)],
    "a later record is dated by its first source packet": HANDSHAKE + [(S, "PA", 7.0), (C, "A", 7.1)],
    "a later record with the destination only": HANDSHAKE + [(S, "PA", 7.0), (S, "PA", 7.1)],
    "the interval still runs from the record's first packet": HANDSHAKE + [(S, "PA", 7.0), (C, "A", 7.6),
                                                                          (C, "PA", 12.3), (S, "A", 12.4)],
    "time that steps back does not move a record's start": HANDSHAKE + [(C, "PA", 0.5), (S, "PA", 0.6),
                                                                       (C, "PA", 3.0)],
    "UDP: a later record dated by the source's packet": [("udp", C, 1.0), ("udp", S, 1.1), ("udp", S, 7.0),
                                                        ("udp", C, 7.4)],
}
FIELDS = ["stime", "ltime", "saddr", "sport", "daddr", "dport", "spkts", "dpkts", "state"]


def _packet(spec):
    if spec[0] == "udp":
        _, (src, dst, sport, dport), t = spec
        packet = Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / b"x"
    else:
        (src, dst, sport, dport), flags, t = spec
        packet = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags)
    packet.time = t
    return packet


def _argus_rows(pcap, tmp_path):
    argus_file = tmp_path / "out.argus"
    subprocess.run(["argus", "-S", "5", "-r", str(pcap), "-w", str(argus_file)], check=True, capture_output=True)
    text = subprocess.run(["ra", "-r", str(argus_file), "-n", "-u", "-c", ",", "-s", *FIELDS, "-", "not", "man"],
                          check=True, capture_output=True, text=True).stdout
    rows = []
    for line in text.splitlines()[1:]:
        stime, ltime, saddr, sport, daddr, dport, spkts, dpkts, state = (v.strip() for v in line.split(","))
        rows.append((round(float(stime), 6), round(float(ltime), 6), saddr, int(sport), daddr, int(dport),
                     int(spkts), int(dpkts), state))
    return rows


def _iadm_rows(pcap):
    records, _ = records_from_pcap(str(pcap), kind="status")
    return [(round(r.stime, 6), round(r.ltime, 6), str(r.saddr), int(r.sport), str(r.daddr), int(r.dport),
             int(r.spkts), int(r.dpkts), str(r.state)) for r in records.itertuples()]


@pytest.mark.parametrize("name", CASES)
def test_status_records_are_argus_own(name, tmp_path):
    pcap = tmp_path / "case.pcap"
    wrpcap(str(pcap), [_packet(spec) for spec in CASES[name]])
    expected = _argus_rows(pcap, tmp_path)
    assert expected, "Argus wrote no record"
    assert sorted(_iadm_rows(pcap)) == sorted(expected)
