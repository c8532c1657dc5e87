"""The live decision path: opinions -> verdicts -> controller requests and alert lines."""
import json

import numpy as np
import pandas as pd
import pytest

from iadm.alerts.log import AlertLog, read_events
from iadm.capture.batch import Batch
from iadm.detection.detector import Detector
from iadm.detection.responder import Responder
from iadm.flows.pipeline import FeaturePipeline
from iadm.ml import registry
from iadm.rules.engine import RuleEngine
from iadm.sdn.client import ApiError
from iadm.synth import ATTACKER_MAC, attacks, benign

T0 = 1_700_000_000.0


class FakeController:
    """Answers verdicts as the controller does; refuses what is allowlisted."""

    def __init__(self, allow=()):
        self.allow = set(allow)
        self.verdicts = []

    def verdict(self, **fields):
        self.verdicts.append(fields)
        target = fields.get("src_mac") or fields.get("src_ip")
        if target in self.allow:
            raise ApiError(403, f"{target} is allowlisted")
        return {"block": {"block_id": len(self.verdicts), "action": fields["action"],
                          "match": {"eth_src": target}}, "installed_on": ["0000000000000001"],
                "installed_at": T0}


def records(packets, status_interval=0.1):
    packets = sorted(packets, key=lambda p: p[0])
    pipe = FeaturePipeline(status_interval=status_interval)
    frames = pipe.push(Batch.from_frames([f for _, f in packets], [t for t, _ in packets]))
    return [f for f in frames + pipe.finish() if len(f)]


@pytest.fixture(scope="module")
def detector():
    """Rules only: these tests are about the responder, not about the shipped model's quality."""
    return Detector(RuleEngine.from_files(["rules/iot.rules"], "rules/variables.conf"))


def run(detector, frames, responder):
    for frame in frames:
        frame = frame.reset_index(drop=True)
        responder(frame, detector(frame))


def test_a_flood_is_one_verdict_against_the_senders_mac(tmp_path, detector):
    flood, _ = attacks(T0 + 5)
    frames = records(benign(T0, 10.0, devices=2) + flood[:6000])   # the forged-source SYN flood only
    controller = FakeController()
    log = AlertLog(str(tmp_path / "alerts.json"))
    clock = iter(range(10**6)).__next__
    responder = Responder(controller, log, block_seconds=60, realert_seconds=1000, detector=detector,
                          clock=lambda: T0 + clock() * 0.001)
    run(detector, frames, responder)
    log.close()
    assert controller.verdicts == [{"action": "block", "duration": 60, "src_mac": ATTACKER_MAC,
                                    "reason": controller.verdicts[0]["reason"],
                                    "source": controller.verdicts[0]["source"]}]
    assert "sid 10000" in controller.verdicts[0]["source"]
    events = list(read_events(str(tmp_path / "alerts.json")))
    assert len(events) == 1
    event = events[0]
    assert event["alert"]["action"] == "blocked" and event["alert"]["category"] in ("DDoS", "DoS")
    assert event["alert"]["signature_id"] >= 1000001 and event["features"]
    assert event["src_mac"] == ATTACKER_MAC and event["verdict"]["block_id"] == 1
    assert event["verdict_source"] == "rule" and event["model"]["score"] is None
    assert responder.counts["attack_records"] > 1000


def test_benign_traffic_alone_sends_nothing(tmp_path, detector):
    controller = FakeController()
    responder = Responder(controller, AlertLog(str(tmp_path / "a.json")), detector=detector)
    run(detector, records(benign(T0, 60.0, devices=3)), responder)
    assert controller.verdicts == []


def test_allowlisted_sender_is_refused_logged_and_not_retried_at_once(tmp_path, detector):
    flood, _ = attacks(T0)
    controller = FakeController(allow={ATTACKER_MAC})
    now = [T0]
    responder = Responder(controller, AlertLog(str(tmp_path / "a.json")), realert_seconds=5, detector=detector,
                          clock=lambda: now[0])
    frames = records(flood[:6000])
    run(detector, frames, responder)
    assert len(controller.verdicts) == 1 and responder.counts["verdicts_refused"] == 1
    now[0] += 6
    run(detector, frames[:3], responder)
    assert len(controller.verdicts) == 2
    events = [json.loads(line) for line in open(tmp_path / "a.json")]
    assert events[0]["alert"]["action"] == "allowed" and "allowlisted" in events[0]["verdict"]["error"]


def test_detector_names_its_model_and_refuses_one_the_records_cannot_feed():
    detector = Detector(RuleEngine([]), registry.load("models/default"))
    assert detector.model_name == "default"
    model = registry.load("models/default")
    model.card = dict(model.card, features=model.card["features"] + ["no_such_feature"])
    with pytest.raises(registry.ModelError, match="no_such_feature"):
        Detector(RuleEngine([]), model)


def test_the_models_word_alone_never_blocks_and_confirmed_needs_min_records(tmp_path):
    """The model alone: an alert line. Confident (score >= 0.9) and confirmed by the Z-score on
    the same records: a block once model_min_records such records are in."""
    def verdicts(source, scores):
        return pd.DataFrame({"attack": [1, 1], "category": ["DoS"] * 2, "subcategory": ["", ""],
                             "source": [source] * 2, "rule_sid": [0, 0], "rule_msg": ["", ""],
                             "model_label": ["DoS"] * 2, "model_score": scores, "zscore": [9.0, 9.0]})
    frame = pd.DataFrame({"pkSeqID": [1, 2], "saddr": ["10.0.0.5"] * 2, "sport": [1, 2], "daddr": ["10.0.0.2"] * 2,
                          "dport": [80, 80], "proto": ["tcp"] * 2, "stime": [T0, T0], "ltime": [T0, T0],
                          "pkts": [1, 1], "bytes": [60, 60], "state": ["REQ"] * 2, "smac": [5, 5], "spkts": [1, 1]})
    controller = FakeController()
    responder = Responder(controller, AlertLog(str(tmp_path / "a.json")), model_min_records=2)
    events = responder(frame, verdicts("model", [0.99, 0.99]))
    assert controller.verdicts == [] and events[0]["alert"]["action"] == "allowed"
    responder.attackers.clear()
    responder(frame, verdicts("model+zscore", [0.6, 0.95]))     # one confident record: not enough
    assert controller.verdicts == []
    responder.attackers.clear()
    responder.model_min_records = 3
    responder(frame, verdicts("model+zscore", [0.95, 0.95]))
    assert controller.verdicts == []
    responder.attackers.clear()
    responder.model_min_records = 2
    responder(frame, verdicts("model+zscore", [0.95, 0.95]))
    assert controller.verdicts[0]["src_mac"] == "00:00:00:00:00:05"


def test_a_host_mostly_normal_is_alerted_not_blocked(tmp_path):
    """A benign host's odd records that match a flood rule while its server is flooded: alert only."""
    n = 12
    flagged = [1, 1, 1] + [0] * (n - 3)
    verdicts = pd.DataFrame({"attack": flagged, "category": ["DDoS"] * 3 + ["Normal"] * (n - 3),
                             "subcategory": ["UDP"] * 3 + ["Normal"] * (n - 3),
                             "source": ["rule"] * 3 + [""] * (n - 3), "rule_sid": [1000005] * 3 + [0] * (n - 3),
                             "rule_msg": ["UDP flood"] * 3 + [""] * (n - 3), "model_label": [""] * n,
                             "model_score": [float("nan")] * n})
    frame = pd.DataFrame({"pkSeqID": range(n), "saddr": ["10.0.0.1"] * n, "sport": range(n),
                          "daddr": ["10.0.0.2"] * n, "dport": [5683] * n, "proto": ["udp"] * n,
                          "stime": [T0] * n, "ltime": [T0] * n, "pkts": [1] * n, "bytes": [60] * n,
                          "state": ["INT"] * n, "smac": [1] * n})
    controller = FakeController()
    responder = Responder(controller, AlertLog(str(tmp_path / "a.json")), min_records=3)
    events = responder(frame, verdicts)
    assert controller.verdicts == [] and events[0]["alert"]["action"] == "allowed"
    # The same three records with nothing normal beside them: a block.
    responder.attackers.clear()
    responder(frame.iloc[:3], verdicts.iloc[:3])
    assert controller.verdicts[0]["src_mac"] == "00:00:00:00:00:01"


def test_zscore_alone_abstains(tmp_path):
    """An unusual value is not yet an attack: the Z-score's word alone is kept on the record (its
    anomalies go to its own store) but makes no alert line and no verdict."""
    from iadm.stats.zscore import ZScoreDetector
    detector = Detector(RuleEngine([]), zscore=ZScoreDetector(tolerance=3, min_count=5))
    controller = FakeController()
    responder = Responder(controller, AlertLog(str(tmp_path / "a.json")), detector=detector, min_records=1)

    def batch(values):
        n = len(values)
        return pd.DataFrame({"pkSeqID": range(n), "saddr": "10.0.0.1", "sport": 40000, "daddr": "10.0.0.2",
                             "dport": 1883, "proto": "tcp", "stime": T0, "ltime": T0 + np.arange(n),
                             "pkts": 3, "bytes": values, "state": "CON", "smac": 1})

    for values in ([100, 101, 99, 100, 102, 98], [100] * 20):
        frame = batch(values)
        assert responder(frame, detector(frame)) == []
    frame = batch([50_000] * 20)
    verdicts = detector(frame)
    assert set(verdicts.source) == {"zscore"} and (verdicts.zscore > 3).all() and not verdicts.attack.any()
    assert responder(frame, verdicts) == [] and controller.verdicts == []


def test_replayed_captures_use_the_capture_clock(tmp_path, detector):
    from iadm.alerts.log import eve_timestamp
    flood, _ = attacks(T0)
    controller = FakeController()
    responder = Responder(controller, AlertLog(str(tmp_path / "a.json")), detector=detector, replay=True)
    events = []
    for frame in records(flood[:6000]):
        frame = frame.reset_index(drop=True)
        events += responder(frame, detector(frame))
    assert events and events[0]["timestamp"].startswith(eve_timestamp(T0)[:16])   # 2023-11-14T22:13, not today
    assert events[0]["verdict"]["sent_at"] <= T0 + 3


def test_a_flood_from_many_sources_gets_a_shaped_rate_limit_and_no_source_is_blocked(tmp_path):
    """A DDoS finding is about its victim: the verdict is the flood's shape (destination, protocol,
    the port it shares), rate-limited; none of the thousand sources is blocked."""
    from iadm.detection.behaviour import BehaviourWatch
    from iadm.synth import frame as packet
    forged = [(T0 + i / 5000, packet(f"198.51.{i // 250}.{i % 250 + 1}", "10.0.0.2", 6, 1024 + i, 80, 0x02,
                                     smac=f"02:00:00:00:{i // 250:02x}:{i % 250 + 1:02x}")) for i in range(1000)]
    detector = Detector(RuleEngine([]), behaviour=BehaviourWatch())
    controller = FakeController()
    responder = Responder(controller, AlertLog(str(tmp_path / "a.json")), detector=detector, replay=True)
    run(detector, records(forged), responder)
    assert [v["action"] for v in controller.verdicts] == ["rate_limit"]
    shape = controller.verdicts[0]
    assert (shape["dst_ip"], shape["ip_proto"], shape["dst_port"], shape["rate_pps"]) == ("10.0.0.2", 6, 80, 1000)
    assert "src_mac" not in shape and "src_ip" not in shape
    line = [json.loads(x) for x in open(tmp_path / "a.json")][0]
    assert line["src_mac"] is None and line["alert"]["category"] == "DDoS" and line["verdict"]["block_id"] == 1


def test_every_alert_names_its_gateway(tmp_path, detector):
    flood, _ = attacks(T0)
    responder = Responder(FakeController(), AlertLog(str(tmp_path / "a.json")), detector=detector, replay=True,
                          gateway_id="home-17")
    run(detector, records(flood[:3000]), responder)
    lines = [json.loads(x) for x in open(tmp_path / "a.json")]
    assert lines and {line["host"] for line in lines} == {"home-17"}
    from iadm.metrics import MonitorMetrics
    assert b'iadm_monitor_info{gateway="home-17"} 1.0' in MonitorMetrics(dict, responder).render()


def test_a_mac_flood_is_one_line_and_a_guard_of_its_port_and_a_real_host_is_still_judged(tmp_path):
    """macof-like SYNs, each from a new random MAC and forged address: the responder asks for a
    guard of the port, named by the burst's first unicast MAC (no one MAC to block), and writes one
    line for the flood with its count, not one per forged MAC. A host known before the flood that
    scans meanwhile is judged on its own, as always."""
    import random

    from iadm.detection.behaviour import BehaviourWatch
    from iadm.inspect import MacFloodWatch
    from iadm.synth import frame as packet
    rng = random.Random(3)
    scanner = "02:00:00:00:00:09"
    packets = [(T0 - 1.0, packet("10.0.0.9", "10.0.0.2", 17, 5353, 5353, payload=20, smac=scanner))]
    for i in range(3000):   # 1.5 s of flood at 2,000 frames a second
        smac = ":".join(f"{rng.randrange(256):02x}" for _ in range(6))
        src = f"{rng.randrange(1, 200)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        packets.append((T0 + i / 2000, packet(src, f"{rng.randrange(1, 200)}.1.2.3", 6, rng.randrange(1024, 65535),
                                              80, 0x02, smac=smac)))
    packets += [(T0 + 0.5 + i * 0.01, packet("10.0.0.9", "10.0.0.2", 6, 40000 + i, 1 + i, 0x02, smac=scanner))
                for i in range(30)]
    packets.sort(key=lambda p: p[0])
    floods = MacFloodWatch()
    detector = Detector(RuleEngine.from_files(["rules/iot.rules"], "rules/variables.conf"), behaviour=BehaviourWatch())
    controller = FakeController()
    responder = Responder(controller, AlertLog(str(tmp_path / "a.json")), detector=detector, replay=True,
                          mac_floods=floods)
    pipe = FeaturePipeline(status_interval=0.1, inspectors=[floods])
    for k in range(0, len(packets), 200):   # batches as a live ring hands them out
        chunk = packets[k:k + 200]
        frames = pipe.push(Batch.from_frames([f for _, f in chunk], [t for t, _ in chunk]))
        responder.findings(pipe.findings)
        pipe.findings = []
        run(detector, [f for f in frames if len(f)], responder)
    run(detector, [f for f in pipe.finish() if len(f)], responder)
    guards = [v for v in controller.verdicts if v["action"] == "guard"]
    assert len(guards) == 1 and guards[0]["src_mac"] != scanner and not int(guards[0]["src_mac"][:2], 16) & 1
    lines = [json.loads(x) for x in open(tmp_path / "a.json")]
    flood_lines = [e for e in lines if e["alert"]["metadata"]["technique"] == ["mac_flood"]]
    assert len(flood_lines) == 1 and flood_lines[0]["alert"]["action"] == "blocked"
    assert "port guard" in flood_lines[0]["mitigation"] and flood_lines[0]["verdict"]["action"] == "guard"
    forged_lines = [e for e in lines if e.get("src_mac") not in (None, scanner)]
    assert len(forged_lines) <= 50          # at most the forged MACs before the burst was known
    assert responder.counts["folded_records"] > 2500
    assert any(v.get("src_mac") == scanner and v["action"] == "block" for v in controller.verdicts)


def test_a_behaviour_finding_blocks_at_its_crossing_record_even_when_a_wave_of_guesses_then_pauses(tmp_path):
    """hydra against SSH: four connections at once, six refused passwords each, all closed within a
    second, then a pause of half a minute. The watcher's count crosses at the fifth session's end;
    that one record is the proof, and the block is dated there, not at the next wave."""
    from iadm.detection.behaviour import BehaviourWatch
    from iadm.synth import frame
    SYN, SYNACK, ACK, FIN = 0x02, 0x12, 0x10, 0x11
    src, dst, mac = "10.0.0.9", "10.0.0.2", "02:00:00:00:00:09"
    packets = []
    for wave, t0 in enumerate((T0, T0 + 32.0)):
        for i in range(5):
            t, sp = t0 + i * 0.15, 50000 + 10 * wave + i
            packets += [(t, frame(src, dst, 6, sp, 22, SYN, smac=mac)),
                        (t + 0.001, frame(dst, src, 6, 22, sp, SYNACK, smac="00:00:00:00:00:02")),
                        (t + 0.002, frame(src, dst, 6, sp, 22, ACK, payload=600, smac=mac)),
                        (t + 0.1, frame(dst, src, 6, 22, sp, FIN | ACK, payload=900, smac="00:00:00:00:00:02")),
                        (t + 0.101, frame(src, dst, 6, sp, 22, FIN | ACK, smac=mac))]
    controller = FakeController()
    log = tmp_path / "alerts.json"
    detect = Detector(RuleEngine([]), behaviour=BehaviourWatch())
    run(detect, records(packets, status_interval=60.0), Responder(controller, AlertLog(str(log)), detector=detect,
                                                                 replay=True))
    assert [v.get("src_mac") for v in controller.verdicts] == [mac]
    [first, *_] = read_events(str(log), [])
    assert first["verdict"]["action"] == "block" and abs(first["verdict"]["sent_at"] - (T0 + 4 * 0.15 + 0.101)) < 0.01
