"""Benign IoT traffic for the Mininet topology: a server role and a device role.

    server (on Host2): MQTT-like sensor reports (TCP 1883, one ACK line per report),
        CoAP-like requests (UDP 5683), DNS (UDP 53, A records), NTP-like time (UDP 123),
        an HTTP status page (TCP 80), firmware images (TCP 443, bulk download).
    device (on Host1 and the extra devices): one report a second over a long-lived
        TCP connection, a CoAP request every 2 s, a DNS lookup every 10 s, an HTTP poll
        every 5 s, a time sync every 15 s, a firmware download every 20 s.
        Reports and CoAP requests end with the device's send time, `~ts=` and 16 digits
        of microseconds since the epoch (docs/features.md, "Sensor send-time stamps"):
        the monitor's owd column is read from them.

    python scripts/traffic/iot.py server --bind 10.0.0.2 --duration 60
    python scripts/traffic/iot.py device --server 10.0.0.2 --duration 60 [--scale 2]

Both stop after --duration and print one JSON line of counters; a device counts,
per service, requests sent and answered, so a run can tell how much benign
traffic an attack (or a wrong block) cost. Only topology addresses are accepted.
"""
from __future__ import annotations

import argparse
import json
import random
import socket
import socketserver
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bounds import MAX_SERVE, check

FIRMWARE_BYTES = 2 * 1024 * 1024


# --- server -----------------------------------------------------------------------------------
class _Reports(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(b"ACK " + line[:16].split(b" ", 1)[0] + b"\n")


class _Firmware(socketserver.StreamRequestHandler):
    def handle(self):
        self.rfile.readline()
        chunk = bytes(range(256)) * 64
        for _ in range(FIRMWARE_BYTES // len(chunk)):
            self.wfile.write(chunk)


class _Status(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok", "time": time.time()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _TCP(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 256


def _udp_service(sock: socket.socket, answer, counts: dict, name: str):
    while True:
        try:
            data, peer = sock.recvfrom(2048)
        except OSError:
            return
        reply = answer(data)
        if reply:
            sock.sendto(reply, peer)
            counts[name] = counts.get(name, 0) + 1


def _dns_answer(query: bytes) -> bytes | None:
    """A minimal DNS responder: every A question gets 10.0.0.2."""
    if len(query) < 12:
        return None
    end = 12
    while end < len(query) and query[end]:
        end += query[end] + 1
    question = query[12:end + 5]
    header = query[:2] + b"\x81\x80" + b"\x00\x01\x00\x01\x00\x00\x00\x00"
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("10.0.0.2")
    return header + question + answer


def serve(bind: str, duration: float) -> dict:
    counts: dict = {}
    servers = [_TCP((bind, 1883), _Reports), _TCP((bind, 443), _Firmware), ThreadingHTTPServer((bind, 80), _Status)]
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    udp = []
    for port, answer, name in ((5683, lambda d: b"\x60\x45" + d[2:4] + b"\xff" + b"22.5C", "coap"),
                               (53, _dns_answer, "dns"),
                               (123, lambda d: b"\x24\x02" + b"\0" * 38 + struct.pack("!II", int(time.time())
                                                                                     + 2208988800, 0), "ntp")):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((bind, port))
        udp.append(sock)
        threading.Thread(target=_udp_service, args=(sock, answer, counts, name), daemon=True).start()
    print(json.dumps({"ready": True}), flush=True)
    time.sleep(duration)
    for server in servers:
        server.shutdown()
    for sock in udp:
        sock.close()
    return {"udp_answered": counts}


# --- device -----------------------------------------------------------------------------------
def stamp() -> bytes:
    """The send-time trailer (the format iadm.flows.owd reads): `~ts=` and 16 digits of
    microseconds since the epoch, taken as late as the payload allows."""
    return b"~ts=%016d" % (time.time_ns() // 1000)


class Device:
    def __init__(self, server: str, rng: random.Random):
        self.server = server
        self.rng = rng
        self.counts = {name: {"sent": 0, "answered": 0} for name in
                       ("report", "coap", "dns", "http", "ntp", "firmware")}
        self.reports = None
        self.reader = None
        self.failed_at: list[float] = []   # epoch times of unanswered requests (the first 5000)
        self.started_at = time.time()
        self.per_second: list[list[int]] = []   # [answered requests, bytes received] per second of the run

    def _tally(self, answered: int, received: int) -> None:
        second = int(time.time() - self.started_at)
        while len(self.per_second) <= second:
            self.per_second.append([0, 0])
        self.per_second[second][0] += answered
        self.per_second[second][1] += received

    def _count(self, name: str, ok: bool) -> None:
        self.counts[name]["sent"] += 1
        self.counts[name]["answered"] += int(ok)
        self._tally(int(ok), 0)
        if not ok and len(self.failed_at) < 5000:
            self.failed_at.append(round(time.time(), 3))

    def report(self) -> None:
        try:
            if self.reports is None:
                self.reports = socket.create_connection((self.server, 1883), timeout=1)
                self.reader = self.reports.makefile("rb")
            seq = self.counts["report"]["sent"]
            self.reports.sendall(f"{seq} temp={20 + self.rng.random() * 5:.2f} hum={self.rng.randrange(30, 60)} "
                                 .encode() + stamp() + b"\n")
            ok = self.reader.readline().startswith(b"ACK")
        except OSError:
            ok = False
            self.reports = None
        self._count("report", ok)

    def _udp(self, name: str, port: int, payload: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1)
            try:
                sock.sendto(payload, (self.server, port))
                ok = len(sock.recvfrom(2048)[0]) > 0
            except OSError:
                ok = False
        self._count(name, ok)

    def coap(self) -> None:
        # a confirmable POST of a reading to /temp: the payload after the 0xff marker, stamped
        self._udp("coap", 5683, b"\x40\x02" + struct.pack("!H", self.rng.randrange(65536)) + b"\xb4temp\xff"
                  + f"{20 + self.rng.random() * 5:.2f}".encode() + stamp())

    def dns(self) -> None:
        name = self.rng.choice([b"broker", b"time", b"update", b"api"])
        query = struct.pack("!HHHHHH", self.rng.randrange(65536), 0x0100, 1, 0, 0, 0) + \
            bytes([len(name)]) + name + b"\x03iot\x04home\x00" + b"\x00\x01\x00\x01"
        self._udp("dns", 53, query)

    def ntp(self) -> None:
        self._udp("ntp", 123, b"\x23" + b"\0" * 47)

    def http(self) -> None:
        try:
            with socket.create_connection((self.server, 80), timeout=2) as sock:
                sock.sendall(b"GET /status HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n")
                ok = sock.recv(4096).startswith(b"HTTP/1.")
        except OSError:
            ok = False
        self._count("http", ok)

    def firmware(self) -> None:
        got = 0
        try:
            with socket.create_connection((self.server, 443), timeout=3) as sock:
                sock.sendall(b"GET firmware\n")
                while got < FIRMWARE_BYTES:
                    data = sock.recv(65536)
                    if not data:
                        break
                    got += len(data)
                    self._tally(0, len(data))
        except OSError:
            pass
        self._count("firmware", got >= FIRMWARE_BYTES)


def run_device(server: str, duration: float, scale: float, seed: int) -> dict:
    rng = random.Random(seed)
    device = Device(server, rng)
    # (task, period in seconds); first runs spread out so devices do not beat in step
    tasks = [(device.report, 1.0), (device.coap, 2.0), (device.dns, 10.0), (device.http, 5.0),
             (device.ntp, 15.0), (device.firmware, 20.0)]
    start = time.monotonic()
    due = [start + rng.random() * period / scale for _, period in tasks]
    while True:
        now = time.monotonic()
        if now - start >= duration:
            break
        i = min(range(len(tasks)), key=due.__getitem__)
        if due[i] > now:
            time.sleep(min(due[i] - now, start + duration - now))
            continue
        tasks[i][0]()
        due[i] += tasks[i][1] / scale
    if device.reports:
        device.reports.close()
    return {"counts": device.counts, "failed_at": device.failed_at, "started_at": device.started_at,
            "per_second": device.per_second}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("server")
    p.add_argument("--bind", required=True)
    p.add_argument("--duration", type=float, required=True)
    p = sub.add_parser("device")
    p.add_argument("--server", required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--scale", type=float, default=1.0, help="rate multiplier for every service (at most 20)")
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.role == "server":
        check(parser, dst=args.bind, duration=args.duration, max_duration=MAX_SERVE)
        result = serve(args.bind, args.duration)
    else:
        check(parser, dst=args.server, duration=args.duration, rate=args.scale, max_rate=20, max_duration=MAX_SERVE)
        result = run_device(args.server, args.duration, args.scale, args.seed)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
