"""HTTP flood for the Mininet topology: complete connections, one GET each, at --rate per second.

    python scripts/traffic/http_flood.py --dst 10.0.0.2 --rate 300 --duration 5 [--workers 32]

Bounded: topology addresses only, at most 5,000 connections a second, 120 s. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time

from bounds import check


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--rate", type=float, required=True, help="connections per second (at most 5000)")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--workers", type=int, default=32)
    args = parser.parse_args()
    check(parser, dst=args.dst, rate=args.rate, duration=args.duration, max_rate=5000)
    lock = threading.Lock()
    counts = {"started": 0, "answered": 0, "failed": 0}
    started_at = time.time()
    start = time.monotonic()
    request = f"GET /?q={{}} HTTP/1.1\r\nHost: {args.dst}\r\nConnection: close\r\n\r\n"

    def worker():
        while True:
            with lock:
                now = time.monotonic()
                if now - start >= args.duration:
                    return
                if counts["started"] >= (now - start) * args.rate:
                    wait = True
                else:
                    counts["started"] += 1
                    n = counts["started"]
                    wait = False
            if wait:
                time.sleep(0.001)
                continue
            try:
                with socket.create_connection((args.dst, args.port), timeout=1) as sock:
                    sock.sendall(request.format(n).encode())
                    ok = sock.recv(1024).startswith(b"HTTP/")
            except OSError:
                ok = False
            with lock:
                counts["answered" if ok else "failed"] += 1

    threads = [threading.Thread(target=worker) for _ in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(counts | {"seconds": round(time.monotonic() - start, 3), "started_at": started_at}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
