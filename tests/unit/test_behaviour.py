"""Behaviour over time (iadm/detection/behaviour.py) on crafted traffic: each watcher fires at its
threshold and not one below, judged at each record's own time, and benign look-alikes stay quiet."""
from collections import deque

import numpy as np
import pandas as pd
import pytest

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


class ReferenceDistinct:
    """The Python Distinct the compiled one replaced, in its plain form: per key a dict of
    members -> last seen and a deque of events, the triples of a batch walked in time order
    (stable), keys without a recent event swept at most once a window. The compiled Distinct
    must count exactly as this does whenever batches follow one another in time."""

    def __init__(self, window: float, max_keys: int = 200_000):
        self.window = window
        self.max_keys = max_keys
        self.keys: dict = {}
        self.swept_at = -np.inf

    def add(self, keys: list, members: list, times, closing=None) -> np.ndarray:
        n = len(keys)
        counts = np.zeros(n, dtype=np.int64)
        if not n:
            return counts
        t_list = np.asarray(times, dtype=np.float64).tolist()
        never = float("-inf")
        for i in sorted(range(n), key=t_list.__getitem__):
            key = keys[i]
            if key is None:
                continue
            member, t = members[i], t_list[i]
            last, events = self.keys.setdefault(key, ({}, deque()))
            since = t - self.window
            while events and events[0][0] < since:
                t0, m0 = events.popleft()
                if last.get(m0) == t0:
                    del last[m0]
            if closing is not None and closing[i]:
                last.pop(member, None)
            elif last.get(member, never) < t:
                last[member] = t
                events.append((t, member))
            counts[i] = len(last)
        self._sweep(max(t_list))
        return counts

    def _sweep(self, now: float) -> None:
        if now - self.swept_at < self.window and len(self.keys) < self.max_keys:
            return
        since = now - self.window
        self.keys = {k: v for k, v in self.keys.items() if v[1] and v[1][-1][0] >= since}
        if len(self.keys) >= self.max_keys:
            newest = sorted(self.keys, key=lambda k: self.keys[k][1][-1][0], reverse=True)
            self.keys = {k: self.keys[k] for k in newest[: self.max_keys // 2]}
        self.swept_at = now


@pytest.mark.parametrize("seed", range(12))
def test_distinct_counts_as_the_python_reference(seed):
    """Random triples in several batches (out of order within a batch, ties, closings, keys None,
    batches longer than the window, a gap), to the reference, to Distinct as objects and to
    Distinct as hashes with a mask: the same counts, triple for triple."""
    rng = np.random.default_rng(seed)
    window = float(rng.choice([0.5, 1.0, 2.5]))
    reference, objects, hashed = ReferenceDistinct(window), Distinct(window), Distinct(window)
    codes: dict = {}
    pool = [("10.0.0.%d" % a, int(p)) for a in range(4) for p in (22, 80)] + ["solo", 7]
    start = 1_700_000_000.0
    for batch in range(10):
        n = int(rng.integers(0, 120))
        span = float(rng.choice([0.25, 1.0, 4.0]))
        times = start + np.round(rng.uniform(0, span, n) * 4) / 4   # quarter seconds: ties, exact edges
        keys = [None if rng.random() < 0.1 else pool[int(rng.integers(len(pool)))] for _ in range(n)]
        members = [int(m) if rng.random() < 0.7 else ("m", int(m)) for m in rng.integers(0, 12, n)]
        closing = rng.random(n) < 0.15
        want = reference.add(keys, members, times, closing)
        assert objects.add(keys, members, times, closing).tolist() == want.tolist()
        ints = np.array([codes.setdefault(k, len(codes)) if k is not None else -1 for k in keys], dtype=np.int64)
        member_ints = np.array([codes.setdefault(("member", m), len(codes)) for m in members], dtype=np.int64)
        got = hashed.add(ints, member_ints, times, closing, mask=ints >= 0)
        assert got.tolist() == want.tolist()
        start = (times.max() if n else start) + float(rng.choice([0.0, 0.25, 10.0]))   # in time, now and then a gap


def test_distinct_frees_one_off_keys_and_holds_its_caps():
    d = Distinct(window=1.0)
    for tick in range(50):   # a forged-source flood: 2,000 new sources every 0.1 s, each seen once
        keys = np.arange(tick * 2000, (tick + 1) * 2000, dtype=np.int64)
        assert (d.add(keys, np.zeros(2000, np.int64), np.full(2000, tick * 0.1)) == 1).all()
    assert len(d) <= 11 * 2000 and d.members == len(d) and d.forced == 0   # only the last second is held
    d.add([1], [1], [100.0])
    assert len(d) == 1 and d.members == 1                                  # the window passed: all freed
    capped = Distinct(window=100.0, max_keys=1000, max_members=1500)
    counts = capped.add(np.arange(5000, dtype=np.int64), np.zeros(5000, np.int64), np.arange(5000) * 0.01)
    assert (counts == 1).all() and len(capped) == 1000 and capped.forced == 4000   # the oldest forgotten first
    counts = capped.add(np.full(600, 4999, np.int64), np.arange(600, dtype=np.int64), np.full(600, 50.0))
    assert counts[-1] == 600 and capped.members == 1500     # at the pair cap, the other keys' old sightings go
    assert len(capped) == 1 + 1500 - 600 and capped.forced == 4000 + 99


def test_group_destinations_compiled_as_in_python():
    texts = ["224.0.0.251", "239.255.255.250", "240.0.0.1", "223.1.1.1", "0224.1.2.3", "10.0.0.255", "255.255.255.255",
             "ff02::fb", "FF05::2", "fe80::1", "2001:db8::ff", "10.0.0.2", "", "nan", "a.b", "２２４.0.0.1", "224"]
    got = b._groups(pd.array(texts, dtype="str"))
    assert got.tolist() == [b._is_group(t) for t in texts]


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


def udp_probes(ports, step=0.05, answered=False, src="10.0.0.9", dst="10.0.0.2"):
    out = []
    for i, port in enumerate(ports):
        out.append((T0 + i * step, frame(src, dst, 17, 50000 + i, port)))
        if answered:
            out.append((T0 + i * step + 0.001, frame(dst, src, 17, port, 50000 + i, smac="00:00:00:00:00:02")))
    return out


def test_a_udp_scan_s_first_burst_is_a_scan_and_a_host_s_few_udp_services_are_not():
    # nmap -sU: a dozen or more silent probes at once, then a wait for the ICMP rate limit
    labels = BehaviourWatch()(records(udp_probes([7, 53, 67, 69, 123, 137, 138, 161, 500, 514, 520, 1900, 4500])))
    flagged = labels[labels.sid == b.SCAN_UDP]
    assert len(flagged) == 2 and "within 2 s, none answered" in flagged.msg.iloc[0]   # the 12th and 13th
    assert b.SCAN_UDP not in sids(BehaviourWatch()(records(udp_probes(range(1000, 1011)))))          # 11 ports
    assert b.SCAN_UDP not in sids(BehaviourWatch()(records(udp_probes(range(1000, 1015), answered=True))))
    assert b.SCAN_UDP not in sids(BehaviourWatch()(records(udp_probes(range(1000, 1015), step=0.2))))  # 3 s


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


def sessions(n, port=22, step=3.0, src="10.0.0.9", dst="10.0.0.2", last=0.5, sent=40, t0=T0):
    """n sessions, one every `step` s: handshake, the client's `sent` bytes, the server's answer
    and close after `last` s (a refused login, when short and small)."""
    out = []
    for i in range(n):
        t, sp = t0 + i * step, 50000 + i
        out += [(t, frame(src, dst, 6, sp, port, SYN)),
                (t + 0.001, frame(dst, src, 6, port, sp, SYNACK, smac="00:00:00:00:00:02")),
                (t + 0.002, frame(src, dst, 6, sp, port, ACK, payload=sent)),
                (t + last, frame(dst, src, 6, port, sp, FIN | ACK, payload=30, smac="00:00:00:00:00:02")),
                (t + last + 0.001, frame(src, dst, 6, sp, port, FIN | ACK))]
    return out


def test_probes_that_an_open_login_port_answers_with_one_syn_ack_are_not_logins():
    # nmap -O: SYNs (and odd flag sets) to the open FTP port, each from a new source port,
    # answered by one SYN-ACK and reset: 30 connection attempts, no login exchange
    probes = []
    for i in range(30):
        t, sp = T0 + i * 0.05, 40000 + i
        probes += [(t, frame("10.0.0.9", "10.0.0.2", 6, sp, 21, SYN)),
                   (t + 0.001, frame("10.0.0.2", "10.0.0.9", 6, 21, sp, SYNACK, smac="00:00:00:00:00:02")),
                   (t + 0.002, frame("10.0.0.9", "10.0.0.2", 6, sp, 21, RST))]
    assert not {b.BRUTE_FORCE, b.BRUTE_FORCE_SLOW} & sids(BehaviourWatch()(records(probes)))
    banners = sessions(12, port=21, step=0.5)   # the same count, each answered by the server's banner
    assert b.BRUTE_FORCE in sids(BehaviourWatch()(records(banners)))


def test_password_guessing_is_many_short_sessions_to_an_auth_service():
    labels = BehaviourWatch()(records(sessions(12, port=1883)))   # MQTT: counted, not login-shaped
    flagged = labels[labels.attack == 1]
    assert set(flagged.sid) == {b.BRUTE_FORCE} and "mqtt password guessing: 10 connections" in flagged.msg.iloc[0]
    assert not BehaviourWatch()(records(sessions(9, port=1883))).attack.any()
    assert not BehaviourWatch()(records(sessions(30, port=443, step=0.5))).attack.any()   # web: not an auth port


def test_a_slow_guesser_is_found_at_its_fifth_short_login_session():
    """One refused SSH session every 8 s (a guesser waiting out the server's failure delay): 10 in a
    minute never comes; 5 ended login-shaped sessions within 120 s do, and from then on every
    record of the guesser to that port is flagged (its next session from its first record)."""
    slow = sessions(8, step=8.0)
    labels = BehaviourWatch()(records(slow))
    recs = records(slow)
    flagged = recs[labels.attack.to_numpy() == 1]
    assert set(labels.sid[labels.attack == 1]) == {b.BRUTE_FORCE_LOGINS}
    assert flagged.ltime.min() >= T0 + 4 * 8.0 + 0.5                   # the fifth session's end, not before
    assert "ssh password guessing: 5 short login sessions" in labels.msg[labels.attack == 1].iloc[0]
    sixth = recs[(recs.sport == 50005)]
    assert (labels.attack[sixth.index] == 1).all()                       # the next session, every record
    assert not BehaviourWatch()(records(sessions(4, step=8.0))).attack.any()


def test_sessions_that_are_not_refused_logins_are_not_counted_as_such():
    """Long sessions, bulk ones, unanswered ones, or a service whose short sessions are its normal
    use (MQTT: connect, publish, leave) are no login-shaped sessions."""
    for shaped in (sessions(8, step=8.0, last=40.0),                # lasted: an interactive session
                   sessions(8, step=8.0, sent=12000),               # a file went up
                   sessions(8, step=8.0, port=1883),                # a sensor publishing every 8 s
                   sessions(8, step=31.0)):                          # 4 in any 120 s
        assert not BehaviourWatch()(records(shaped)).attack.any()


def web_connections(n, per_second, parallel, src="10.0.0.9", dst="10.0.0.2", port=80):
    """n HTTP connections opened at `per_second`, each answered and closed after parallel/per_second s
    (so about `parallel` are open at once)."""
    out, last = [], parallel / per_second
    for i in range(n):
        t, sp = T0 + i / per_second, 20000 + i
        out += [(t, frame(src, dst, 6, sp, port, SYN)),
                (t + 0.0005, frame(dst, src, 6, port, sp, SYNACK, smac="00:00:00:00:00:02")),
                (t + 0.001, frame(src, dst, 6, sp, port, ACK | 0x08, payload=80)),
                (t + last, frame(dst, src, 6, port, sp, FIN | ACK | 0x08, payload=300, smac="00:00:00:00:00:02")),
                (t + last + 0.0005, frame(src, dst, 6, sp, port, FIN | ACK))]
    return out


def test_an_http_flood_is_connections_per_second_in_parallel():
    flood = BehaviourWatch()(records(web_connections(400, 300, parallel=20)))
    assert b.HTTP_FLOOD in sids(flood) and set(flood.technique[flood.sid == b.HTTP_FLOOD]) == {"http_flood"}
    # one client looping on a LAN: 130 short requests a second, one at a time (a record every 0.1 s
    # of every open flow would be hundreds of records a second: connections are what count)
    assert not BehaviourWatch()(records(web_connections(600, 130, parallel=1))).attack.any()
    fast = BehaviourWatch()(records(web_connections(1200, 1000, parallel=1)))   # 1,000 a second: no need of more
    assert b.HTTP_FLOOD in sids(fast)


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


def test_syn_ack_backscatter_from_many_reflectors_and_a_browser_that_is_not():
    # SYNs forged with 10.0.0.2's address were answered: SYN-ACKs it never asked for, one a second
    reflected = [(T0 + i, frame(f"198.51.100.{i + 1}", "10.0.0.2", 6, 80, 40000 + i, SYNACK)) for i in range(40)]
    labels = BehaviourWatch()(records(reflected))
    found = labels[labels.sid == b.REFLECTION]
    assert len(found) == 11 and "SYN-ACK reflection: 30 unsolicited SYN-ACKs to 10.0.0.2" in found.msg.iloc[0]
    assert not found.blocks.any()                       # about the victim: no reflector is blocked on it
    browser = []                                        # the same hosts, connections the client opened
    for i in range(40):
        t, sp, server = T0 + i, 40000 + i, f"198.51.100.{i + 1}"
        browser += [(t, frame("10.0.0.2", server, 6, sp, 80, SYN)), (t + 0.01, frame(server, "10.0.0.2", 6, 80, sp, SYNACK)),
                    (t + 0.02, frame("10.0.0.2", server, 6, sp, 80, ACK, payload=100))]
    assert b.REFLECTION not in sids(BehaviourWatch()(records(browser)))
    # a device that reconnects and keeps sending to a server gone quiet: SYN and ACK from it, no answer
    quiet = [(T0, frame("10.0.0.2", "198.51.100.1", 6, 47000, 9999, SYN))]
    quiet += [(T0 + 0.2 * i, frame("10.0.0.2", "198.51.100.1", 6, 47000, 9999, ACK | 0x08, payload=60))
              for i in range(1, 60)]
    assert b.REFLECTION not in sids(BehaviourWatch()(records(quiet)))


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


def test_warm_up_compiles_every_watcher_on_crafted_records():
    assert b.warm_up() < 60.0
    assert not BehaviourWatch()(records(scan(range(1, 5)))).attack.any()
