"""Packet inspectors (ARP spoofing, MAC flooding, DNS tunnels) on crafted frames, fuzzed
payloads and, when ../shared is beside the project, every capture of the detection corpus."""
import os
import random
import struct
import sys

import numpy as np
import pytest
from scapy.all import (ARP, DNS, DNSQR, DNSRR, ICMP, IP, TCP, UDP, Dot1Q, Ether, IPv6, IPv6ExtHdrHopByHop, Raw)

from iadm.capture.batch import Batch
from iadm.capture.decode import COUNTERS, decode
from iadm.inspect import ArpWatch, DnsWatch, IcmpTunnelWatch, LoginFailureWatch, MacFloodWatch, SIDS, warm_up
from iadm.inspect import dnsparse
from iadm.synth import frame

T0 = 1_700_000_000.0


def run(watcher, packets):
    """packets: [(time, frame)], fed as one batch; returns the findings."""
    packets = sorted(packets, key=lambda p: p[0])
    batch = Batch.from_frames([bytes(f) for _, f in packets], [t for t, _ in packets])
    return watcher(batch, decode(batch, dict.fromkeys(COUNTERS, 0)))


def run_batches(watcher, packets, per=50):
    packets = sorted(packets, key=lambda p: p[0])
    out = []
    for i in range(0, len(packets), per):
        out += run(watcher, packets[i:i + per])
    return out


def mac(n: int) -> str:
    return f"02:00:00:00:{n >> 8 & 255:02x}:{n & 255:02x}"


def mac_int(text: str) -> int:
    return int(text.replace(":", ""), 16)


def source_mac(frame_bytes) -> int:
    return int.from_bytes(bytes(frame_bytes)[6:12], "big")


# ---------------------------------------------------------------- decoder: the l4 column
def test_l4_points_at_transport_and_arp_headers():
    frames = [Ether() / IP(src="10.0.0.1", dst="10.0.0.2", options=b"\x01\x01\x01\x00") / TCP(sport=1111, dport=22),
              Ether() / Dot1Q(vlan=7) / IP() / UDP(sport=2222, dport=53),
              Ether() / IPv6() / IPv6ExtHdrHopByHop() / UDP(sport=3333, dport=5353),
              Ether() / ARP(op=2, psrc="10.0.0.9", pdst="10.0.0.1")]
    batch = Batch.from_frames([bytes(f) for f in frames])
    d = decode(batch)
    assert d.l4.dtype == np.int32 and len(d.l4) == 4
    buf = batch.buf
    ports = [int(buf[a]) << 8 | int(buf[a + 1]) for a in d.l4[:3].tolist()]
    assert ports == [1111, 2222, 3333]
    arp = int(d.l4[3])
    assert bytes(buf[arp:arp + 2]) == b"\x00\x01" and bytes(buf[arp + 14:arp + 18]) == bytes([10, 0, 0, 9])


# ---------------------------------------------------------------- ARP
GW, GW_MAC = "192.168.1.1", mac(1)
VICTIM, VICTIM_MAC = "192.168.1.103", mac(103)
SPOOFER, SPOOFER_MAC = "192.168.1.102", mac(102)


def arp(t, op, hwsrc, psrc, hwdst, pdst, eth_src=None, eth_dst=None):
    dst = eth_dst or ("ff:ff:ff:ff:ff:ff" if op == 1 else hwdst)
    return t, Ether(src=eth_src or hwsrc, dst=dst) / ARP(op=op, hwsrc=hwsrc, psrc=psrc, hwdst=hwdst, pdst=pdst)


def ping(t, smac, dmac, src, dst):
    return t, Ether(src=smac, dst=dmac) / IP(src=src, dst=dst) / Raw(b"\x08\x00" + b"\x00" * 6)


def quiet_spoofer(t0=T0):
    """The real capture's pattern: forged replies every 2 s to both ends, a forged request now and
    then that the real owners answer, pings relayed: 20 packets over 9 s."""
    p = [ping(t0, SPOOFER_MAC, GW_MAC, SPOOFER, GW), ping(t0 + 0.001, GW_MAC, SPOOFER_MAC, GW, SPOOFER)]
    for k in range(5):
        t = t0 + 1.13 + 2 * k
        if k % 2 == 0:
            p += [arp(t, 2, SPOOFER_MAC, VICTIM, GW_MAC, GW), arp(t + 0.002, 2, SPOOFER_MAC, GW, VICTIM_MAC, VICTIM)]
        else:
            p += [arp(t, 1, SPOOFER_MAC, VICTIM, GW_MAC, GW, eth_dst=GW_MAC),
                  arp(t + 0.001, 2, GW_MAC, GW, SPOOFER_MAC, VICTIM),
                  arp(t + 0.002, 1, SPOOFER_MAC, GW, VICTIM_MAC, VICTIM, eth_dst=VICTIM_MAC),
                  arp(t + 0.003, 2, VICTIM_MAC, VICTIM, SPOOFER_MAC, GW)]
    while len(p) < 20:
        p.append(ping(t0 + 9 + 0.01 * len(p), SPOOFER_MAC, VICTIM_MAC, GW, VICTIM))
    return p


def test_quiet_spoofer_is_found_by_its_mac_within_two_seconds():
    packets = quiet_spoofer()
    assert len(packets) == 20
    findings = run_batches(ArpWatch(), packets, per=3)
    assert findings, "a 20-packet spoofer must be found"
    assert {f.src_mac for f in findings} == {mac_int(SPOOFER_MAC)}     # never the gateway or the victim
    assert min(f.ts for f in findings) - T0 <= 2.0
    assert any(f.block for f in findings)
    for f in findings:
        assert f.technique == "arp_spoofing" and f.mitre == "T1557.002" and f.sid in SIDS
        assert (f.category, f.subcategory, f.proto, f.src_ip) == ("Theft", "ARP_Spoofing", "arp", "")
        assert 2100001 <= f.sid <= 2100099 and 1 <= f.severity <= 3


def test_binding_change_while_owner_active():
    owner, other = mac(50), mac(66)
    p = [arp(T0, 1, mac(7), "10.0.0.7", "00:00:00:00:00:00", "10.0.0.50"),
         arp(T0 + 0.001, 2, owner, "10.0.0.50", mac(7), "10.0.0.7"),
         arp(T0 + 30, 1, owner, "10.0.0.50", "00:00:00:00:00:00", "10.0.0.7"),     # the owner still active
         arp(T0 + 40, 2, other, "10.0.0.50", mac(7), "10.0.0.7")]                  # nobody asked
    findings = run(ArpWatch(), p)
    assert [f.sid for f in findings] == [2100001]
    f = findings[0]
    assert f.src_mac == mac_int(other) and f.block and f.evidence["owner_mac"] == owner
    assert f.evidence["claimed_ip"] == "10.0.0.50" and f.dest_ip == "10.0.0.7"


def test_address_moving_after_its_owner_went_quiet_is_not_a_finding():
    """DHCP gives a departed host's address to a new one: the new owner announces it."""
    p = [arp(T0, 1, mac(7), "10.0.0.7", "00:00:00:00:00:00", "10.0.0.50"),
         arp(T0 + 0.001, 2, mac(50), "10.0.0.50", mac(7), "10.0.0.7"),
         arp(T0 + 3600, 1, mac(51), "0.0.0.0", "00:00:00:00:00:00", "10.0.0.50"),   # probe
         arp(T0 + 3601, 1, mac(51), "10.0.0.50", "00:00:00:00:00:00", "10.0.0.50"),  # announcement
         arp(T0 + 3602, 1, mac(7), "10.0.0.7", "00:00:00:00:00:00", "10.0.0.50"),
         arp(T0 + 3602.001, 2, mac(51), "10.0.0.50", mac(7), "10.0.0.7")]
    assert run(ArpWatch(forget=7200), p) == []


@pytest.mark.parametrize("configured", [True, False])
def test_unsolicited_reply_claiming_the_gateway(configured):
    router = mac(1)
    p = []
    for h in range(2, 6):     # every host asks for its gateway; the router answers
        t = T0 + h
        p += [arp(t, 1, mac(h), f"10.0.0.{h}", "00:00:00:00:00:00", "10.0.0.1"),
              arp(t + 0.001, 2, router, "10.0.0.1", mac(h), f"10.0.0.{h}")]
    p.append(arp(T0 + 100, 2, mac(9), "10.0.0.1", mac(3), "10.0.0.3"))
    watch = ArpWatch(gateways=["10.0.0.1"] if configured else (), active=30)   # the router has gone quiet
    findings = run(watch, p)
    assert [f.sid for f in findings] == [2100002]
    f = findings[0]
    assert f.src_mac == mac_int(mac(9)) and f.block and f.evidence["gateway_mac"] == router
    assert f.evidence["gateway_source"] == ("configured" if configured else "learned")
    assert configured or watch.learned_gateway == "10.0.0.1"


def test_one_mac_claiming_several_addresses():
    p = [arp(T0, 2, mac(9), "10.0.0.5", mac(3), "10.0.0.3"), arp(T0 + 1, 2, mac(9), "10.0.0.6", mac(3), "10.0.0.3")]
    findings = run(ArpWatch(), p)
    assert [f.sid for f in findings] == [2100003]
    assert findings[0].src_mac == mac_int(mac(9)) and findings[0].block
    assert findings[0].evidence["addresses"] == ["10.0.0.5", "10.0.0.6"]


def test_sender_mac_unlike_ethernet_source():
    p = [arp(T0, 1, mac(5), "10.0.0.5", "00:00:00:00:00:00", "10.0.0.1", eth_src=mac(9))]
    findings = run(ArpWatch(), p)
    assert [f.sid for f in findings] == [2100004]
    assert findings[0].src_mac == mac_int(mac(9)) and not findings[0].block    # the frame's sender is named
    assert findings[0].evidence["arp_sender_mac"] == mac(5)


def test_two_macs_answering_for_one_address_names_the_newer_and_does_not_block():
    p = [arp(T0, 1, mac(7), "10.0.0.7", "00:00:00:00:00:00", "10.0.0.50"),
         arp(T0 + 0.001, 2, mac(50), "10.0.0.50", mac(7), "10.0.0.7"),
         arp(T0 + 10, 1, mac(7), "10.0.0.7", "00:00:00:00:00:00", "10.0.0.50"),
         arp(T0 + 10.001, 2, mac(50), "10.0.0.50", mac(7), "10.0.0.7"),
         arp(T0 + 10.002, 2, mac(60), "10.0.0.50", mac(7), "10.0.0.7")]
    findings = run(ArpWatch(), p)
    assert [f.sid for f in findings] == [2100005]
    assert findings[0].src_mac == mac_int(mac(60)) and not findings[0].block


def test_benign_arp_gives_no_finding():
    """Gratuitous announcements, DHCP probes, a router answering for itself (also unsolicited),
    hosts re-ARPing every second, a day of it."""
    p = []
    router = mac(1)
    for k in range(0, 86400, 60):
        t = T0 + k
        p.append(arp(t, 1, mac(20), "10.0.0.20", "00:00:00:00:00:00", "10.0.0.20"))        # gratuitous request
        p.append(arp(t + 1, 2, mac(21), "10.0.0.21", "ff:ff:ff:ff:ff:ff", "10.0.0.21"))    # gratuitous reply
        p.append(arp(t + 2, 1, router, "10.0.0.1", "00:00:00:00:00:00", "10.0.0.20"))
        p.append(arp(t + 2.001, 2, mac(20), "10.0.0.20", router, "10.0.0.1"))
    for k in range(600):                                                                    # re-ARPing
        t = T0 + 100 + k
        p.append(arp(t, 1, mac(30), "10.0.0.30", "00:00:00:00:00:00", "10.0.0.1"))
        p.append(arp(t + 0.001, 2, router, "10.0.0.1", mac(30), "10.0.0.30"))
    for k in range(10):                                                                     # DHCP probes
        p.append(arp(T0 + 2000 + k, 1, mac(40), "0.0.0.0", "00:00:00:00:00:00", "10.0.0.40"))
    p.append(arp(T0 + 2020, 1, mac(40), "10.0.0.40", "00:00:00:00:00:00", "10.0.0.40"))
    p.append(arp(T0 + 3000, 2, router, "10.0.0.1", mac(30), "10.0.0.30"))                 # router, unasked
    watch = ArpWatch(gateways=["10.0.0.1"])
    assert run_batches(watch, p, per=500) == []
    assert watch.counters["probes"] >= 1 and watch.counters["announcements"] + watch.counters["repeats"] > 2000


def test_arp_for_non_ethernet_hardware_is_counted_not_read():
    frame = Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(hwtype=6, hwlen=6, op=2, psrc="10.0.0.1", pdst="10.0.0.2")
    watch = ArpWatch()
    assert run(watch, [(T0, frame)]) == []
    assert watch.counters["not_ethernet_ipv4"] == 1


def test_a_storm_of_forged_arp_gives_a_bounded_number_of_findings():
    rng = random.Random(13)
    frames, times = [], []
    for i in range(20000):
        sha = bytes([2, 0, 0, 0, rng.randrange(256), rng.randrange(256)])
        spa = bytes([10, 0, rng.randrange(4), rng.randrange(1, 255)])
        frames.append(b"\xff" * 6 + sha + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + sha + spa
                      + bytes(6) + bytes([10, 0, 0, 1]))
        times.append(T0 + i * 1e-4)                    # 2 s of capture
    batch = Batch.from_frames(frames, times)
    watch = ArpWatch()
    findings = watch(batch, decode(batch))
    per_sid = {}
    for f in findings:
        per_sid[f.sid] = per_sid.get(f.sid, 0) + 1
    assert findings and max(per_sid.values()) <= 3 * 50 and watch._once.suppressed > 0


def test_an_arp_sweep_of_the_lan_is_one_alert_naming_the_sweeper():
    """arp-scan / nmap -sn: one MAC asks for 40 addresses within 2 s. An alert (inventory apps and
    routers sweep too), named by the sweeper's MAC and address."""
    sweeper = mac(66)
    p = [arp(T0 + i * 0.05, 1, sweeper, "10.0.0.66", "00:00:00:00:00:00", f"10.0.0.{i + 100}") for i in range(40)]
    p += [arp(T0 + 0.051 + i * 0.05, 2, mac(i + 100), f"10.0.0.{i + 100}", sweeper, "10.0.0.66")
          for i in range(0, 40, 7)]
    [f] = run_batches(ArpWatch(), p, per=8)
    assert (f.sid, f.technique, f.mitre, f.category, f.block) == (2100006, "arp_sweep", "T1018", "Reconnaissance",
                                                                   False)
    assert f.src_mac == mac_int(sweeper) and f.src_ip == "10.0.0.66" and f.evidence["addresses_asked"] == 32
    assert f.ts - T0 < 2.0


def test_a_host_asking_for_its_peers_or_a_slow_sweep_is_no_sweep():
    """A host asking again and again for its gateway and a few peers; 31 addresses in a burst; a
    sweep of one address every 2 s (5 in any 10 s)."""
    host = [arp(T0 + k, 1, mac(5), "10.0.0.5", "00:00:00:00:00:00", f"10.0.0.{k % 6 + 1}") for k in range(600)]
    burst = [arp(T0 + i * 0.01, 1, mac(6), "10.0.0.6", "00:00:00:00:00:00", f"10.0.1.{i + 1}") for i in range(31)]
    slow = [arp(T0 + 2 * i, 1, mac(7), "10.0.0.7", "00:00:00:00:00:00", f"10.0.2.{i + 1}") for i in range(200)]
    for p in (host, burst, slow):
        assert [f.sid for f in run_batches(ArpWatch(), p, per=64) if f.sid == 2100006] == []


# ---------------------------------------------------------------- FTP login failures
FTP_CLIENT, FTP_SERVER, FTP_CLIENT_MAC = "10.0.0.9", "10.0.0.21", "02:00:00:00:00:09"


def ftp_reply(t, text, cport, seq):
    return t, (Ether(src=mac(21), dst=FTP_CLIENT_MAC) / IP(src=FTP_SERVER, dst=FTP_CLIENT)
               / TCP(sport=21, dport=cport, flags="PA", seq=seq) / Raw(text))


def test_ftp_refused_logins_are_guessing_blocked_by_the_client_s_mac():
    """Five "530 Login incorrect" from one server to one client within 120 s; a retransmitted one
    counts once; other replies (220 banner, 331, 230) never count."""
    p = []
    for k in range(5):
        t = T0 + 2.4 * k
        p += [ftp_reply(t, b"220 ready\r\n", 50000 + k, 1), ftp_reply(t + 0.01, b"331 password?\r\n", 50000 + k, 12),
              ftp_reply(t + 2.3, b"530 Login incorrect.\r\n", 50000 + k, 30)]
    p.insert(3, ftp_reply(T0 + 2.31, b"530 Login incorrect.\r\n", 50000, 30))   # retransmitted
    watch = LoginFailureWatch()
    [f] = run_batches(watch, p, per=4)
    assert (f.sid, f.technique, f.mitre, f.category, f.block) == (2100301, "brute_force", "T1110.001", "Theft", True)
    assert f.src_mac == mac_int(FTP_CLIENT_MAC) and (f.src_ip, f.dest_ip, f.dest_port) == (FTP_CLIENT, FTP_SERVER, 21)
    assert f.evidence["failed_logins"] == 5 and f.evidence["sessions"] == 5 and watch.counters["repeats"] == 1
    assert abs(f.ts - (T0 + 4 * 2.4 + 2.3)) < 1e-6


def test_ftp_a_few_mistyped_passwords_and_cut_replies_are_no_guessing():
    four = [ftp_reply(T0 + 30 * k, b"530 Login incorrect.\r\n", 50000 + k, 30) for k in range(4)]
    spread = [ftp_reply(T0 + 40 * k, b"530 Login incorrect.\r\n", 50000 + k, 30) for k in range(8)]  # 3 per 120 s
    logged_in = [ftp_reply(T0 + k, b"230 Login successful.\r\n", 50000 + k, 30) for k in range(20)]
    for p in (four, spread, logged_in):
        assert run_batches(LoginFailureWatch(), p) == []
    cut = [(t, bytes(f)[:54 + 1]) for t, f in (ftp_reply(T0 + k, b"530 x\r\n", 50000 + k, 30) for k in range(10))]
    batch = Batch.from_frames([f for _, f in cut], [t for t, _ in cut])
    assert LoginFailureWatch()(batch, decode(batch)) == []              # "5" captured, not "530": not read


# ---------------------------------------------------------------- MAC flood
def flood_frames(t0, count, rate, seed=1):
    """macof: TCP SYNs, each from a random MAC and address (packed with struct: scapy is slow)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        smac = ":".join(f"{rng.randrange(256):02x}" for _ in range(6))
        src = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        out.append((t0 + i / rate, frame(src, "10.0.0.2", 6, rng.randrange(1024, 65535), 80, 0x02, smac=smac)))
    return out


def test_macof_burst_gives_one_finding_with_counts():
    watch = MacFloodWatch()
    packets = flood_frames(T0, 6000, 3000.0)
    findings = run_batches(watch, packets, per=1000)
    assert len(findings) == 1
    f = findings[0]
    assert (f.technique, f.sid, f.mitre, f.category, f.subcategory) == ("mac_flood", 2100101, "T1498", "DoS",
                                                                         "MAC_Flood")
    assert f.src_mac == 0 and f.block and f.severity == 1
    # random MACs: half carry the group bit, so the fast count (50 within 1 s) is enough
    assert f.ts - T0 < 0.05 and f.evidence["new_macs"] == 50 and f.evidence["rate_per_s"] > 1000
    assert f.evidence["group_bit_sources"] >= 50 // 4
    # the port to guard is named by the burst's first unicast MAC (the one the switch learned first)
    first_unicast = next(m for m in (source_mac(p) for _, p in packets) if not m >> 40 & 1)
    assert f.ingress_mac == first_unicast and mac_int(f.evidence["first_macs"][0]) == first_unicast
    # quiet, then a second burst: a second finding; the first burst's totals are kept
    quiet = [(T0 + 30 + i, Ether(src=mac(1)) / IP() / TCP()) for i in range(20)]
    run_batches(watch, quiet)
    again = run_batches(watch, flood_frames(T0 + 60, 2000, 3000.0, seed=2), per=1000)
    assert len(again) == 1 and len(watch.bursts) == 1 and watch.bursts[0]["new_macs"] > 5000


def test_hosts_joining_a_lan_are_no_flood():
    """A monitor starting on a LAN of 300 hosts (all new within 20 s), then a host joining now and
    then, and MACs coming back after their table entries aged out."""
    p = []
    for h in range(300):
        p.append((T0 + h / 15, Ether(src=mac(h)) / IP(src=f"10.0.{h // 250}.{h % 250 + 1}") / UDP()))
    for k in range(200):
        p.append((T0 + 30 + 7 * k, Ether(src=mac(k % 300)) / IP() / UDP()))
        p.append((T0 + 30 + 7 * k + 1, Ether(src=mac(1000 + k)) / IP() / UDP()))
    watch = MacFloodWatch()
    assert run_batches(watch, p, per=64) == []
    assert watch.known_macs >= 300


def test_a_flood_of_unicast_random_macs_needs_the_full_count():
    """Random MACs with the group bit cleared (a careful flooder): no fast path, the 500-in-10-s
    count; at 3,000 a second it is still there within 0.2 s."""
    packets = [(t, f[:6] + bytes([f[6] & 0xFE]) + f[7:]) for t, f in flood_frames(T0, 3000, 3000.0, seed=5)]
    [f] = run_batches(MacFloodWatch(), packets, per=500)
    assert f.evidence["new_macs"] == 500 and f.evidence["group_bit_sources"] == 0 and f.ts - T0 < 0.2


def test_a_busy_lan_meeting_the_monitor_is_no_fast_flood():
    """A monitor starting on a LAN of 80 active hosts meets them all within a second: unicast MACs
    (none with the group bit), so neither count is reached."""
    p = [(T0 + h / 100, Ether(src=mac(h)) / IP(src=f"10.0.0.{h + 1}") / UDP()) for h in range(80)]
    assert run_batches(MacFloodWatch(), p, per=16) == []


def test_the_flood_s_macs_are_known_as_forged_and_a_host_s_is_not():
    watch = MacFloodWatch()
    host = [(T0 - 5, Ether(src=mac(7)) / IP(src="10.0.0.7") / UDP())]
    flood = flood_frames(T0, 2000, 3000.0, seed=7)
    run_batches(watch, host + flood, per=250)
    forged = np.array([source_mac(f) for _, f in flood], dtype=np.uint64)
    assert watch.flooding and watch.flood_macs(forged).all()
    assert not watch.flood_macs(np.array([mac_int(mac(7)), 0x020000abcdef], dtype=np.uint64)).any()
    assert not MacFloodWatch().flood_macs(forged).any()              # no burst seen: nothing is forged


def test_mac_table_growth_and_reset_under_a_long_flood():
    watch = MacFloodWatch(max_macs=4096)
    packets = flood_frames(T0, 20000, 5000.0, seed=3)
    findings = run_batches(watch, packets, per=2500)
    assert len(findings) == 1 and watch.counters["table_cleared"] >= 1
    assert watch.counters["new_macs"] >= 20000 - 10


# ---------------------------------------------------------------- DNS
CLIENT, RESOLVER = "10.0.0.30", "10.0.0.20"
CLIENT_MAC = "02:00:00:00:00:1e"


def query(t, name, qtype="A", src=CLIENT, dst=RESOLVER, sport=40000, qid=1):
    return t, (Ether(src=CLIENT_MAC, dst=mac(20)) / IP(src=src, dst=dst) / UDP(sport=sport, dport=53)
               / DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype=qtype)))


def answer(t, name, qtype="A", src=RESOLVER, dst=CLIENT, dport=40000, qid=1):
    return t, (Ether(src=mac(20), dst=CLIENT_MAC) / IP(src=src, dst=dst) / UDP(sport=53, dport=dport)
               / DNS(id=qid, qr=1, ra=1, qd=DNSQR(qname=name, qtype=qtype),
                     an=DNSRR(rrname=name, type="A", rdata="93.184.216.34")))


def raw_dns(t, name_bytes: bytes, qtype=1, src=CLIENT, dst=RESOLVER):
    """A query whose question is given as wire bytes (for labels scapy would not write)."""
    msg = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + name_bytes + struct.pack("!HH", qtype, 1)
    return t, Ether(src=CLIENT_MAC) / IP(src=src, dst=dst) / UDP(sport=40001, dport=53) / Raw(msg)


def b32(rng, n):
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz012345") for _ in range(n))


def wire(name: str) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\x00"


def test_iodine_like_null_queries_with_encoded_labels():
    rng = random.Random(4)
    p = [query(T0 + 0.05 * i, f"{b32(rng, 50)}.{b32(rng, 40)}.t.pirate.sea", "NULL", qid=i) for i in range(20)]
    findings = run(DnsWatch(), p)
    sids = {f.sid for f in findings}
    assert {2100205, 2100202, 2100204} <= sids
    assert all(f.src_ip == CLIENT and f.dest_ip == RESOLVER and f.technique == "dns_tunnel" for f in findings)
    assert all(f.mitre == "T1071.004" and (f.category, f.subcategory) == ("Theft", "Tunnel") for f in findings)
    assert all(f.src_mac == mac_int(CLIENT_MAC) and f.dest_port == 53 and f.proto == "udp" for f in findings)
    null = next(f for f in findings if f.sid == 2100205)
    assert null.block and null.ts - T0 <= 0.2 and null.evidence["domain"] == "pirate.sea"
    assert null.evidence["sample_names"][-1].endswith(".pirate.sea")
    assert not next(f for f in findings if f.sid == 2100204).block


def test_binary_labels_are_encoded_data():
    rng = random.Random(5)
    p = []
    for i in range(4):
        label = bytes(rng.randrange(128, 256) for _ in range(30))
        p.append(raw_dns(T0 + i * 0.1, bytes([30]) + label + wire("x.tunnel.example")))
    findings = run(DnsWatch(), p)
    assert [f.sid for f in findings] == [2100201]
    assert findings[0].block and findings[0].evidence["domain"] == "tunnel.example"


def test_txt_heavy_unique_names_alert_without_block():
    p = [query(T0 + i, f"c{i:04d}.sess{i % 3}.exfil.example.net", "TXT", qid=i) for i in range(12)]
    findings = run(DnsWatch(), p)
    assert [f.sid for f in findings] == [2100204] and not findings[0].block


def test_many_unique_names_slower_tunnel():
    rng = random.Random(6)
    p = [query(T0 + i, f"{''.join(rng.choice('0123456789abcdef') for _ in range(22))}.d.example.org", "A", qid=i)
         for i in range(55)]
    findings = run_batches(DnsWatch(), p)
    assert [f.sid for f in findings] == [2100203] and not findings[0].block


def test_long_labels_over_tcp():
    rng = random.Random(7)
    p = []
    for i in range(10):
        msg = bytes(DNS(id=i, qd=DNSQR(qname=f"{b32(rng, 60)}.{b32(rng, 30)}.c2.example.com", qtype="A")))
        p.append((T0 + i * 0.2, Ether(src=CLIENT_MAC) / IP(src=CLIENT, dst=RESOLVER)
                  / TCP(sport=41000 + i, dport=53, flags="PA") / Raw(struct.pack("!H", len(msg)) + msg)))
    findings = run(DnsWatch(), p)
    assert [f.sid for f in findings] == [2100202] and findings[0].proto == "tcp" and findings[0].block


def raw_tunnel(t0, two_way=True, count=6):
    rng = random.Random(8)
    p = []
    for i in range(count):
        data = bytes(rng.randrange(256) for _ in range(rng.choice([4, 20, 47, 90])))
        data = b"\x10\xd1\x9e" + data[3:] if len(data) > 3 else data
        p.append((t0 + i * 0.05, Ether(src=CLIENT_MAC) / IP(src=CLIENT, dst="172.16.9.9") / UDP(sport=5000, dport=53)
                  / Raw(data)))
        if two_way:
            p.append((t0 + i * 0.05 + 0.01, Ether(dst=CLIENT_MAC) / IP(src="172.16.9.9", dst=CLIENT)
                      / UDP(sport=53, dport=5000) / Raw(b"\x10\xd1\x9e\x11" + bytes(16))))
    return p


def test_raw_non_dns_on_port_53_is_a_tunnel():
    findings = run(DnsWatch(), raw_tunnel(T0))
    assert [f.sid for f in findings] == [2100206]
    f = findings[0]
    assert f.block and f.mitre == "T1048" and f.src_ip == CLIENT and f.dest_ip == "172.16.9.9"
    assert f.evidence["two_way"] and f.evidence["non_dns_payloads"] == 3 and f.ts - T0 < 0.2
    one_way = run(DnsWatch(), raw_tunnel(T0, two_way=False))
    assert [f.sid for f in one_way] == [2100206] and not one_way[0].block


def test_a_flood_of_identical_or_cut_payloads_is_no_tunnel():
    """The same bytes again and again (a UDP flood to port 53), and DNS answers cut by a snap length."""
    p = [(T0 + i * 0.001, Ether() / IP(src=CLIENT, dst=RESOLVER) / UDP(sport=7000 + i, dport=53) / Raw(b"\x00" * 512))
         for i in range(300)]
    p += [(T0 + i * 0.001, Ether() / IP(src=CLIENT, dst=RESOLVER) / UDP(sport=7000, dport=53) / Raw(b"\x01\x02\x03"))
          for i in range(300)]
    watch = DnsWatch()
    assert run(watch, p) == []
    big = [answer(T0 + i, f"www{i}.example.com", dport=40000 + i) for i in range(20)]
    frames = [bytes(f) + bytes(400) for _, f in big]
    cut = Batch.from_frames([f[:60] for f in frames], [t for t, _ in big], wirelen=[len(f) for f in frames])
    assert watch(cut, decode(cut)) == [] and watch.counters["cut"] >= 20


BROWSER = ["www.espn.com", "espn.go.com", "a.espncdn.com", "a1.espncdn.com", "a2.espncdn.com", "a3.espncdn.com",
           "cdn.optimizely.com", "secure.espncdn.com", "d1z2jf7jlzjs58.cloudfront.net", "d3a8xk5nk2x1nj.cloudfront.net",
           "dz8ezkq2zuqbv.cloudfront.net", "d2zah9y47r7bi2.cloudfront.net", "e1234.dscb.akamaiedge.net",
           "e3456.a.akamaiedge.net", "r4---sn-4g5ednsl.googlevideo.com", "r2---sn-4g5e6nze.googlevideo.com",
           "rr1---sn-ab5l6nzr.googlevideo.com", "ec2-54-231-17-88.compute-1.amazonaws.com",
           "a3k7odshaiipe8-ats.iot.us-east-1.amazonaws.com", "s3.amazonaws.com", "fonts.gstatic.com",
           "www.googletagmanager.com", "www.google-analytics.com", "stats.g.doubleclick.net",
           "securepubads.g.doubleclick.net", "tpc.googlesyndication.com", "pagead2.googlesyndication.com",
           "connect.facebook.net", "static.xx.fbcdn.net", "scontent-iad3-1.xx.fbcdn.net", "pbs.twimg.com",
           "abs.twimg.com", "www-theguardian-com.cdn.ampproject.org", "www-bbc-co-uk.cdn.ampproject.org",
           "www-nytimes-com.cdn.ampproject.org", "cdn.ampproject.org",
           "3c9a1b2c-5f6e-4d3c-9b2a-1e0f9d8c7b6a.cloudapp.net",
           "wpad", "qxmzkdtrwo", "ldlnfwznpc", "s1._domainkey.example.org", "_dmarc.example.org"]


def test_a_browser_resolving_cdn_names_is_no_tunnel():
    p = []
    for rep in range(3):                       # three page loads a minute apart, A and AAAA and HTTPS
        for i, name in enumerate(BROWSER):
            t = T0 + 60 * rep + 0.02 * i
            for k, qt in enumerate(("A", "AAAA", 65)):
                p.append(query(t + 0.001 * k, name, qt, sport=30000 + i, qid=i * 3 + k))
                p.append(answer(t + 0.01 + 0.001 * k, name, qt, dport=30000 + i, qid=i * 3 + k))
    watch = DnsWatch()
    assert run_batches(watch, p, per=200) == []
    assert watch.counters["queries"] == len(p) // 2


def test_long_word_labels_and_allowed_domains_are_no_tunnel():
    """A news reader opening AMP pages: long labels made of words, many in a minute; and a
    reputation service that carries hashes in names, allowed by the operator."""
    sites = ["www-huffingtonpost-co-uk", "www-washingtonpost-com", "www-independent-co-uk-news", "amp-theguardian-com",
             "www-telegraph-co-uk-news-world", "www-nationalgeographic-com", "www-scientificamerican-com",
             "edition-cnn-com-travel-article", "www-businessinsider-com-markets", "www-smithsonianmag-com"]
    p = [query(T0 + i, f"{s}.cdn.ampproject.org", qid=i) for i, s in enumerate(sites * 2)]
    rng = random.Random(12)
    p += [query(T0 + 0.1 * i, f"{''.join(rng.choice('0123456789abcdef') for _ in range(32))}.av.reputation.example",
                "TXT", qid=100 + i) for i in range(60)]
    assert run(DnsWatch(allow_domains=["reputation.example"]), p) == []
    assert {f.sid for f in run(DnsWatch(), p)} >= {2100202}      # without the allowance: data in names


def test_reverse_lookups_dns_sd_and_mdns_are_no_tunnel():
    rng = random.Random(9)
    p = []
    for i in range(120):
        nibbles = ".".join(rng.choice("0123456789abcdef") for _ in range(32))
        p.append(query(T0 + 0.1 * i, f"{nibbles}.ip6.arpa", "PTR", qid=i))
        p.append(query(T0 + 0.1 * i + 0.05, f"{rng.randrange(256)}.{rng.randrange(256)}.168.192.in-addr.arpa", "PTR"))
    for i in range(12):                        # wide-area DNS-SD: instance names with spaces and UTF-8
        inst = f"Living Room TV {i} ({b32(rng, 6)})".encode() + "é".encode()
        p.append(raw_dns(T0 + 20 + i, bytes([len(inst)]) + inst + wire("_airplay._tcp.example.com"), qtype=16))
        p.append(query(T0 + 20 + i, "_services._dns-sd._udp.example.com", "PTR"))
        p.append(query(T0 + 20.5 + i, f"b._dns-sd._udp.{i}.1.168.192.in-addr.arpa", "PTR"))
    for i in range(60):                        # mDNS with long names: port 5353 is not selected
        name = f"{b32(rng, 40)}.{b32(rng, 40)}.local"
        p.append((T0 + 40 + i, Ether() / IP(src=CLIENT, dst="224.0.0.251") / UDP(sport=5353, dport=5353)
                  / DNS(qd=DNSQR(qname=name, qtype=255))))
    watch = DnsWatch()
    assert run_batches(watch, p, per=100) == []
    assert watch.counters["queries"] == 240 + 36


def test_zone_transfer_over_tcp_is_no_tunnel():
    q = bytes(DNS(id=9, qd=DNSQR(qname="example.com", qtype="AXFR")))
    p = [(T0, Ether() / IP(src=CLIENT, dst=RESOLVER) / TCP(sport=40500, dport=53, flags="PA")
          / Raw(struct.pack("!H", len(q)) + q))]
    rrs = [DNSRR(rrname=f"host{i}.example.com", type="A", rdata=f"10.1.{i // 250}.{i % 250}") for i in range(200)]
    resp = bytes(DNS(id=9, qr=1, aa=1, qd=DNSQR(qname="example.com", qtype="AXFR"), an=rrs))
    stream = struct.pack("!H", len(resp)) + resp
    for k in range(0, len(stream), 1400):
        p.append((T0 + 0.01 + k * 1e-6, Ether() / IP(src=RESOLVER, dst=CLIENT)
                  / TCP(sport=53, dport=40500, flags="A") / Raw(stream[k:k + 1400])))
        p.append((T0 + 0.011 + k * 1e-6, Ether() / IP(src=CLIENT, dst=RESOLVER)
                  / TCP(sport=40500, dport=53, flags="A")))
    watch = DnsWatch()
    assert run(watch, p) == []
    assert watch.counters["queries"] == 1 and watch.counters["tcp_skipped"] >= 2


def test_a_resolver_forwarding_a_tunnel_is_not_named_for_a_block():
    rng = random.Random(10)
    p = [answer(T0 - 1, "www.example.com", src=CLIENT, dst="10.0.0.99")]     # CLIENT answers DNS: a resolver
    p += [query(T0 + 0.05 * i, f"{b32(rng, 50)}.t.pirate.sea", "NULL", qid=i) for i in range(10)]
    findings = run(DnsWatch(), p)
    assert findings and not any(f.block for f in findings)
    assert all(f.evidence["client_answers_dns"] for f in findings)


# ---------------------------------------------------------------- fuzz: counted, never raised
def test_fuzz_arp_payloads_never_raise():
    rng = np.random.default_rng(15)
    watch = ArpWatch()
    good = bytes(Ether() / ARP(op=2, psrc="10.0.0.1", pdst="10.0.0.2"))
    total = 0
    for _round in range(5):
        frames = []
        for i in range(4000):
            f = bytearray(good)
            if i % 2:
                f[14:] = rng.integers(0, 256, len(f) - 14, dtype=np.uint8).tobytes()
                f[14:16], f[16:18], f[18:20] = b"\x00\x01", b"\x08\x00", b"\x06\x04"
            else:
                for _ in range(int(rng.integers(1, 8))):
                    f[int(rng.integers(14, len(f)))] = int(rng.integers(0, 256))
            frames.append(bytes(f[:int(rng.integers(14, len(f) + 1))]))
        batch = Batch.from_frames(frames, T0 + np.arange(len(frames)) * 1e-3 + _round * 10)
        counters = dict.fromkeys(COUNTERS, 0)
        d = decode(batch, counters)
        findings = watch(batch, d)
        assert all(f.technique == "arp_spoofing" and f.sid in SIDS for f in findings)
        total += len(frames)
    c = watch.counters
    assert c["arp"] > 0
    assert c["requests"] + c["replies"] + c["other_op"] + c["not_ethernet_ipv4"] + c["repeats"] == c["arp"]
    assert c["other_op"] > 0 and total == 20000


def test_fuzz_ftp_replies_never_raise():
    """Random TCP headers (data offsets beyond the frame, below 20) and payloads from port 21, cut
    anywhere: skipped or read within the frame, never an exception."""
    rng = np.random.default_rng(21)
    good = bytes(ftp_reply(T0, b"530 Login incorrect.\r\n", 50000, 30)[1])
    frames = []
    for i in range(4000):
        f = bytearray(good)
        for _ in range(int(rng.integers(1, 6))):
            f[int(rng.integers(34, len(f)))] = int(rng.integers(0, 256))
        f[34:36] = b"\x00\x15"                                    # keep the source port 21
        frames.append(bytes(f[:int(rng.integers(34, len(f) + 1))]))
    batch = Batch.from_frames(frames, T0 + np.arange(len(frames)) * 1e-3)
    findings = LoginFailureWatch()(batch, decode(batch))
    assert all(f.sid == 2100301 for f in findings)


def test_fuzz_dns_payloads_never_raise_and_are_counted():
    rng = np.random.default_rng(16)
    seeds = [bytes(DNS(id=1, qd=DNSQR(qname="a.b.example.com", qtype="TXT"))),
             bytes(DNS(id=2, qr=1, qd=DNSQR(qname="www.example.com"), an=DNSRR(rrname="www.example.com",
                                                                                rdata="1.2.3.4")))]
    header = struct.pack("!HHHHHH", 3, 0x0100, 1, 0, 0, 0)
    crafted = {
        "pointer_loop": header + b"\xc0\x0c\x00\x01\x00\x01",                       # points at itself
        "pointer_loop2": header + b"\x01a\xc0\x0c\x00\x01\x00\x01",                 # back to its own start
        "bad_pointer": header + b"\xc0\x02\x00\x01\x00\x01",                       # into the header
        "bad_label": header + b"\x41" + b"a" * 65 + b"\x00\x00\x01\x00\x01",        # length > 63 (0x40 bits)
        "name_too_long": header + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",
        "truncated": header + b"\x05ab",
        "short": b"\x01\x02\x03",
        "bad_header": struct.pack("!HHHHHH", 4, 0x1800, 1, 0, 0, 0) + wire("a.com") + b"\x00\x01\x00\x01",
    }
    frames = [bytes(Ether() / IP(src="10.0.0.5", dst="10.0.0.6") / UDP(sport=9999, dport=53) / Raw(m))
              for m in crafted.values()]
    for i in range(30000):
        if i % 3 == 0:
            payload = rng.integers(0, 256, int(rng.integers(0, 120)), dtype=np.uint8).tobytes()
        else:
            m = bytearray(seeds[i % 2])
            for _ in range(int(rng.integers(1, 6))):
                m[int(rng.integers(0, len(m)))] = int(rng.integers(0, 256))
            payload = bytes(m[:int(rng.integers(0, len(m) + 1))])
        sport, dport = (53, 4000 + i % 100) if i % 5 == 0 else (4000 + i % 100, 53)
        src = f"10.0.{i % 7}.{i % 250 + 1}"
        if i % 7 == 0:
            payload = struct.pack("!H", len(payload)) + payload
            frames.append(frame(src, "10.0.9.9", 6, sport, dport, 0x18, payload=len(payload))[:54] + payload)
        else:
            frames.append(frame(src, "10.0.9.9", 17, sport, dport, payload=len(payload))[:42] + payload)
    frames += [f[:int(rng.integers(34, len(f) + 1))] for f in frames[8:3000]]       # cut anywhere
    watch = DnsWatch()
    for k in range(0, len(frames), 5000):
        part = frames[k:k + 5000]
        batch = Batch.from_frames(part, T0 + k * 1e-3 + np.arange(len(part)) * 1e-3)
        findings = watch(batch, decode(batch))
        assert all(f.technique == "dns_tunnel" and f.sid in SIDS for f in findings)
    c = watch.counters
    for status in ("pointer_loop", "bad_pointer", "bad_label", "name_too_long", "truncated", "short", "bad_header",
                   "ok"):
        assert c[status] > 0, (status, c)
    assert sum(c[s] for s in dnsparse.STATUS_NAMES) == c["messages"]
    assert c["messages"] > 25000 and c["non_dns"] > 0


def test_parser_on_random_buffers_stays_in_bounds():
    rng = np.random.default_rng(17)
    buf = rng.integers(0, 256, 200_000, dtype=np.uint8)
    buf[::7] = 0xC0                                    # many pointers
    starts = rng.integers(0, len(buf) - 300, 20000)
    ends = np.minimum(starts + rng.integers(0, 300, len(starts)), len(buf))
    out = dnsparse.parse(buf, starts, ends, ends - starts, np.zeros(4096, dtype=np.uint8))
    status = out[0]
    assert len(status) == len(starts) and status.min() >= 0 and status.max() < len(dnsparse.STATUS_NAMES)
    assert (out[5] <= 127).all()                       # labels of a 255-byte name


def test_warm_up_runs():
    assert warm_up() >= 0


# ---------------------------------------------------------------- the real captures
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
import inspect_corpus  # noqa: E402

MANIFEST = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "corpus.toml")


@pytest.mark.skipif(not os.path.exists(MANIFEST), reason="../shared/data/corpus.toml is not beside the project")
def test_corpus_benign_quiet_attacks_found_naming_the_attacker_in_time():
    rows = []
    for entry in inspect_corpus.load(MANIFEST):
        result = inspect_corpus.inspect_capture(entry)
        rows.append(inspect_corpus.judge(entry, result))
    table = inspect_corpus.table(rows)
    print("\n" + table)
    benign = [r for r in rows if r["truth"] == "benign"]
    assert benign and all(not r["by_technique"] for r in benign), table
    inspected = [r for r in rows if r["technique"] in inspect_corpus.INSPECTED]
    assert {r["technique"] for r in inspected} == set(inspect_corpus.INSPECTED), table
    for r in inspected:
        assert r["by_technique"][r["technique"]] > 0 and r["named"], table
        assert r["delay"] is not None and r["delay"] <= 2.0, table


# ---------------------------------------------------------------- ICMP tunnels
LAN_HOST, LAN_MAC, FAR, ROUTER_MAC = "10.0.0.21", mac(21), "198.51.100.7", mac(254)


def echo(t, src, dst, smac, dmac, kind, ident, seq, data, v6=False):
    from scapy.all import ICMP, ICMPv6EchoReply, ICMPv6EchoRequest
    if v6:
        msg = (ICMPv6EchoRequest if kind == 8 else ICMPv6EchoReply)(id=ident, seq=seq, data=data)
        return t, Ether(src=smac, dst=dmac) / IPv6(src=src, dst=dst) / msg
    return t, Ether(src=smac, dst=dmac) / IP(src=src, dst=dst) / ICMP(type=kind, id=ident, seq=seq) / Raw(data)


def pings(t0, count, data_of, v6=False, src=LAN_HOST, dst=FAR, interval=1.0, reply_of=None):
    """`count` echo requests from src and their replies 20 ms later (reply_of: the far end's data)."""
    out = []
    for k in range(count):
        t = t0 + k * interval
        data = data_of(k)
        out.append(echo(t, src, dst, LAN_MAC, ROUTER_MAC, 8, 0x1234, k, data, v6))
        out.append(echo(t + 0.02, dst, src, ROUTER_MAC, LAN_MAC, 0, 0x1234, k,
                        data if reply_of is None else reply_of(k), v6))
    return out


def linux_ping(k):   # a timestamp, then the bytes 0x10.. (iputils' 56-byte default)
    return struct.pack("<QQ", 1_700_000_000 + k, k * 1000)[:16] + bytes(range(0x10, 0x38))


def test_pings_of_every_shape_are_no_tunnel():
    cases = {
        "linux": pings(T0, 60, linux_ping),
        "windows": pings(T0, 60, lambda k: b"abcdefghijklmnopqrstuvwabcdefghi"),
        "large": pings(T0, 60, lambda k: linux_ping(k) + bytes(1344)),          # ping -s 1400
        "flood": pings(T0, 3000, linux_ping, interval=0.001),
        "v6": pings(T0, 60, linux_ping, v6=True, src="fd00::21", dst="2001:db8::7"),
        # the same random data back: a ping whatever the bytes
        "random": pings(T0, 60, lambda k: random.Random(k).randbytes(random.Random(k).randrange(16, 1400))),
    }
    for name, packets in cases.items():
        watch = IcmpTunnelWatch()
        found = run_batches(watch, packets, per=200)
        if name == "random":   # many sizes, much data, both ways: only the weaker, alert-only signal
            assert {f.sid for f in found} <= {2100402} and not any(f.block for f in found), name
        else:
            assert found == [], name
        assert watch.counters["replies_differ"] == 0, name
        assert watch.counters["replies_matched"] == len(packets) // 2, name


def test_tunnel_whose_replies_carry_the_far_ends_data_blocks_the_lan_client():
    watch = IcmpTunnelWatch()
    tunnel = pings(T0, 10, lambda k: random.Random(k).randbytes(200 + 37 * k),
                   reply_of=lambda k: random.Random(1000 + k).randbytes(100 + 53 * k), interval=0.5)
    found = run(watch, tunnel)   # one batch: the finding at the reply that completes it, the third
    first = [f for f in found if f.sid == 2100401]
    assert len(first) == 1
    f = first[0]
    assert (f.technique, f.mitre, f.category, f.block) == ("icmp_tunnel", "T1095", "Theft", True)
    assert (f.src_ip, f.dest_ip, f.src_mac) == (LAN_HOST, FAR, mac_int(LAN_MAC))
    assert f.evidence["replies_differing"] == 3 and abs(f.ts - (T0 + 1.0 + 0.02)) < 1e-6   # its third reply


def test_tunnel_over_icmpv6_and_a_one_way_channel():
    v6 = pings(T0, 5, lambda k: bytes([k]) * 300, v6=True, src="fd00::21", dst="2001:db8::7",
               reply_of=lambda k: bytes([k + 1]) * 300)
    [f] = run_batches(IcmpTunnelWatch(), v6, per=3)
    assert (f.sid, f.proto, f.src_ip) == (2100401, "ipv6-icmp", "fd00::21")
    # requests only (exfiltration, or a mirror that sees one direction): 8 sizes and 20 KB in a minute
    one_way = [echo(T0 + k, LAN_HOST, FAR, LAN_MAC, ROUTER_MAC, 8, 7, k, random.Random(k).randbytes(400 + 25 * (k % 10)))
               for k in range(40)]
    watch = IcmpTunnelWatch()
    found = run_batches(watch, one_way, per=5)
    assert [(f.sid, f.block, f.src_ip) for f in found] == [(2100402, False, LAN_HOST)]
    assert found[0].evidence["payload_sizes"] >= 8 and found[0].evidence["payload_bytes"] >= 20_000


def test_cut_and_unanswered_replies_are_not_judged_and_forged_pairs_are_bounded():
    # replies captured with a short snap length: 40 bytes of the payload, the request's 1,400 whole
    cut = []
    for t, p in pings(T0, 10, lambda k: random.Random(k).randbytes(1400)):
        raw = bytes(p)
        cut.append((t, raw[:14 + 20 + 8 + 40] if p[ICMP].type == 0 else raw))
    watch = IcmpTunnelWatch()
    assert run_batches(watch, cut) == [] and watch.counters["replies_matched"] == 0
    # replies nobody asked for are not judged (their requests came before the monitor started)
    stray = [p for p in pings(T0, 10, lambda k: b"a" * 100, reply_of=lambda k: b"b" * 100) if p[1][ICMP].type == 0]
    watch = IcmpTunnelWatch()
    assert run_batches(watch, stray) == [] and watch.counters["replies_unmatched"] == 10
    # a forged-source flood of large echoes: at most NEW_PER_BATCH new pairs followed per batch
    flood = [echo(T0 + k * 1e-4, f"10.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}", LAN_HOST, mac(k), LAN_MAC, 8, k, 0,
                  bytes(1000)) for k in range(2000)]
    watch = IcmpTunnelWatch()
    assert run(watch, flood) == []
    assert len(watch._sent) == watch.NEW_PER_BATCH and watch.counters["pairs_skipped"] == 2000 - watch.NEW_PER_BATCH


def test_ethernet_padding_is_no_part_of_the_echo_data():
    # a flood of empty echo requests (hping3 style); the replies' frames padded to 60 bytes with
    # bytes that are not zero: the datagram's own length says where the echo data ends
    packets = []
    for k in range(20):
        t, q = echo(T0 + k * 0.01, LAN_HOST, FAR, LAN_MAC, ROUTER_MAC, 8, 9, k, b"")
        t2, r = echo(t + 0.001, FAR, LAN_HOST, ROUTER_MAC, LAN_MAC, 0, 9, k, b"")
        packets += [(t, bytes(q) + b"\x00" * 18), (t2, bytes(r) + bytes([k + 1]) * 18)]
    watch = IcmpTunnelWatch()
    assert run(watch, packets) == []
    assert watch.counters["replies_matched"] == 20 and watch.counters["replies_differ"] == 0


def test_a_stream_of_replies_nobody_asked_for_from_a_host_the_client_asks():
    # ptunnel-ng's shape: the client polls now and then, the proxy streams replies numbered its own way
    polls = [echo(T0 + k, LAN_HOST, FAR, LAN_MAC, ROUTER_MAC, 8, 77, k, bytes(28)) for k in range(3)]
    stream = [echo(T0 + 0.5 + k * 0.01, FAR, LAN_HOST, ROUTER_MAC, LAN_MAC, 0, 77, 1000 + k,
                   random.Random(k).randbytes(1024)) for k in range(40)]
    found = run_batches(IcmpTunnelWatch(), polls + stream, per=7)
    assert [(f.sid, f.block, f.src_ip, f.dest_ip, f.src_mac) for f in found] == \
        [(2100403, True, LAN_HOST, FAR, mac_int(LAN_MAC))]
    assert found[0].evidence == {"replies_unasked": 20, "requests": 1, "window_s": 60.0}
    assert abs(found[0].ts - (T0 + 0.5 + 19 * 0.01)) < 1e-6           # at the 20th reply
    # the same stream toward a host that never asked (backscatter of someone else's forged pings;
    # or the replies to requests from before the monitor started): not a tunnel
    assert run_batches(IcmpTunnelWatch(), stream, per=7) == []


# ---------------------------------------------------------------- refused logins, and the passwords tried
SERVER_MAC, CLIENT_MAC, LOGIN_SERVER, LOGIN_CLIENT = mac(50), mac(51), "10.0.0.50", "10.0.0.51"


def segment(t, to_server, port, cport, payload, seq=1):
    src, dst = (LOGIN_CLIENT, LOGIN_SERVER) if to_server else (LOGIN_SERVER, LOGIN_CLIENT)
    smac, dmac = (CLIENT_MAC, SERVER_MAC) if to_server else (SERVER_MAC, CLIENT_MAC)
    sport, dport = (cport, port) if to_server else (port, cport)
    return t, Ether(src=smac, dst=dmac) / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="PA",
                                                                     seq=seq) / Raw(payload)


def mqtt_connect(user: bytes, password: bytes, level=4, client=b"sensor-7") -> bytes:
    def field(b):
        return len(b).to_bytes(2, "big") + b
    props = b"\x05\x11\x00\x00\x00\x3c" if level == 5 else b""   # v5: session expiry interval
    body = field(b"MQTT") + bytes([level, 0xC2]) + b"\x00\x3c" + props + field(client) + field(user) + field(password)
    return bytes([0x10, len(body)]) + body


def attempts(port, request_of, refusal, count=6, every=2.0, answer=None):
    """`count` sessions: the client's request, then the server's reply (refusal, or answer(k))."""
    out = []
    for k in range(count):
        t = T0 + k * every
        out += [segment(t, True, port, 40000 + k, request_of(k)),
                segment(t + 0.05, False, port, 40000 + k, refusal if answer is None else answer(k), seq=100 + k)]
    return out


def test_ftp_guesser_is_blocked_a_device_with_a_wrong_password_is_only_alerted():
    guesses = attempts(21, lambda k: b"PASS %d\r\n" % k, b"530 Login incorrect.\r\n")
    [f] = run_batches(LoginFailureWatch(), guesses, per=3)
    assert (f.sid, f.block, f.src_ip, f.src_mac) == (2100301, True, LOGIN_CLIENT, mac_int(CLIENT_MAC))
    assert f.evidence["passwords_tried"] == 5 and f.evidence["failed_logins"] == 5
    camera = attempts(21, lambda k: b"PASS hunter2\r\n", b"530 Login incorrect.\r\n", count=8)
    [f] = run(LoginFailureWatch(), camera)
    assert (f.sid, f.block, f.severity, f.evidence["passwords_tried"]) == (2100302, False, 3, 1)


def test_mqtt_broker_refusing_connects_v311_and_v5():
    for level, refusal in ((4, b"\x20\x02\x00\x05"), (5, b"\x20\x03\x00\x86\x00")):
        guesses = attempts(1883, lambda k: mqtt_connect(b"admin", b"pw%d" % k, level), refusal)
        [f] = run_batches(LoginFailureWatch(), guesses, per=5)
        assert (f.sid, f.block, f.evidence["service"], f.evidence["passwords_tried"]) == (2100303, True, "mqtt", 5)
        # a sensor reconnecting with its one wrong password: alerted, not blocked
        sensor = attempts(1883, lambda k: mqtt_connect(b"sensor", b"old-secret", level), refusal)
        [f] = run(LoginFailureWatch(), sensor)
        assert (f.sid, f.block) == (2100302, False)
    accepted = attempts(1883, lambda k: mqtt_connect(b"admin", b"pw%d" % k), b"\x20\x02\x00\x00", count=20)
    watch = LoginFailureWatch()
    assert run(watch, accepted) == [] and watch.counters["successes"] == 20


def test_http_basic_guessing_but_not_a_digest_challenge_nor_a_401_with_no_password_seen():
    import base64

    def basic(k):
        token = base64.b64encode(b"admin:guess%d" % k)
        return b"GET /cgi-bin/login HTTP/1.1\r\nHost: cam\r\nAuthorization: Basic " + token + b"\r\n\r\n"
    refusal = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n\r\n"
    [f] = run_batches(LoginFailureWatch(), attempts(80, basic, refusal, count=8), per=4)
    assert (f.sid, f.block, f.dest_port, f.evidence["passwords_tried"]) == (2100304, True, 80, 5)
    # a Digest client: every request challenged once (401), then answered (200); 30 requests
    digest = []
    for k in range(30):
        t = T0 + k
        digest += [segment(t, True, 8080, 41000 + k, b"GET /status HTTP/1.1\r\nHost: hub\r\n\r\n"),
                   segment(t + 0.01, False, 8080, 41000 + k, b"HTTP/1.1 401 Unauthorized\r\n\r\n", seq=7),
                   segment(t + 0.02, True, 8080, 41000 + k,
                           b"GET /status HTTP/1.1\r\nAuthorization: Digest username=\"u\", response=\"%032x\"\r\n\r\n" % k),
                   segment(t + 0.03, False, 8080, 41000 + k, b"HTTP/1.1 200 OK\r\n\r\n", seq=9)]
    watch = LoginFailureWatch()
    assert run_batches(watch, digest, per=6) == [] and watch.counters["refusals"] == 30
    # 401s whose requests the mirror did not see: no password read, a challenge maybe: nothing
    replies_only = [p for p in attempts(80, basic, refusal, count=8) if p[1][TCP].sport == 80]
    assert run(LoginFailureWatch(), replies_only) == []
