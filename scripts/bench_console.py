#!/usr/bin/env python3
"""Every console page with 100,000 alerts in the store, beside the same page with 1,000.

    .venv/bin/python scripts/bench_console.py [--alerts 100000] [--baseline 1000] [--runs 5]

Then what the console adds to the detection path, in the same run: the monitor's labeller on the
records of a generated capture (benign devices and the synthetic attacks) with and without the
traffic meter (iadm/console/traffic.py), and the alert log's write with and without the store sink.

Each store is filled with alert lines shaped as the responder writes them (floods: few groups of
many lines; scans: many groups), with mitigations, operator decisions and a day of traffic of 60
devices. A real monitor (build_monitor, operator API and console on loopback) serves each store;
every page is fetched over HTTP with a session cookie `--runs` times, and the median is printed
beside the baseline store's median and the ratio. Target (issue #16): every page under 1 s.
"""
import argparse
import dataclasses
import http.client
import os
import random
import socket
import statistics
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from iadm.alerts.log import eve_timestamp  # noqa: E402
from iadm.config import MonitorConfig  # noqa: E402
from iadm.console.store import GroupFilter, SQLiteAlertStore, operator_event  # noqa: E402

TOKEN = "bench-console"
T0 = 1_764_000_000.0
DAY = 86400.0
SIGNATURES = [(2000010, "UDP flood from one source", "DoS", "udp_flood"),
              (2000001, "TCP port scan (syn)", "Reconnaissance", "port_scan"),
              (1000008, "Many short connections", "DoS", "syn_flood"),
              (2000020, "DNS tunnel", "Theft", "dns_tunnel"),
              (2000030, "Slow HTTP", "DoS", "slow_http")]


def events(n: int, seed: int = 0):
    """n alert lines over a day: a tenth from a few flooders, the rest from many scanning sources."""
    rng = random.Random(seed)
    for i in range(n):
        ts = T0 + i * DAY / n
        if rng.random() < 0.1:
            src, (sid, sig, cat, tech) = f"10.0.0.{rng.randrange(100, 110)}", SIGNATURES[0]
        else:
            src, (sid, sig, cat, tech) = f"10.{rng.randrange(1, 40)}.{rng.randrange(256)}.{rng.randrange(1, 255)}", \
                rng.choice(SIGNATURES[1:])
        mac = "00:16:3e:%02x:%02x:%02x" % (hash(src) & 255, hash(src) >> 8 & 255, hash(src) >> 16 & 255)
        event = {"timestamp": eve_timestamp(ts), "event_type": "alert", "host": "gw-bench", "src_ip": src,
                 "src_port": rng.randrange(1024, 65535), "dest_ip": f"10.0.0.{rng.randrange(1, 30)}",
                 "dest_port": rng.choice([80, 443, 1883, 5683]), "proto": "TCP", "src_mac": mac,
                 "alert": {"action": "blocked" if i % 50 == 0 else "allowed", "gid": 1, "signature_id": sid,
                           "rev": 1, "signature": sig, "category": cat, "severity": 2,
                           "metadata": {"technique": [tech], "mitre_technique_id": ["T1046"]}},
                 "verdict_source": "rule", "model": {"name": "default", "label": cat, "score": 0.97},
                 "zscore": 4.2, "features": {"srate": 812.0, "N_IN_Conn_P_DstIP": 97},
                 "flow": {"stime": ts - 1, "ltime": ts, "pkts": 40, "bytes": 2400, "state": "REQ"}, "records": 40}
        if i % 50 == 0:
            event["verdict"] = {"action": "block", "block_id": i // 50 + 1, "match": {"src_mac": mac},
                                "sent_at": ts, "installed_at": ts, "installed_on": ["0000000000000001"]}
        yield event


def fill(path: str, n: int) -> float:
    start = time.perf_counter()
    store = SQLiteAlertStore(path)
    store.add_many(events(n))
    groups = store.groups(GroupFilter(), 0, 200).items
    store.add_many(operator_event(g, ("archive", "escalate")[k % 2], "bench", T0 + DAY) for k, g in
                   enumerate(groups[:100]))
    for d in range(60):   # a day of traffic, 60 devices
        mac = "00:16:3e:00:00:%02x" % d
        store.add_traffic("gw-bench", [(T0 + t, mac, f"192.168.1.{d}", 20 + d, 2000) for t in range(0, 86400, 10)])
    store.close()
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pages(conn, cookie: str) -> list[tuple[str, str]]:
    """(label, path) of every page; the detail view is the newest group's."""
    conn.request("GET", "/console/inbox", headers={"Cookie": cookie})
    body = conn.getresponse().read().decode()
    first = body.split('href="/console/groups/', 1)[1].split('"', 1)[0]
    paths = ["/console/inbox", "/console/inbox?offset=5000", "/console/inbox?category=Theft&action=allowed",
             "/console/inbox?host=10.0.0.105&state=all", "/console/inbox?since=" + str(T0 + DAY / 2),
             "/console/mitigations", "/console/mitigations?offset=1000", "/console/devices", "/console/timeline",
             "/console/timeline?window=1h", "/console/detector", "/console/api/version"]
    return [(p, p) for p in paths] + [("/console/groups/(newest)", f"/console/groups/{first}")]


def measure(path: str, runs: int, tmp: str) -> dict:
    from iadm.detection.compose import build_monitor
    port = free_port()
    config = dataclasses.replace(MonitorConfig(), alert_log=os.path.join(tmp, f"alerts-{port}.json"),
                                 zscore_db=os.path.join(tmp, f"z-{port}.sqlite"), console_store=path,
                                 api_port=port, api_token=TOKEN, gateway_id="gw-bench")
    monitor = build_monitor(config, replay=True)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/console/login", urllib.parse.urlencode({"token": TOKEN, "name": "bench"}),
                     {"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        resp.read()
        cookie = resp.getheader("Set-Cookie").split(";")[0]
        out = {}
        for label, page in pages(conn, cookie):
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                conn.request("GET", page, headers={"Cookie": cookie})
                r = conn.getresponse()
                r.read()
                times.append(time.perf_counter() - start)
                if r.status != 200:
                    raise SystemExit(f"{page}: HTTP {r.status}")
            out[label] = statistics.median(times)
        conn.close()
        return out
    finally:
        monitor.close()


def detection_cost(tmp: str, runs: int) -> None:
    """The labeller with and without the traffic meter; alert lines with and without the store."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from pcaptools import write_pcap

    from iadm.alerts.log import AlertLog
    from iadm.console.traffic import TrafficMeter
    from iadm.flows.pipeline import records_from_pcap
    from iadm.monitor import Labeller
    from iadm.synth import attacks, benign
    flood, _ = attacks(T0 + 5)
    write_pcap(os.path.join(tmp, "mix.pcap"), sorted(benign(T0, 60, devices=8) + flood))
    records, _ = records_from_pcap(os.path.join(tmp, "mix.pcap"), kind="running")   # as the live monitor's
    config = MonitorConfig()
    labeller = Labeller.from_rules(config.rule_files, config.variables)
    store = SQLiteAlertStore(os.path.join(tmp, "meter.sqlite"))
    meter = TrafficMeter(store, "gw-bench")
    frames = [records.iloc[i:i + 20_000] for i in range(0, len(records), 20_000)]
    labeller(frames[0])   # compiled and warm

    def once(with_meter: bool) -> float:
        start = time.perf_counter()
        for f in frames:
            labelled = labeller(f)
            if with_meter:
                meter(labelled)
        return time.perf_counter() - start
    alone = statistics.median(once(False) for _ in range(runs))
    metered = statistics.median(once(True) for _ in range(runs))
    print(f"detection path, {len(records):,} records in 20,000-record frames: {len(records) / metered:,.0f} "
          f"records/s with the traffic meter beside {len(records) / alone:,.0f} without: x{metered / alone:.2f} the time")
    lines = list(events(5000, seed=1))
    cost = {}
    for name, sinks in (("alone", []), ("store", [store])):
        log = AlertLog(os.path.join(tmp, f"alerts-{name}.json"), sinks=sinks)
        start = time.perf_counter()
        for e in lines:
            log.write(e)
        cost[name] = (time.perf_counter() - start) / len(lines)
        log.close()
    store.close()
    print(f"alert line: {cost['store'] * 1e6:.0f} us with the store sink beside {cost['alone'] * 1e6:.0f} us "
          f"without: x{cost['store'] / cost['alone']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="iadm-bench-console-") as tmp:
        small, big = os.path.join(tmp, "small.sqlite"), os.path.join(tmp, "big.sqlite")
        print(f"filling: {args.baseline:,} alerts {fill(small, args.baseline):.1f} s, "
              f"{args.alerts:,} alerts {fill(big, args.alerts):.1f} s")
        base, loaded = measure(small, args.runs, tmp), measure(big, args.runs, tmp)
    print(f"median of {args.runs} per page, ms: {args.alerts:,} alerts beside {args.baseline:,} (ratio)")
    worst = 0.0
    for page, seconds in loaded.items():
        worst = max(worst, seconds)
        print(f"  {page:48} {seconds * 1e3:8.1f} beside {base[page] * 1e3:7.1f}  x{seconds / base[page]:.2f}")
    print(f"slowest page {worst * 1e3:.0f} ms: {'under' if worst < 1 else 'OVER'} the 1 s target")
    with tempfile.TemporaryDirectory(prefix="iadm-bench-console-") as tmp:
        detection_cost(tmp, args.runs)
    return 0 if worst < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
