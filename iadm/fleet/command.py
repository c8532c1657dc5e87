"""`iadm fleet collect`: the collector as a command (also `python -m iadm.fleet.command collect ...`).

Redis is the one of the [fleet] section of the given config (the monitor's or the controller's
TOML, or a file with [fleet] alone); PostgreSQL is --db (a postgresql:// DSN) or IADM_FLEET_DB.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys


def register(subparsers) -> None:
    fleet = subparsers.add_parser("fleet", help="the fleet: events from many gateways into one store")
    jobs = fleet.add_subparsers(dest="fleet_command", required=True)
    collect = jobs.add_parser("collect", help="read the events stream in a consumer group into PostgreSQL")
    collect.add_argument("--config", help="a TOML file with a [fleet] section (Redis server, port, key, TLS)")
    collect.add_argument("--db", default=os.environ.get("IADM_FLEET_DB"),
                         help="PostgreSQL DSN, postgresql://user@host/db (default: IADM_FLEET_DB)")
    collect.add_argument("--group", default="iadm-collectors", help="consumer group (default: %(default)s)")
    collect.add_argument("--consumer", help="this collector's name in the group (default: host-pid)")
    collect.add_argument("--retention-days", type=float, default=90.0,
                         help="events older than this are deleted (default: %(default)s)")
    collect.add_argument("--claim-idle", type=float, default=30.0,
                         help="seconds an entry stays pending at a dead collector before it is claimed")
    collect.add_argument("--batch", type=int, default=500, help="entries per read (default: %(default)s)")
    collect.set_defaults(func=collect_command)   # iadm.cli calls args.func(args)


def _fleet_config(path: str | None):
    from iadm.config import load_fleet_config
    return load_fleet_config(path)


def collect_command(args) -> int:
    from iadm.config import ConfigError
    from iadm.fleet import pgstore
    from iadm.fleet.collector import Collector
    from iadm.fleet.publisher import redis_client

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.db:
        print("iadm fleet collect: --db or IADM_FLEET_DB (a postgresql:// DSN) is needed", file=sys.stderr)
        return 2
    if args.batch < 1 or args.retention_days <= 0 or args.claim_idle <= 0:
        print("iadm fleet collect: --batch, --retention-days and --claim-idle must be positive", file=sys.stderr)
        return 2
    try:
        config = _fleet_config(args.config)
        conn = pgstore.connect(args.db)
    except (ConfigError, ConnectionError) as exc:
        print(f"iadm fleet collect: {exc}", file=sys.stderr)
        return 1
    collector = Collector(redis_client(config, timeout=6.0), conn, config.key, group=args.group,
                          consumer=args.consumer, batch=args.batch, block_ms=1000,
                          claim_idle_ms=int(args.claim_idle * 1000), retention_days=args.retention_days)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    logging.getLogger("iadm.fleet.collector").info(
        "collecting %s:%d key %s, group %s as %s into %s", config.redis_server, config.redis_port, config.key,
        collector.group, collector.consumer, pgstore.redact(args.db))
    try:
        collector.run(stop=lambda: bool(stopping))
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="iadm")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fleet", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
