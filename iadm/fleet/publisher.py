"""The gateway's side of the fleet: events to a Redis stream, never in the way of detection or blocking.

`publisher(fleet_config, gateway_id)` builds the one object both the monitor (an AlertLog sink)
and the controller use. Calling it costs the hot path an envelope (a dict copy and an id) and a
deque append; a thread of its own writes the events to the spool (iadm.fleet.spool) and from
there to Redis with XADD MAXLEN ~ in pipelined batches, in order. While Redis does not answer,
the thread keeps spooling and retries with a backoff (0.2 s doubling to 5 s); when it answers,
the spool is replayed oldest first. A re-sent event keeps its event_id, so the collector stores
it once.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time

from iadm.fleet.events import encode, envelope, gateway_name, is_offer, offers_key
from iadm.fleet.spool import Spool

log = logging.getLogger("iadm.fleet")
BATCH = 500
OFFERS_MAXLEN = 10_000
LINGER = 0.002
MEMORY_EVENTS = 100_000   # events waiting for the thread; beyond, new ones are dropped and counted


def redis_client(config, timeout: float = 1.0):
    """A client for the configured Redis: server, port, password (IADM_REDIS_PASSWORD won at load), TLS."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    # No retries inside the client: the publisher's thread (and the collector's loop) retry
    # themselves, with the spool in between; a client retrying on its own only hides an outage.
    return redis.Redis(host=config.redis_server, port=config.redis_port, password=config.redis_password or None,
                       ssl=config.redis_tls, socket_timeout=timeout, socket_connect_timeout=timeout,
                       retry=Retry(NoBackoff(), 0), health_check_interval=0)


class Publisher:
    def __init__(self, client, key: str, maxlen: int, spool: Spool, gateway_id: str, wait: float = 0.05,
                 offers: bool = False):
        self.client = client
        self.key = key
        # The controller's publisher also copies block offers and revocations to KEY:offers, a small
        # stream the other controllers follow without reading every alert of the fleet.
        self.offers_key = offers_key(key) if offers else None
        self.maxlen = maxlen
        self.spool = spool
        self.gateway_id = gateway_id
        self.wait = wait
        self.counts = {"published": 0, "delivered": 0, "dropped": 0, "redis_errors": 0}
        self.connected = None            # last known state of Redis: None (not tried), True, False
        self._queue = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="iadm-fleet-publisher", daemon=True)
        self._thread.start()

    def __call__(self, event: dict) -> dict:
        """Hand one event over; returns the event as it will be published (with host and event_id)."""
        out = envelope(event, self.gateway_id)
        if len(self._queue) >= MEMORY_EVENTS:
            self.counts["dropped"] += 1
            return out
        self._queue.append(out)
        self.counts["published"] += 1
        if len(self._queue) == 1:   # the thread is idle or about to drain: one wake-up per batch, not per event
            self._wake.set()
        return out

    # --- the thread ---------------------------------------------------------------------
    def _drain_to_spool(self) -> None:
        lines = []
        while self._queue:
            lines.append(encode(self._queue.popleft()))
        if lines:
            self.spool.append(lines)

    def _deliver(self) -> bool:
        """Send the spool's undelivered events to Redis; False when Redis did not take them."""
        while True:
            lines = self.spool.peek(BATCH)
            if not lines:
                return True
            try:
                pipe = self.client.pipeline(transaction=False)
                for line in lines:
                    pipe.xadd(self.key, {b"eve": line}, maxlen=self.maxlen, approximate=True)
                    if self.offers_key and is_offer(json.loads(line)):
                        pipe.xadd(self.offers_key, {b"eve": line}, maxlen=OFFERS_MAXLEN, approximate=True)
                pipe.execute()
            except Exception as exc:   # noqa: BLE001 - any Redis failure: keep spooling, try later
                self.counts["redis_errors"] += 1
                if self.connected is not False:
                    log.warning("fleet: Redis %s does not take events (%s); spooling to %s", self.key, exc,
                                self.spool.directory)
                self.connected = False
                return False
            if self.connected is False:
                log.info("fleet: Redis answers again; replaying the spool")
            self.connected = True
            self.spool.commit(len(lines))
            self.counts["delivered"] += len(lines)

    def _run(self) -> None:
        backoff = 0.2
        while True:
            self._wake.wait(self.wait if self.connected is not False else backoff)
            self._wake.clear()
            time.sleep(LINGER)      # let a burst gather into one batch (one write, one round trip)
            stopping = self._stop
            self._drain_to_spool()
            if self._deliver():
                backoff = 0.2
            else:
                backoff = min(backoff * 2, 5.0)
            if stopping:
                return

    def flush(self, timeout: float = 5.0) -> bool:
        """Until everything handed over so far is in Redis (tests, close); False if it is not by then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._queue and self.spool.undelivered() == 0:
                return True
            self._wake.set()
            time.sleep(0.01)
        return False

    def close(self) -> None:
        """Stop the thread after one last try; what Redis did not take stays in the spool for next time."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=10)
        self.spool.close()
        self.client.close()


def publisher(config, gateway_id: str = "", offers: bool = False) -> Publisher:
    """The publisher for a FleetConfig and this gateway's id ("" = the host name); `offers` for the
    controller's (block offers and revocations also go to KEY:offers). The monitor and the controller
    read the same [fleet] defaults, so each spools in a directory of its own under fleet.spool."""
    if not config.enabled:
        raise ValueError("fleet.enabled is false: no events leave this gateway")
    spool = Spool(os.path.join(config.spool, "controller" if offers else "monitor"), config.spool_max_bytes)
    return Publisher(redis_client(config), config.key, config.maxlen, spool, gateway_name(gateway_id),
                     offers=offers)
