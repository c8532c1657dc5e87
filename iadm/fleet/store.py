"""The console's alert store for a fleet: iadm.console.store.AlertStore on PostgreSQL.

The same tables and semantics as the SQLite store of one gateway (groups of alerts by gateway,
signature, source and destination; every alert line; mitigations; devices; traffic buckets), with
the gateway taken from each event's `host`, so one inbox holds every gateway and every query
filters by one when asked. The collector (iadm.fleet.collector) feeds it with the events it stored
for the first time, in the same transaction, so a re-delivered event counts once here too; the
console opens it with `console.store = "postgresql://..."` (open_store).

Differences from SQLite that matter: the version is a sequence (several collectors write, the
console in another process reads it), and the group upsert names the table in its SET clause.
"""
from __future__ import annotations

import json
import threading

from iadm.alerts.log import parse_timestamp
from iadm.console.store import (
    DEVICE_COLUMNS,
    GROUP_COLUMNS,
    MITIGATION_COLUMNS,
    AlertStore,
    GroupFilter,
    Page,
    StoreError,
    _check_page,
    _first,
    device_row,
    equal_terms,
    group_key,
    group_row,
    group_terms,
    mitigation_row,
    operator_updates,
    span_of,
    stored_event,
    timeline_answer,
    timeline_buckets,
    traffic_sums,
)
from iadm.fleet.pgstore import SCHEMA_LOCK, redact

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_groups (
    id bigserial PRIMARY KEY, gateway text NOT NULL, signature_id bigint NOT NULL, signature text NOT NULL,
    src_ip text NOT NULL, dest_ip text NOT NULL, src_mac text, category text, technique text, mitre text,
    verdict_source text, action text NOT NULL, count bigint NOT NULL, records bigint NOT NULL,
    first_seen double precision NOT NULL, last_seen double precision NOT NULL, state text NOT NULL DEFAULT 'inbox',
    not_attack_by text, not_attack_at double precision,
    UNIQUE (gateway, signature_id, signature, src_ip, dest_ip));
CREATE INDEX IF NOT EXISTS alert_groups_seen ON alert_groups (last_seen);
CREATE INDEX IF NOT EXISTS alert_groups_state_seen ON alert_groups (state, last_seen);
CREATE INDEX IF NOT EXISTS alert_groups_gateway_seen ON alert_groups (gateway, last_seen);
CREATE INDEX IF NOT EXISTS alert_groups_src ON alert_groups (src_ip);
CREATE INDEX IF NOT EXISTS alert_groups_dest ON alert_groups (dest_ip);
CREATE INDEX IF NOT EXISTS alert_groups_category ON alert_groups (category, last_seen);
CREATE INDEX IF NOT EXISTS alert_groups_technique ON alert_groups (technique, last_seen);
CREATE TABLE IF NOT EXISTS alert_events (
    id bigserial PRIMARY KEY, ts double precision NOT NULL, gateway text NOT NULL, group_id bigint NOT NULL,
    src_ip text, dest_ip text, signature_id bigint, signature text, technique text, action text, body jsonb NOT NULL);
CREATE INDEX IF NOT EXISTS alert_events_ts ON alert_events (ts);
CREATE INDEX IF NOT EXISTS alert_events_gateway_ts ON alert_events (gateway, ts);
CREATE INDEX IF NOT EXISTS alert_events_group ON alert_events (group_id, id);
CREATE TABLE IF NOT EXISTS alert_mitigations (
    id bigserial PRIMARY KEY, gateway text NOT NULL, block_id text NOT NULL, action text, match text,
    attacker text, reason text, installed_at double precision NOT NULL, ended_at double precision, ended_by text,
    group_id bigint, UNIQUE (gateway, block_id));
CREATE INDEX IF NOT EXISTS alert_mitigations_installed ON alert_mitigations (installed_at);
CREATE INDEX IF NOT EXISTS alert_mitigations_group ON alert_mitigations (group_id);
CREATE TABLE IF NOT EXISTS alert_devices (
    gateway text NOT NULL, mac text NOT NULL, addresses text NOT NULL, first_seen double precision NOT NULL,
    last_seen double precision NOT NULL, packets bigint NOT NULL DEFAULT 0, bytes bigint NOT NULL DEFAULT 0,
    alerts bigint NOT NULL DEFAULT 0, PRIMARY KEY (gateway, mac));
CREATE INDEX IF NOT EXISTS alert_devices_seen ON alert_devices (last_seen);
CREATE TABLE IF NOT EXISTS alert_traffic (
    gateway text NOT NULL, bucket double precision NOT NULL, device text NOT NULL, packets bigint NOT NULL,
    bytes bigint NOT NULL, PRIMARY KEY (gateway, bucket, device));
CREATE INDEX IF NOT EXISTS alert_traffic_bucket ON alert_traffic (bucket);
CREATE SEQUENCE IF NOT EXISTS alert_version;
"""

def create_schema(conn) -> None:
    with conn.transaction():
        # collectors starting together: CREATE ... IF NOT EXISTS is not safe against a concurrent one
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(SCHEMA)


class PostgresAlertStore(AlertStore):
    """One connection (autocommit, explicit transactions) behind a lock; `dsn` a postgresql:// URL."""

    def __init__(self, dsn: str, traffic_bucket: float = 10.0):
        import psycopg
        if not traffic_bucket > 0:
            raise StoreError(f"traffic_bucket must be a positive number of seconds, not {traffic_bucket!r}",
                             "traffic_bucket")
        self.path = redact(dsn)
        self.traffic_bucket = float(traffic_bucket)
        self._lock = threading.RLock()
        try:
            self._db = psycopg.connect(dsn, autocommit=True)
            create_schema(self._db)
        except psycopg.Error as exc:
            raise StoreError(f"{redact(dsn)}: cannot open the alert store ({str(exc).strip()})", "store") from None

    @classmethod
    def on(cls, conn, traffic_bucket: float = 10.0) -> PostgresAlertStore:
        """The store on a connection the caller owns (the collector's, so its writes share the transaction)."""
        store = cls.__new__(cls)
        store.path, store.traffic_bucket, store._lock, store._db = "(shared connection)", float(traffic_bucket), \
            threading.RLock(), conn
        create_schema(conn)
        return store

    # --- writing ------------------------------------------------------------------------------------
    def _bump(self) -> None:
        self._db.execute("SELECT nextval('alert_version')")

    def add(self, event: dict) -> None:
        kind, ts = stored_event(event)
        if kind is None:
            return
        with self._lock, self._db.transaction():
            self._add_one(kind, event, ts)
            self._bump()

    def add_many(self, events) -> int:
        """Many events in one transaction (inside the caller's transaction, if it has one open). A run
        of alerts is written as a batch: one upsert per group, the lines and the devices in bulk;
        operator decisions are applied in their place between runs, so the order of the log holds."""
        n = 0
        run: list = []
        with self._lock, self._db.transaction():
            for event in events:
                kind = event.get("event_type")
                if kind not in ("alert", "operator"):
                    continue
                ts = parse_timestamp(event["timestamp"])
                if kind == "alert":
                    run.append((event, ts))
                else:
                    self._add_alerts(run)
                    run = []
                    self._add_operator(event, ts)
                n += 1
            self._add_alerts(run)
            if n:
                self._bump()
        return n

    def _add_one(self, kind: str, event: dict, ts: float) -> None:
        if kind == "alert":
            self._add_alerts([(event, ts)])
        else:
            self._add_operator(event, ts)

    def _add_alerts(self, alerts: list) -> None:
        """Alerts in their order, with the effect of adding them one by one (as the SQLite store does)."""
        if not alerts:
            return
        groups: dict = {}
        for event, ts in alerts:
            alert = event.get("alert") or {}
            meta = alert.get("metadata") or {}
            key = group_key(event)
            first = min(float(event.get("first_seen") or ts), ts)
            g = groups.get(key)
            if g is None:
                g = groups[key] = {"count": 0, "records": 0, "first": first, "last": ts, "action": "allowed",
                                   "mac": None, "technique": "", "mitre": ""}
            g["count"] += 1
            g["records"] += int(event.get("records") or 1)
            g["first"], g["last"] = min(g["first"], first), max(g["last"], ts)
            if g["count"] == 1 or (alert.get("action") or "allowed") == "blocked":
                g["action"] = "blocked" if g["action"] == "blocked" else (alert.get("action") or "allowed")
            g["category"] = str(alert.get("category") or "")
            g["source"] = str(event.get("verdict_source") or "")
            g["mac"] = event.get("src_mac") or g["mac"]
            g["technique"] = _first(meta, "technique") or g["technique"]
            g["mitre"] = _first(meta, "mitre_technique_id") or g["mitre"]
        ids = {}
        with self._db.cursor() as cur:
            cur.executemany(
                "INSERT INTO alert_groups AS g (gateway, signature_id, signature, src_ip, dest_ip, src_mac, category, "
                "technique, mitre, verdict_source, action, count, records, first_seen, last_seen) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (gateway, signature_id, signature, src_ip, dest_ip) DO UPDATE SET "
                "count = g.count + excluded.count, records = g.records + excluded.records, "
                "first_seen = least(g.first_seen, excluded.first_seen), "
                "last_seen = greatest(g.last_seen, excluded.last_seen), "
                "action = CASE WHEN excluded.action = 'blocked' THEN 'blocked' ELSE g.action END, "
                "verdict_source = excluded.verdict_source, category = excluded.category, "
                "src_mac = coalesce(excluded.src_mac, g.src_mac), "
                "technique = coalesce(nullif(excluded.technique, ''), g.technique), "
                "mitre = coalesce(nullif(excluded.mitre, ''), g.mitre), "
                # a group the operator archived comes back to the inbox when it is seen again
                "state = CASE WHEN g.state = 'archived' THEN 'inbox' ELSE g.state END "
                "RETURNING id",
                [(*key, g["mac"], g["category"], g["technique"], g["mitre"], g["source"], g["action"], g["count"],
                  g["records"], g["first"], g["last"]) for key, g in groups.items()], returning=True)
            for key in groups:
                ids[key] = cur.fetchone()[0]
                cur.nextset()
            lines, blocks, devices = [], [], {}
            for event, ts in alerts:
                alert = event.get("alert") or {}
                key = group_key(event)
                gateway, sid, signature, src, dest = key
                action = alert.get("action") or "allowed"
                technique = _first(alert.get("metadata") or {}, "technique")
                lines.append((ts, gateway, ids[key], src, dest, sid, signature, technique, action,
                              json.dumps(event, separators=(",", ":"), default=str)))
                verdict = event.get("verdict") or {}
                if verdict.get("block_id") is not None and verdict.get("installed_on"):
                    match = verdict.get("match") or {}
                    attacker = match.get("src_mac") or match.get("src_ip") or event.get("src_mac") or src
                    blocks.append((gateway, str(verdict["block_id"]), verdict.get("action") or "block",
                                   json.dumps(match), attacker, f"{alert.get('category', '')}: {signature}", ts,
                                   ids[key]))
                device = event.get("src_mac") or src
                if device:
                    d = devices.setdefault((gateway, device), [[], ts, ts, 0])
                    if src and src not in d[0]:
                        d[0].append(src)
                    d[1], d[2], d[3] = min(d[1], ts), max(d[2], ts), d[3] + 1
            cur.executemany("INSERT INTO alert_events (ts, gateway, group_id, src_ip, dest_ip, signature_id, "
                            "signature, technique, action, body) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                            lines)
            if blocks:
                cur.executemany("INSERT INTO alert_mitigations (gateway, block_id, action, match, attacker, reason, "
                                "installed_at, group_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                                "ON CONFLICT (gateway, block_id) DO NOTHING", blocks)
            self._devices(cur, devices)

    def _devices(self, cur, devices: dict) -> None:
        """{(gateway, key): [addresses, first, last, alerts]} merged into alert_devices."""
        if not devices:
            return
        keys = list(devices)
        known = {(g, m): json.loads(a) for g, m, a in cur.execute(
            "SELECT gateway, mac, addresses FROM alert_devices WHERE (gateway, mac) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[])) FOR UPDATE",
            ([k[0] for k in keys], [k[1] for k in keys])).fetchall()}
        rows = []
        for key, (addresses, first, last, alerts) in devices.items():
            merged = known.get(key)
            if merged is None:
                merged = []
            for address in addresses:
                if address not in merged and len(merged) < 16:   # a forged-source flood: a few
                    merged.append(address)
            rows.append((key[0], key[1], json.dumps(merged), first, last, alerts))
        cur.executemany(
            "INSERT INTO alert_devices AS d (gateway, mac, addresses, first_seen, last_seen, packets, bytes, alerts) "
            "VALUES (%s, %s, %s, %s, %s, 0, 0, %s) ON CONFLICT (gateway, mac) DO UPDATE SET "
            "addresses = excluded.addresses, first_seen = least(d.first_seen, excluded.first_seen), "
            "last_seen = greatest(d.last_seen, excluded.last_seen), alerts = d.alerts + excluded.alerts", rows)

    def _device(self, gateway: str, key: str, address: str | None, ts: float, packets: int = 0,
                nbytes: int = 0, alerts: int = 0) -> None:
        db = self._db
        row = db.execute("SELECT addresses FROM alert_devices WHERE gateway = %s AND mac = %s FOR UPDATE",
                         (gateway, key)).fetchone()
        if row is None:
            db.execute("INSERT INTO alert_devices VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                       "ON CONFLICT (gateway, mac) DO UPDATE SET last_seen = greatest(alert_devices.last_seen, "
                       "excluded.last_seen), packets = alert_devices.packets + excluded.packets, "
                       "bytes = alert_devices.bytes + excluded.bytes, alerts = alert_devices.alerts + excluded.alerts",
                       (gateway, key, json.dumps([address] if address else []), ts, ts, packets, nbytes, alerts))
            return
        addresses = json.loads(row[0])
        if address and address not in addresses and len(addresses) < 16:
            addresses.append(address)
        db.execute("UPDATE alert_devices SET addresses = %s, first_seen = least(first_seen, %s), "
                   "last_seen = greatest(last_seen, %s), packets = packets + %s, bytes = bytes + %s, "
                   "alerts = alerts + %s WHERE gateway = %s AND mac = %s",
                   (json.dumps(addresses), ts, ts, packets, nbytes, alerts, gateway, key))

    def _add_operator(self, event: dict, ts: float) -> None:
        for sql, args in operator_updates(event, ts, "%s", prefix="alert_"):
            self._db.execute(sql, args)

    def add_traffic(self, gateway: str | None, rows: list) -> None:
        if not rows:
            return
        gateway = gateway or ""
        sums, per_device = traffic_sums(rows, self.traffic_bucket)
        with self._lock, self._db.transaction(), self._db.cursor() as cur:
            cur.executemany(
                "INSERT INTO alert_traffic AS t VALUES (%s, %s, %s, %s, %s) ON CONFLICT (gateway, bucket, device) "
                "DO UPDATE SET packets = t.packets + excluded.packets, bytes = t.bytes + excluded.bytes",
                [(gateway, b, dev, p, n) for (b, dev), (p, n, _, _) in sums.items()])
            for device, (packets, nbytes, address, last) in per_device.items():
                self._device(gateway, device, address, last, packets, nbytes)

    def clear(self) -> None:
        with self._lock, self._db.transaction():
            self._db.execute("TRUNCATE alert_groups, alert_events, alert_mitigations, alert_devices")
            self._bump()

    def expire(self, before: float) -> None:
        """The collector's retention: everything last seen before `before` (epoch seconds)."""
        with self._lock, self._db.transaction():
            for table, column in (("alert_events", "ts"), ("alert_groups", "last_seen"),
                                  ("alert_mitigations", "installed_at"), ("alert_devices", "last_seen"),
                                  ("alert_traffic", "bucket")):
                self._db.execute(f"DELETE FROM {table} WHERE {column} < %s", (before,))
            self._bump()

    # --- reading ------------------------------------------------------------------------------------
    def _all(self, sql: str, args=()) -> list:
        return self._db.execute(sql, args).fetchall()

    def groups(self, where: GroupFilter, offset: int = 0, limit: int = 50) -> Page:
        where.check()
        _check_page(offset, limit)
        clause, args = group_terms(where, "%s", "strpos({column}, {param}) > 0", unindexed="")
        with self._lock:
            total = self._all(f"SELECT count(*) FROM alert_groups {clause}", args)[0][0]
            rows = self._all(f"SELECT {GROUP_COLUMNS} FROM alert_groups {clause} ORDER BY last_seen DESC, id DESC "
                             "LIMIT %s OFFSET %s", (*args, limit, offset))
        return Page(total, offset, limit, [group_row(r) for r in rows])

    def group(self, group_id: int, events: int = 20) -> dict | None:
        with self._lock:
            rows = self._all(f"SELECT {GROUP_COLUMNS} FROM alert_groups WHERE id = %s", (group_id,))
            if not rows:
                return None
            bodies = self._all("SELECT body FROM alert_events WHERE group_id = %s ORDER BY id DESC LIMIT %s",
                               (group_id, events))
            doc = group_row(rows[0])
            # its own blocks, and those on its source (an attacker's block stands over all its alerts)
            mitigations = self._all(f"SELECT {MITIGATION_COLUMNS} FROM alert_mitigations WHERE group_id = %s OR "
                                    "(gateway = %s AND attacker IN (%s, %s)) ORDER BY installed_at DESC",
                                    (group_id, doc["gateway"], doc["src_mac"] or "", doc["src_ip"]))
        doc["events"] = [b[0] for b in bodies]      # jsonb comes back as a dict
        doc["mitigations"] = [mitigation_row(m) for m in mitigations]
        return doc

    def mitigations(self, gateway: str | None = None, offset: int = 0, limit: int = 50,
                    attacker: str | None = None) -> Page:
        _check_page(offset, limit)
        clause, args = equal_terms((("gateway", gateway), ("attacker", attacker)), "%s")
        with self._lock:
            total = self._all(f"SELECT count(*) FROM alert_mitigations {clause}", args)[0][0]
            rows = self._all(f"SELECT {MITIGATION_COLUMNS} FROM alert_mitigations {clause} "
                             "ORDER BY installed_at DESC, id DESC LIMIT %s OFFSET %s", (*args, limit, offset))
        return Page(total, offset, limit, [mitigation_row(r) for r in rows])

    def devices(self, gateway: str | None = None, offset: int = 0, limit: int = 50) -> Page:
        _check_page(offset, limit)
        clause, args = equal_terms((("gateway", gateway),), "%s")
        with self._lock:
            total = self._all(f"SELECT count(*) FROM alert_devices {clause}", args)[0][0]
            rows = self._all(f"SELECT {', '.join(DEVICE_COLUMNS)} FROM alert_devices {clause} "
                             "ORDER BY last_seen DESC LIMIT %s OFFSET %s", (*args, limit, offset))
        return Page(total, offset, limit, [device_row(r) for r in rows])

    def timeline(self, since: float, until: float, step: float, gateway: str | None = None,
                 top: int = 8) -> dict:
        n = timeline_buckets(since, until, step)
        gw, gw_args = ("AND gateway = %s", [gateway]) if gateway else ("", [])
        with self._lock:
            busiest = [r[0] for r in self._all(
                f"SELECT device FROM alert_traffic WHERE bucket >= %s AND bucket < %s {gw} GROUP BY device "
                "ORDER BY sum(packets) DESC LIMIT %s", (since, until, *gw_args, top))]
            traffic = {d: [0.0] * n for d in busiest}
            if busiest:
                for device, k, packets in self._all(
                        "SELECT device, floor((bucket - %s) / %s)::int AS k, sum(packets) FROM alert_traffic "
                        f"WHERE bucket >= %s AND bucket < %s {gw} AND device = ANY(%s) GROUP BY device, k",
                        (since, step, since, until, *gw_args, busiest)):
                    if 0 <= k < n:
                        traffic[device][k] = round(float(packets) / step, 3)
            alerts = [0] * n
            for k, count in self._all(
                    "SELECT floor((ts - %s) / %s)::int AS k, count(*) FROM alert_events WHERE ts >= %s AND ts < %s "
                    f"{gw} GROUP BY k", (since, step, since, until, *gw_args)):
                if 0 <= k < n:
                    alerts[k] = count
            attacks = self._all(
                "SELECT first_seen, last_seen, signature, src_ip, action FROM alert_groups WHERE "
                f"last_seen >= %s AND first_seen < %s {gw} AND not_attack_at IS NULL "
                "ORDER BY count DESC LIMIT 50", (since, until, *gw_args))
            mitigations = self._all(
                "SELECT installed_at, ended_at, block_id, attacker FROM alert_mitigations WHERE "
                f"installed_at >= %s AND installed_at < %s {gw} ORDER BY installed_at LIMIT 200",
                (since, until, *gw_args))
        return timeline_answer(since, until, step, n, traffic, alerts, attacks, mitigations)

    def span(self, gateway: str | None = None) -> tuple[float, float] | None:
        gw, args = ("WHERE gateway = %s", [gateway]) if gateway else ("", [])
        with self._lock:
            a = self._all(f"SELECT min(first_seen), max(last_seen) FROM alert_groups {gw}", args)[0]
            b = self._all(f"SELECT min(bucket), max(bucket) FROM alert_traffic {gw}", args)[0]
        return span_of(a, b, self.traffic_bucket)

    def version(self) -> int:
        with self._lock:
            value, called = self._all("SELECT last_value, is_called FROM alert_version")[0]
        return int(value) if called else 0

    def gateways(self) -> list[str]:
        """Every gateway with alerts, for the console's gateway filter."""
        with self._lock:
            return [r[0] for r in self._all("SELECT DISTINCT gateway FROM alert_groups ORDER BY gateway")]

    def counts(self, gateway: str | None = None) -> dict:
        gw, args = ("WHERE gateway = %s", [gateway]) if gateway else ("", [])
        with self._lock:
            q = lambda sql: self._all(sql, args)[0][0]
            groups_by = dict(self._all(f"SELECT state, count(*) FROM alert_groups {gw} GROUP BY state", args))
            return {"events": q(f"SELECT count(*) FROM alert_events {gw}"), "groups": sum(groups_by.values()),
                    "inbox": groups_by.get("inbox", 0), "escalated": groups_by.get("escalated", 0),
                    "mitigations": q(f"SELECT count(*) FROM alert_mitigations {gw}"),
                    "devices": q(f"SELECT count(*) FROM alert_devices {gw}")}

    def close(self) -> None:
        with self._lock:
            self._db.close()
