"""The collector: the stream, read in a consumer group, into PostgreSQL.

Several collectors may share one group (each its own consumer name); Redis hands each entry to one
of them. An entry is acknowledged (XACK) only after the transaction that stored it committed, so a
collector that dies (even with kill -9) leaves its entries pending, and a living collector claims
those that stayed pending longer than `claim_idle` with XAUTOCLAIM and stores them; the event id
makes that, and any replay from a gateway's spool, land once. An entry that is not a fleet event
is kept in fleet_rejects with the reason and acknowledged, so it cannot block the group.
"""
from __future__ import annotations

import logging
import os
import socket
import time

from iadm.fleet import pgstore
from iadm.fleet.events import BadEvent, decode

log = logging.getLogger("iadm.fleet.collector")


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Collector:
    def __init__(self, redis, conn, key: str, group: str = "iadm-collectors", consumer: str | None = None,
                 batch: int = 500, block_ms: int = 1000, claim_idle_ms: int = 30_000,
                 retention_days: float = 90.0, expire_every: float = 3600.0, clock=time.monotonic,
                 alerts: bool = True):
        self.redis, self.conn = redis, conn
        # The console's tables (iadm.fleet.store) are fed in the same transaction as fleet_events,
        # with only the events stored for the first time, so they count a re-delivered event once.
        self.alerts = alerts
        self.alert_store = None
        self.key, self.group = key, group
        self.consumer = consumer or consumer_name()
        self.batch, self.block_ms, self.claim_idle_ms = batch, block_ms, claim_idle_ms
        self.retention_days, self.expire_every = retention_days, expire_every
        self.clock = clock
        self.counts = {"stored": 0, "duplicates": 0, "rejected": 0, "claimed": 0, "expired": 0}
        self._claim_cursor = "0-0"
        self._expired_at = None

    def prepare(self) -> None:
        """The table and indexes, and the group (created at the stream's start, so nothing is skipped)."""
        import redis
        pgstore.create_schema(self.conn)
        if self.alerts:
            from iadm.fleet.store import PostgresAlertStore
            self.alert_store = PostgresAlertStore.on(self.conn)
        try:
            self.redis.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def store(self, entries) -> int:
        """Store [(stream id, fields)] and acknowledge them; how many entries were handled."""
        rows, ids, events = [], [], {}
        for entry_id, fields in entries:
            if fields is None:          # trimmed away (MAXLEN) while pending: nothing to store
                ids.append(entry_id)
                continue
            sid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            try:
                event = decode(entry_id, fields)
                row = pgstore.row(event, sid)
                if row[3].timestamp() < time.time() - self.retention_days * 86400:
                    # older than the retention period: retention would delete it, and a copy deleted
                    # already could not tell a replay from a new event
                    self.counts["too_old"] = self.counts.get("too_old", 0) + 1
                else:
                    rows.append(row)
                    events.setdefault(event["event_id"], event)
            except (BadEvent, ValueError) as exc:
                log.error("%s", exc)
                pgstore.reject(self.conn, sid, str(exc), repr(fields))
                self.counts["rejected"] += 1
            ids.append(entry_id)
        if rows:
            with self.conn.transaction():
                new = pgstore.insert(self.conn, rows)
                if self.alert_store is not None:
                    self._feed_console([events[i] for i in events if i in new])
            self.counts["stored"] += len(new)
            self.counts["duplicates"] += len(rows) - len(new)
        if ids:
            self.redis.xack(self.key, self.group, *ids)
        return len(ids)

    def _feed_console(self, new: list) -> None:
        """The new events into the console's tables; one that they cannot take (a malformed alert) is
        kept in fleet_events, named in fleet_rejects, and does not hold up the others."""
        import psycopg
        try:
            with self.conn.transaction():
                self.alert_store.add_many(new)
            return
        except psycopg.OperationalError:
            raise
        except Exception as exc:   # noqa: BLE001 - find the one at fault below
            log.warning("the console's store refused a batch of %d (%s); adding them one by one", len(new), exc)
        for event in new:
            try:
                with self.conn.transaction():
                    self.alert_store.add_many([event])
            except psycopg.OperationalError:
                raise
            except Exception as exc:   # noqa: BLE001
                log.error("event %s from %s: not taken by the console's store: %s", event["event_id"],
                          event["host"], exc)
                pgstore.reject(self.conn, f"event:{event['event_id']}", f"console store: {exc}",
                               str(event)[:4096])
                self.counts["rejected"] += 1

    def claim(self) -> int:
        """Entries another consumer left pending for longer than claim_idle: claimed and stored."""
        handled = 0
        while True:
            cursor, entries, *_ = self.redis.xautoclaim(self.key, self.group, self.consumer, self.claim_idle_ms,
                                                         start_id=self._claim_cursor, count=self.batch)
            self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else cursor
            if entries:
                self.counts["claimed"] += len(entries)
                handled += self.store(entries)
            if self._claim_cursor == "0-0" or not entries:
                self._claim_cursor = "0-0"
                return handled

    def step(self) -> int:
        """One round: claim the abandoned, then read what is new (blocking up to block_ms); entries handled."""
        handled = self.claim()
        reply = self.redis.xreadgroup(self.group, self.consumer, {self.key: ">"}, count=self.batch,
                                      block=self.block_ms)
        for _stream, entries in reply or ():
            handled += self.store(entries)
        self._maybe_expire()
        return handled

    def own_pending(self) -> int:
        """Entries delivered to this consumer and not acknowledged (after a restart under the same name)."""
        reply = self.redis.xreadgroup(self.group, self.consumer, {self.key: "0"}, count=self.batch)
        handled = 0
        for _stream, entries in reply or ():
            handled += self.store(entries)
        return handled

    def _maybe_expire(self) -> None:
        now = self.clock()
        if self._expired_at is not None and now - self._expired_at < self.expire_every:
            return
        self._expired_at = now
        gone = pgstore.expire(self.conn, self.retention_days)
        if self.alert_store is not None:
            self.alert_store.expire(time.time() - self.retention_days * 86400)
        if gone:
            self.counts["expired"] += gone
            log.info("retention: %d event(s) older than %g days deleted", gone, self.retention_days)

    def run(self, stop=lambda: False, retry: float = 1.0) -> None:
        """Until stop(); Redis or PostgreSQL going away is waited out (nothing acknowledged is lost)."""
        import psycopg
        import redis
        prepared = False
        while not stop():
            try:
                if not prepared:
                    self.prepare()
                    self.own_pending()
                    prepared = True
                self.step()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("Redis: %s; retrying in %gs", exc, retry)
                time.sleep(retry)
            except psycopg.OperationalError as exc:
                log.warning("PostgreSQL: %s; reconnecting in %gs", str(exc).strip(), retry)
                time.sleep(retry)
                self._reconnect()

    def _reconnect(self) -> None:
        import psycopg
        info = self.conn.info.dsn
        try:
            self.conn.close()
            self.conn = psycopg.connect(info)
        except psycopg.OperationalError:
            pass
