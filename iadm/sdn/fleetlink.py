"""The controller's link to the fleet: its publisher, and the follower of the other gateways' offers.

The follower reads KEY:offers with XREAD BLOCK (every controller reads all of it: it is not a
consumer group, each gateway decides for itself) from the entries that arrive after it starts, and
hands each event to GatewayController.apply_shared. Redis going away is waited out with a
backoff; the follower goes on from the last entry it saw, so offers made meanwhile still arrive.
"""
from __future__ import annotations

import logging
import time

from iadm.fleet.events import BadEvent, decode, offers_key

log = logging.getLogger("iadm.controller.fleet")


class OfferFollower:
    def __init__(self, client, key: str, apply, block_ms: int = 1000):
        self.client = client
        self.key = offers_key(key)
        self.apply = apply
        self.block_ms = block_ms
        self.last_id = None
        self.stopped = False
        self.counts = {"events": 0, "errors": 0}

    def _start_id(self) -> str:
        info = self.client.xinfo_stream(self.key) if self.client.exists(self.key) else None
        last = info["last-generated-id"] if info else b"0-0"
        return last.decode() if isinstance(last, bytes) else last

    def poll(self) -> int:
        """One XREAD (blocking up to block_ms); the number of events handed on."""
        if self.last_id is None:
            self.last_id = self._start_id()
        reply = self.client.xread({self.key: self.last_id}, count=100, block=self.block_ms)
        handled = 0
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                self.last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                try:
                    event = decode(entry_id, fields)
                except BadEvent as exc:
                    log.error("fleet offers: %s", exc)
                    continue
                try:
                    log.info("fleet: %s %s from %s: %s", event["event_type"], event.get("src_ip"), event["host"],
                             self.apply(event))
                except Exception:
                    self.counts["errors"] += 1
                    log.exception("fleet: applying %s from %s failed", event["event_type"], event["host"])
                handled += 1
        self.counts["events"] += handled
        return handled

    def run(self) -> None:
        backoff = 0.2
        while not self.stopped:
            try:
                self.poll()
                backoff = 0.2
            except Exception as exc:   # noqa: BLE001 - Redis away: wait, then go on from last_id
                log.warning("fleet offers: %s; retrying in %.1fs", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def stop(self) -> None:
        self.stopped = True
