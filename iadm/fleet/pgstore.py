"""The fleet's events in PostgreSQL: one table, written idempotently by event id.

Columns the console filters and sorts by are taken out of the event (host, event_type, time,
addresses, signature, category, severity, action); the whole event stays in `event` (jsonb).
A replayed or re-delivered event is stored once: INSERT ... ON CONFLICT (event_id) DO NOTHING.
Indexes: time (the inbox, newest first, and retention), (host, time) for one gateway's inbox,
(event_type, time), and the source address.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime

from iadm.alerts.log import parse_timestamp

SCHEMA_LOCK = 0x1ADF1EE7   # the advisory lock that serialises creating the fleet's tables

SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet_events (
    event_id   text PRIMARY KEY,
    host       text NOT NULL,
    event_type text NOT NULL,
    ts         timestamptz NOT NULL,
    src_ip     text,
    dest_ip    text,
    signature  text,
    category   text,
    severity   integer,
    action     text,
    stream_id  text,
    stored_at  timestamptz NOT NULL DEFAULT now(),
    event      jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS fleet_events_ts ON fleet_events (ts DESC);
CREATE INDEX IF NOT EXISTS fleet_events_host_ts ON fleet_events (host, ts DESC);
CREATE INDEX IF NOT EXISTS fleet_events_type_ts ON fleet_events (event_type, ts DESC);
CREATE INDEX IF NOT EXISTS fleet_events_src ON fleet_events (src_ip);
CREATE TABLE IF NOT EXISTS fleet_rejects (
    stream_id text PRIMARY KEY,
    reason    text NOT NULL,
    fields    text NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);
"""

INSERT = """INSERT INTO fleet_events (event_id, host, event_type, ts, src_ip, dest_ip, signature, category,
    severity, action, stream_id, event) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (event_id) DO NOTHING RETURNING event_id"""


def connect(dsn: str):
    import psycopg
    try:
        return psycopg.connect(dsn, autocommit=True)   # transactions are explicit: conn.transaction()
    except psycopg.OperationalError as exc:
        raise ConnectionError(f"PostgreSQL at {redact(dsn)}: {str(exc).strip()}") from None


def redact(dsn: str) -> str:
    """The DSN without a password, for messages."""
    head, at, tail = dsn.rpartition("@")
    if not at or ":" not in head.split("//")[-1]:
        return dsn
    scheme, _, cred = head.partition("//")
    return f"{scheme}//{cred.split(':')[0]}:***@{tail}"


def create_schema(conn) -> None:
    with conn.transaction():
        # collectors starting together: CREATE ... IF NOT EXISTS is not safe against a concurrent one
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(SCHEMA)


def _time(event: dict) -> datetime:
    try:
        return datetime.fromtimestamp(parse_timestamp(event["timestamp"]), UTC)
    except (TypeError, ValueError):
        raise ValueError(f"event {event.get('event_id')}: bad timestamp {event.get('timestamp')!r}") from None


def row(event: dict, stream_id: str | None) -> tuple:
    alert = event.get("alert") if isinstance(event.get("alert"), dict) else {}
    severity = alert.get("severity")
    return (event["event_id"], event["host"], event["event_type"], _time(event),
            _text(event.get("src_ip")), _text(event.get("dest_ip")), _text(alert.get("signature")),
            _text(alert.get("category")), severity if isinstance(severity, int) else None,
            _text(alert.get("action")), stream_id, json.dumps(event, separators=(",", ":")))


def _text(value):
    return None if value is None else str(value)


def insert(conn, rows: list[tuple]) -> set[str]:
    """Rows in one transaction; the event ids that were new (the others were there already)."""
    new = set()
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(INSERT, rows, returning=True)
        while True:
            new.update(r[0] for r in cur.fetchall())
            if not cur.nextset():
                break
    return new


def reject(conn, stream_id: str, reason: str, fields: str) -> None:
    with conn.transaction():
        conn.execute("INSERT INTO fleet_rejects (stream_id, reason, fields) VALUES (%s, %s, %s) "
                     "ON CONFLICT (stream_id) DO NOTHING", (stream_id, reason, fields[:4096]))


def expire(conn, retention_days: float) -> int:
    """Delete events older than the retention period; how many."""
    with conn.transaction():
        cur = conn.execute("DELETE FROM fleet_events WHERE ts < now() - make_interval(secs => %s)",
                           (retention_days * 86400,))
        return cur.rowcount
