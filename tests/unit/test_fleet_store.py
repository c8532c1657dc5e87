"""The fleet's alert store (PostgreSQL) against the console's SQLite store: the same checks on both,
then the fleet's own: two gateways through Redis and the collector into one inbox, filterable by gateway."""
import time

import pytest

from iadm.config import FleetConfig
from iadm.console.store import (
    GroupFilter,
    SQLiteAlertStore,
    StoreError,
    open_store,
    operator_event,
)
from iadm.fleet import pgstore
from iadm.fleet.collector import Collector
from iadm.fleet.localservers import LocalPostgres, LocalRedis
from iadm.fleet.publisher import publisher
from iadm.fleet.store import PostgresAlertStore

T0 = float(int(time.time()) // 3600 * 3600 - 7200)   # recent: within the collector's retention


def _ts(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}+0000"


def alert(t, host="gw-a", src="10.0.0.9", dest="10.0.0.2", sid=1000001, action="allowed", block_id=None,
          technique="syn_flood", mac=None):
    event = {"timestamp": _ts(t), "event_type": "alert", "host": host, "src_ip": src, "dest_ip": dest,
             "verdict_source": "rule",
             "alert": {"action": action, "signature_id": sid, "signature": "SYN flood", "category": "DoS",
                       "severity": 2, "metadata": {"technique": [technique], "mitre_technique_id": ["T1498"]}}}
    if mac:
        event["src_mac"] = mac
    if block_id is not None:
        event["verdict"] = {"block_id": block_id, "installed_on": ["0000000000000001"], "action": "block",
                            "match": {"src_ip": src}}
    return event


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    with LocalPostgres(tmp_path_factory.mktemp("pg-store")) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path, pg):
    if request.param == "sqlite":
        s = SQLiteAlertStore(str(tmp_path / "alerts.sqlite"))
    else:
        s = open_store(pg.dsn)
        assert isinstance(s, PostgresAlertStore)
        s.clear()
        with s._db.transaction():
            s._db.execute("TRUNCATE alert_traffic")
    yield s
    s.close()


def test_alerts_group_by_gateway_signature_and_addresses(store):
    v0 = store.version()
    for n in range(3):
        store.add(alert(T0 + n))
    store.add(alert(T0 + 5, host="gw-b"))
    store.add(alert(T0 + 6, src="10.0.0.7", action="blocked", block_id=4))
    store.add({"timestamp": _ts(T0), "event_type": "health"})        # ignored
    assert store.version() > v0
    page = store.groups(GroupFilter())
    assert page.total == 3
    assert [(g["gateway"], g["src_ip"], g["count"]) for g in page.items] == [
        ("gw-a", "10.0.0.7", 1), ("gw-b", "10.0.0.9", 1), ("gw-a", "10.0.0.9", 3)]
    first = page.items[2]
    assert (first["first_seen"], first["last_seen"], first["technique"], first["mitre"]) == (T0, T0 + 2,
                                                                                          "syn_flood", "T1498")
    assert store.groups(GroupFilter(gateway="gw-b")).total == 1
    assert store.groups(GroupFilter(action="blocked")).items[0]["src_ip"] == "10.0.0.7"
    assert store.groups(GroupFilter(address="10.0.0.2")).total == 3
    assert store.groups(GroupFilter(source="rule", since=T0 + 4)).total == 2
    assert store.counts() == {"events": 5, "groups": 3, "inbox": 3, "escalated": 0, "mitigations": 1,
                              "devices": 3}
    assert store.counts("gw-b")["events"] == 1
    detail = store.group(first["id"], events=2)
    assert [e["timestamp"] for e in detail["events"]] == [_ts(T0 + 2), _ts(T0 + 1)]
    assert store.group(10 ** 9) is None


def test_operator_decisions_and_unblocks(store):
    store.add(alert(T0, block_id=9))
    group = store.groups(GroupFilter()).items[0]
    store.add(operator_event(group, "archive", "ops", at=T0 + 1))
    assert store.groups(GroupFilter()).total == 0 and store.groups(GroupFilter(state="archived")).total == 1
    store.add(alert(T0 + 2))                      # seen again: back in the inbox
    assert store.groups(GroupFilter()).items[0]["state"] == "inbox"
    store.add(operator_event(group, "not_attack", "ops", at=T0 + 3))
    [g] = store.groups(GroupFilter(state="all")).items
    assert g["state"] == "archived" and g["not_attack"] == {"who": "ops", "at": T0 + 3}
    store.add(operator_event(group, "unblock", "ops", at=T0 + 4, block_id=9))
    [m] = store.mitigations().items
    assert (m["block_id"], m["attacker"], m["ended_at"], m["ended_by"], m["match"]) == (
        "9", "10.0.0.9", T0 + 4, "ops", {"src_ip": "10.0.0.9"})
    assert store.mitigations(gateway="gw-b").total == 0 and store.mitigations(attacker="10.0.0.9").total == 1
    with pytest.raises(StoreError) as err:
        store.add(operator_event(group, "delete", "ops"))
    assert err.value.field == "action"


def test_devices_traffic_timeline_and_span(store):
    store.add(alert(T0 + 12, mac="00:00:00:00:00:09"))
    store.add_traffic("gw-a", [(T0 + 1, "00:00:00:00:00:09", "10.0.0.9", 100, 6400),
                               (T0 + 11, "00:00:00:00:00:09", "10.0.0.9", 50, 3200),
                               (T0 + 3, "00:00:00:00:00:02", "10.0.0.2", 10, 640)])
    devices = store.devices("gw-a")
    assert devices.total == 2
    top = devices.items[0]
    assert (top["mac"], top["packets"], top["alerts"], top["addresses"]) == ("00:00:00:00:00:09", 150, 1,
                                                                              ["10.0.0.9"])
    tl = store.timeline(T0, T0 + 20, 10, gateway="gw-a")
    assert tl["buckets"] == [T0, T0 + 10]
    assert tl["traffic"]["00:00:00:00:00:09"] == [10.0, 5.0] and tl["alerts"] == [0, 1]
    assert tl["attacks"][0]["src_ip"] == "10.0.0.9"
    assert store.span("gw-a") == (T0, T0 + 20) and store.span("nobody") is None
    with pytest.raises(StoreError):
        store.timeline(T0, T0, 1)


def test_paging_and_bad_queries_are_refused_by_name(store):
    for n in range(7):
        store.add(alert(T0 + n, src=f"10.0.0.{n + 10}"))
    page = store.groups(GroupFilter(), offset=5, limit=5)
    assert (page.total, len(page.items)) == (7, 2)
    for call, field in ((lambda: store.groups(GroupFilter(), limit=0), "limit"),
                        (lambda: store.groups(GroupFilter(state="gone")), "state"),
                        (lambda: store.devices(offset=-1), "offset")):
        with pytest.raises(StoreError) as err:
            call()
        assert err.value.field == field
    store.clear()
    assert store.counts()["groups"] == 0


def test_a_bad_dsn_is_a_store_error_naming_it_without_the_password():
    with pytest.raises(StoreError, match=r"postgresql://u:\*\*\*@127.0.0.1:1/x") as err:
        PostgresAlertStore("postgresql://u:secret@127.0.0.1:1/x")
    assert "secret" not in str(err.value)


def test_two_gateways_through_redis_and_the_collector_in_one_inbox(pg, tmp_path):
    with LocalRedis(tmp_path / "redis") as redis_server:
        conn = pgstore.connect(pg.dsn)
        store = PostgresAlertStore(pg.dsn)
        store.clear()
        for gw in ("gw-a", "gw-b"):
            config = FleetConfig(enabled=True, redis_port=redis_server.port, key="iadm:inbox",
                                 spool=str(tmp_path / gw), spool_max_bytes=1 << 20)
            pub = publisher(config, gw)
            for n in range(5):
                pub(alert(T0 + n, host="ignored", src=f"10.0.0.{20 + n % 2}"))
            assert pub.flush()
            pub.close()
        collector = Collector(redis_server.client(), conn, "iadm:inbox", consumer="c1", block_ms=100)
        collector.prepare()
        while collector.counts["stored"] < 10:
            collector.step()
        collector.store(redis_server.client().xrange("iadm:inbox"))    # every entry delivered twice
        assert store.counts()["events"] == 10 and store.counts("gw-b")["events"] == 5
        assert sorted((g["gateway"], g["src_ip"], g["count"]) for g in store.groups(GroupFilter()).items) == [
            ("gw-a", "10.0.0.20", 3), ("gw-a", "10.0.0.21", 2), ("gw-b", "10.0.0.20", 3), ("gw-b", "10.0.0.21", 2)]
        assert store.gateways() == ["gw-a", "gw-b"]
        assert [g["gateway"] for g in store.groups(GroupFilter(gateway="gw-a")).items] == ["gw-a", "gw-a"]
        # the console on the fleet's store: both gateways in one inbox, with the gateway column; a filter
        from iadm.console.app import Console
        status, template, page = Console(store).inbox({})
        assert (status, template, page["fleet"]) == (200, "inbox.html", True)
        assert sorted({g["gateway"] for g in page["page"].items}) == ["gw-a", "gw-b"]
        assert {g["gateway"] for g in Console(store).inbox({"gateway": "gw-b"})[2]["page"].items} == {"gw-b"}
        assert {g["gateway"] for g in Console(store, gateway="gw-a").inbox({"gateway": "gw-b"})[2]["page"].items} \
            == {"gw-a"}   # a gateway's own console shows its own, whatever is asked
        from iadm.console.web import ConsoleSite
        site = ConsoleSite(Console(store), "token")
        session = site.sessions.login("token", "alice")
        html = site._render("inbox.html", page | {"session": session, "here": "inbox", "counts": store.counts(),
                                                  "version": store.version(), "path": "/console/inbox"}).decode()
        assert "<th>Gateway</th>" in html and "<td>gw-b</td>" in html and 'name="gateway"' in html
        store.close()
        conn.close()


def test_a_batch_into_postgresql_is_what_one_by_one_into_sqlite_is(pg, tmp_path):
    events = [alert(T0, block_id=1), alert(T0 + 1, mac="00:00:00:00:00:09"), alert(T0 + 2, host="gw-b"),
              alert(T0 + 3, src="10.0.0.8", action="blocked")]
    sqlite = SQLiteAlertStore(str(tmp_path / "one-by-one.sqlite"))
    for event in events:
        sqlite.add(event)
    archive = operator_event(sqlite.groups(GroupFilter()).items[-1], "archive", "ops", at=T0 + 4)
    tail = [archive, alert(T0 + 5, technique=""), alert(T0 + 6, src="10.0.0.8", sid=7)]
    for event in tail:
        sqlite.add(event)
    store = PostgresAlertStore(pg.dsn)
    store.clear()
    assert store.add_many(events + [{"timestamp": _ts(T0), "event_type": "health"}] + tail) == 7
    strip = lambda page: [{k: v for k, v in g.items() if k != "id"} for g in page.items]
    assert strip(store.groups(GroupFilter(state="all"))) == strip(sqlite.groups(GroupFilter(state="all")))
    assert store.counts() == sqlite.counts()
    assert store.devices().items == sqlite.devices().items
    assert [m | {"group_id": None} for m in store.mitigations().items] == \
        [m | {"group_id": None} for m in sqlite.mitigations().items]
    sqlite.close()
    store.close()
