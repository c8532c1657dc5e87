"""Alert log: rotation keeps every line; review filters and summary; damaged lines skipped and named."""
import threading

import pytest

from iadm.alerts.log import AlertLog, eve_timestamp, follow, log_files, read_events
from iadm.alerts.review import AlertFilter, parse_time, summary, table
from iadm.cli import main

T0 = 1_790_000_000.0


def event(i, src="10.0.0.101", category="DoS", sid=1000001, source="rule+model"):
    return {"timestamp": eve_timestamp(T0 + i), "event_type": "alert", "src_ip": src, "src_port": 1000 + i,
            "dest_ip": "10.0.0.2", "dest_port": 80, "proto": "TCP", "verdict_source": source,
            "alert": {"action": "blocked", "signature_id": sid, "rev": 1, "signature": f"rule {sid}",
                      "category": category, "severity": 1}}


def test_rotation_keeps_every_line_in_order(tmp_path):
    path = str(tmp_path / "alerts.json")
    log = AlertLog(path, max_bytes=4096, keep=100)
    writers = [threading.Thread(target=lambda k=k: [log.write(event(k * 1000 + i)) for i in range(150)])
               for k in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    log.close()
    assert len(log_files(path)) > 10
    ports = [e["src_port"] for e in read_events(path)]
    assert sorted(ports) == sorted(1000 + k * 1000 + i for k in range(4) for i in range(150))
    for k in range(4):   # each writer's lines stay in its order across files
        mine = [p for p in ports if (p - 1000) // 1000 == k]
        assert mine == sorted(mine)


def test_rotation_drops_only_beyond_keep(tmp_path):
    path = str(tmp_path / "alerts.json")
    log = AlertLog(path, max_bytes=4096, keep=2)
    for i in range(200):
        log.write(event(i))
    log.close()
    assert log_files(path) == [path + ".2", path + ".1", path]


def test_filters_and_summary(tmp_path):
    events = [event(0), event(1, src="10.0.0.102", category="Reconnaissance", sid=1000010, source="rule"),
              event(2, sid=0, source="model"), event(3)]
    for e in events:
        e["_ts"] = T0 + int(e["src_port"]) - 1000
    assert [e["src_port"] for e in events if AlertFilter(src="10.0.0.102")(e)] == [1001]
    assert [e["src_port"] for e in events if AlertFilter(source="model")(e)] == [1000, 1002, 1003]
    assert [e["src_port"] for e in events if AlertFilter(sid=1000001, since=T0 + 1)(e)] == [1003]
    assert [e["src_port"] for e in events if AlertFilter(category="dos", until=T0 + 2)(e)] == [1000, 1002]
    events[1]["alert"]["metadata"] = {"technique": ["port_scan"], "mitre_technique_id": ["T1046"]}
    text = summary(events)
    assert "4 alert(s)" in text and "10.0.0.101" in text and "(model or z-score only)" in text
    assert "per technique:" in text and "port_scan T1046        1" in text
    assert table(events).count("\n") == 4
    with pytest.raises(ValueError, match="source 'snort'"):
        AlertFilter(source="snort")


def test_parse_time_forms():
    assert parse_time("10m", now=T0) == T0 - 600
    assert parse_time(str(T0)) == T0
    assert parse_time("2026-09-22T00:00:00+00:00") == parse_time("2026-09-22T02:00:00+02:00") == 1790035200.0
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time("yesterday")


def test_cli_reads_rotated_files_and_reports_damaged_lines(tmp_path, capsys):
    path = str(tmp_path / "alerts.json")
    log = AlertLog(path, max_bytes=4096)
    for i in range(60):
        log.write(event(i, src="10.0.0.101" if i % 2 else "10.0.0.102"))
    log.close()
    with open(path, "a") as fh:
        fh.write('{"timestamp": "not a time"}\n{broken\n')
    assert main(["alerts", path, "--src", "10.0.0.102", "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 30
    assert f"{path}:" in err and "bad timestamp" in err and "not JSON" in err
    assert main(["alerts", path, "--summary"]) == 0
    assert "60 alert(s)" in capsys.readouterr().out


def test_follow_sees_lines_across_a_rotation(tmp_path):
    path = str(tmp_path / "alerts.json")
    log = AlertLog(path, max_bytes=4096)
    seen = []
    done = threading.Event()
    reader = threading.Thread(target=lambda: seen.extend(
        e["src_port"] for e in follow(path, poll=0.01, stop=lambda: done.is_set() and len(seen) >= 80)))
    reader.start()
    import time
    time.sleep(0.1)
    for i in range(80):
        log.write(event(i))
        time.sleep(0.001)
    done.set()
    reader.join(timeout=10)
    log.close()
    assert len(log_files(path)) > 1
    assert seen == [1000 + i for i in range(80)]


def test_sinks_take_each_event_after_the_file_and_a_failing_sink_loses_nothing(tmp_path, caplog):
    from iadm.alerts.log import AlertLog, read_events
    taken = []

    def broken(event):
        raise RuntimeError("store is down")

    log = AlertLog(str(tmp_path / "eve.json"), sinks=[broken, taken.append])
    stamp = "2026-12-02T05:00:00.000000+0000"
    log.write({"timestamp": stamp, "event_type": "alert", "n": 1})
    log.write({"timestamp": stamp, "event_type": "alert", "n": 2})
    log.close()
    assert [e["n"] for e in taken] == [1, 2]
    assert [e["n"] for e in read_events(str(tmp_path / "eve.json"))] == [1, 2]
    assert "store is down" in caplog.text
