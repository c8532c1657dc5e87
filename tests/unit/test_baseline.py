"""Site adaptation: a learning period, then what the site does every day no longer alerts;
anything new from the same device still does; a broken baseline file is refused by name."""
import json

import pandas as pd
import pytest

from iadm.detection.baseline import BaselineError, SiteBaseline, load
from iadm.detection.detector import Detector
from iadm.rules.engine import RuleEngine
from iadm.rules.parser import parse_rules

T0 = 1_700_000_000.0
RULES = 'alert tcp any any -> any 80 (msg:"polls"; pkts >= 1; classtype:dos; sid:7;)'


def frame(t, dport=80, saddr="10.0.0.5"):
    return pd.DataFrame({"pkSeqID": [1], "saddr": [saddr], "sport": [40000], "daddr": ["10.0.0.2"],
                         "dport": [dport], "proto": ["tcp"], "stime": [t], "ltime": [t], "pkts": [3], "bytes": [300],
                         "state": ["CON"], "spkts": [2], "dpkts": [1]})


def test_a_learning_period_then_only_the_new_alerts(tmp_path):
    path = tmp_path / "site.json"
    detector = Detector(RuleEngine(parse_rules(RULES)), baseline=SiteBaseline(str(path), learn_seconds=60))
    assert detector(frame(T0)).attack.tolist() == [0]              # learning: learned, not acted on
    assert detector(frame(T0 + 30)).attack.tolist() == [0]
    after = detector(frame(T0 + 61))
    assert after.attack.tolist() == [0] and after.source.tolist() == ["rule+baseline"]
    assert detector(frame(T0 + 62, dport=8080)).attack.tolist() == [0]    # the rule is for port 80 only
    assert detector(frame(T0 + 63, saddr="10.0.0.9")).attack.tolist() == [1]   # another device: alerted
    detector.baseline.save()
    assert load(str(path)) == {(7, "10.0.0.5", "10.0.0.2", "80"): {"first": T0, "last": T0 + 30, "records": 2}}
    again = Detector(RuleEngine(parse_rules(RULES)), baseline=SiteBaseline(str(path)))
    assert again(frame(T0 + 100)).attack.tolist() == [0]          # kept across restarts
    assert again(frame(T0 + 100, saddr="10.0.0.9")).attack.tolist() == [1]


def test_a_broken_baseline_file_is_named(tmp_path):
    path = tmp_path / "site.json"
    path.write_text("{not json")
    with pytest.raises(BaselineError, match="site.json: not JSON"):
        SiteBaseline(str(path))
    path.write_text(json.dumps({"format": "iadm-baseline/1", "entries": [{"sid": 7}]}))
    with pytest.raises(BaselineError, match="entry #1 needs sid, src, dest and dest_port"):
        SiteBaseline(str(path))


def test_baseline_learn_from_a_capture(tmp_path):
    """`iadm baseline learn` on a crafted capture of many short web connections from one client."""
    import os
    from pcaptools import write_pcap

    from iadm.cli import main
    from iadm.synth import frame as packet
    packets = []
    for i in range(800):   # 600 short connections a second to one web server: the HTTP-flood watcher's shape
        t, sp = T0 + i / 600, 30000 + i
        packets += [(t, packet("10.0.0.5", "10.0.0.2", 6, sp, 80, 0x02)),
                    (t + 0.001, packet("10.0.0.2", "10.0.0.5", 6, 80, sp, 0x12, smac="00:00:00:00:00:02")),
                    (t + 0.002, packet("10.0.0.5", "10.0.0.2", 6, sp, 80, 0x11))]
    pcap, out = tmp_path / "site.pcap", tmp_path / "site.json"
    write_pcap(pcap, sorted(packets))
    os.environ.setdefault("IADM_OPERATOR_TOKEN", "t")
    assert main(["baseline", "learn", str(pcap), "--config", "config/monitor.toml", "-o", str(out)]) == 0
    entries = load(str(out))
    assert entries and {k[1] for k in entries} == {"10.0.0.5"} and all(k[0] for k in entries)
