"""The alert store: a queryable copy of the EVE alert log for the console.

The EVE log (iadm.alerts.log) stays the record of truth. The store takes the
same events, one by one, as an AlertLog sink (`store.add`), and can be thrown
away and rebuilt from the log (`store.rebuild(path)`). Operator decisions
(archive, escalate, "not an attack", unblock) are written to the log as
events of their own (`operator_event`) and reach the store the same way, so a
rebuilt store has them too.

`AlertStore` is the interface; `SQLiteAlertStore` the embedded one of a single
gateway. A fleet store (PostgreSQL, iadm/fleet/) implements the same methods
over the events of many gateways: every query takes `gateway` (the events'
EVE `host`), None meaning all.

What the store holds, from the events:
  groups       alert lines grouped by (gateway, signature id, signature, source
               address, destination address), as EveBox groups its inbox: count,
               first/last seen, category, technique, verdict source, action, and
               the operator's state (inbox, archived, escalated; not_attack)
  events       every alert line (its JSON kept whole for the detail view)
  mitigations  every verdict the controller installed (from an alert's `verdict`)
               and its end when an operator unblocked it
  devices      every host seen: MAC, addresses, traffic, alerts
  traffic      packets and bytes per device per time bucket (`add_traffic`, fed from
               the monitor's flow records; not in the EVE log, so not rebuilt)
Pages of every list are SQL pages (offset, limit) over indexed columns: no query
reads every row to answer one page.
"""
from __future__ import annotations

import abc
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field

from iadm.alerts.log import eve_timestamp, parse_timestamp, read_events

STATES = ("inbox", "archived", "escalated")
OPERATOR_ACTIONS = ("archive", "escalate", "inbox", "not_attack", "unblock")
ACTIONS = ("blocked", "allowed")
SOURCES = ("rule", "model", "zscore", "behaviour", "inspector")
MAX_LIMIT = 1000
COARSE_BUCKET = 300.0   # seconds: the traffic table long timelines read


class StoreError(ValueError):
    """A query the store refuses: what is wrong and which argument (`field`)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass
class GroupFilter:
    """What the inbox shows. Times are epoch seconds; `address` matches the source or the
    destination; `state` None means inbox + escalated (what still needs a look), "all" everything."""
    since: float | None = None
    until: float | None = None
    category: str | None = None
    technique: str | None = None
    address: str | None = None
    action: str | None = None          # blocked | allowed
    source: str | None = None          # rule | model | zscore | behaviour | inspector (substring of verdict_source)
    state: str | None = None           # inbox | archived | escalated | all
    gateway: str | None = None

    def check(self) -> "GroupFilter":
        if self.action not in (None, *ACTIONS):
            raise StoreError(f"action must be one of {', '.join(ACTIONS)}", "action")
        if self.state not in (None, "all", *STATES):
            raise StoreError(f"state must be one of {', '.join(STATES)} or all", "state")
        if self.source not in (None, *SOURCES):
            raise StoreError(f"source must be one of {', '.join(SOURCES)}", "source")
        if self.since is not None and self.until is not None and self.until < self.since:
            raise StoreError("until is before since", "until")
        return self


@dataclass
class Page:
    """One page of a list: `total` rows match, `items` are rows offset..offset+limit."""
    total: int
    offset: int
    limit: int
    items: list = field(default_factory=list)

    def as_json(self) -> dict:
        return {"total": self.total, "offset": self.offset, "limit": self.limit, "items": self.items}


def group_key(event: dict) -> tuple:
    """The natural key of an alert's group: (gateway, signature id, signature, source, destination)."""
    alert = event.get("alert") or {}
    return (event.get("host") or "", int(alert.get("signature_id") or 0), str(alert.get("signature") or ""),
            event.get("src_ip") or "", event.get("dest_ip") or "")


def operator_event(group: dict, action: str, who: str, at: float | None = None, **extra) -> dict:
    """The alert-log line of an operator's decision on a group (a dict from `AlertStore.group`):
    EVE-shaped (timestamp, host, event_type "operator"), naming the group by its natural key so
    that a store rebuilt from the log applies it to the same group."""
    if action not in OPERATOR_ACTIONS:
        raise StoreError(f"operator action must be one of {', '.join(OPERATOR_ACTIONS)}", "action")
    return {"timestamp": eve_timestamp(time.time() if at is None else at), "event_type": "operator",
            "host": group.get("gateway") or None, "src_ip": group.get("src_ip") or None,
            "dest_ip": group.get("dest_ip") or None,
            "operator": {"action": action, "who": who, "signature_id": group.get("signature_id", 0),
                         "signature": group.get("signature", ""), **extra}}


class AlertStore(abc.ABC):
    """The console's view of the alert log (see the module). Implementations are thread-safe:
    the monitor's responder adds while the console's requests read."""
    traffic_bucket: float = 10.0   # seconds per traffic bucket: the timeline's finest step

    @abc.abstractmethod
    def add(self, event: dict) -> None:
        """Take one EVE event: an alert (event_type "alert") or an operator decision (event_type
        "operator", see operator_event); other event types are ignored. An AlertLog sink."""

    def __call__(self, event: dict) -> None:
        self.add(event)

    @abc.abstractmethod
    def add_traffic(self, gateway: str | None, rows: list) -> None:
        """Traffic of devices: rows of (time, mac, address, packets, bytes), summed per device and bucket."""

    @abc.abstractmethod
    def groups(self, where: GroupFilter, offset: int = 0, limit: int = 50) -> Page:
        """Alert groups matching `where`, the most recently seen first. Items: id, gateway, signature_id,
        signature, src_ip, dest_ip, src_mac (the latest), category, technique, mitre, verdict_source, action,
        count, records, first_seen, last_seen, state, not_attack (None or {who, at})."""

    @abc.abstractmethod
    def group(self, group_id: int, events: int = 20) -> dict | None:
        """One group (as in groups()) with its latest `events` alert lines whole (newest first) and
        its mitigations (those its alerts caused, and those on its source); None if there is no such group."""

    @abc.abstractmethod
    def mitigations(self, gateway: str | None = None, offset: int = 0, limit: int = 50,
                    attacker: str | None = None) -> Page:
        """Every mitigation installed, newest first. Items: gateway, block_id, action, match, attacker,
        reason, installed_at, ended_at, ended_by, group_id."""

    @abc.abstractmethod
    def devices(self, gateway: str | None = None, offset: int = 0, limit: int = 50) -> Page:
        """Every device seen, the most recently seen first. Items: gateway, mac, addresses, first_seen,
        last_seen, packets, bytes, alerts."""

    @abc.abstractmethod
    def timeline(self, since: float, until: float, step: float, gateway: str | None = None,
                 top: int = 8) -> dict:
        """The window [since, until) in buckets of `step` seconds: {"buckets": [start times],
        "traffic": {device: [packets/s per bucket]} for the `top` busiest devices, "alerts": [alert
        lines per bucket], "attacks": [{start, end, signature, src_ip}] (groups seen in the window),
        "mitigations": [{at, ended_at, block_id, attacker}]}."""

    @abc.abstractmethod
    def span(self, gateway: str | None = None) -> tuple[float, float] | None:
        """The first and last time of anything stored (alerts or traffic); None when empty."""

    @abc.abstractmethod
    def version(self) -> int:
        """A number that grows with every change (new alert, operator decision): the console's
        live view polls it."""

    @abc.abstractmethod
    def counts(self, gateway: str | None = None) -> dict:
        """{"events", "groups", "inbox", "escalated", "mitigations", "devices"}."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Forget every alert, group, mitigation and device (traffic stays: the log does not have it)."""

    def rebuild(self, log_path: str) -> dict:
        """Clear the store and add every event of the alert log and its rotated files, oldest first.
        Returns {"events": added, "errors": [damaged lines, file:line: what]}."""
        errors: list = []
        self.clear()
        n = 0
        for event in read_events(log_path, errors):
            event.pop("_ts", None)
            self.add(event)
            n += 1
        return {"events": n, "errors": errors}

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    id INTEGER PRIMARY KEY, gateway TEXT NOT NULL, signature_id INTEGER NOT NULL, signature TEXT NOT NULL,
    src_ip TEXT NOT NULL, dest_ip TEXT NOT NULL, src_mac TEXT, category TEXT, technique TEXT, mitre TEXT,
    verdict_source TEXT, action TEXT NOT NULL, count INTEGER NOT NULL, records INTEGER NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL, state TEXT NOT NULL DEFAULT 'inbox',
    not_attack_by TEXT, not_attack_at REAL,
    UNIQUE (gateway, signature_id, signature, src_ip, dest_ip));
CREATE INDEX IF NOT EXISTS groups_seen ON groups (last_seen);
CREATE INDEX IF NOT EXISTS groups_state_seen ON groups (state, last_seen);
CREATE INDEX IF NOT EXISTS groups_gateway_seen ON groups (gateway, last_seen);
CREATE INDEX IF NOT EXISTS groups_gateway_state_seen ON groups (gateway, state, last_seen);
CREATE INDEX IF NOT EXISTS groups_src ON groups (src_ip);
CREATE INDEX IF NOT EXISTS groups_dest ON groups (dest_ip);
CREATE INDEX IF NOT EXISTS groups_signature ON groups (signature_id, signature);
CREATE INDEX IF NOT EXISTS groups_category ON groups (category, last_seen);
CREATE INDEX IF NOT EXISTS groups_technique ON groups (technique, last_seen);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, gateway TEXT NOT NULL, group_id INTEGER NOT NULL,
    src_ip TEXT, dest_ip TEXT, signature_id INTEGER, signature TEXT, technique TEXT, action TEXT,
    body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_gateway_ts ON events (gateway, ts);
CREATE INDEX IF NOT EXISTS events_src ON events (src_ip, ts);
CREATE INDEX IF NOT EXISTS events_dest ON events (dest_ip, ts);
CREATE INDEX IF NOT EXISTS events_signature ON events (signature_id, ts);
CREATE INDEX IF NOT EXISTS events_technique ON events (technique, ts);
CREATE INDEX IF NOT EXISTS events_group ON events (group_id, id);
CREATE TABLE IF NOT EXISTS mitigations (
    id INTEGER PRIMARY KEY, gateway TEXT NOT NULL, block_id TEXT NOT NULL, action TEXT, match TEXT,
    attacker TEXT, reason TEXT, installed_at REAL NOT NULL, ended_at REAL, ended_by TEXT, group_id INTEGER,
    UNIQUE (gateway, block_id));
CREATE INDEX IF NOT EXISTS mitigations_installed ON mitigations (installed_at);
CREATE INDEX IF NOT EXISTS mitigations_group ON mitigations (group_id);
CREATE TABLE IF NOT EXISTS devices (
    gateway TEXT NOT NULL, mac TEXT NOT NULL, addresses TEXT NOT NULL, first_seen REAL NOT NULL,
    last_seen REAL NOT NULL, packets INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,
    alerts INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (gateway, mac));
CREATE INDEX IF NOT EXISTS devices_seen ON devices (last_seen);
CREATE INDEX IF NOT EXISTS devices_gateway_seen ON devices (gateway, last_seen);
CREATE TABLE IF NOT EXISTS traffic (
    gateway TEXT NOT NULL, bucket REAL NOT NULL, device TEXT NOT NULL, packets INTEGER NOT NULL,
    bytes INTEGER NOT NULL, PRIMARY KEY (gateway, bucket, device));
CREATE INDEX IF NOT EXISTS traffic_bucket ON traffic (bucket);
CREATE TABLE IF NOT EXISTS traffic_coarse (
    gateway TEXT NOT NULL, bucket REAL NOT NULL, device TEXT NOT NULL, packets INTEGER NOT NULL,
    bytes INTEGER NOT NULL, PRIMARY KEY (gateway, bucket, device));
CREATE INDEX IF NOT EXISTS traffic_coarse_bucket ON traffic_coarse (bucket);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

def _first(meta: dict, name: str) -> str:
    value = (meta or {}).get(name)
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value or "")


def _check_page(offset: int, limit: int) -> None:
    if not isinstance(offset, int) or offset < 0:
        raise StoreError("offset must be an integer >= 0", "offset")
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise StoreError(f"limit must be an integer from 1 to {MAX_LIMIT}", "limit")


def group_terms(where: GroupFilter, param: str = "?", contains: str = "instr({column}, {param}) > 0",
                unindexed: str = "+") -> tuple[str, list]:
    """The WHERE clause of an inbox query and its arguments, in a dialect: `param` the driver's
    placeholder, `contains` the SQL of a substring test, `unindexed` what keeps the planner off the
    gateway's index when an address narrows more (SQLite's unary +; "" elsewhere)."""
    terms, args = [], []
    if where.state is None:
        terms.append("state IN ('inbox', 'escalated')")
    elif where.state != "all":
        terms.append(f"state = {param}")
        args.append(where.state)
    for column, value in (("gateway", where.gateway), ("category", where.category),
                          ("technique", where.technique), ("action", where.action)):
        if value:
            terms.append(f"{unindexed if column == 'gateway' and where.address else ''}{column} = {param}")
            args.append(value)
    if where.source:
        terms.append(contains.format(column="verdict_source", param=param))
        args.append(where.source)
    if where.address:
        terms.append(f"(src_ip = {param} OR dest_ip = {param})")
        args += [where.address, where.address]
    if where.since is not None:
        terms.append(f"last_seen >= {param}")
        args.append(where.since)
    if where.until is not None:
        terms.append(f"first_seen < {param}")
        args.append(where.until)
    return ("WHERE " + " AND ".join(terms)) if terms else "", args


def equal_terms(pairs, param: str = "?") -> tuple[str, list]:
    """WHERE column = value AND ... for the pairs whose value is given."""
    given = [(column, value) for column, value in pairs if value]
    return ("WHERE " + " AND ".join(f"{column} = {param}" for column, _ in given)) if given else "", \
        [value for _, value in given]


GROUP_COLUMNS = ("id, gateway, signature_id, signature, src_ip, dest_ip, src_mac, category, technique, mitre, "
                 "verdict_source, action, count, records, first_seen, last_seen, state, not_attack_by, "
                 "not_attack_at")
MITIGATION_COLUMNS = "gateway, block_id, action, match, attacker, reason, installed_at, ended_at, ended_by, group_id"
DEVICE_COLUMNS = ("gateway", "mac", "addresses", "first_seen", "last_seen", "packets", "bytes", "alerts")


def group_row(row) -> dict:
    doc = dict(zip([c.strip() for c in GROUP_COLUMNS.split(",")], row))
    by, at = doc.pop("not_attack_by"), doc.pop("not_attack_at")
    doc["not_attack"] = {"who": by, "at": at} if at is not None else None
    return doc


def mitigation_row(row) -> dict:
    doc = dict(zip([c.strip() for c in MITIGATION_COLUMNS.split(",")], row))
    doc["match"] = json.loads(doc["match"] or "{}")
    return doc


def device_row(row) -> dict:
    return dict(zip(DEVICE_COLUMNS, row)) | {"addresses": json.loads(row[2])}


def operator_updates(event: dict, ts: float, param: str = "?", prefix: str = "") -> list:
    """The (sql, args) an operator event makes of the store: an unblock ends its mitigation;
    archive, escalate, inbox and "not an attack" set its group's state. `prefix`: the tables' (a
    shared PostgreSQL database names them alert_*)."""
    op = event.get("operator") or {}
    action = op.get("action")
    key = (event.get("host") or "", int(op.get("signature_id") or 0), str(op.get("signature") or ""),
           event.get("src_ip") or "", event.get("dest_ip") or "")
    if action == "unblock" and op.get("block_id") is not None:
        return [(f"UPDATE {prefix}mitigations SET ended_at = {param}, ended_by = {param} WHERE gateway = {param} "
                 f"AND block_id = {param} AND ended_at IS NULL", (ts, op.get("who") or "", key[0], str(op["block_id"])))]
    where = " AND ".join(f"{c} = {param}" for c in ("gateway", "signature_id", "signature", "src_ip", "dest_ip"))
    if action in ("archive", "escalate", "inbox"):
        state = {"archive": "archived", "escalate": "escalated", "inbox": "inbox"}[action]
        return [(f"UPDATE {prefix}groups SET state = {param} WHERE {where}", (state, *key))]
    if action == "not_attack":
        return [(f"UPDATE {prefix}groups SET state = 'archived', not_attack_by = {param}, not_attack_at = {param} "
                 f"WHERE {where}", (op.get("who") or "", ts, *key))]
    return []


def traffic_sums(rows, step: float) -> tuple[dict, dict]:
    """The traffic meter's rows (ts, mac, address, packets, bytes) summed per (bucket, device) and
    per device ([packets, bytes, an address, last seen]); a device is its MAC, else its address."""
    sums: dict = {}
    for ts, mac, address, packets, nbytes in rows:
        device = mac or address
        if not device:
            continue
        s = sums.setdefault((float(ts) // step * step, device), [0, 0, address, float(ts)])
        s[0] += int(packets)
        s[1] += int(nbytes)
        s[3] = max(s[3], float(ts))
    per_device: dict = {}
    for (_bucket, device), (packets, nbytes, address, last) in sums.items():
        d = per_device.setdefault(device, [0, 0, address, last])
        d[0] += packets
        d[1] += nbytes
        d[3] = max(d[3], last)
    return sums, per_device


def timeline_buckets(since: float, until: float, step: float) -> int:
    """How many buckets of `step` seconds a timeline window holds; a StoreError for a bad window."""
    if not until > since:
        raise StoreError("the window must end after it starts", "until")
    if not step > 0 or (until - since) / step > 2000:
        raise StoreError("step must be positive and give at most 2000 buckets", "step")
    return int((until - since) // step + (1 if (until - since) % step else 0))


def timeline_answer(since: float, until: float, step: float, n: int, traffic: dict, alerts: list,
                    attack_rows, mitigation_rows) -> dict:
    """The timeline both stores return: buckets, traffic, alert counts, and the attacks' and the
    mitigations' rows (first_seen, last_seen, signature, src_ip, action; installed_at, ended_at,
    block_id, attacker) as dicts."""
    return {"since": since, "until": until, "step": step,
            "buckets": [since + k * step for k in range(n)], "traffic": traffic, "alerts": alerts,
            "attacks": [{"start": r[0], "end": r[1], "signature": r[2], "src_ip": r[3], "action": r[4]}
                        for r in attack_rows],
            "mitigations": [{"at": r[0], "ended_at": r[1], "block_id": r[2], "attacker": r[3]}
                            for r in mitigation_rows]}


def span_of(events: tuple, traffic: tuple, bucket: float) -> tuple[float, float] | None:
    """The time a store covers from (first, last) of its events and of its traffic buckets."""
    lows = [x for x in (events[0], traffic[0]) if x is not None]
    highs = [x for x in (events[1], traffic[1] + bucket if traffic[1] is not None else None) if x is not None]
    return (min(lows), max(highs)) if lows else None


def stored_event(event: dict) -> tuple[str | None, float]:
    """(kind, time) of an event a store keeps (alerts and operator decisions), (None, 0) for the
    others; a StoreError for one without a valid EVE timestamp."""
    kind = event.get("event_type")
    if kind not in ("alert", "operator"):
        return None, 0.0
    try:
        return kind, parse_timestamp(event["timestamp"])
    except (KeyError, TypeError, ValueError):
        raise StoreError(f"event without a valid timestamp: {str(event)[:120]}", "timestamp") from None


class SQLiteAlertStore(AlertStore):
    """The embedded store: one SQLite file (WAL), one connection behind a lock.

    add() checks the event and queues it; a writer thread commits the queue every `write_delay`
    seconds in one transaction (a commit costs ~0.3 ms: one per alert line would put a MAC flood's
    thousands of lines a batch on the detection path), and every read commits what is queued
    first, so a read always sees every event added before it. `traffic_bucket`: seconds per
    traffic bucket (the timeline's finest step)."""

    def __init__(self, path: str, traffic_bucket: float = 10.0, write_delay: float = 0.2):
        if not traffic_bucket > 0:
            raise StoreError(f"traffic_bucket must be a positive number of seconds, not {traffic_bucket!r}",
                             "traffic_bucket")
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.traffic_bucket = float(traffic_bucket)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not an alert store ({exc})", "path") from None
        self._version = self._meta("version")
        self._pending: list = []
        self._pending_lock = threading.Lock()
        self._closed = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, args=(write_delay,), daemon=True,
                                        name="alert-store-writer")
        self._writer.start()

    def _write_loop(self, delay: float) -> None:
        while not self._closed.wait(delay):
            if self._pending:
                with self._lock:
                    if not self._closed.is_set():
                        self._drain()

    def _drain(self) -> None:
        """Commit the queued events (call with the lock held). A failing batch is retried event by
        event, so one bad event loses only itself (it is in the alert log: a rebuild has it)."""
        with self._pending_lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self._apply(batch)
        except Exception:   # noqa: BLE001
            for item in batch:
                try:
                    self._apply([item])
                except Exception:
                    logging.getLogger("iadm.console").exception("alert store: event not stored: %.200s", item[0])

    def _apply(self, batch: list) -> None:
        self._db.execute("BEGIN")
        try:
            for event, ts in batch:
                if event.get("event_type") == "alert":
                    self._add_alert(event, ts)
                else:
                    self._add_operator(event, ts)
            self._bump()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _fresh(self):
        """The lock, with every queued event committed."""
        with self._lock:
            self._drain()
            yield

    # --- writing ------------------------------------------------------------------------------------
    def _meta(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def _bump(self) -> None:
        self._version += 1
        self._db.execute("INSERT INTO meta (name, value) VALUES ('version', ?) "
                         "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (self._version,))

    def add(self, event: dict) -> None:
        kind, ts = stored_event(event)
        if kind is None:
            return
        if self._closed.is_set():
            raise StoreError(f"{self.path}: the alert store is closed", "store")
        with self._pending_lock:
            self._pending.append((event, ts))

    def add_many(self, events) -> int:
        """Many events in one transaction (a rebuild, a benchmark's fill)."""
        n = 0
        with self._fresh():
            self._db.execute("BEGIN")
            try:
                for event in events:
                    kind = event.get("event_type")
                    if kind == "alert":
                        self._add_alert(event, parse_timestamp(event["timestamp"]))
                    elif kind == "operator":
                        self._add_operator(event, parse_timestamp(event["timestamp"]))
                    else:
                        continue
                    n += 1
                self._bump()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return n

    def _add_alert(self, event: dict, ts: float) -> None:
        alert = event.get("alert") or {}
        meta = alert.get("metadata") or {}
        gateway, sid, signature, src, dest = group_key(event)
        action = alert.get("action") or "allowed"
        records = int(event.get("records") or 1)
        first = float(event.get("first_seen") or ts)
        db = self._db
        row = db.execute(
            "INSERT INTO groups (gateway, signature_id, signature, src_ip, dest_ip, src_mac, category, technique, "
            "mitre, verdict_source, action, count, records, first_seen, last_seen) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?) "
            "ON CONFLICT (gateway, signature_id, signature, src_ip, dest_ip) DO UPDATE SET "
            "count = count + 1, records = records + excluded.records, "
            "first_seen = min(first_seen, excluded.first_seen), last_seen = max(last_seen, excluded.last_seen), "
            "action = CASE WHEN excluded.action = 'blocked' THEN 'blocked' ELSE action END, "
            "verdict_source = excluded.verdict_source, category = excluded.category, "
            "src_mac = coalesce(excluded.src_mac, src_mac), "
            "technique = coalesce(nullif(excluded.technique, ''), technique), "
            "mitre = coalesce(nullif(excluded.mitre, ''), mitre), "
            # a group the operator archived comes back to the inbox when it is seen again
            "state = CASE WHEN state = 'archived' THEN 'inbox' ELSE state END "
            "RETURNING id",
            (gateway, sid, signature, src, dest, event.get("src_mac") or None, str(alert.get("category") or ""), _first(meta, "technique"),
             _first(meta, "mitre_technique_id"), str(event.get("verdict_source") or ""), action, records,
             min(first, ts), ts)).fetchone()
        group_id = row[0]
        db.execute("INSERT INTO events (ts, gateway, group_id, src_ip, dest_ip, signature_id, signature, technique, "
                   "action, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (ts, gateway, group_id, src, dest, sid, signature, _first(meta, "technique"), action,
                    json.dumps(event, separators=(",", ":"), default=str)))
        verdict = event.get("verdict") or {}
        if verdict.get("block_id") is not None and verdict.get("installed_on"):
            match = verdict.get("match") or {}
            attacker = match.get("src_mac") or match.get("src_ip") or event.get("src_mac") or src
            db.execute("INSERT INTO mitigations (gateway, block_id, action, match, attacker, reason, installed_at, "
                       "group_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gateway, block_id) DO NOTHING",
                       (gateway, str(verdict["block_id"]), verdict.get("action") or "block",
                        json.dumps(match), attacker, f"{alert.get('category', '')}: {signature}",
                        ts, group_id))   # the alert's own clock (the capture's, in a replay), as the timeline's
        mac = event.get("src_mac")
        if mac or src:
            self._device(gateway, mac or src, src, ts, alerts=1)

    def _device(self, gateway: str, key: str, address: str | None, ts: float, packets: int = 0,
                nbytes: int = 0, alerts: int = 0) -> None:
        db = self._db
        row = db.execute("SELECT addresses FROM devices WHERE gateway = ? AND mac = ?", (gateway, key)).fetchone()
        if row is None:
            db.execute("INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (gateway, key, json.dumps([address] if address else []), ts, ts, packets, nbytes, alerts))
            return
        addresses = json.loads(row[0])
        if address and address not in addresses and len(addresses) < 16:   # a forged-source flood: a few
            addresses.append(address)
        db.execute("UPDATE devices SET addresses = ?, first_seen = min(first_seen, ?), last_seen = max(last_seen, ?),"
                   " packets = packets + ?, bytes = bytes + ?, alerts = alerts + ? WHERE gateway = ? AND mac = ?",
                   (json.dumps(addresses), ts, ts, packets, nbytes, alerts, gateway, key))

    def _add_operator(self, event: dict, ts: float) -> None:
        for sql, args in operator_updates(event, ts):
            self._db.execute(sql, args)

    def add_traffic(self, gateway: str | None, rows: list) -> None:
        if not rows:
            return
        gateway = gateway or ""
        sums, per_device = traffic_sums(rows, self.traffic_bucket)
        coarse: dict = {}
        for (bucket, device), (packets, nbytes, _, _) in sums.items():
            c = coarse.setdefault((bucket // COARSE_BUCKET * COARSE_BUCKET, device), [0, 0])
            c[0] += packets
            c[1] += nbytes
        with self._fresh():
            self._db.execute("BEGIN")
            try:
                for table, sums_of in (("traffic", [(b, dev, p, n) for (b, dev), (p, n, _, _) in sums.items()]),
                                       ("traffic_coarse", [(b, dev, p, n) for (b, dev), (p, n) in coarse.items()])):
                    self._db.executemany(
                        f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?) ON CONFLICT (gateway, bucket, device) DO UPDATE "
                        "SET packets = packets + excluded.packets, bytes = bytes + excluded.bytes",
                        [(gateway, *row) for row in sums_of])
                for device, (packets, nbytes, address, last) in per_device.items():
                    self._device(gateway, device, address, last, packets, nbytes)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def clear(self) -> None:
        with self._fresh():
            self._db.executescript("BEGIN; DELETE FROM groups; DELETE FROM events; DELETE FROM mitigations; "
                                   "DELETE FROM devices; COMMIT;")
            self._bump()

    # --- reading ------------------------------------------------------------------------------------
    def _read(self, sql: str, args=()) -> list:
        with self._fresh():
            return self._db.execute(sql, args).fetchall()

    def groups(self, where: GroupFilter, offset: int = 0, limit: int = 50) -> Page:
        where.check()
        _check_page(offset, limit)
        clause, args = group_terms(where)
        with self._fresh():
            total = self._db.execute(f"SELECT count(*) FROM groups {clause}", args).fetchone()[0]
            rows = self._db.execute(f"SELECT {GROUP_COLUMNS} FROM groups {clause} ORDER BY last_seen DESC, id DESC "
                                    "LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
        return Page(total, offset, limit, [group_row(r) for r in rows])

    def group(self, group_id: int, events: int = 20) -> dict | None:
        with self._fresh():
            row = self._db.execute(f"SELECT {GROUP_COLUMNS} FROM groups WHERE id = ?", (group_id,)).fetchone()
            if row is None:
                return None
            bodies = self._db.execute("SELECT body FROM events WHERE group_id = ? ORDER BY id DESC LIMIT ?",
                                      (group_id, events)).fetchall()
            # its own blocks, and those on its source (an attacker's block stands over all its alerts)
            doc = group_row(row)
            mitigations = self._db.execute(
                f"SELECT {MITIGATION_COLUMNS} FROM mitigations WHERE group_id = ? OR (gateway = ? AND attacker IN "
                "(?, ?)) ORDER BY installed_at DESC", (group_id, doc["gateway"], doc["src_mac"] or "",
                                                       doc["src_ip"])).fetchall()
        doc["events"] = [json.loads(b[0]) for b in bodies]
        doc["mitigations"] = [mitigation_row(m) for m in mitigations]
        return doc

    def mitigations(self, gateway: str | None = None, offset: int = 0, limit: int = 50,
                    attacker: str | None = None) -> Page:
        _check_page(offset, limit)
        clause, args = equal_terms((("gateway", gateway), ("attacker", attacker)))
        with self._fresh():
            total = self._db.execute(f"SELECT count(*) FROM mitigations {clause}", args).fetchone()[0]
            rows = self._db.execute(f"SELECT {MITIGATION_COLUMNS} FROM mitigations {clause} "
                                    "ORDER BY installed_at DESC, id DESC LIMIT ? OFFSET ?",
                                    (*args, limit, offset)).fetchall()
        return Page(total, offset, limit, [mitigation_row(r) for r in rows])

    def devices(self, gateway: str | None = None, offset: int = 0, limit: int = 50) -> Page:
        _check_page(offset, limit)
        clause, args = equal_terms((("gateway", gateway),))
        with self._fresh():
            total = self._db.execute(f"SELECT count(*) FROM devices {clause}", args).fetchone()[0]
            rows = self._db.execute(f"SELECT {', '.join(DEVICE_COLUMNS)} FROM devices {clause} "
                                    "ORDER BY last_seen DESC LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
        return Page(total, offset, limit, [device_row(r) for r in rows])

    def timeline(self, since: float, until: float, step: float, gateway: str | None = None,
                 top: int = 8) -> dict:
        n = timeline_buckets(since, until, step)
        gw, gw_args = ("AND gateway = ?", [gateway]) if gateway else ("", [])
        # a long window from the 5-minute table, when its buckets fall whole into the window's
        table = "traffic_coarse" if step % COARSE_BUCKET == 0 and since % COARSE_BUCKET == 0 else "traffic"
        with self._fresh():
            per_device: dict = {}
            for device, k, packets in self._db.execute(
                    f"SELECT device, CAST((bucket - ?) / ? AS INTEGER) AS k, sum(packets) FROM {table} "
                    f"WHERE bucket >= ? AND bucket < ? {gw} GROUP BY device, k",
                    (since, step, since, until, *gw_args)):
                if 0 <= k < n:
                    per_device.setdefault(device, [0.0] * n)[k] = round(packets / step, 3)
            busiest = sorted(per_device, key=lambda d: -sum(per_device[d]))[:top]
            traffic = {d: per_device[d] for d in busiest}
            alerts = [0] * n
            for k, count in self._db.execute(
                    f"SELECT CAST((ts - ?) / ? AS INTEGER) AS k, count(*) FROM events WHERE ts >= ? AND ts < ? {gw} "
                    "GROUP BY k", (since, step, since, until, *gw_args)):
                if 0 <= k < n:
                    alerts[k] = count
            attacks = self._db.execute(
                f"SELECT first_seen, last_seen, signature, src_ip, action FROM groups WHERE last_seen >= ? "
                f"AND first_seen < ? {gw} AND not_attack_at IS NULL ORDER BY count DESC LIMIT 50",
                (since, until, *gw_args)).fetchall()
            mitigations = self._db.execute(
                f"SELECT installed_at, ended_at, block_id, attacker FROM mitigations WHERE "
                f"installed_at >= ? AND installed_at < ? {gw} ORDER BY installed_at LIMIT 200",
                (since, until, *gw_args)).fetchall()
        return timeline_answer(since, until, step, n, traffic, alerts, attacks, mitigations)

    def span(self, gateway: str | None = None) -> tuple[float, float] | None:
        gw, args = ("WHERE gateway = ?", [gateway]) if gateway else ("", [])
        with self._fresh():   # one min() or max() a query: SQLite reads each off its index's end
            a = [self._db.execute(f"SELECT {f}(ts) FROM events {gw}", args).fetchone()[0] for f in ("min", "max")]
            b = [self._db.execute(f"SELECT {f}(bucket) FROM traffic {gw}", args).fetchone()[0] for f in ("min", "max")]
        return span_of(a, b, self.traffic_bucket)

    def version(self) -> int:
        with self._fresh():
            return self._version

    def counts(self, gateway: str | None = None) -> dict:
        gw, args = ("WHERE gateway = ?", [gateway]) if gateway else ("", [])
        with self._fresh():
            q = lambda sql: self._db.execute(sql, args).fetchone()[0]   # noqa: E731
            groups_by = dict(self._db.execute(f"SELECT state, count(*) FROM groups {gw} GROUP BY state", args))
            return {"events": q(f"SELECT count(*) FROM events {gw}"), "groups": sum(groups_by.values()),
                    "inbox": groups_by.get("inbox", 0), "escalated": groups_by.get("escalated", 0),
                    "mitigations": q(f"SELECT count(*) FROM mitigations {gw}"),
                    "devices": q(f"SELECT count(*) FROM devices {gw}")}

    def close(self) -> None:
        with self._fresh():
            self._closed.set()
            self._db.close()
        self._writer.join(2)




def open_store(where: str, **options) -> AlertStore:
    """The store a config names: a SQLite path, or postgresql://... (the fleet's store, iadm/fleet)."""
    if where.startswith(("postgresql://", "postgres://")):
        try:
            from iadm.fleet.store import PostgresAlertStore   # written for the fleet; same interface
        except ImportError:
            raise StoreError(f"{where}: no PostgreSQL alert store in this installation", "store") from None
        return PostgresAlertStore(where, **options)
    return SQLiteAlertStore(where, **options)
