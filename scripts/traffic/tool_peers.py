#!/usr/bin/env python3
"""Small servers and clients for scripts/tool_captures (standard library only, run inside a network
namespace). Each subcommand is bounded: servers are run under `timeout` by the caller, clients make
a fixed number of requests.

    tool_peers.py basic-server ADDR PORT USER PASSWORD     HTTP that answers 401 without Basic auth
    tool_peers.py digest-server ADDR PORT USER PASSWORD    HTTP that answers 401 without Digest auth
    tool_peers.py dns-server ADDR                          a resolver answering A for any name
    tool_peers.py sink ADDR PORT                           accepts TCP connections, reads and drops
    tool_peers.py send ADDR PORT BYTES                     one TCP connection carrying BYTES bytes
    tool_peers.py browse BASE N                            N page fetches like a browser's
    tool_peers.py digest-client URL USER PASSWORD N        N fetches through Digest auth
    tool_peers.py ftp-upload HOST USER PASSWORD            log in, list, upload a file, quit
    tool_peers.py dns-client SERVER                        20 ordinary lookups, one at a time
"""
from __future__ import annotations

import base64
import ftplib
import hashlib
import io
import os
import random
import secrets
import socket
import socketserver
import struct
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = b"<html><head><title>gateway</title></head><body>" + b"<p>status ok</p>" * 40 + b"</body></html>"


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def page(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def refuse(self, challenge: str):
        body = b"401 authorization required\n"
        self.send_response(401)
        self.send_header("WWW-Authenticate", challenge)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def basic_server(addr: str, port: int, user: str, password: str) -> None:
    wanted = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Handler(_Quiet):
        def do_GET(self):
            if self.headers.get("Authorization", "") == wanted:
                self.page()
            else:
                self.refuse('Basic realm="gateway"')

    ThreadingHTTPServer((addr, port), Handler).serve_forever()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def digest_server(addr: str, port: int, user: str, password: str) -> None:
    realm = "gateway"
    nonces: set[str] = set()

    def parse(header: str) -> dict:
        fields = {}
        for part in header.removeprefix("Digest ").split(","):
            if "=" in part:
                key, value = part.strip().split("=", 1)
                fields[key] = value.strip('"')
        return fields

    class Handler(_Quiet):
        def do_GET(self):
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Digest "):
                f = parse(auth)
                ha1 = _md5(f"{user}:{realm}:{password}")
                ha2 = _md5(f"GET:{f.get('uri', '')}")
                expect = _md5(f"{ha1}:{f.get('nonce', '')}:{f.get('nc', '')}:{f.get('cnonce', '')}:"
                              f"{f.get('qop', '')}:{ha2}")
                if f.get("username") == user and f.get("nonce") in nonces and f.get("response") == expect:
                    self.page()
                    return
            nonce = secrets.token_hex(16)
            nonces.add(nonce)
            self.refuse(f'Digest realm="{realm}", qop="auth", nonce="{nonce}", algorithm=MD5')

    ThreadingHTTPServer((addr, port), Handler).serve_forever()


def _dns_name(data: bytes, at: int) -> tuple[str, int]:
    labels = []
    while at < len(data) and data[at]:
        n = data[at]
        labels.append(data[at + 1:at + 1 + n].decode(errors="replace"))
        at += 1 + n
    return ".".join(labels), at + 1


def dns_server(addr: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, 53))
    while True:
        data, peer = sock.recvfrom(1500)
        if len(data) < 12:
            continue
        ident, _flags, qd = struct.unpack("!HHH", data[:6])
        if qd != 1:
            continue
        name, end = _dns_name(data, 12)
        qtype, _qclass = struct.unpack("!HH", data[end:end + 4])
        question = data[12:end + 4]
        answers = b""
        if qtype == 1:
            last = 10 + sum(name.encode()) % 200
            answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + socket.inet_aton(f"10.97.5.{last}")
        head = struct.pack("!HHHHHH", ident, 0x8180, 1, 1 if answers else 0, 0, 0)
        sock.sendto(head + question + answers, peer)


def sink(addr: str, port: int) -> None:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            while self.request.recv(65536):
                pass

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer((addr, port), Handler).serve_forever()


def send(addr: str, port: int, size: int) -> None:
    blob = os.urandom(size)
    with socket.create_connection((addr, port), timeout=30) as s:
        for at in range(0, size, 1024):
            s.sendall(blob[at:at + 1024])
    print(f"sent {size} bytes")


BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0",
           "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
           "Accept-Language": "en-GB,en;q=0.5"}


def browse(base: str, n: int) -> None:
    paths = ["/", "/index.html", "/status", "/settings", "/devices", "/logs", "/style.css", "/app.js",
             "/favicon.ico", "/help", "/about", "/network"]
    for k in range(n):
        req = urllib.request.Request(base.rstrip("/") + paths[k % len(paths)], headers=BROWSER)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                r.read()
        except urllib.error.HTTPError as e:   # a missing page is a 404: still an ordinary fetch
            e.read()
        time.sleep(random.uniform(0.4, 1.2))


def digest_client(url: str, user: str, password: str, n: int) -> None:
    mgr = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    mgr.add_password(None, url, user, password)
    opener = urllib.request.build_opener(urllib.request.HTTPDigestAuthHandler(mgr))
    for _ in range(n):
        with opener.open(urllib.request.Request(url, headers=BROWSER), timeout=5) as r:
            assert r.status == 200
            r.read()
        time.sleep(1.0)


def ftp_upload(host: str, user: str, password: str) -> None:
    with ftplib.FTP(host, timeout=10) as ftp:
        ftp.login(user, password)
        ftp.nlst()
        ftp.storbinary("STOR reading.csv", io.BytesIO(b"time,temp\n" + b"1700000000,21.5\n" * 2000))
        ftp.nlst()
        ftp.quit()
    print("uploaded")


def _query(name: str, ident: int) -> bytes:
    q = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack("!HH", 1, 1)


def dns_client(server: str) -> None:
    names = ["pool.ntp.org", "time.google.com", "api.weather.example", "firmware.vendor.example",
             "mqtt.cloud.example", "www.example.com", "cdn.example.net", "status.example.org",
             "updates.example.com", "telemetry.vendor.example", "login.example.com", "mail.example.org",
             "images.example.net", "docs.example.com", "www.wikipedia.org", "debian.org",
             "deb.debian.org", "ocsp.example.com", "connectivity-check.example", "news.example.net"]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    for name in names:
        s.sendto(_query(name, random.randrange(65536)), (server, 53))
        try:
            s.recvfrom(1500)
        except socket.timeout:
            pass
        time.sleep(random.uniform(0.2, 1.0))


def main(argv: list[str]) -> None:
    cmd, args = argv[0], argv[1:]
    if cmd == "basic-server":
        basic_server(args[0], int(args[1]), args[2], args[3])
    elif cmd == "digest-server":
        digest_server(args[0], int(args[1]), args[2], args[3])
    elif cmd == "dns-server":
        dns_server(args[0])
    elif cmd == "sink":
        sink(args[0], int(args[1]))
    elif cmd == "send":
        send(args[0], int(args[1]), int(args[2]))
    elif cmd == "browse":
        browse(args[0], int(args[1]))
    elif cmd == "digest-client":
        digest_client(args[0], args[1], args[2], int(args[3]))
    elif cmd == "ftp-upload":
        ftp_upload(args[0], args[1], args[2])
    elif cmd == "dns-client":
        dns_client(args[0])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
