"""The vectorised decoder on packets crafted with scapy, one protocol or malformation at a time."""
import numpy as np
import pytest
from scapy.all import (ARP, ICMP, IP, TCP, UDP, Dot1AD, Dot1Q, Ether, ICMPv6EchoReply, ICMPv6EchoRequest,
                       IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, Raw, fragment)

from iadm.capture.batch import LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW, Batch
from iadm.capture.decode import COUNTERS, PROTO_ARP, decode
from iadm.flows.records import addresses

ETH = Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")


def run(*frames, linktype=1):
    counters = dict.fromkeys(COUNTERS, 0)
    return decode(Batch.from_frames([bytes(f) for f in frames], linktype=linktype), counters), counters


def addr(d, i=0):
    return addresses(d.src_hi[i:i + 1], d.src_lo[i:i + 1])[0], addresses(d.dst_hi[i:i + 1], d.dst_lo[i:i + 1])[0]


def test_tcp_over_ethernet():
    d, c = run(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80, flags="SA", window=512))
    assert c["decoded"] == 1 and len(d) == 1
    assert addr(d) == ("10.0.0.1", "10.0.0.2")
    assert (d.proto[0], d.sport[0], d.dport[0], d.tcp_flags[0], d.tcp_window[0]) == (6, 1234, 80, 0x12, 512)
    assert d.src_mac[0] == 1


def test_udp_with_vlan_and_qinq():
    d, c = run(ETH / Dot1Q(vlan=10) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5683, dport=5683),
               Ether() / Dot1AD(vlan=3) / Dot1Q(vlan=10) / IP() / UDP(sport=53, dport=5353))
    assert c["decoded"] == 2
    assert d.proto.tolist() == [17, 17] and d.sport.tolist() == [5683, 53] and d.dport.tolist() == [5683, 5353]


def test_icmp_echo_pairs_by_id_and_unreachable_has_no_ports():
    d, _ = run(ETH / IP() / ICMP(type=8, id=77), ETH / IP() / ICMP(type=0, id=77),
               ETH / IP() / ICMP(type=3, code=3) / IP() / UDP())
    assert d.icmp_type.tolist() == [8, 0, 3] and d.icmp_code.tolist() == [0, 0, 3]
    assert d.sport.tolist() == [77, 77, 0] and d.dport.tolist() == [77, 77, 0]


def test_arp_uses_sender_and_target_addresses():
    d, _ = run(ETH / ARP(op=1, psrc="10.0.0.1", pdst="10.0.0.2"))
    assert d.proto[0] == PROTO_ARP and addr(d) == ("10.0.0.1", "10.0.0.2")


def test_ipv6_with_extension_headers_and_icmpv6():
    d, c = run(ETH / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=1, dport=2),
               ETH / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting()
               / UDP(sport=3, dport=4),
               ETH / IPv6() / ICMPv6EchoRequest(id=9), ETH / IPv6() / ICMPv6EchoReply(id=9))
    assert c["decoded"] == 4
    assert addr(d) == ("2001:db8::1", "2001:db8::2")
    assert d.proto.tolist() == [6, 17, 58, 58] and d.sport.tolist()[:2] == [1, 3]
    assert d.icmp_type.tolist()[2:] == [128, 129] and d.sport.tolist()[2:] == [9, 9]


def test_linux_cooked_and_raw_ip_links():
    sll = bytes.fromhex("0000" "0001" "0006" "000000000001" "0000" "0800")
    sll2 = bytes.fromhex("0800" "0000" "00000002" "0001" "00" "06" "000000000001" "0000")
    packet = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))
    for frame, linktype in ((sll + packet, LINKTYPE_LINUX_SLL), (sll2 + packet, LINKTYPE_LINUX_SLL2),
                            (packet, LINKTYPE_RAW)):
        d, c = run(frame, linktype=linktype)
        assert c["decoded"] == 1, linktype
        assert addr(d) == ("10.0.0.1", "10.0.0.2") and d.sport[0] == 1


def test_fragments_counted_first_kept_rest_skipped():
    frags = fragment(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=7, dport=8) / Raw(b"x" * 3000),
                     fragsize=1000)
    d, c = run(*frags)
    assert c["fragments"] == len(frags) == 4  # 3008 bytes of UDP in 1000-byte pieces
    assert len(d) == 1 and d.sport[0] == 7
    d6, c6 = run(ETH / IPv6() / IPv6ExtHdrFragment(offset=0, m=1) / UDP(sport=5, dport=6),
                 ETH / IPv6() / IPv6ExtHdrFragment(offset=100, m=0, nh=17) / Raw(b"y" * 16))
    assert c6["fragments"] == 2 and len(d6) == 1 and d6.sport[0] == 5


@pytest.mark.parametrize("frame, counter", [
    (bytes(ETH / IP() / TCP())[:30], "truncated"),                 # IPv4 header cut
    (bytes(ETH / IP() / TCP())[:40], "truncated"),                 # TCP header cut
    (bytes(ETH / IP() / UDP())[:38], "truncated"),
    (bytes(ETH / IPv6() / TCP())[:50], "truncated"),
    (bytes(ETH / IP() / ICMP(type=8))[:38], "truncated"),          # echo without its id
    (bytes(ETH)[:10], "truncated"),                                # not even an Ethernet header
    (bytes(ETH / IP(ihl=3) / TCP()), "bad_header"),
    (bytes(ETH / IP(len=10) / TCP()), "bad_header"),
    (bytes(ETH / IP(version=5) / TCP()), "bad_header"),
    (bytes(ETH / IP() / TCP(dataofs=2)), "bad_header"),
    (bytes(Ether(type=0x88CC) / Raw(b"lldp" * 10)), "other_ethertype"),
    (bytes(ETH / ARP(ptype=0x86DD, plen=16)), "bad_header"),
])
def test_malformed_frames_are_counted_and_skipped(frame, counter):
    d, c = run(bytes(ETH / IP(src="10.0.0.9") / UDP()), frame)
    assert c[counter] == 1, c
    assert len(d) == 1 and c["decoded"] == 1  # the good one survives next to it


def test_unknown_link_type_is_counted():
    d, c = run(b"\x00" * 40, linktype=147)
    assert c["unsupported"] == 1 and len(d) == 0


def test_other_ip_protocols_keep_addresses_without_ports():
    d, _ = run(ETH / IP(src="10.0.0.1", dst="224.0.0.1", proto=2) / Raw(b"\x11" * 8))
    assert d.proto[0] == 2 and d.sport[0] == 0 and addr(d) == ("10.0.0.1", "224.0.0.1")


def test_fuzz_random_and_mutated_frames_never_raise():
    rng = np.random.default_rng(2026)
    seeds = [bytes(f) for f in (ETH / IP() / TCP(), ETH / IPv6() / UDP(), ETH / Dot1Q() / IP() / ICMP(),
                                ETH / ARP(), ETH / IPv6() / IPv6ExtHdrHopByHop() / TCP())]
    total = 0
    for _round in range(10):
        frames = []
        for i in range(10_000):
            if i % 3 == 0:
                frames.append(rng.integers(0, 256, rng.integers(0, 120), dtype=np.uint8).tobytes())
            else:
                frame = bytearray(seeds[i % len(seeds)])
                for _ in range(rng.integers(1, 6)):
                    frame[rng.integers(0, len(frame))] = rng.integers(0, 256)
                frames.append(bytes(frame[:rng.integers(0, len(frame) + 1)]))
        counters = dict.fromkeys(COUNTERS, 0)
        d = decode(Batch.from_frames(frames), counters)
        assert counters["packets"] == len(frames)
        assert counters["decoded"] == len(d) <= len(frames)
        assert np.all((d.sport >= 0) & (d.sport <= 65535))
        total += len(frames)
    assert total >= 100_000
