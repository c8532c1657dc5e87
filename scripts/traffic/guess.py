"""Password guessing for the Mininet topology: a login listener and a guesser of many short sessions.

    listen (on the target, a device host): accept TCP on --port, send a banner (an SSH
            version string or a telnet "login:" prompt), read one line, answer a refusal,
            close. No real login exists behind it: nothing is ever accepted.
    guess  (on the attacker): --rate sessions a second for --duration seconds, each a new
            connection that reads the banner, sends one user:password line, reads the
            refusal and closes, as hydra or Mirai's scanner does per try.

    python scripts/traffic/guess.py listen --bind 10.0.0.11 --port 22 --service ssh --duration 90
    python scripts/traffic/guess.py guess --dst 10.0.0.11 --port 22 --service ssh --rate 4 --duration 8

Bounded: topology addresses only, at most 50 sessions a second, 120 s (the listener: 900 s).
Prints one JSON line of counters.
"""
from __future__ import annotations

import argparse
import json
import socket
import socketserver
import sys
import threading
import time

from bounds import MAX_SERVE, Pacer, check

MAX_SESSIONS_PER_S = 50
BANNERS = {"ssh": b"SSH-2.0-OpenSSH_8.4p1 Debian-5+deb11u1\r\n", "telnet": b"\r\nDebian GNU/Linux 11\r\nlogin: "}
REFUSALS = {"ssh": b"Permission denied, please try again.\r\n", "telnet": b"\r\nLogin incorrect\r\n"}
# Mirai's first few default credentials (public knowledge), cycled by the guesser.
CREDENTIALS = [("root", "xc3511"), ("root", "vizxv"), ("admin", "admin"), ("root", "888888"), ("root", "default"),
               ("support", "support"), ("root", "123456"), ("user", "user"), ("admin", "password"), ("root", "root")]


class _Login(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.settimeout(5)
        try:
            sock.sendall(BANNERS[self.server.service])
            sock.recv(512)
            sock.sendall(REFUSALS[self.server.service])
        except OSError:
            pass
        with self.server.lock:
            self.server.sessions += 1


class _Listener(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    sessions = 0
    lock = threading.Lock()
    service = "ssh"


def listen(args) -> dict:
    server = _Listener((args.bind, args.port), _Login)
    server.service = args.service
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"ready": True}), flush=True)
    time.sleep(args.duration)
    server.shutdown()
    return {"sessions": server.sessions}


def guess(args) -> dict:
    counts = {"sessions": 0, "refused": 0, "failed": 0}
    pacer = Pacer(args.rate, args.duration, time.monotonic)
    while True:
        due = pacer.due()
        if due < 0:
            break
        if due == 0:
            time.sleep(0.005)
            continue
        pacer.done += 1
        user, password = CREDENTIALS[counts["sessions"] % len(CREDENTIALS)]
        counts["sessions"] += 1
        try:
            with socket.create_connection((args.dst, args.port), timeout=1) as sock:
                sock.settimeout(1)
                sock.recv(512)
                sock.sendall(f"{user} {password}\r\n".encode())
                counts["refused" if sock.recv(512) else "failed"] += 1
        except OSError:
            counts["failed"] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("listen")
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--service", choices=sorted(BANNERS), required=True)
    p.add_argument("--duration", type=float, required=True)
    p = sub.add_parser("guess")
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--service", choices=sorted(BANNERS), required=True)
    p.add_argument("--rate", type=float, required=True, help=f"sessions/s, at most {MAX_SESSIONS_PER_S}")
    p.add_argument("--duration", type=float, required=True)
    args = parser.parse_args()
    started_at = time.time()
    if args.role == "listen":
        check(parser, dst=args.bind, duration=args.duration, max_duration=MAX_SERVE)
        out = listen(args)
    else:
        check(parser, dst=args.dst, rate=args.rate, duration=args.duration, max_rate=MAX_SESSIONS_PER_S)
        out = guess(args)
    print(json.dumps(out | {"seconds": round(time.time() - started_at, 3), "started_at": started_at}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
