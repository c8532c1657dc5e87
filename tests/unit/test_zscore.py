"""The Z-score detector: Welford/Chan against two-pass, the |z| test, feedback, persistence, bounds."""
import numpy as np
import pandas as pd
import pytest

from iadm.stats.zscore import MEASUREMENTS, SettingError, ZScoreDetector, check_settings


def flow_records(values, src="10.0.0.1", sport=40000, dport=1883, t0=1000.0, cumulative=False):
    """One record per value, all of one flow key; `values` are bytes (and packets = bytes // 100)."""
    values = np.asarray(values, dtype=float)
    total = np.cumsum(values) if cumulative else values
    return pd.DataFrame({"saddr": src, "daddr": "10.0.0.2", "sport": sport, "dport": dport, "proto": "tcp",
                         "bytes": total, "pkts": np.maximum(1, total // 100), "stime": t0,
                         "ltime": t0 + np.arange(len(values))})


def test_streaming_statistics_equal_a_two_pass_computation():
    rng = np.random.default_rng(7)
    # Large offset, small spread: the report's sum-of-squares formula loses digits here; Welford does not.
    values = 1e9 + rng.normal(0, 3.0, 5000)
    det = ZScoreDetector(tolerance=6, min_count=10**6)     # judge nothing: every value is folded in
    for chunk in np.array_split(values, 37):               # uneven batches exercise Chan's merge
        det.score(flow_records(chunk))
    stats = det.key_stats("bytes_total", 0)
    assert stats["count"] == 5000
    assert stats["mean"] == pytest.approx(values.mean(), rel=1e-15, abs=1e-6)
    assert stats["std"] == pytest.approx(values.std(ddof=1), rel=1e-6)
    # The sum-of-squares form (s, q) cancels catastrophically at this offset; Welford does not.
    naive = np.sqrt(max(0.0, (np.sum(values ** 2) - values.sum() ** 2 / len(values)) / (len(values) - 1)))
    assert abs(naive - values.std(ddof=1)) > 0.1 * values.std(ddof=1)
    rms = np.sqrt(np.mean(values ** 2))   # what the report's variance term yields: the RMS, not a deviation
    assert abs(stats["std"] - rms) > 1e8


def test_a_spike_is_flagged_in_both_directions_and_not_before_the_minimum_count():
    rng = np.random.default_rng(1)
    young = ZScoreDetector(tolerance=3, min_count=20)
    young.score(flow_records(rng.normal(500, 10, 19)))
    assert young.score(flow_records([5000])).zscore_attack.sum() == 0   # 19 values seen: may not judge yet
    det = ZScoreDetector(tolerance=3, min_count=20)
    det.score(flow_records(rng.normal(500, 10, 40)))
    high = det.score(flow_records([500, 900, 501]))
    low = det.score(flow_records([100]))
    assert high.zscore_attack.tolist() == [0, 1, 0] and high.zscore_measurement[1] == "bytes_total"
    assert low.zscore_attack.tolist() == [1] and low.zscore_max[0] > 3
    opened = det.anomalies("bytes_total")
    assert [round(a["value"]) for a in opened] == [900, 100] and opened[0]["z"] > 3 > -3 > opened[1]["z"]


def test_only_normal_points_update_the_statistics():
    det = ZScoreDetector(tolerance=3, min_count=5)
    det.score(flow_records([100, 101, 99, 100, 102, 98]))
    before = det.key_stats("bytes_total", 0)
    det.score(flow_records([10_000]))
    assert det.key_stats("bytes_total", 0)["count"] == before["count"]


def test_feedback_false_positive_leaves_the_list_and_feeds_the_statistics():
    det = ZScoreDetector(tolerance=3, min_count=5)
    det.score(flow_records([100, 101, 99, 100, 102, 98]))
    det.score(flow_records([150]))
    [anomaly] = det.anomalies("bytes_total")
    det.feedback("bytes_total", anomaly["id"], "false_positive")
    assert det.anomalies("bytes_total") == []
    assert det.key_stats("bytes_total", 0)["count"] == 7
    with pytest.raises(SettingError, match="already has feedback"):
        det.feedback("bytes_total", anomaly["id"], "confirmed")
    with pytest.raises(LookupError):
        det.feedback("bytes_total", 999, "confirmed")


def test_created_measurements_are_increments_of_the_running_totals():
    det = ZScoreDetector(min_count=10**6)
    det.score(flow_records([100, 100, 100, 400], cumulative=True).iloc[:2])
    det.score(flow_records([100, 100, 100, 400], cumulative=True).iloc[2:])
    created = det.key_stats("bytes_created", 0)
    assert created["count"] == 4 and created["sum"] == 700 and created["mean"] == 175


def test_statistics_and_anomalies_survive_a_restart(tmp_path):
    db = str(tmp_path / "z.sqlite")
    det = ZScoreDetector(db, tolerance=3, min_count=5)
    det.score(flow_records([100, 101, 99, 100, 102, 98]))
    det.score(flow_records([5000]))
    det.configure(tolerance=4.5)
    det.close()
    again = ZScoreDetector(db, min_count=5)
    assert again.tolerance == 4.5
    assert again.key_stats("bytes_total", 0)["count"] == 6
    assert len(again.anomalies("bytes_total")) == 1
    assert again.score(flow_records([5000])).zscore_attack.tolist() == [1]   # judged at once: stats came back


def test_settings_are_validated_and_nothing_changes_on_refusal():
    det = ZScoreDetector()
    for bad in ({"tolerance": 1.5}, {"tolerance": 7}, {"frequency": 0.5}, {"frequency": 200},
                {"tolerance": "3"}, {"tolerance": True}):
        with pytest.raises(SettingError):
            det.configure(**bad)
    assert det.settings()["tolerance"] == 3 and det.settings()["frequency"] == 24
    check_settings(tolerance=2, frequency=168)


def test_forged_source_flood_keeps_the_key_store_bounded():
    det = ZScoreDetector(min_count=5, max_keys=1000)
    det.score(flow_records([100, 101, 99, 100, 102, 98]))            # one established key
    for i in range(20):
        flood = pd.DataFrame({"saddr": [f"198.51.{i}.{k % 250}" for k in range(500)], "daddr": "10.0.0.2",
                              "sport": np.arange(500) + 1024, "dport": 80, "proto": "tcp", "bytes": 60, "pkts": 1,
                              "stime": 2000.0 + i, "ltime": 2000.0 + i})
        det.score(flood)
        assert det.size <= 1000
    assert det.stats_counters["keys_dropped"] > 0
    assert det.slot_of(det.key_id(0)) == 0 and det.key_stats("bytes_total", 0)["src"] == "10.0.0.1"


def test_batch_mode_scores_period_by_period():
    det = ZScoreDetector(tolerance=3, frequency=1, min_count=5)
    normal = flow_records([100, 101, 99, 100, 102, 98], t0=0.0)
    normal["stime"] = np.arange(6) * 60.0                       # hour 0
    spike = flow_records([100, 5000], t0=3600.0)
    spike["stime"] = [3700.0, 3800.0]                           # hour 1: judged against hour 0
    out = det.scan(pd.concat([spike, normal], ignore_index=True))
    assert out.zscore_attack.sum() == 1
    assert out.zscore_attack.iat[-1] == 1                       # sorted by stime: the spike comes last
    [anomaly] = det.anomalies("bytes_total")
    assert anomaly["value"] == 5000 and anomaly["n"] == 6       # judged against hour 0's six values only
    assert {m for m in MEASUREMENTS if det.anomalies(m)} >= {"bytes_total", "bytes_created"}
