"""Behaviour over time (iadm/detection/behaviour.py) on crafted traffic: each watcher fires at its
threshold and not one below, judged at each record's own time, and benign look-alikes stay quiet."""
import numpy as np
import pandas as pd

from iadm.capture.batch import Batch
from iadm.detection import behaviour as b
from iadm.detection.behaviour import BehaviourWatch, Distinct
from iadm.detection.fusion import fuse
from iadm.flows.pipeline import FeaturePipeline
from iadm.rules.engine import RuleEngine
from iadm.rules.parser import parse_rules
from iadm.synth import frame

T0 = 1_700_000_000.0
SYN, SYNACK, ACK, RST, FIN = 0x02, 0x12, 0x10, 0x14, 0x11


def records(packets, status_interval=0.1):
    """Running flow records of timed frames, as the live monitor makes them, in one frame."""
    packets = sorted(packets, key=lambda p: p[0])
    pipe = FeaturePipeline(status_interval=status_interval, flow_timeout=30.0)
    frames = pipe.push(Batch.from_frames([f for _, f in packets], [t for t, _ in packets])) + pipe.finish()
    return pd.concat([f for f in frames if len(f)], ignore_index=True)


def sids(labels):
    return set(labels.sid[labels.attack == 1].tolist())


def test_distinct_counts_each_triple_at_its_own_time():
    d = Distinct(window=10.0)
    counts = d.add([("a",)] * 4, [1, 2, 2, 3], [0.0, 1.0, 2.0, 20.0])
    assert counts.tolist() == [1, 2, 2, 1]          # by t=20 the first three are out of the window
    assert d.add([("a",)], [4], [21.0]).tolist() == [2]
    assert d.add([("a",)] * 2, [4, 4], [22.0, 23.0], closing=[False, True]).tolist() == [2, 1]


def scan(ports, flags=SYN, src="10.0.0.9", dst="10.0.0.2", t0=T0, step=0.01):
    out = []
    for i, port in enumerate(ports):
        out.append((t0 + i * step, frame(src, dst, 6, 40000 + i, port, flags)))
        out.append((t0 + i * step + 0.001, frame(dst, src, 6, port, 40000 + i, RST, smac="00:00:00:00:00:02")))
    return out


def test_a_port_scan_fires_at_the_20th_port_and_names_its_kind():
    labels = BehaviourWatch()(records(scan(range(1, 26))))
    flagged = labels[labels.sid == b.SCAN_TCP]
    assert len(flagged) == 6                          # ports 20..25, not the 19 before the threshold
    assert flagged.technique.unique().tolist() == ["port_scan"] and "(syn)" in flagged.msg.iloc[0]
    null = BehaviourWatch()(records(scan(range(1, 26), flags=0)))
    assert "(null)" in null.msg[null.sid == b.SCAN_TCP].iloc[0]
    assert b.SCAN_TCP not in sids(BehaviourWatch()(records(scan(range(1, 20)))))


def test_a_scan_spread_over_more_than_a_minute_is_not_one():
    slow = scan(range(1, 41), step=4.0)               # one port every 4 s: 15 in any minute
    assert b.SCAN_TCP not in sids(BehaviourWatch()(records(slow)))


def test_a_telnet_sweep_of_many_hosts_is_password_guessing():
    sweep = []
    for i in range(25):
        sweep += scan([23], src="10.0.0.9", dst=f"10.0.1.{i + 1}", t0=T0 + i * 0.2)
    labels = BehaviourWatch()(records(sweep))
    flagged = labels[labels.sid == b.SWEEP]
    assert len(flagged) == 6 and set(flagged.technique) == {"brute_force"} and "telnet" in flagged.msg.iloc[0]


def test_one_source_flood_of_new_flows_per_second():
    flood = [(T0 + i / 2000, frame("10.0.0.9", "10.0.0.2", 17, 1024 + i, 80, payload=500)) for i in range(150)]
    labels = BehaviourWatch()(records(flood))
    assert (labels.sid == b.FLOOD_FLOWS).sum() == 51 and set(labels.technique[labels.attack == 1]) == {"udp_flood"}
    spread = [(T0 + i * 0.02, frame("10.0.0.9", "10.0.0.2", 17, 1024 + i, 80, payload=500)) for i in range(150)]
    assert b.FLOOD_FLOWS not in sids(BehaviourWatch()(records(spread)))   # 50 a second: below 100


def test_an_icmp_flood_in_one_flow_and_a_ping_that_is_not():
    flood = [(T0 + i / 1000, frame("10.0.0.9", "10.0.0.2", 1, 77, icmp=(8, 0))) for i in range(300)]
    labels = BehaviourWatch()(records(flood))
    assert b.FLOOD_FLOW_RATE in sids(labels) and "icmp_flood" in set(labels.technique)
    ping = [(T0 + i, frame("10.0.0.9", "10.0.0.2", 1, 77, icmp=(8, 0))) for i in range(60)]
    assert not BehaviourWatch()(records(ping)).attack.any()


def sessions(n, port=22, step=3.0, src="10.0.0.9", dst="10.0.0.2"):
    out = []
    for i in range(n):
        t, sp = T0 + i * step, 50000 + i
        out += [(t, frame(src, dst, 6, sp, port, SYN)),
                (t + 0.001, frame(dst, src, 6, port, sp, SYNACK, smac="00:00:00:00:00:02")),
                (t + 0.002, frame(src, dst, 6, sp, port, ACK, payload=40)),
                (t + 0.5, frame(dst, src, 6, port, sp, FIN | ACK, payload=30, smac="00:00:00:00:00:02"))]
    return out


def test_password_guessing_is_many_short_sessions_to_an_auth_service():
    labels = BehaviourWatch()(records(sessions(12)))
    flagged = labels[labels.attack == 1]
    assert set(flagged.sid) == {b.BRUTE_FORCE} and "ssh password guessing: 10 connections" in flagged.msg.iloc[0]
    assert not BehaviourWatch()(records(sessions(9))).attack.any()
    assert not BehaviourWatch()(records(sessions(30, port=443, step=0.5))).attack.any()   # web: not an auth port


def test_slow_http_holds_connections_open_and_short_requests_do_not():
    held = []
    for i in range(60):   # 60 connections opened and kept open with a trickle
        sp = 41000 + i
        held += [(T0 + i * 0.01, frame("10.0.0.9", "10.0.0.2", 6, sp, 80, SYN)),
                 (T0 + i * 0.01 + 0.001, frame("10.0.0.2", "10.0.0.9", 6, 80, sp, SYNACK, smac="00:00:00:00:00:02")),
                 (T0 + 5 + i * 0.01, frame("10.0.0.9", "10.0.0.2", 6, sp, 80, ACK, payload=5))]
    labels = BehaviourWatch()(records(held))
    assert b.SLOW_HTTP in sids(labels) and "slow_http" in set(labels.technique)
    short = sessions(200, port=80, step=0.05)          # 20 requests a second, each closed: never 50 open
    assert b.SLOW_HTTP not in sids(BehaviourWatch()(records(short)))


def test_forged_sources_behind_one_mac_block_and_many_sources_only_alert():
    forged = [(T0 + i / 5000, frame(f"100.64.{i // 250}.{i % 250 + 1}", "10.0.0.2", 6, 1024, 80, SYN,
                                    smac="00:00:00:00:00:65")) for i in range(200)]
    labels = BehaviourWatch()(records(forged))
    assert b.FORGED_SOURCES in sids(labels) and labels.blocks[labels.sid == b.FORGED_SOURCES].all()
    botnet = [(T0 + i / 5000, frame(f"100.64.{i // 250}.{i % 250 + 1}", "10.0.0.2", 6, 1024, 80, SYN,
                                    smac=f"00:00:00:00:{i // 250:02x}:{i % 250 + 1:02x}")) for i in range(200)]
    labels = BehaviourWatch()(records(botnet))
    assert b.FORGED_SOURCES not in sids(labels) and b.FLOOD_SOURCES in sids(labels)
    assert not labels.blocks[labels.attack == 1].any()      # about the destination: no source blocked


def test_fusion_gives_the_behaviours_label_and_marks_findings_about_the_destination():
    rules = RuleEngine(parse_rules('alert tcp any any -> any any (msg:"null"; flags:0; classtype:os-fingerprint; '
                                   'metadata:technique os_fingerprint; sid:9;)'))
    recs = records(scan(range(1, 26), flags=0))
    verdicts = fuse(rules.evaluate(recs).labels(), None, behaviour=BehaviourWatch()(recs))
    scanned = verdicts[verdicts.rule_sid == b.SCAN_TCP]
    assert len(scanned) == 6 and set(scanned.source) == {"behaviour"} and set(scanned.technique) == {"port_scan"}
    assert set(verdicts.technique[verdicts.rule_sid == 9]) == {"os_fingerprint"}
    assert not verdicts.about_destination.any()


def test_group_destinations_are_not_probes():
    assert b._multicast(np.array(["224.0.0.251", "10.0.0.255", "ff02::fb", "10.0.0.2", "2001:db8::1"])).tolist() == \
        [True, True, True, False, False]
