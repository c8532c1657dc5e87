"""Events from a gateway's publisher through real Redis and a collector into real PostgreSQL."""
import json
import time

import pytest

from iadm.config import FleetConfig
from iadm.fleet import pgstore
from iadm.fleet.collector import Collector
from iadm.fleet.events import BadEvent, decode
from iadm.fleet.localservers import LocalPostgres, LocalRedis
from iadm.fleet.publisher import publisher


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("fleet-servers")
    with LocalRedis(base / "redis") as redis_server, LocalPostgres(base / "pg") as pg:
        yield redis_server, pg


@pytest.fixture
def fleet(servers, tmp_path, request):
    redis_server, pg = servers
    key = f"iadm:test:{request.node.name}"
    config = FleetConfig(enabled=True, redis_port=redis_server.port, key=key, maxlen=10_000,
                         spool=str(tmp_path / "spool"), spool_max_bytes=1 << 20)
    conn = pgstore.connect(pg.dsn)
    pgstore.create_schema(conn)
    with conn.transaction():
        conn.execute("TRUNCATE fleet_events, fleet_rejects")
    yield config, redis_server, conn
    conn.close()


NOW = time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime())


def _alert(n):
    return {"timestamp": NOW, "src_ip": f"10.0.0.{n % 250 + 1}",
            "dest_ip": "10.0.0.2", "alert": {"signature": "SYN flood", "category": "DoS", "severity": 2,
                                             "action": "blocked"}, "n": n}


def _collect_all(collector, want, timeout=10):
    deadline = time.monotonic() + timeout
    while collector.counts["stored"] < want and time.monotonic() < deadline:
        collector.step()


def test_events_reach_postgresql_once_with_host_and_event_id(fleet):
    config, redis_server, conn = fleet
    pub = publisher(config, "gw-a")
    sent = [pub(_alert(n)) for n in range(50)]
    assert pub.flush()
    pub.close()
    assert {e["host"] for e in sent} == {"gw-a"} and len({e["event_id"] for e in sent}) == 50
    collector = Collector(redis_server.client(), conn, config.key, consumer="c1", block_ms=100)
    collector.prepare()
    _collect_all(collector, 50)
    # the same entries again (a gateway replaying its spool): stored once
    raw = redis_server.client().xrange(config.key)
    collector.store(raw)
    rows = conn.execute("SELECT host, event_type, src_ip, signature, severity, event FROM fleet_events "
                        "ORDER BY (event->>'n')::int").fetchall()
    assert len(rows) == 50 and collector.counts["duplicates"] == 50
    assert rows[3][:5] == ("gw-a", "alert", "10.0.0.4", "SYN flood", 2)
    assert rows[3][5]["n"] == 3
    assert redis_server.client().xpending(config.key, collector.group)["pending"] == 0


def test_stream_entries_are_in_order_and_bounded_by_maxlen(fleet):
    config, redis_server, _ = fleet
    pub = publisher(config, "gw-a")
    for n in range(200):
        pub(_alert(n))
    assert pub.flush()
    pub.close()
    entries = redis_server.client().xrange(config.key)
    assert [json.loads(f[b"eve"])["n"] for _, f in entries] == list(range(200))
    info = redis_server.client().xinfo_stream(config.key)
    assert info["length"] == 200


def test_an_absent_redis_costs_nothing_and_the_spool_replays_in_order(fleet, tmp_path):
    config = fleet[0]
    from iadm.fleet.localservers import free_port
    config.redis_port = free_port()           # nothing listens there yet
    pub = publisher(config, "gw-b")
    started = time.perf_counter()
    for n in range(100):
        pub(_alert(n))
    assert time.perf_counter() - started < 0.5   # not one Redis round trip on the caller's side
    time.sleep(0.5)
    assert pub.connected is False and pub.spool.undelivered() == 100
    pub.close()                                  # the monitor restarts while Redis is still away
    late = LocalRedis(tmp_path / "late-redis", port=config.redis_port).start()
    try:
        pub = publisher(config, "gw-b")
        assert pub.flush()
        pub.close()
        entries = late.client().xrange(config.key)
        assert [json.loads(f[b"eve"])["n"] for _, f in entries] == list(range(100))
    finally:
        late.stop()


def test_pending_entries_of_a_dead_collector_are_claimed(fleet):
    config, redis_server, conn = fleet
    pub = publisher(config, "gw-a")
    for n in range(30):
        pub(_alert(n))
    assert pub.flush()
    pub.close()
    r = redis_server.client()
    dead = Collector(r, conn, config.key, consumer="dead", block_ms=100)
    dead.prepare()
    r.xreadgroup(dead.group, "dead", {config.key: ">"}, count=30)   # read, then "killed" before storing
    alive = Collector(r, conn, config.key, consumer="alive", block_ms=100, claim_idle_ms=200)
    alive.step()
    assert alive.counts["stored"] == 0             # not idle long enough yet
    time.sleep(0.3)
    alive.step()
    assert alive.counts["claimed"] == 30 and alive.counts["stored"] == 30
    assert conn.execute("SELECT count(*) FROM fleet_events").fetchone()[0] == 30
    assert r.xpending(config.key, alive.group)["pending"] == 0


def test_a_bad_entry_is_rejected_by_name_and_does_not_block_the_group(fleet):
    config, redis_server, conn = fleet
    r = redis_server.client()
    collector = Collector(r, conn, config.key, consumer="c1", block_ms=100)
    collector.prepare()
    bad = r.xadd(config.key, {"eve": b"{not json"})
    r.xadd(config.key, {"eve": json.dumps({"host": "gw", "event_type": "alert", "timestamp": "x",
                                           "event_id": "e1"})})
    r.xadd(config.key, {"eve": json.dumps({**_alert(1), "host": "gw", "event_type": "alert", "event_id": "e2"})})
    collector.step()
    assert collector.counts == {**collector.counts, "stored": 1, "rejected": 2}
    reasons = dict(conn.execute("SELECT stream_id, reason FROM fleet_rejects").fetchall())
    assert "not JSON" in reasons[bad.decode()]
    assert any("bad timestamp" in r for r in reasons.values())
    assert r.xpending(config.key, collector.group)["pending"] == 0
    with pytest.raises(BadEvent, match="stream entry 1-1: 'host'"):
        decode(b"1-1", {b"eve": b'{"event_id": "x"}'})


def test_retention_deletes_old_events_only(fleet):
    config, redis_server, conn = fleet
    collector = Collector(redis_server.client(), conn, config.key, consumer="c1", block_ms=100,
                          retention_days=30)
    collector.prepare()
    old = {**_alert(1), "host": "gw", "event_type": "alert", "event_id": "old",
           "timestamp": "2020-01-01T00:00:00.000000+0000"}
    new = {**_alert(2), "host": "gw", "event_type": "alert", "event_id": "new",
           "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime())}
    r = redis_server.client()
    for event in (old, new):
        r.xadd(config.key, {"eve": json.dumps(event)})
    collector.step()
    assert [x[0] for x in conn.execute("SELECT event_id FROM fleet_events").fetchall()] == ["new"]
    assert collector.counts["too_old"] == 1       # not stored at all: retention would delete it
    with conn.transaction():                      # one stored before the retention period was shortened
        conn.execute("UPDATE fleet_events SET ts = now() - interval '31 days'")
    collector._expired_at = None
    collector.step()
    assert collector.counts["expired"] == 1 and conn.execute("SELECT count(*) FROM fleet_events").fetchone()[0] == 0


def test_the_publisher_is_an_alert_log_sink(fleet, tmp_path):
    from iadm.alerts.log import AlertLog
    config, redis_server, _ = fleet
    pub = publisher(config, "gw-log")
    log = AlertLog(str(tmp_path / "alerts.json"), sinks=[pub])
    event = _alert(7)
    log.write(event)
    log.close()
    assert pub.flush()
    pub.close()
    assert "host" not in event                    # the log's own event is left as it was
    [(_, fields)] = redis_server.client().xrange(config.key)
    sent = json.loads(fields[b"eve"])
    assert (sent["host"], sent["event_type"], sent["n"]) == ("gw-log", "alert", 7) and len(sent["event_id"]) == 32
    assert json.loads((tmp_path / "alerts.json").read_text())["n"] == 7


def test_a_disabled_fleet_builds_no_publisher(tmp_path):
    with pytest.raises(ValueError, match="fleet.enabled is false"):
        publisher(FleetConfig(spool=str(tmp_path)), "gw")
