"""Synthetic labelled traffic: benign IoT devices and attack windows, as raw frames.

For data the project makes itself (the default model, tests, benchmarks)
without a Mininet run: frames are packed with struct (scapy would take
minutes for this many), with addresses inside the reference topology's
10.0.0.0/24. Every attack comes from one attacker host (its own MAC) inside
a known time window; `label_records` labels a record as that attack when
its flow started inside the window and was sent by the attacker, so the
benign background that keeps running during an attack stays Normal.
"""
from __future__ import annotations

import random
import socket
import struct
from dataclasses import dataclass

SERVER, SERVER_MAC = "10.0.0.2", "00:00:00:00:00:02"
ATTACKER, ATTACKER_MAC = "10.0.0.101", "00:00:00:00:00:65"
EXTERNAL = "10.0.0.200"   # stands for a host outside the home network; still inside the topology


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def frame(src: str, dst: str, proto: int, sport: int = 0, dport: int = 0, flags: int = 0, payload: int = 0,
          smac: str = "00:00:00:00:00:01", dmac: str = SERVER_MAC, icmp: tuple = (8, 0)) -> bytes:
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, flags, 64240, 0, 0)
    elif proto == 17:
        l4 = struct.pack("!HHHH", sport, dport, 8 + payload, 0)
    else:
        l4 = struct.pack("!BBHHH", icmp[0], icmp[1], 0, sport, 1)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4) + payload, 0, 0, 64, proto, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return _mac(dmac) + _mac(smac) + b"\x08\x00" + ip + l4 + b"\x00" * payload


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    category: str
    subcategory: str


def benign(t0: float, seconds: float, devices: int = 3, seed: int = 0) -> list:
    """MQTT telemetry, CoAP reports, DNS, NTP, HTTP polls and one firmware download per device."""
    rng = random.Random(seed)
    out = []
    for d in range(devices):
        dev, mac = f"10.0.0.{11 + d}", f"00:00:00:00:00:{11 + d:02x}"

        def to(proto, sport, dport, flags=0, payload=0, at=0.0):
            out.append((at, frame(dev, SERVER, proto, sport, dport, flags, payload, smac=mac)))

        def back(proto, sport, dport, flags=0, payload=0, at=0.0):
            out.append((at, frame(SERVER, dev, proto, sport, dport, flags, payload, smac=SERVER_MAC, dmac=mac)))

        def session(start, sport, dport, exchanges, up, down, gap):
            to(6, sport, dport, 0x02, at=start)
            back(6, dport, sport, 0x12, at=start + 0.001)
            to(6, sport, dport, 0x10, at=start + 0.002)
            t = start + 0.002
            for _ in range(exchanges):
                t += gap * rng.uniform(0.8, 1.2)
                to(6, sport, dport, 0x18, up, at=t)
                back(6, dport, sport, 0x10 if down == 0 else 0x18, down, at=t + 0.002)
            to(6, sport, dport, 0x11, at=t + 0.01)
            back(6, dport, sport, 0x11, at=t + 0.011)
            to(6, sport, dport, 0x10, at=t + 0.012)

        session(t0 + rng.uniform(0, 2), 40000 + d, 1883, int(seconds / 5), 60, 0, 5.0)     # MQTT
        for k in range(int(seconds / 10)):
            at = t0 + 10 * k + rng.uniform(0, 1)
            to(17, 5683, 5683, payload=24, at=at)                                        # CoAP
            back(17, 5683, 5683, payload=4, at=at + 0.004)
            sport = rng.randrange(30000, 60000)
            to(17, sport, 53, payload=32, at=at + 0.5)                                   # DNS
            back(17, 53, sport, payload=64, at=at + 0.51)
            if k % 3 == 0:
                session(at + 2, 42000 + (k * 7 + d) % 20000, 80, 1, 120, 600, 0.01)      # HTTP poll
        to(17, 123, 123, payload=48, at=t0 + 15)                                         # NTP
        back(17, 123, 123, payload=48, at=t0 + 15.02)
        session(t0 + seconds / 3 + d, 43000 + d, 443, 800, 40, 1400, 0.002)              # firmware download
    return out


def attacks(t0: float, seed: int = 0) -> tuple[list, list]:
    """Attack traffic from the attacker host and its windows, one after another from t0."""
    rng = random.Random(seed + 1)
    out, windows = [], []
    a, am = ATTACKER, ATTACKER_MAC

    def window(start, seconds, category, sub):
        windows.append(Window(start, start + seconds, category, sub))
        return start + seconds + 10.0   # quiet time between attacks

    t = t0
    for i in range(6000):                                            # forged-source SYN flood, 3000 pps
        src = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        out.append((t + i / 3000, frame(src, SERVER, 6, rng.randrange(1024, 65535), 80, 0x02, smac=am)))
    t = window(t, 2.0, "DDoS", "TCP")
    for i in range(6000):                                            # UDP flood from one source
        out.append((t + i / 3000, frame(a, SERVER, 17, rng.randrange(1024, 65535), 5683, payload=64, smac=am)))
    t = window(t, 2.0, "DoS", "UDP")
    for i in range(2000):                                            # SYN port scan, closed ports answer RST
        at = t + i / 500
        out.append((at, frame(a, SERVER, 6, 40000, 1 + i, 0x02, smac=am)))
        out.append((at + 0.0005, frame(SERVER, a, 6, 1 + i, 40000, 0x14, smac=SERVER_MAC, dmac=am)))
    t = window(t, 4.0, "Reconnaissance", "Service_Scan")
    for i in range(40):                                              # OS fingerprinting probes
        at = t + i * 0.05
        kind = i % 4
        if kind == 3:
            out.append((at, frame(a, SERVER, 1, 7000 + i, 0, smac=am, icmp=(8, 9))))
        else:
            out.append((at, frame(a, SERVER, 6, 50000 + i, 1 + i * 37 % 1000, (0x29, 0x00, 0x03)[kind], smac=am)))
    t = window(t, 2.0, "Reconnaissance", "OS_Fingerprint")
    start = t
    out.append((t, frame(a, EXTERNAL, 6, 45000, 8443, 0x02, smac=am)))  # data exfiltration: 8 MB upload
    for i in range(5800):
        out.append((t + 0.001 + i * 0.001, frame(a, EXTERNAL, 6, 45000, 8443, 0x18, payload=1400, smac=am)))
    t = window(start, 6.0, "Theft", "Data_Exfiltration")
    start = t
    for i in range(90):                                              # keylogging-like trickle, 1 per second
        out.append((t + i * 1.0, frame(a, EXTERNAL, 6, 46000, 7777, 0x18, payload=rng.randrange(8, 40), smac=am)))
    window(start, 90.0, "Theft", "Keylogging")
    return out, windows


def label_records(records, windows: list):
    """attack/category/subcategory by injection window and sender (the attacker's MAC)."""
    import numpy as np
    attacker = int(ATTACKER_MAC.replace(":", ""), 16)
    out = records.assign(attack=0, category="Normal", subcategory="Normal")
    from_attacker = out["smac"].to_numpy() == attacker
    for w in windows:
        # A flow belongs to the window it started in; the rest of the attack's flows started inside it too.
        inside = from_attacker & (out["stime"].to_numpy() >= w.start) & (out["stime"].to_numpy() <= w.end)
        out.loc[inside, ["attack", "category", "subcategory"]] = [1, w.category, w.subcategory]
    answered = (~from_attacker) & np.isin(out["daddr"].to_numpy(), [ATTACKER])
    for w in windows:   # the victim's answers to the scan are part of the attack too
        inside = answered & (out["stime"].to_numpy() >= w.start) & (out["stime"].to_numpy() <= w.end)
        out.loc[inside, ["attack", "category", "subcategory"]] = [1, w.category, w.subcategory]
    return out
