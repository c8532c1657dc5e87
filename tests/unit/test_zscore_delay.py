"""Per-device delay in the Z-score detector: crafted records with known delays."""
import json

import numpy as np
import pandas as pd
import pytest

from iadm.detection.detector import delay_findings
from iadm.detection.fusion import fuse
from iadm.stats.zscore import DELAYS, DeviceDelay, ZScoreDetector

SENSOR, HOST2 = "10.0.0.11", "10.0.0.2"
STEADY = [0.010, 0.012] * 5          # mean 0.011, sample std sqrt(10 * 1e-6 / 9)
STD = np.sqrt(10 * 1e-6 / 9)


def records(n, t0=1000.0, **delays):
    """n records from SENSOR to HOST2, each a flow of its own (the flow keys never get a history),
    with the given delay columns (lists or scalars)."""
    frame = pd.DataFrame({"saddr": [SENSOR] * n, "daddr": [HOST2] * n, "sport": 40000 + np.arange(n),
                          "dport": 5683, "proto": pd.Categorical(["udp"] * n), "bytes": 120.0, "pkts": 2.0,
                          "stime": t0 + np.arange(n), "ltime": t0 + np.arange(n) + 0.5,
                          "synack": np.nan, "answer": np.nan, "owd": np.nan})
    for name, values in delays.items():
        frame[name] = values
    return frame


def one_by_one(det, frame):
    return pd.concat([det.score(frame.iloc[[i]]) for i in range(len(frame))], ignore_index=True)


@pytest.mark.parametrize("measurement", DELAYS)
def test_a_steady_delay_then_a_jump_is_an_anomaly_with_the_expected_z(measurement):
    det = ZScoreDetector(min_count=10)
    out = one_by_one(det, records(11, **{measurement: STEADY + [0.060]}))
    assert out.zscore_attack.tolist() == [0] * 10 + [1]
    last = out.iloc[-1]
    want = (0.060 - 0.011) / STD                     # 46.48...
    device = SENSOR if measurement == "owd" else HOST2   # owd is the sender's, the others the answerer's
    assert (last.delay_device, last.delay_measurement, last.zscore_measurement) == (device, measurement, measurement)
    assert last.delay_value == 0.060 and last.delay_z == pytest.approx(want, rel=1e-9)
    assert last.zscore_max == pytest.approx(want, rel=1e-9)
    [anomaly] = det.delay.anomalies(measurement)
    assert anomaly["z"] == pytest.approx(want, rel=1e-9) and anomaly["n"] == 10
    assert anomaly["mean"] == pytest.approx(0.011) and anomaly["std"] == pytest.approx(STD)
    # only normal values feed the statistics: the jump did not
    stats = det.delay.stats(measurement)
    assert [(s["device"], s["count"]) for s in stats] == [(device, 10)]
    assert (out.delay_device.iloc[:10] == "").all() and out.delay_value.iloc[:10].isna().all()


def test_a_jump_within_the_tolerance_is_not_an_anomaly_and_is_learned():
    det = ZScoreDetector(min_count=10, tolerance=3.0)
    out = one_by_one(det, records(11, owd=STEADY + [0.011 + 2.9 * STD]))
    assert not out.zscore_attack.any() and det.delay.stats("owd")[0]["count"] == 11


def test_empty_delay_columns_are_no_measurement():
    det = ZScoreDetector(min_count=2)
    out = one_by_one(det, records(12))                            # every delay NaN
    bare = det.score(records(3).drop(columns=list(DELAYS)))      # no delay columns at all
    assert det.delay.size == 0 and not out.zscore_attack.any() and not bare.zscore_attack.any()
    assert (out.delay_device == "").all() and out.delay_z.isna().all()
    # a device measured in one column only has statistics in that one
    one_by_one(det, records(3, owd=[0.001, 0.002, np.nan]))
    assert [s["count"] for s in det.delay.stats("owd")] == [2]
    assert det.delay.stats("synack") == [] and det.delay.stats("answer") == []


def test_a_flow_is_measured_once_per_handshake_on_running_records():
    """Running records repeat their flow's synack; new_delay marks the first to carry it."""
    det = ZScoreDetector(min_count=2)
    frame = records(6, synack=0.005, answer=np.nan)
    frame["sport"] = 40000                                        # one flow, six running records
    frame["new_delay"] = [0, 1, 0, 0, 0, 0]
    det.score(frame)
    assert [s["count"] for s in det.delay.stats("synack")] == [1]


def test_the_strongest_device_anomaly_of_a_record_is_the_one_it_carries():
    det = ZScoreDetector(min_count=10)
    one_by_one(det, records(10, owd=STEADY, synack=[0.0010, 0.0011] * 5))
    out = det.score(records(1, t0=2000.0, owd=0.020, synack=0.500))     # both jump; synack's z is larger
    assert out.delay_measurement[0] == "synack" and out.delay_device[0] == HOST2
    assert out.delay_value[0] == 0.5
    assert {a["measurement"] for m in DELAYS for a in det.delay.anomalies(m)} == {"owd", "synack"}


def test_the_delay_store_persists_and_shares_the_tolerance(tmp_path):
    db = str(tmp_path / "z.sqlite")
    det = ZScoreDetector(db, min_count=10)
    one_by_one(det, records(11, owd=STEADY + [0.060]))
    det.configure(tolerance=5.0)
    assert det.delay.tolerance == 5.0
    det.close()
    again = ZScoreDetector(db, min_count=10)
    assert again.delay.tolerance == 5.0 and again.delay.stats("owd")[0]["count"] == 10
    assert again.delay.stats("owd")[0]["mean"] == pytest.approx(0.011)
    assert len(again.delay.anomalies("owd")) == 1 and again.size == 11   # the flow keys' store beside it
    again.close()
    alone = DeviceDelay(min_count=2)
    assert alone.delay is None and alone.KEY_FIELDS == ("device",)


def test_a_delay_anomaly_reaches_the_verdict_and_an_alert_only_finding():
    det = ZScoreDetector(min_count=10)
    frame = records(11, owd=STEADY + [0.060])
    for i in range(10):
        det.score(frame.iloc[[i]])
    last = frame.iloc[[10]].reset_index(drop=True)
    z = det.score(last)
    rules = pd.DataFrame({"attack": [0], "category": ["Normal"], "subcategory": ["Normal"], "sid": [0],
                          "msg": [""], "action": [""]})
    verdicts = fuse(rules, None, zscore=z)
    assert verdicts.source[0] == "zscore" and not verdicts.attack[0]         # the z-score alone abstains
    assert (verdicts.delay_device[0], verdicts.delay_measurement[0]) == (SENSOR, "owd")
    [finding] = delay_findings(last, verdicts)
    assert (finding.sid, finding.dest_ip, finding.block, finding.technique) == (2100501, SENSOR, False,
                                                                                "delay_anomaly")
    assert finding.evidence["measurement"] == "owd" and finding.evidence["seconds"] == 0.06
    assert finding.evidence["z"] == pytest.approx((0.060 - 0.011) / STD, abs=1e-3)
    assert finding.evidence["above_mean"] == pytest.approx(0.049) and verdicts.delay_excess[0] == pytest.approx(0.049)
    json.dumps(finding.as_dict())
    assert delay_findings(last, verdicts, excess=0.050) == []     # a jump smaller than that: no alert line


def test_a_tiny_jump_many_deviations_off_is_an_anomaly_but_no_alert_line():
    det = ZScoreDetector(min_count=10)
    frame = records(11, synack=[0.00010, 0.00011] * 5 + [0.0010])   # 0.1 ms -> 1 ms: z ~ 170
    out = one_by_one(det, frame)
    assert out.zscore_attack.iloc[-1] == 1 and out.delay_z.iloc[-1] > 100
    rules = pd.DataFrame({"attack": [0], "category": ["Normal"], "subcategory": ["Normal"], "sid": [0],
                          "msg": [""], "action": [""]})
    assert delay_findings(frame.iloc[[10]].reset_index(drop=True), fuse(rules, None, zscore=out.iloc[[10]]
                                                                        .reset_index(drop=True))) == []


def test_a_record_alert_carries_its_device_delay():
    from iadm.detection.responder import _Columns, _delay_of
    verdicts = pd.DataFrame({"delay_device": ["", SENSOR], "delay_measurement": ["", "owd"],
                             "delay_value": [np.nan, 0.0601234], "delay_z": [np.nan, 46.48]})
    V = _Columns(verdicts)
    assert _delay_of(V, 0) is None
    assert _delay_of(V, 1) == {"device": SENSOR, "measurement": "owd", "seconds": 0.060123, "z": 46.48}
    assert _delay_of(_Columns(pd.DataFrame({"zscore": [1.0]})), 0) is None
