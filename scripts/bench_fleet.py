#!/usr/bin/env python3
"""Fleet benchmark: publish cost on the hot path, and events/s from XADD to committed row.

Starts its own redis-server and PostgreSQL on loopback (iadm.fleet.localservers) and prints each
figure beside a baseline measured in the same run, with the ratio:
  publish      Publisher.__call__ per event  vs  a list append of the same dict, and a JSON line
               appended to a local file (what the alert log itself costs)
  end to end   N events through the publisher, Redis and 1 or 2 collector processes into
               PostgreSQL  vs  the same rows inserted straight into PostgreSQL in batches of 500
Usage: scripts/bench_fleet.py [--events 20000]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iadm.alerts.log import eve_timestamp
from iadm.config import FleetConfig
from iadm.fleet import pgstore
from iadm.fleet.events import envelope
from iadm.fleet.localservers import LocalPostgres, LocalRedis
from iadm.fleet.publisher import publisher

EVENT = {"timestamp": eve_timestamp(time.time()), "flow_id": 123456789, "src_ip": "10.0.0.9",
         "src_port": 40000, "dest_ip": "10.0.0.2", "dest_port": 80, "proto": "TCP",
         "alert": {"action": "blocked", "signature_id": 1000001, "rev": 1, "signature": "SYN flood",
                   "category": "DoS", "severity": 2}, "verdict_source": "rule"}


def per_event(fn, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn(EVENT)
    return (time.perf_counter() - started) / n


def bench_publish(config, n: int, workdir: Path) -> None:
    sink = []
    base_list = per_event(lambda e: sink.append(dict(e)), n)
    with open(workdir / "append.json", "ab", buffering=0) as fh:
        base_file = per_event(lambda e: fh.write(json.dumps(e, separators=(",", ":")).encode() + b"\n"), n)
    pub = publisher(config, "bench")
    cost = per_event(pub, n)
    pub.flush(timeout=60)
    pub.close()
    print(f"publish, hot path: {cost * 1e6:.2f} us/event; list append {base_list * 1e6:.2f} us "
          f"(x{cost / base_list:.1f}); file append {base_file * 1e6:.2f} us (x{cost / base_file:.2f})")


def _count(conn) -> int:
    return conn.execute("SELECT count(*) FROM fleet_events").fetchone()[0]


def bench_direct(dsn: str, n: int) -> float:
    conn = pgstore.connect(dsn)
    pgstore.create_schema(conn)
    conn.execute("TRUNCATE fleet_events")
    conn.commit()
    rows = [pgstore.row(envelope(EVENT, "bench"), None) for _ in range(n)]
    started = time.perf_counter()
    for i in range(0, n, 500):
        pgstore.insert(conn, rows[i:i + 500])
    elapsed = time.perf_counter() - started
    conn.execute("TRUNCATE fleet_events")
    conn.commit()
    conn.close()
    return n / elapsed


def bench_end_to_end(config, dsn: str, n: int, collectors: int, workdir: Path) -> float:
    key = f"iadm:bench:{collectors}"
    config.key = key
    conf_path = workdir / f"fleet-{collectors}.toml"
    conf_path.write_text(f'[fleet]\nenabled = true\nredis_port = {config.redis_port}\nkey = "{key}"\n')
    log = open(workdir / "collectors.log", "ab")
    procs = [subprocess.Popen([sys.executable, "-m", "iadm.fleet.command", "collect", "--config", str(conf_path),
                               "--db", dsn, "--consumer", f"b{i}"], stdout=log, stderr=subprocess.STDOUT)
             for i in range(collectors)]
    conn = pgstore.connect(dsn)
    try:
        time.sleep(1.5)    # the collectors are up and blocked on XREADGROUP
        start_rows = _count(conn)
        pub = publisher(config, f"bench-{collectors}")
        started = time.perf_counter()
        for _ in range(n):
            pub(EVENT)
        while _count(conn) - start_rows < n:
            time.sleep(0.02)
            if time.perf_counter() - started > 300:
                raise RuntimeError("the collectors did not store every event within 300 s")
        elapsed = time.perf_counter() - started
        pub.close()
        return n / elapsed
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="iadm-bench-fleet-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        with LocalRedis(workdir / "redis") as redis_server, LocalPostgres(workdir / "pg") as pg:
            config = FleetConfig(enabled=True, redis_port=redis_server.port, key="iadm:bench:publish",
                                 spool=str(workdir / "spool"), maxlen=1_000_000)
            bench_publish(config, args.events, workdir)
            direct = bench_direct(pg.dsn, args.events)
            print(f"direct INSERT into PostgreSQL (batches of 500): {direct:,.0f} rows/s (baseline)")
            for collectors in (1, 2):
                config.spool = str(workdir / f"spool-{collectors}")
                rate = bench_end_to_end(config, pg.dsn, args.events, collectors, workdir)
                print(f"XADD -> committed row, {collectors} collector(s): {rate:,.0f} events/s "
                      f"(x{rate / direct:.2f} of direct INSERT)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
