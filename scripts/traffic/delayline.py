#!/usr/bin/env python3
"""A userspace delay line: a two-port wire between a device and the switch that holds frames
going one way for a fixed time. This machine's kernel has no netem, so a Mininet test that needs
a slower path runs this in a host of its own between the device and the switch.

    delayline.py --device IF1 --switch IF2 --delay-ms 50 --seconds 60

Frames from --device toward --switch wait --delay-ms; frames the other way pass at once (a one-way
delay: the device's answers, and so its handshakes, arrive that much later). Bounded in time, and
it refuses physical interfaces: only veths of a test topology.
"""
from __future__ import annotations

import argparse
import collections
import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bounds import MAX_SERVE, check  # noqa: E402

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def port(iface: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    sock.setblocking(False)
    return sock


def run(device: str, switch: str, delay: float, seconds: float) -> dict:
    """Forward until `seconds` have passed; returns how many frames went each way."""
    from_device, from_switch = port(device), port(switch)
    held = collections.deque()   # (release time, frame) toward the switch, in arrival order
    counts = {"delayed": 0, "passed": 0, "dropped": 0}

    def send(sock, frame, what):
        try:
            sock.send(frame)
            counts[what] += 1
        except OSError:   # a full queue on the way out (a shaped link): the wire drops it
            counts["dropped"] += 1

    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        while held and held[0][0] <= now:
            send(from_switch, held.popleft()[1], "delayed")
        wait = min(end - now, held[0][0] - now if held else 0.05)
        ready, _, _ = select.select([from_device, from_switch], [], [], max(wait, 0))
        for sock in ready:
            while True:
                try:
                    frame, address = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                if address[2] == PACKET_OUTGOING:
                    continue   # what we sent ourselves, seen on the way out
                if sock is from_device:
                    held.append((time.monotonic() + delay, frame))
                else:
                    send(from_device, frame, "passed")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", required=True, help="the interface toward the device")
    parser.add_argument("--switch", required=True, help="the interface toward the switch")
    parser.add_argument("--delay-ms", type=float, required=True, help="held this long, device to switch")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    for iface in (args.device, args.switch):
        check(parser, iface=iface, duration=args.seconds, max_duration=MAX_SERVE)
    if not 0 <= args.delay_ms <= 5000:
        parser.error("--delay-ms must be in [0, 5000]")
    counts = run(args.device, args.switch, args.delay_ms / 1000.0, args.seconds)
    print(f"delayline: {counts['delayed']} frames held {args.delay_ms:g} ms, {counts['passed']} passed, "
          f"{counts['dropped']} dropped by a full queue", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
