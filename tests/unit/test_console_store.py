"""The console's alert store (SQLite) and the feedback entry points it drives: groups and their
filters and pages, operator decisions, mitigations, devices, the timeline, rebuild from the EVE log,
the traffic meter over running records, the Z-score's and the baseline's "not an attack"."""
import numpy as np
import pandas as pd
import pytest

from iadm.alerts.log import AlertLog, eve_timestamp
from iadm.console.auth import Sessions
from iadm.console.store import GroupFilter, SQLiteAlertStore, StoreError, operator_event
from iadm.console.traffic import TrafficMeter
from iadm.console.vendors import vendor
from iadm.detection.baseline import SiteBaseline
from iadm.stats.zscore import ZScoreDetector


def alert(ts, src="10.0.0.101", dest="10.0.0.2", sid=2000010, signature="UDP flood", action="allowed",
          category="DoS", technique="udp_flood", host="gw1", verdict=None, mac="00:00:00:00:00:65", **extra):
    event = {"timestamp": eve_timestamp(ts), "event_type": "alert", "host": host, "src_ip": src, "dest_ip": dest,
             "dest_port": 5683, "src_mac": mac, "proto": "UDP",
             "alert": {"action": action, "signature_id": sid, "signature": signature, "category": category,
                       "metadata": {"technique": [technique], "mitre_technique_id": ["T1498.001"]}},
             "verdict_source": "behaviour", "records": 10, **extra}
    if verdict:
        event["verdict"] = verdict
    return event


@pytest.fixture
def store(tmp_path):
    s = SQLiteAlertStore(str(tmp_path / "alerts.sqlite"), traffic_bucket=1.0)
    yield s
    s.close()


def test_alerts_group_by_signature_source_and_destination_newest_first(store):
    for i in range(3):
        store.add(alert(1000 + i))
    store.add(alert(1010, src="10.0.0.5", signature="port scan", sid=2000001, category="Reconnaissance",
                    technique="port_scan"))
    page = store.groups(GroupFilter())
    assert page.total == 2
    first, second = page.items
    assert first["signature"] == "port scan" and second["count"] == 3 and second["records"] == 30
    assert second["first_seen"] == 1000 and second["last_seen"] == 1002 and second["mitre"] == "T1498.001"
    assert store.counts()["events"] == 4


def test_filters_by_time_category_host_action_and_gateway_and_pages(store):
    for i in range(120):
        store.add(alert(1000 + i, src=f"10.0.1.{i}", action="blocked" if i % 2 else "allowed",
                        host="gw1" if i < 100 else "gw2"))
    assert store.groups(GroupFilter(), 0, 50).total == 120
    assert len(store.groups(GroupFilter(), 100, 50).items) == 20
    assert store.groups(GroupFilter(action="blocked")).total == 60
    assert store.groups(GroupFilter(since=1110)).total == 10
    assert store.groups(GroupFilter(until=1010)).total == 10
    assert store.groups(GroupFilter(address="10.0.1.7")).items[0]["src_ip"] == "10.0.1.7"
    assert store.groups(GroupFilter(gateway="gw2")).total == 20
    assert store.groups(GroupFilter(category="Theft")).total == 0
    with pytest.raises(StoreError, match="action must be"):
        store.groups(GroupFilter(action="dropped"))
    with pytest.raises(StoreError, match="limit"):
        store.groups(GroupFilter(), 0, 5000)


def test_operator_decisions_change_the_state_and_a_rebuild_from_the_log_keeps_them(store, tmp_path):
    log = AlertLog(str(tmp_path / "alerts.json"), sinks=[store])
    log.write(alert(1000, verdict={"action": "block", "block_id": 7, "installed_on": ["1"],
                                   "match": {"src_mac": "00:00:00:00:00:65"}}))
    log.write(alert(1001, src="10.0.0.9", mac=None, sid=5, signature="other"))
    flood = store.groups(GroupFilter(address="10.0.0.101")).items[0]
    other = store.groups(GroupFilter(address="10.0.0.9")).items[0]
    log.write(operator_event(flood, "escalate", "alice", 1100))
    log.write(operator_event(store.group(other["id"]), "not_attack", "bob", 1101))
    log.write(operator_event(flood, "unblock", "alice", 1102, block_id=7))
    assert store.group(flood["id"])["state"] == "escalated"
    assert store.group(other["id"])["not_attack"] == {"who": "bob", "at": 1101}
    assert store.groups(GroupFilter()).total == 1          # the not-an-attack group left the inbox
    [m] = store.mitigations().items
    assert m["block_id"] == "7" and m["ended_by"] == "alice" and m["ended_at"] == 1102
    assert store.group(flood["id"])["mitigations"][0]["block_id"] == "7"
    log.close()
    rebuilt = SQLiteAlertStore(str(tmp_path / "rebuilt.sqlite"))
    with open(tmp_path / "alerts.json", "a") as fh:
        fh.write("not json\n")
    result = rebuilt.rebuild(str(tmp_path / "alerts.json"))
    assert result["events"] == 5 and len(result["errors"]) == 1 and "not JSON" in result["errors"][0]
    for g in rebuilt.groups(GroupFilter(state="all")).items:
        assert (g["state"], g["not_attack"]) == (store.group(g["id"])["state"], store.group(g["id"])["not_attack"])
    assert rebuilt.mitigations().items[0]["ended_by"] == "alice"
    rebuilt.close()


def test_an_archived_group_seen_again_returns_to_the_inbox(store):
    store.add(alert(1000))
    g = store.groups(GroupFilter()).items[0]
    store.add(operator_event(g, "archive", "alice", 1001))
    assert store.groups(GroupFilter()).total == 0
    store.add(alert(1002))
    assert store.groups(GroupFilter()).items[0]["state"] == "inbox"


def test_a_bad_event_is_refused_by_name_and_the_store_keeps_its_state(store):
    store.add(alert(1000))
    before = store.version()
    with pytest.raises(StoreError, match="timestamp"):
        store.add({"event_type": "alert", "timestamp": "yesterday"})
    assert store.version() == before and store.counts()["events"] == 1
    store.add({"event_type": "stats", "timestamp": eve_timestamp(1)})   # other event types: ignored
    assert store.counts()["events"] == 1


def test_devices_and_the_timeline_from_alerts_and_traffic(store):
    store.add_traffic("gw1", [(1000.2, "00:00:00:00:00:01", "10.0.0.1", 50, 5000),
                              (1000.7, "00:00:00:00:00:01", "10.0.0.1", 50, 5000),
                              (1003.5, "00:00:00:00:00:65", "10.0.0.101", 900, 90000)])
    store.add(alert(1003.6, verdict={"action": "block", "block_id": 1, "installed_on": ["1"],
                                     "match": {"src_mac": "00:00:00:00:00:65"}}))
    devices = {d["mac"]: d for d in store.devices().items}
    assert devices["00:00:00:00:00:01"]["packets"] == 100 and devices["00:00:00:00:00:65"]["alerts"] == 1
    t = store.timeline(1000, 1006, 2)
    assert t["buckets"] == [1000, 1002, 1004]
    assert t["traffic"]["00:00:00:00:00:01"] == [50.0, 0.0, 0.0]      # 100 packets over a 2 s bucket
    assert t["traffic"]["00:00:00:00:00:65"] == [0.0, 450.0, 0.0]
    assert t["alerts"] == [0, 1, 0] and t["mitigations"][0]["block_id"] == "1"
    assert t["attacks"][0]["signature"] == "UDP flood"
    assert store.span() == (1000.0, 1004.0)
    coarse = store.timeline(900, 1500, 300)   # whole 5-minute buckets: read from the coarse table
    assert coarse["traffic"]["00:00:00:00:00:65"] == [3.0, 0.0] and coarse["alerts"] == [1, 0]
    with pytest.raises(StoreError, match="2000 buckets"):
        store.timeline(0, 10**6, 1)


def test_the_traffic_meter_counts_each_packet_of_running_records_once(store):
    from iadm.capture.batch import Batch
    from iadm.flows.pipeline import FeaturePipeline
    from iadm.synth import frame
    meter = TrafficMeter(store, "gw1")
    pipe = FeaturePipeline(kind="running", status_interval=0.5)
    # one flow over three status intervals (a running record at each), then a second device
    frames = [frame("10.0.0.1", "10.0.0.2", 17, 1000, 80, payload=100, smac="00:00:00:00:00:01") for _ in range(40)]
    times = [1000.0 + i * 0.05 for i in range(40)]
    frames += [frame("10.0.0.3", "10.0.0.2", 17, 1000, 80, payload=100, smac="00:00:00:00:00:03")]
    times += [1001.0]
    for lo in range(0, 41, 7):   # batches cut across the status intervals
        for records in pipe.push(Batch.from_frames(frames[lo:lo + 7], times[lo:lo + 7])):
            assert (records.new_pkts <= records.pkts).all()
            meter(records)
    for records in pipe.finish():
        meter(records)
    devices = {d["mac"]: d for d in store.devices().items}
    wire = len(frames[0])
    assert devices["00:00:00:00:00:01"]["packets"] == 40 and devices["00:00:00:00:00:01"]["bytes"] == 40 * wire
    assert devices["00:00:00:00:00:03"]["packets"] == 1


def test_zscore_not_an_attack_folds_the_pairs_open_anomalies_into_its_statistics():
    z = ZScoreDetector(tolerance=3, min_count=10)
    base = pd.DataFrame({"saddr": "10.0.0.1", "daddr": "10.0.0.2", "sport": 4000, "dport": 1883, "proto": "tcp",
                         "bytes": np.random.default_rng(1).normal(500, 10, 50), "pkts": 5.0, "stime": 1000.0,
                         "ltime": 1000.0 + np.arange(50)})
    z.score(base)
    spike = base.iloc[:1].assign(bytes=5000.0, ltime=1100.0)
    assert z.score(spike)["zscore_attack"].sum() == 1
    n_before = z.key_stats("bytes_total", 0)["count"]
    assert z.false_positives("10.0.0.9", "10.0.0.2") == 0          # another pair: untouched
    changed = z.false_positives("10.0.0.1", "10.0.0.2")
    assert changed >= 1
    assert not z.anomalies("bytes_total") and z.anomalies("bytes_total", status="false_positive")
    assert z.key_stats("bytes_total", 0)["count"] == n_before + 1      # the value joined the statistics
    assert z.false_positives("10.0.0.1", "10.0.0.2") == 0          # nothing open any more


def test_the_baseline_learns_an_operators_feedback_and_saves_it(tmp_path):
    site = SiteBaseline(str(tmp_path / "site.json"))
    assert site.teach(2000010, "10.0.0.101", "10.0.0.2", 5683, 1000.0)
    assert not site.teach(0, "10.0.0.101", "10.0.0.2", 5683, 1000.0)    # no signature: nothing to learn
    again = SiteBaseline(str(tmp_path / "site.json"))
    assert (2000010, "10.0.0.101", "10.0.0.2", "5683") in again.entries


def test_sessions_and_vendors():
    sessions = Sessions("tok")
    assert sessions.login("nope", "x") is None
    s = sessions.login("tok", "alice")
    assert sessions.find(f"a=b; iadm_session={s.sid}") is s and sessions.find("iadm_session=forged") is None
    assert Sessions.csrf_ok(s, s.csrf) and not Sessions.csrf_ok(s, "") and not Sessions.csrf_ok(s, None)
    assert vendor("00:1b:63:84:45:e6") == "Apple, Inc."
    assert vendor("02:00:00:00:00:01") == "" and vendor("10.0.0.1") == ""


def test_iadm_console_rebuild_fills_the_store_from_the_alert_log(tmp_path, capsys):
    from iadm.alerts.log import AlertLog, eve_timestamp
    from iadm.cli import main
    from iadm.console.store import GroupFilter, open_store
    log = AlertLog(str(tmp_path / "alerts.json"))
    for n in range(3):
        log.write({"timestamp": eve_timestamp(1_700_000_000 + n), "event_type": "alert", "host": "gw",
                   "src_ip": "10.0.0.9", "dest_ip": "10.0.0.2", "proto": "TCP",
                   "alert": {"action": "allowed", "signature_id": 1000001, "signature": "SYN flood",
                             "category": "DoS", "severity": 2}})
    log.close()
    with open(tmp_path / "alerts.json", "ab") as fh:
        fh.write(b"{not json\n")
    config = tmp_path / "monitor.toml"
    config.write_text(f'[alerts]\nlog = "{tmp_path / "alerts.json"}"\n[console]\nstore = "{tmp_path / "s.sqlite"}"\n'
                      '[api]\nenabled = false\n')
    assert main(["console", "rebuild", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert "3 events" in err and "alerts.json:4: not JSON" in err   # the damaged line named, not fatal
    store = open_store(str(tmp_path / "s.sqlite"))
    page = store.groups(GroupFilter())
    store.close()
    assert page.total == 1 and page.items[0]["count"] == 3
