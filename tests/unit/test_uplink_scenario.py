"""Floods through the uplink (issue 11): scenario keys, the generator's forged outside sources and
their bounds, labels that keep the outside client's traffic Normal, and the responder's choice of
a shape drop (UDP from a reflector service's port) or a rate limit."""
import importlib.util
import ipaddress
import socket
import struct
import sys
from pathlib import Path

import pandas as pd
import pytest

from iadm.alerts.log import AlertLog
from iadm.config import ConfigError
from iadm.detection.detector import Detector
from iadm.detection.responder import DROPPED_REFLECTIONS, Responder
from iadm.rules.engine import RuleEngine
from iadm.scenario.label import Window, label_by_windows
from iadm.scenario.runner import attack_command, monitor_config
from iadm.scenario.spec import host_ip, host_mac, load_scenario
from iadm.sdn.client import ApiError

ROOT = Path(__file__).resolve().parents[2]
TRAFFIC = ROOT / "scripts" / "traffic"
T0 = 1_700_000_000.0
HEAD = """
name = "t"
duration = 30
attackers = 1
uplink = true
[background]
devices = ["h1", "o1"]
"""


def load(tmp_path, text):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return load_scenario(str(path))


def _module(name):
    sys.path.insert(0, str(TRAFFIC))
    try:
        spec = importlib.util.spec_from_file_location(name, TRAFFIC / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(TRAFFIC))


def test_uplink_attacks_come_from_r1_with_outside_sources(tmp_path):
    sc = load(tmp_path, HEAD + """
[[attack]]
kind = "reflection"
hosts = ["r1"]
target = "h2"
start = 2
duration = 3
[[attack]]
kind = "syn-flood"
hosts = ["r1"]
target = "h2"
start = 6
duration = 3
spoof = true
""")
    reflection, syn = sc.attacks
    assert sc.uplink and reflection.uplink and syn.uplink
    assert (reflection.src_net, syn.src_net) == ("203.0.113.0/24", "198.18.0.0/15")
    assert reflection.category == syn.category == "DDoS" and reflection.technique == "reflection"
    argv = [str(x) for x in attack_command(reflection, "r1")]
    assert argv[argv.index("--iface") + 1] == "r1-eth0" and argv[argv.index("--sport") + 1] == "161"
    assert argv[argv.index("--dport") + 1] == "0" and argv[argv.index("--src-net") + 1] == "203.0.113.0/24"
    argv = [str(x) for x in attack_command(syn, "r1")]
    assert "--spoof" not in argv and argv[argv.index("--src-net") + 1] == "198.18.0.0/15"
    assert (host_ip("r1"), host_mac("r1"), host_ip("o1")) == ("10.0.0.254", "00:00:00:00:00:fe", "198.51.100.10")


@pytest.mark.parametrize("attack, error", [
    ('kind = "reflection"\nhosts = ["a1"]', "comes through the uplink"),
    ('kind = "syn-flood"\nhosts = ["r1"]', "spoof = true"),
    ('kind = "syn-flood"\nhosts = ["r1", "a1"]\nspoof = true', "attacks alone"),
    ('kind = "service-scan"\nhosts = ["r1"]', "only reflection"),
    ('kind = "udp-flood"\nhosts = ["r1"]\nspoof_as = "10.0.0.253"', "spoof = true"),
])
def test_uplink_attacks_refused_key_by_key(tmp_path, attack, error):
    with pytest.raises(ConfigError, match=error):
        load(tmp_path, HEAD + f'[[attack]]\n{attack}\ntarget = "h2"\nstart = 1\nduration = 2\n')


def test_r1_and_o1_exist_only_with_the_uplink(tmp_path):
    with pytest.raises(ConfigError, match="no device host 'o1'"):
        load(tmp_path, HEAD.replace("uplink = true", ""))
    with pytest.raises(ConfigError, match="o1 and r1 are the Internet side"):
        load(tmp_path, HEAD + '[[attack]]\nkind = "udp-flood"\nhosts = ["a1"]\ntarget = "o1"\n'
                             'start = 1\nduration = 2\n')


def test_the_monitor_knows_the_router_with_the_uplink(tmp_path):
    text = monitor_config(tmp_path, "http://x", uplink=True, shaped_rate_pps=100).read_text()
    assert 'uplink_macs = ["00:00:00:00:00:fe"]' in text and "no_uplink" not in text
    assert "shaped_rate_pps = 100" in text
    assert "no_uplink = true" in monitor_config(tmp_path, "http://x").read_text()


def test_forged_outside_sources_stay_in_their_prefix_and_pool():
    flood = _module("flood")
    frames = flood.frames(b"\0" * 6, b"\1" * 6, "10.0.0.254", "10.0.0.2", 0, True, False,
                          src_net="203.0.113.0/24", sources=50, sport=161, payload=100)
    net = ipaddress.IPv4Network("203.0.113.0/24")
    sources, dports = set(), set()
    for f in frames:
        src = ipaddress.IPv4Address(f[26:30])
        sport, dport, length = struct.unpack("!HHH", f[34:40])
        assert src in net and src not in (net.network_address, net.broadcast_address)
        assert sport == 161 and length == 108 and len(f) == 14 + 20 + 8 + 100
        sources.add(src)
        dports.add(dport)
    assert 30 <= len(sources) <= 50 and len(dports) > 1000
    syn = flood.frames(b"\0" * 6, b"\1" * 6, "10.0.0.254", "10.0.0.2", 80, False, False, src_net="198.18.0.0/15")
    assert len({f[26:30] for f in syn}) > 4000 and {struct.unpack("!H", f[36:38])[0] for f in syn} == {80}
    assert all(ipaddress.IPv4Address(f[26:30]) in ipaddress.IPv4Network("198.18.0.0/15") for f in syn)


def test_the_generator_refuses_to_forge_real_prefixes():
    bounds = _module("bounds")

    class Refused(Exception):
        pass

    class Parser:
        def error(self, message):
            raise Refused(message)
    for prefix in ("8.8.8.0/24", "0.0.0.0/0", "203.0.0.0/8", "nonsense"):
        with pytest.raises(Refused):
            bounds.check(Parser(), src_net=prefix)
    for prefix in ("203.0.113.0/24", "198.18.0.0/15", "198.51.100.128/25"):
        bounds.check(Parser(), src_net=prefix)
    with pytest.raises(Refused, match="outside the topology"):
        bounds.check(Parser(), dst="198.51.100.10")


def test_labels_keep_the_outside_clients_traffic_through_r1_normal():
    r1 = int(host_mac("r1").replace(":", ""), 16)
    records = pd.DataFrame({"smac": [r1, r1, r1], "saddr": ["203.0.113.7", "198.51.100.10", "203.0.113.9"],
                            "stime": [T0 + 1, T0 + 1, T0 + 20], "ltime": [T0 + 1.5, T0 + 1.5, T0 + 20]})
    window = Window("reflection", "reflection", ["r1"], [host_mac("r1")], "h2", T0, T0 + 3, "DDoS", "UDP",
                    "reflection", "203.0.113.0/24")
    labelled = label_by_windows(records, [window])
    assert labelled["attack"].tolist() == [1, 0, 0] and labelled["category"].tolist() == ["DDoS", "Normal", "Normal"]


class ShapeController:
    def __init__(self, refuse_drops=False, uplink_port=True):
        self.verdicts = []
        self.refuse_drops = refuse_drops
        self.uplink_port = uplink_port

    def verdict(self, **fields):
        self.verdicts.append(fields)
        if self.refuse_drops and fields["action"] == "block":
            raise ApiError(403, "dst_ip 10.0.0.2 holds allowlisted 10.0.0.2")
        if not self.uplink_port and fields.get("in_port") == "uplink":
            raise ApiError(409, "no uplink port is configured (openflow.uplink_port)")
        match = {k: fields[k] for k in ("dst_ip", "ip_proto", "src_port", "dst_port") if k in fields}
        return {"block": {"block_id": len(self.verdicts), "action": fields["action"], "match": match},
                "installed_on": ["0000000000000001"], "installed_at": T0}


def _reflection(sport: int):
    from iadm.synth import frame
    packets = [(T0 + i / 5000, frame(f"203.0.113.{i % 200 + 1}", "10.0.0.2", 17, sport, 1024 + i, payload=400,
                                     smac=host_mac("r1"))) for i in range(2000)]
    from iadm.capture.batch import Batch
    from iadm.flows.pipeline import FeaturePipeline
    pipe = FeaturePipeline(status_interval=0.1)
    frames = pipe.push(Batch.from_frames([f for _, f in packets], [t for t, _ in packets]))
    return [f for f in frames + pipe.finish() if len(f)]


@pytest.mark.parametrize("sport, refuse, actions", [
    (161, False, ["block"]),                  # SNMP answers to a host that asked none: dropped
    (53, False, ["rate_limit"]),              # DNS: the victim's own lookups look the same; limited
    (161, True, ["block", "rate_limit"]),     # a drop refused (an allowlisted victim): limited instead
])
def test_a_reflection_is_dropped_by_its_shape_or_limited(tmp_path, sport, refuse, actions):
    from iadm.detection.behaviour import BehaviourWatch
    assert 161 in DROPPED_REFLECTIONS and not {53, 123} & DROPPED_REFLECTIONS
    detector = Detector(RuleEngine([]), behaviour=BehaviourWatch())
    controller = ShapeController(refuse_drops=refuse)
    from iadm.detection.uplink import UplinkWatch   # as the runner configures it: r1 is a router
    responder = Responder(controller, AlertLog(str(tmp_path / "a.json")), detector=detector, replay=True,
                          uplink=UplinkWatch(known=[host_mac("r1")]))
    for frame in _reflection(sport):
        frame = frame.reset_index(drop=True)
        responder(frame, detector(frame))
    shaped = [v for v in controller.verdicts if "dst_ip" in v]
    assert [v["action"] for v in shaped[:len(actions)]] == actions
    assert all((v["dst_ip"], v["ip_proto"], v.get("src_port")) == ("10.0.0.2", 17, sport) for v in shaped)
    assert all(v.get("in_port") == "uplink" for v in shaped)   # it came through r1: only what enters there
    assert not any("src_mac" in v or "src_ip" in v for v in controller.verdicts)   # no source, no router


def test_a_controller_without_an_uplink_port_gets_the_shape_without_the_narrowing(tmp_path):
    from iadm.detection.behaviour import BehaviourWatch
    from iadm.detection.uplink import UplinkWatch
    detector = Detector(RuleEngine([]), behaviour=BehaviourWatch())
    controller = ShapeController(uplink_port=False)
    responder = Responder(controller, AlertLog(str(tmp_path / "a.json")), detector=detector, replay=True,
                          uplink=UplinkWatch(known=[host_mac("r1")]))
    for frame in _reflection(161):
        frame = frame.reset_index(drop=True)
        responder(frame, detector(frame))
    first = [(v["action"], v.get("in_port")) for v in controller.verdicts if "dst_ip" in v][:3]
    assert first == [("block", "uplink"), ("rate_limit", "uplink"), ("block", None)], first


def test_a_second_flood_of_another_shape_at_the_same_victim_gets_its_own_verdict(tmp_path):
    """A forged SYN flood at Host2's port 22, then one at its port 80 (the same finding, another
    shape): two rate limits; the first flood again while its limit stands: nothing new."""
    from iadm.capture.batch import Batch
    from iadm.detection.behaviour import BehaviourWatch
    from iadm.detection.uplink import UplinkWatch
    from iadm.flows.pipeline import FeaturePipeline
    from iadm.synth import frame

    def flood(t, port, n=1500):
        return [(t + i / 5000, frame(f"198.18.{i // 250}.{i % 250 + 1}", "10.0.0.2", 6, 1024 + i, port, 0x02,
                                     smac=host_mac("r1"))) for i in range(n)]
    packets = flood(T0, 22) + flood(T0 + 5, 80) + flood(T0 + 10, 22)
    pipe = FeaturePipeline(status_interval=0.1)
    detector = Detector(RuleEngine([]), behaviour=BehaviourWatch())
    controller = ShapeController()
    responder = Responder(controller, AlertLog(str(tmp_path / "a.json")), detector=detector, replay=True,
                          uplink=UplinkWatch(known=[host_mac("r1")]))
    for lo in range(0, len(packets), 500):   # batches as the live capture hands them over
        part = packets[lo:lo + 500]
        for f in pipe.push(Batch.from_frames([p for _, p in part], [t for t, _ in part])):
            if len(f):
                f = f.reset_index(drop=True)
                responder(f, detector(f))
    shaped = [(v["action"], v["ip_proto"], v.get("dst_port")) for v in controller.verdicts if "dst_ip" in v]
    assert shaped == [("rate_limit", 6, 22), ("rate_limit", 6, 80)], shaped
    assert not any("src_mac" in v for v in controller.verdicts)


def test_a_scan_passing_by_while_a_flood_s_sources_count_stands_makes_no_shape(tmp_path):
    """The demo's case: a forged-source flood at Host2 (the many-sources count stands for a minute),
    then one host scanning Host2's ports: its probes are flagged as part of the flood, and a shape
    made of them would be all TCP to Host2 (no port shared). A shape needs many sources."""
    from iadm.capture.batch import Batch
    from iadm.detection.behaviour import BehaviourWatch
    from iadm.flows.pipeline import FeaturePipeline
    from iadm.synth import frame
    flood = [(T0 + i / 5000, frame(f"198.18.{i // 250}.{i % 250 + 1}", "10.0.0.2", 6, 1024 + i, 22, 0x02,
                                   smac=host_mac("a1"))) for i in range(1500)]
    scan = [(T0 + 5 + i / 200, frame("10.0.0.103", "10.0.0.2", 6, 51859, 1 + i, 0x02, smac=host_mac("a3")))
            for i in range(300)]
    pipe = FeaturePipeline(status_interval=0.1)
    detector = Detector(RuleEngine([]), behaviour=BehaviourWatch())
    controller = ShapeController()
    responder = Responder(controller, AlertLog(str(tmp_path / "a.json")), detector=detector, replay=True)
    packets = flood + scan
    for lo in range(0, len(packets), 100):
        part = packets[lo:lo + 100]
        for f in pipe.push(Batch.from_frames([p for _, p in part], [t for t, _ in part])):
            if len(f):
                f = f.reset_index(drop=True)
                responder(f, detector(f))
    shapes = [v for v in controller.verdicts if "dst_ip" in v]
    assert shapes and all(v.get("dst_port") == 22 for v in shapes), shapes
