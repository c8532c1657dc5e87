"""Data theft for the Mininet topology: a bulk upload, a keylogging-like trickle, and their sink.

    sink    (on the attacker's drop host): accept TCP on --port, read and discard
    upload  (on a compromised device): send --bytes to the sink at --rate bytes/s
    trickle (on a compromised device): --rate small writes a second (8-40 bytes each),
            one long connection, like a keylogger shipping keystrokes

    python scripts/traffic/exfil.py sink --bind 10.0.0.104 --port 8443 --duration 30
    python scripts/traffic/exfil.py upload --dst 10.0.0.104 --port 8443 --bytes 8000000 --rate 4000000 --duration 10

Bounded: topology addresses only, rate and duration limited. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import random
import socket
import socketserver
import sys
import threading
import time

from bounds import MAX_SERVE, check

MAX_BYTES_PER_S = 50_000_000


class _Discard(socketserver.BaseRequestHandler):
    def handle(self):
        while self.request.recv(65536):
            self.server.received += 1


class _Sink(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    received = 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("sink")
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--duration", type=float, required=True)
    for name in ("upload", "trickle"):
        p = sub.add_parser(name)
        p.add_argument("--dst", required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--rate", type=float, required=True,
                       help="bytes/s (upload) or writes/s (trickle)")
        p.add_argument("--duration", type=float, required=True)
        if name == "upload":
            p.add_argument("--bytes", type=int, required=True)
    args = parser.parse_args()
    started_at = time.time()
    if args.role == "sink":
        check(parser, dst=args.bind, duration=args.duration, max_duration=MAX_SERVE)
        server = _Sink((args.bind, args.port), _Discard)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(json.dumps({"ready": True}), flush=True)
        time.sleep(args.duration)
        server.shutdown()
        print(json.dumps({"reads": server.received}))
        return 0
    check(parser, dst=args.dst, duration=args.duration, rate=args.rate, max_rate=MAX_BYTES_PER_S)
    sent = 0
    rng = random.Random(3)
    deadline = time.monotonic() + args.duration
    try:
        with socket.create_connection((args.dst, args.port), timeout=3) as sock:
            start = time.monotonic()
            if args.role == "upload":
                chunk = bytes(rng.getrandbits(8) for _ in range(16384))
                while sent < args.bytes and time.monotonic() < deadline:
                    if sent > (time.monotonic() - start) * args.rate:
                        time.sleep(0.002)
                        continue
                    sock.sendall(chunk[:min(len(chunk), args.bytes - sent)])
                    sent += min(len(chunk), args.bytes - sent)
            else:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                writes = 0
                while time.monotonic() < deadline:
                    if writes > (time.monotonic() - start) * args.rate:
                        time.sleep(0.01)
                        continue
                    keys = bytes(rng.randrange(97, 123) for _ in range(rng.randrange(8, 41)))
                    sock.sendall(keys)
                    sent += len(keys)
                    writes += 1
    except OSError as exc:
        print(json.dumps({"sent": sent, "error": str(exc), "started_at": started_at}))
        return 0   # a block cutting the theft short is the expected outcome, not a failure
    print(json.dumps({"sent": sent, "started_at": started_at}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
